"""Where a surface's turns run: each on a task of its own (so the platform is acked at once),
tracked so shutdown can let them finish, and each answered through `deliver` with one fallback
when something outside the engine fails. Slack, Discord and the terminal differ only in how
they read an event and show an answer, never in this."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from contextlib import aclosing
from dataclasses import dataclass

from assistant.engine import Assistant
from assistant.turns import Event, Inbound
from bots.streaming import ReplySurface, deliver

log = logging.getLogger(__name__)

SOMETHING_WENT_WRONG = "Sorry, something went wrong while answering. Please try again."


@dataclass(frozen=True, kw_only=True)
class Turn:
    """A question for the assistant, and the surface its answer goes to."""

    inbound: Inbound
    surface: ReplySurface


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
        which the user is told)."""
        try:
            async with aclosing(self._assistant.respond(turn.inbound)) as events:
                return await deliver(events, turn.surface, interval=self._interval)
        except Exception:
            log.exception("a %s turn failed outside the engine", self._surface)
            await turn.surface.fail(SOMETHING_WENT_WRONG, "")
            return None
        finally:
            await turn.surface.close()

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
