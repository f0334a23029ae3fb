"""What a turn produces for the store to keep: its messages and one record per model call.

The engine works with these small values; the store turns them into rows (and attaches the
conversation, prompt version and message ids), so no phase of a turn holds a database row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, kw_only=True)
class CallRecord:
    """One model call as it ended: everything is known when the record is made, so nothing
    is patched afterwards (a cut-off reply and a broken output contract included)."""

    purpose: str  # reply | summary
    model: str
    total_ms: float
    status: str  # ok | error | cancelled
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float | None = None  # None: the model is unpriced (never a silent $0)
    ttft_ms: float | None = None
    error_class: str | None = None
    cache_hit: bool = False
    contract_error: str | None = None


@dataclass(frozen=True, kw_only=True)
class NewMessage:
    """A message to store: the user's, or the assistant's answer (whole or `incomplete`)."""

    role: str  # user | assistant
    text: str
    token_count: int
    author_id: str = ""
    author_name: str = ""
    status: str = "ok"  # ok | incomplete | refused
    platform_message_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class PendingReply:
    """An answer owed on a surface a restart comes back to: written with the user's message."""

    surface: str
    place: str  # the surface's own JSON: where the answer goes
    owner: str  # the serving process answering it


@dataclass(frozen=True, kw_only=True)
class OrphanedTurn:
    """A user's message whose answer a stopped process never finished."""

    message_id: int
    conversation_id: int
    surface: str
    place: str
    shown: str | None  # what the platform shows of the cut answer (a stream, a placeholder)
    owner: str
    platform: str
    workspace: str
    channel: str
    thread: str
    author_id: str
    author_name: str
    text: str
    token_count: int
    created_at: datetime
    reply_id: int | None  # the answer was stored: only showing it was cut short
    reply_text: str | None
