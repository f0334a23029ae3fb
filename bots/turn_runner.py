"""Where a surface's turns run: each on a task of its own (so the platform is acked at once),
tracked so shutdown can let them finish, and each answered through `deliver` with one fallback
when something outside the engine fails. Slack, Discord and the terminal differ only in how
they read an event and show an answer, never in this."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable
from contextlib import aclosing
from dataclasses import dataclass

from assistant.engine import Accepted, Assistant
from assistant.records import OrphanedTurn
from assistant.turns import Event, Inbound
from bots.streaming import ReplySurface, deliver

log = logging.getLogger(__name__)

SOMETHING_WENT_WRONG = "Sorry, something went wrong while answering. Please try again."


@dataclass(frozen=True, kw_only=True)
class Turn:
    """A question for the assistant, and the surface its answer goes to. The question comes
    as it arrived (`inbound`), already stored (`accepted`, before the platform was acked), or
    left unanswered by a process that stopped (`orphan`)."""

    surface: ReplySurface
    inbound: Inbound | None = None
    accepted: Accepted | None = None
    orphan: OrphanedTurn | None = None


class TurnRunner:
    """Runs the turns of one surface ("slack", named in logs); `interval` spaces the surface's
    updates while an answer streams."""

    def __init__(self, assistant: Assistant, *, surface: str, interval: float) -> None:
        self._assistant = assistant
        self._surface = surface
        self._interval = interval
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, read: Awaitable[Turn | None]) -> None:
        """Read an event (`read`: the turn it asks for, or None) and answer it, on a task of
        its own that `drain` waits for."""
        task = asyncio.create_task(self._read_and_answer(read))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start_turn(self, turn: Turn) -> None:
        """Answer a turn already read, on a task of its own that `drain` waits for."""
        self.start(_ready(turn))

    async def _read_and_answer(self, read: Awaitable[Turn | None]) -> None:
        try:
            turn = await read
        except Exception:
            log.exception("could not read a %s event; it is not answered", self._surface)
            return
        if turn is not None:
            await self.answer(turn)

    async def answer(self, turn: Turn) -> Event | None:
        """Show the turn's answer; returns its last event (None if it failed outside the engine,
        which the user is told, so no restart owes them an answer any more)."""
        owed: list[int] = []

        async def shown(turn_id: int, shown: str | None) -> None:
            owed[:] = [turn_id]
            if shown is not None:
                await self._remember(self._assistant.owed.mark_shown(turn_id, shown))

        try:
            async with aclosing(self._events(turn)) as events:
                last = await deliver(events, turn.surface, interval=self._interval, on_shown=shown)
            for turn_id in owed:  # the user has seen the answer, or why there is none
                await self._remember(self._assistant.owed.settle(turn_id))
            return last
        except Exception:
            log.exception("a %s turn failed outside the engine", self._surface)
            await turn.surface.fail(SOMETHING_WENT_WRONG, "")
            for turn_id in owed:
                await self._remember(self._assistant.owed.settle(turn_id))
            return None
        finally:
            await turn.surface.close()

    def _events(self, turn: Turn) -> AsyncGenerator[Event, None]:
        if turn.accepted is not None:
            return self._assistant.answer(turn.accepted)
        if turn.orphan is not None:
            return self._assistant.resume(turn.orphan)
        assert turn.inbound is not None
        return self._assistant.respond(turn.inbound)

    async def _remember(self, write: Awaitable[None]) -> None:
        """Bookkeeping for a restart: if the store refuses it, the answer still goes on."""
        try:
            await write
        except Exception:
            log.exception("could not note an owed %s answer for a restart", self._surface)

    async def idle(self) -> None:
        """Wait until every turn under way has been answered (tests and benchmarks)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def drain(self, *, grace: float) -> None:
        """Let the turns under way finish, including ones that start meanwhile, for `grace`
        seconds; then cancel the rest, each of which tells its user it was interrupted."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._tasks and loop.time() < deadline:
            await asyncio.wait(set(self._tasks), timeout=deadline - loop.time())
        late = set(self._tasks)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)


async def _ready(turn: Turn) -> Turn:
    return turn
