"""A limit on each wait for a server, kept with one timer per stream rather than one per chunk.

`asyncio.timeout` around each read schedules and cancels a timer for every chunk: a tenth of
the CPU of reading a stream, at 200 streams at once. Here a wait only notes when it must end;
the one timer, when it fires, looks at the wait under way and either moves itself to that
wait's end or cancels the task, the way `asyncio.timeout` does, so the wait raises
TimeoutError.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class WaitLimit:
    """Bounds each `wait` of one task; `close` when the stream is done."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "WaitLimit needs a task to cancel"
        self._task = task
        self._ends: float | None = None  # when the wait under way runs out
        self._timer: asyncio.TimerHandle | None = None
        self._expired = False

    async def wait(self, awaitable: Awaitable[T], seconds: float) -> T:
        """`awaitable`'s result, or TimeoutError once it has taken `seconds`."""
        ends = self._loop.time() + seconds
        self._ends = ends
        if self._timer is None or self._timer.when() > ends:
            self._arm(ends)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self._expired:
                self._expired = False
                if self._task.uncancel() == 0:  # ours alone: someone else's cancel goes on
                    raise TimeoutError from None
            raise
        finally:
            self._ends = None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, when: float) -> None:
        self.close()
        self._timer = self._loop.call_at(when, self._check)

    def _check(self) -> None:
        self._timer = None
        if self._ends is None:  # between waits: the next wait arms it again
            return
        if self._loop.time() < self._ends:
            self._arm(self._ends)
            return
        self._expired = True
        self._task.cancel()
