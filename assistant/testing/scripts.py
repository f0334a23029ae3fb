"""What a test scripts the fake model to do next: stream text, call tools, fail, hang or cut."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Reply:
    """Stream `text` in pieces of `chunk_chars`, waiting `first_delay` then `chunk_delay` each."""

    text: str
    chunk_chars: int = 16
    first_delay: float = 0.0
    chunk_delay: float = 0.0
    cached_tokens: int = 0
    finish_reason: str = "stop"  # "length" or "content_filter" for a reply stopped early


@dataclass(frozen=True, kw_only=True)
class CallTools:
    """Ask for tool calls, each `(name, arguments)`, in one response (so they run in parallel)."""

    calls: tuple[tuple[str, dict[str, Any]], ...]
    text: str = ""


@dataclass(frozen=True, kw_only=True)
class Fail:
    """Answer with an HTTP error, e.g. 429 with `{"retry-after-ms": "20"}`."""

    status: int
    message: str = "scripted failure"
    headers: dict[str, str] = field(default_factory=dict)
    echo_key: bool = False  # quote the caller's API key back, as careless servers do


@dataclass(frozen=True, kw_only=True)
class Hang:
    """Send `text` then go silent (the stream stays open) until the client gives up."""

    text: str = ""


@dataclass(frozen=True, kw_only=True)
class Cut:
    """Send `text` then drop the connection mid-body, as a crashing proxy would."""

    text: str = ""


Streamed = Reply | CallTools | Hang | Cut
Script = Streamed | Fail
Responder = Callable[[dict[str, Any]], Script]
