"""Test and demo doubles that are real servers: the fake OpenAI-compatible API."""

from assistant.testing.fake_llm import CallTools, Cut, Fail, FakeLlm, Hang, Reply, demo_responder

__all__ = ["CallTools", "Cut", "Fail", "FakeLlm", "Hang", "Reply", "demo_responder"]
