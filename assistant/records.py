"""What a turn produces for the store to keep: its messages and one record per model call.

The engine works with these small values; the store turns them into rows (and attaches the
conversation, prompt version and message ids), so no phase of a turn holds a database row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# Where a call's token counts came from (`CallRecord.token_source`).
SERVER_TOKENS = "server"  # the usage the model server reported
NO_TOKENS = "none"  # nothing was counted: a failed call, a reply served from the cache
ESTIMATE_PREFIX = "estimate:"  # then our tokenizer's name: estimate:o200k_base, estimate:chars


def estimated_by(tokenizer: str) -> str:
    """The token source of counts our own tokenizer made, e.g. "estimate:o200k_base"."""
    return ESTIMATE_PREFIX + tokenizer


JUDGE = "judge"  # the purpose of an eval judge's calls: made in no conversation, eval traffic


@dataclass(frozen=True, kw_only=True)
class CallRecord:
    """One model call as it ended: everything is known when the record is made, so nothing
    is patched afterwards (a cut-off reply and a broken output contract included).

    `token_source` says whether the token counts are the server's or our estimate, so an
    estimate is never shown or summed as if it were what the provider billed.
    `reasoning_tokens` are a part of `completion_tokens` (providers bill them as output, and
    `cost_usd` prices them so): kept apart only to show how much of the output was thinking.
    """

    purpose: str  # reply | summary
    model: str
    total_ms: float
    status: str  # ok | error | cancelled
    prompt_tokens: int = 0
    completion_tokens: int = 0  # reasoning tokens included
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    token_source: str = SERVER_TOKENS  # server | none | estimate:<tokenizer>
    cost_usd: float | None = None  # None: the model is unpriced (never a silent $0)
    ttft_ms: float | None = None
    error_class: str | None = None
    cache_hit: bool = False
    contract_error: str | None = None
    fallback_for: str | None = None  # the version's own model, when a fallback made this call
    # why the model stopped (stop, length, tool_calls, content_filter): traces show it; the
    # store keeps only what `error_class` says of a cut-off (`finish_reason:length`)
    finish_reason: str | None = None

    @property
    def estimated(self) -> bool:
        return self.token_source.startswith(ESTIMATE_PREFIX)


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
