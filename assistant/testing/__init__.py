"""Test and demo doubles that are real servers: the fake OpenAI-compatible API.

Its names are loaded on first use: the fake server brings aiohttp's web server with it, and
`assistant chat` names the fake's personalities in its help long before it needs a server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from assistant.testing.demo_model import DemoModel
    from assistant.testing.fake_llm import FakeLlm, Vectors, fake_embedding
    from assistant.testing.scripts import CallTools, Cut, Fail, Hang, Reply

__all__ = [
    "CallTools",
    "Cut",
    "DemoModel",
    "Fail",
    "FakeLlm",
    "Hang",
    "Reply",
    "Vectors",
    "fake_embedding",
]
_MODULES = {
    "DemoModel": "demo_model",
    **dict.fromkeys(("FakeLlm", "Vectors", "fake_embedding"), "fake_llm"),
    **dict.fromkeys(("CallTools", "Cut", "Fail", "Hang", "Reply"), "scripts"),
}


def __getattr__(name: str) -> object:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
