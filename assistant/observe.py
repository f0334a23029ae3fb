"""What a turn tells the process's instruments (traces, metrics) as it happens.

The engine reports; it never knows who listens. An `Observer` hands out one `TurnWatch` per
turn, which hears of each model call as its record is made (the very record the store keeps,
so traces, metrics, `/cost` and reports show the same figures), each tool call, each knowledge
search, and the turn's end. Calls made outside a turn (an eval's judge, a knowledge sync's
embeddings) are reported with `Observer.call`. With nobody listening, `NO_OBSERVER` does
nothing and costs a method call.

Times are wall-clock nanoseconds (`time.time_ns()`), as tracing backends take them; a call's
record says how long it took, and it is reported as it ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from assistant.records import CallRecord
from assistant.turns import ConversationRef, TurnUsage

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TurnStarted:
    started_ns: int  # when the message arrived (wall clock), not when answering began
    surface: str  # the conversation's platform: slack, discord, terminal, eval …
    conversation: ConversationRef
    prompt_version: str  # name@version
    model: str  # the model the version asks for
    message_id: int  # the user's stored message
    text: str  # the user's message: instruments keep it only when told to capture content


@dataclass(frozen=True, kw_only=True)
class TurnEnded:
    outcome: str  # completed | failed | abandoned (the consumer went away)
    error_class: str | None
    usage: TurnUsage
    ttft_ms: float | None
    total_ms: float
    text: str  # what the user was shown of the answer


@dataclass(frozen=True, kw_only=True)
class ToolRun:
    name: str
    call_id: str
    ok: bool
    started_ns: int
    ended_ns: int
    source: str = "built-in"  # built-in | mcp:SERVER


@dataclass(frozen=True, kw_only=True)
class Retrieval:
    """One knowledge search a turn made."""

    query: str
    collections: tuple[str, ...]
    hits: int
    mode: str  # hybrid | keywords
    started_ns: int
    ended_ns: int


class TurnWatch(Protocol):
    def call(self, record: CallRecord) -> None:
        """A model call of the turn ended (reply, summary fold, repair, fallback, embedding)."""

    def tool(self, run: ToolRun) -> None: ...

    def retrieval(self, search: Retrieval) -> None: ...

    def end(self, ended: TurnEnded) -> None:
        """The turn is over, however it ended; called once."""


class Observer(Protocol):
    def turn(self, started: TurnStarted) -> TurnWatch: ...

    def call(self, record: CallRecord, *, surface: str) -> None:
        """A model call made outside any turn: an eval's judge, a sync's embeddings."""


class _Unwatched:
    def call(self, record: CallRecord) -> None:
        return None

    def tool(self, run: ToolRun) -> None:
        return None

    def retrieval(self, search: Retrieval) -> None:
        return None

    def end(self, ended: TurnEnded) -> None:
        return None


UNWATCHED: TurnWatch = _Unwatched()


class _Nobody:
    def turn(self, started: TurnStarted) -> TurnWatch:
        return UNWATCHED

    def call(self, record: CallRecord, *, surface: str) -> None:
        return None


NO_OBSERVER: Observer = _Nobody()


def tell_calls(observer: Observer, calls: Iterable[CallRecord], *, surface: str) -> None:
    """Calls made outside any turn, told to `observer`; an instrument that fails is logged,
    never raised: it must not fail what it watches."""
    for call in calls:
        try:
            observer.call(call, surface=surface)
        except Exception:
            log.exception("an instrument failed to record a call")


class Guarded:
    """A watch whose failures are logged, never raised: an instrument must not break a turn."""

    def __init__(self, watch: TurnWatch) -> None:
        self._watch = watch

    def call(self, record: CallRecord) -> None:
        self._safely(self._watch.call, record)

    def tool(self, run: ToolRun) -> None:
        self._safely(self._watch.tool, run)

    def retrieval(self, search: Retrieval) -> None:
        self._safely(self._watch.retrieval, search)

    def end(self, ended: TurnEnded) -> None:
        self._safely(self._watch.end, ended)

    @staticmethod
    def _safely(report: Callable[[Any], None], value: object) -> None:
        try:
            report(value)
        except Exception:
            log.exception("an instrument failed to record a turn's %s", type(value).__name__)


class Observers:
    """Several instruments as one (tracing and metrics both listening)."""

    def __init__(self, *observers: Observer) -> None:
        self._observers = observers

    def turn(self, started: TurnStarted) -> TurnWatch:
        """Each instrument's watch, guarded on its own: one that fails leaves the others
        whole (metrics' turns in flight must still come down when tracing breaks)."""
        watches = []
        for observer in self._observers:
            try:
                watches.append(Guarded(observer.turn(started)))
            except Exception:
                log.exception("an instrument failed to start watching a turn")
        return _Watches(tuple(watches))

    def call(self, record: CallRecord, *, surface: str) -> None:
        for observer in self._observers:
            tell_calls(observer, (record,), surface=surface)


class _Watches:
    def __init__(self, watches: tuple[TurnWatch, ...]) -> None:
        self._watches = watches

    def call(self, record: CallRecord) -> None:
        for watch in self._watches:
            watch.call(record)

    def tool(self, run: ToolRun) -> None:
        for watch in self._watches:
            watch.tool(run)

    def retrieval(self, search: Retrieval) -> None:
        for watch in self._watches:
            watch.retrieval(search)

    def end(self, ended: TurnEnded) -> None:
        for watch in self._watches:
            watch.end(ended)
