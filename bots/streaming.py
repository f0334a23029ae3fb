"""The loop every chat adapter runs over a turn's events, so an adapter is only translation.

The model's stream is never held up by the platform: text is gathered as it arrives, and the
surface is shown the latest text at most once per interval, on a task of its own. A slow or
rate-limited platform call then costs fewer, larger updates, never a stalled model stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Protocol

from assistant.turns import (
    Completed,
    Event,
    Failed,
    Ignored,
    TextDelta,
    Thinking,
    ToolFinished,
    ToolStarted,
)

log = logging.getLogger(__name__)


class ReplySurface(Protocol):
    """Where one answer is shown: a Slack thread, a Discord channel, a terminal."""

    async def begin(self) -> None:
        """The turn has started: show a placeholder, a status or a typing indicator."""

    async def progress(self, text: str) -> None:
        """The answer so far (called at most once per interval, never concurrently)."""

    async def complete(self, text: str, message_id: int) -> None:
        """The whole answer; `message_id` is what feedback is recorded against."""

    async def fail(self, message: str, partial: str) -> None:
        """The turn failed: show `message`, after whatever of the answer was shown."""

    async def note(self, line: str) -> None:
        """A side note between parts of the answer: a tool in use, a tool that failed."""


class _Pump:
    """Shows the latest text on the surface, at most once per interval."""

    def __init__(self, surface: ReplySurface, interval: float) -> None:
        self._surface = surface
        self._interval = interval
        self._parts: list[str] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        self._closed = False
        self._shown = ""

    def add(self, text: str) -> None:
        self._parts.append(text)
        self._changed.set()
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run())

    @property
    def text(self) -> str:
        return "".join(self._parts)

    async def _run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            self._busy = True
            text = self.text
            try:
                await self._surface.progress(text)
            finally:
                self._busy = False
            self._shown = text
            if self._closed:
                return
            await asyncio.sleep(self._interval)

    async def close(self) -> None:
        """Stop, letting a platform call under way finish so the surface's state stays whole."""
        self._closed = True
        task, self._task = self._task, None
        if task is None:
            return
        if not self._busy:
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("showing a partial answer failed; the final answer will follow")

    async def pause(self) -> None:
        """Show everything gathered so far now (something else is shown after it), then go on
        pumping with the next text."""
        await self.close()
        if self.text != self._shown:
            self._shown = self.text
            await self._surface.progress(self._shown)
        self._closed = False


async def deliver(
    events: AsyncIterator[Event], surface: ReplySurface, *, interval: float = 1.0
) -> Event | None:
    """Render a turn on `surface`; returns the last event (`Completed`, `Failed`, `Ignored`)."""
    pump = _Pump(surface, interval)
    try:
        async for event in events:
            if isinstance(event, Thinking):
                await surface.begin()
            elif isinstance(event, TextDelta):
                pump.add(event.text)
            elif isinstance(event, ToolStarted | ToolFinished):
                line = _tool_note(event)
                if line:
                    await pump.pause()
                    await surface.note(line)
            elif isinstance(event, Completed):
                await pump.close()
                await surface.complete(event.text, event.message_id)
                return event
            elif isinstance(event, Failed):
                await pump.close()
                await surface.fail(event.user_message, pump.text or event.partial_text)
                return event
            elif isinstance(event, Ignored):
                return event
    finally:
        with suppress(Exception):
            await pump.close()
    return None


def _tool_note(event: ToolStarted | ToolFinished) -> str:
    if isinstance(event, ToolStarted):
        return f"[{event.name} {event.arguments}]"
    return "" if event.ok else f"[{event.name} failed]"
