"""The neutral values of a turn: what adapters hand the engine and the events they get back."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ConversationRef:
    """Where a conversation happens; empty strings where a platform has no such level."""

    platform: str
    workspace: str = ""
    channel: str = ""
    thread: str = ""


@dataclass(frozen=True, kw_only=True)
class Actor:
    platform: str
    user_id: str
    display_name: str = ""
    roles: tuple[str, ...] = ()  # the platform's role ids (Discord) that access rules name

    @property
    def qualified_id(self) -> str:
        """The `platform:user_id` form ADMIN_USERS uses."""
        return f"{self.platform}:{self.user_id}"


@dataclass(frozen=True, kw_only=True)
class Attachment:
    """A file a user sent with a message, as its adapter fetched it (the engine never reaches
    a platform). `data` is None when the adapter did not fetch it; `problem` says why."""

    name: str
    media_type: str  # "image/png", "text/plain" …
    size: int  # bytes, as the platform reported them
    data: bytes | None = None
    problem: str | None = None


@dataclass(frozen=True, kw_only=True)
class Inbound:
    """A user's message as an adapter saw it.

    `dedupe_keys` are the platform's ids for this delivery (event id, channel+message id): a turn
    whose key was already seen is dropped, so redeliveries never produce a second reply.
    """

    ref: ConversationRef
    actor: Actor
    text: str
    platform_message_id: str | None = None
    dedupe_keys: tuple[str, ...] = ()
    pinned_version: tuple[str, int] | None = None  # evals: answer with this (name, version)
    use_cache: bool = True  # evals of consistency must reach the model every time
    # where the answer goes, in the surface's own words (JSON): kept with the message, so a
    # restart can answer a turn that a crash cut short; None for surfaces nobody returns to
    reply_place: str | None = None
    direct: bool = False  # a direct message to the assistant, not a channel
    # the surface can put a question to the user (buttons, a prompt): tools that act on their
    # behalf ask it first; where nobody can be asked (an eval), such a tool does not run
    can_ask: bool = True
    attachments: tuple[Attachment, ...] = ()


# How every surface marks a token figure our tokenizer estimated (and a cost priced from one):
# "~258 prompt". The server's own counts go unmarked.
ESTIMATE_MARK = "~"


@dataclass(frozen=True, kw_only=True)
class TurnUsage:
    """Totals over every model call of a turn (replies, tool rounds and summary folding)."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float | None  # None when any call's model is unpriced: a partial sum would lie
    unpriced_models: tuple[str, ...] = ()
    cache_hits: int = 0
    reasoning_tokens: int = 0  # a part of completion_tokens, billed as output
    # Some call's tokens were counted by our tokenizer (its server sent no usage): the token
    # figures, and the cost priced from them, are estimates and are shown as such.
    estimated: bool = False
    # the calls by what they were for (reply, summary, repair, embedding …), in the order
    # first made: how many, and their cost (None when one is unpriced)
    purposes: tuple[PurposeUsage, ...] = ()
    fallbacks: int = 0  # calls a fallback model made because the version's own failed


@dataclass(frozen=True, kw_only=True)
class PurposeUsage:
    purpose: str
    calls: int
    cost_usd: float | None


@dataclass(frozen=True, kw_only=True)
class Thinking:
    """The turn is under way; adapters show a typing indicator or a placeholder. `turn_id`
    names a turn a restart would come back to (see `Assistant.mark_shown`)."""

    turn_id: int | None = None


@dataclass(frozen=True, kw_only=True)
class TextDelta:
    text: str
    # the assistant's own words before the model's (what it could not read of the files):
    # shown and kept with the answer, but not the model's first token
    aside: bool = False


@dataclass(frozen=True, kw_only=True)
class ToolStarted:
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, kw_only=True)
class ToolFinished:
    call_id: str
    name: str
    ok: bool


@dataclass(frozen=True, kw_only=True)
class Source:
    """A passage of the team's own documents an answer drew on: shown with the answer (each
    surface in its own way) and stored with it, so anyone can check where an answer came from.
    `number` is the mark the answer cites it by ([1], [2] …)."""

    number: int
    collection: str
    document: str  # the file's path inside its collection
    title: str
    heading: str = ""  # the section's headings, outermost first, joined by " > "
    link: str | None = None  # where a reader can open it, when the collection says

    def label(self) -> str:
        """ "Title > Section", the words a surface shows for this source (a heading path that
        starts with the title, as a Markdown file's H1 does, does not say it twice)."""
        heading = self.heading
        if heading == self.title or heading.startswith(self.title + " > "):
            heading = heading[len(self.title) + 3 :]
        return f"{self.title} > {heading}" if heading else self.title


@dataclass(frozen=True, kw_only=True)
class Completed:
    message_id: int
    text: str
    usage: TurnUsage
    ttft_ms: float | None
    total_ms: float
    prompt_version: str
    model: str
    sources: tuple[Source, ...] = ()  # the documents the answer cites, in the order numbered


@dataclass(frozen=True, kw_only=True)
class Failed:
    """The turn ended without an answer; `user_message` is fit to show as it is."""

    user_message: str
    retryable: bool
    error_class: str
    partial_text: str = ""
    usage: TurnUsage | None = None  # what the turn spent before it failed, when it got that far
    contract_error: str | None = None  # the reply broke the version's schema, even repaired


@dataclass(frozen=True, kw_only=True)
class Ignored:
    """Nothing to answer (a redelivered event); adapters stay silent."""

    reason: str


@dataclass(frozen=True, kw_only=True)
class ApprovalAsked:
    """A tool that acts on the user's behalf waits for their yes: the surface shows `tool`
    and its `arguments` with Approve and Decline, which only `requester` may press (see
    `Assistant.decide`). No decision within `timeout_s` is a no."""

    approval_id: int
    call_id: str
    tool: str
    arguments: str
    requester: Actor
    timeout_s: float


@dataclass(frozen=True, kw_only=True)
class ApprovalDecided:
    """How an `ApprovalAsked` ended: approved, declined, expired (no answer in time) or
    unasked (nobody could be asked, as in an eval); `decided_by` is `platform:user_id`."""

    approval_id: int
    call_id: str
    tool: str
    decision: str
    decided_by: str | None = None


Event = (
    Thinking
    | TextDelta
    | ToolStarted
    | ToolFinished
    | ApprovalAsked
    | ApprovalDecided
    | Completed
    | Failed
    | Ignored
)
