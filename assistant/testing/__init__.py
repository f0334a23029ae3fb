"""Test and demo doubles that are real servers: the fake OpenAI-compatible API."""

from assistant.testing.demo_model import DemoModel
from assistant.testing.fake_llm import FakeLlm
from assistant.testing.scripts import CallTools, Cut, Fail, Hang, Reply

__all__ = ["CallTools", "Cut", "DemoModel", "Fail", "FakeLlm", "Hang", "Reply"]
