"""Answers a stopped process owed: found, taken over and finished by a running one.

A surface that can be returned to (Slack, Discord) stores where each answer goes with the user's
message. When the process answering it stops (killed, or shut down before it could finish), a
running process adopts the turn: it closes whatever the cut answer left open (a stream still
"streaming", a half-edited message), then answers again while the question is fresh, or says
that the answer was lost when it is not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import timedelta
from typing import Protocol

from assistant.engine import Assistant
from assistant.records import OrphanedTurn
from assistant.store.tables import utcnow
from bots.streaming import ReplySurface
from bots.turn_runner import Turn, TurnRunner

log = logging.getLogger(__name__)

FRESH_FOR = timedelta(minutes=10)  # older questions are not answered late, but told
ANSWERING_AGAIN = "⚠️ The assistant was restarted while answering; the answer follows."
LOST = (
    "The assistant was restarted before it could answer this message, and it is too late to "
    "answer it now. Please ask again."
)


class Recoverable(Protocol):
    """What a surface lends recovery: its name, its turn runner, and how to answer a place."""

    surface: str

    @property
    def runner(self) -> TurnRunner:
        """Where the surface's turns run (a resumed one too)."""

    def reply_for(self, place: str) -> ReplySurface:
        """A reply surface for a stored place (the JSON the surface wrote)."""

    async def close_cut_answer(self, place: str, shown: str | None, text: str) -> bool:
        """End what a cut answer left open at `shown` (None: never noted; the surface may
        look for it), saying `text`; False when nothing was left unfinished. Never raises."""


class TurnRecovery:
    """Sweeps one surface's orphaned turns; exactly one process adopts each."""

    def __init__(
        self, assistant: Assistant, surface: Recoverable, *, fresh_for: timedelta = FRESH_FOR
    ) -> None:
        self._assistant = assistant
        self._surface = surface
        self._fresh_for = fresh_for

    async def sweep(self) -> int:
        """Adopt and finish what stopped processes left; returns how many turns were taken."""
        taken = 0
        for orphan in await self._assistant.owed.orphans(self._surface.surface):
            if await self._assistant.owed.adopt(orphan):
                taken += 1
                await self._finish(orphan)
        if taken:
            log.warning("took over %d unfinished %s answers", taken, self._surface.surface)
        return taken

    async def _finish(self, orphan: OrphanedTurn) -> None:
        try:
            reply = self._surface.reply_for(orphan.place)
        except Exception:  # a place this version cannot read: nothing to answer into
            log.exception("an unfinished turn's place cannot be read; it is dropped")
            await self._assistant.owed.settle(orphan.message_id)
            return
        fresh = utcnow() - orphan.created_at < self._fresh_for
        stored = orphan.reply_text if orphan.reply_id is not None else None
        note = ANSWERING_AGAIN if fresh or stored is not None else f"⚠️ {LOST}"
        cut = await self._surface.close_cut_answer(orphan.place, orphan.shown, note)
        if stored is not None and orphan.shown is not None and not cut:
            stored = None  # the whole answer was shown; only noting so was cut short
        elif stored is None and fresh:
            self._surface.runner.start_turn(Turn(surface=reply, orphan=orphan))
            return
        elif stored is not None and orphan.reply_id is not None:  # showing it was cut short
            sources = await self._assistant.sources_of(orphan.reply_id)
            await reply.complete(stored, orphan.reply_id, sources)
        elif not cut:
            await reply.fail(LOST, "")
        await reply.close()
        await self._assistant.owed.settle(orphan.message_id)


class KeepAlive:
    """Says this process is alive every beat, and sweeps for orphaned turns. The two run on
    tasks of their own: a sweep waits on Slack (closing a cut answer), and a heartbeat held up
    behind it would make this live process look dead, its turns adopted and answered twice.
    `stop` lets a sweep under way finish, since an adopted turn must not be left half done."""

    def __init__(self, assistant: Assistant, recoveries: list[TurnRecovery]) -> None:
        self._assistant = assistant
        self._recoveries = recoveries
        self._no_more_sweeps = asyncio.Event()
        self._no_more_beats = asyncio.Event()
        self._beating: asyncio.Task[None] | None = None
        self._sweeping: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start beating and sweeping; the caller has beaten once already, so no other process
        mistakes this one's first turns for orphans."""
        owed = self._assistant.owed
        self._beating = asyncio.create_task(self._every_beat(owed.beat, self._no_more_beats))
        self._sweeping = asyncio.create_task(self._every_beat(self._sweep, self._no_more_sweeps))

    async def stop(self, *, grace: float = 30.0) -> None:
        """The sweep under way finishes first, while the heartbeat goes on."""
        for until, task in (
            (self._no_more_sweeps, self._sweeping),
            (self._no_more_beats, self._beating),
        ):
            until.set()
            if task is not None:
                with suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), grace)
                task.cancel()

    async def _sweep(self) -> None:
        for recovery in self._recoveries:
            await recovery.sweep()

    async def _every_beat(
        self, work: Callable[[], Awaitable[object]], until: asyncio.Event
    ) -> None:
        while not until.is_set():
            try:
                await work()
            except Exception:
                log.exception("the heartbeat or the recovery sweep failed; trying again")
            with suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), self._assistant.owed.beat_seconds)
