"""The loop every chat adapter runs over a turn's events, so an adapter is only translation.

The model's stream is never held up by the platform: text is gathered as it arrives, and the
surface is shown the latest text at most once per interval, on a task of its own. A slow or
rate-limited platform call then costs fewer, larger updates, never a stalled model stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Protocol

from assistant.turns import (
    ApprovalAsked,
    ApprovalDecided,
    Completed,
    Event,
    Failed,
    Ignored,
    Source,
    TextDelta,
    Thinking,
    ToolFinished,
    ToolStarted,
)
from bots.render import close_fences

log = logging.getLogger(__name__)

EMPTY_ANSWER = "(The model returned an empty answer. Please rephrase or try again.)"
INTERRUPTED = "The assistant was restarted while answering. Please ask again."
RESUMING = "The assistant is restarting; it will answer this as soon as it is back."
_LAST_WORDS_SECONDS = 5.0  # how long a cancelled turn may take to say it was interrupted


class ReplySurface(Protocol):
    """Where one answer is shown: a Slack thread, a Discord channel, a terminal.

    `complete` and `fail` should not raise: they are the user's last word on the turn, so a
    surface falls back to whatever still works on its platform.
    """

    async def begin(self) -> None:
        """The turn has started: show a placeholder, a status or a typing indicator."""

    async def progress(self, text: str) -> None:
        """The answer so far (called at most once per interval, never concurrently)."""

    async def tool_started(self, name: str, arguments: str) -> None:
        """The model asked for a tool; the answer continues after it."""

    async def tool_failed(self, name: str) -> None:
        """A tool failed; the model answers without it, and the user should know."""

    async def ask_approval(self, asked: ApprovalAsked) -> None:
        """A tool that acts on the user's behalf waits for their yes: show what it would do,
        with Approve and Decline that reach `Assistant.decide` (which counts only the
        requester's click). Should not raise: an ask nobody sees ends as a no at its time."""

    async def approval_decided(self, decided: ApprovalDecided) -> None:
        """Show how the ask ended (approved, declined, no answer), in place of its buttons."""

    async def complete(self, text: str, message_id: int, sources: Sequence[Source] = ()) -> None:
        """The whole answer; `message_id` is what feedback is recorded against. `sources` are
        what the answer cites ([1], [2] …): shown after it, on its last message, so a reader
        can check where it came from; none, and no sources block is shown."""

    async def fail(self, message: str, partial: str) -> None:
        """The turn failed: show `message`, after whatever of the answer was shown."""

    async def close(self) -> None:
        """The turn is over, however it ended: let go of what is still held (a typing
        indicator). Called once, after `complete` or `fail` if either came."""

    def shown_id(self) -> str | None:
        """The platform's id of the message showing the answer so far, once there is one: a
        restart closes it if the answer is cut short."""


# (turn id, what shows the answer or None): a turn a restart would return to has begun
OnShown = Callable[[int, str | None], Awaitable[None]]


def failure_text(message: str, partial: str) -> str:
    """What a failed turn leaves in a chat: the partial answer (its code block closed, so the
    warning is not swallowed by it), then the warning."""
    note = f"⚠️ {message}"
    return f"{close_fences(partial.rstrip())}\n\n{note}" if partial.strip() else note


class ChatToolNotes:
    """What chat surfaces share about tools: their use is not shown (the answer says what was
    found), but a tool that failed is named under the answer."""

    def __init__(self) -> None:
        self._failed_tools: list[str] = []

    async def tool_started(self, name: str, arguments: str) -> None:
        return None

    async def tool_failed(self, name: str) -> None:
        self._failed_tools.append(name)

    def with_tool_notes(self, text: str) -> str:
        if not self._failed_tools:
            return text
        names = ", ".join(dict.fromkeys(self._failed_tools))
        return f"{text}\n\n_⚠️ {names} failed; this answer was made without it._"


class _Pump:
    """Shows the latest text on the surface, at most once per interval."""

    def __init__(
        self,
        surface: ReplySurface,
        interval: float,
        after_show: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._surface = surface
        self._interval = interval
        self._after_show = after_show
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
            try:
                await self._show(self.text)
            finally:
                self._busy = False
            if self._closed:
                return
            await asyncio.sleep(self._interval)

    async def _show(self, text: str) -> None:
        try:
            await self._surface.progress(text)
            if self._after_show is not None:
                await self._after_show()
        except Exception:  # a preview that failed is not the answer: the next one may work
            log.exception("showing a partial answer failed; the final answer will follow")
        self._shown = text

    async def close(self) -> None:
        """Stop, letting a platform call under way finish so the surface's state stays whole."""
        self._closed = True
        task, self._task = self._task, None
        if task is None:
            return
        if not self._busy:
            task.cancel()
        with suppress(asyncio.CancelledError):
            await task

    async def pause(self) -> None:
        """Show everything gathered so far now (something else is shown after it), then go on
        pumping with the next text."""
        await self.close()
        if self.text != self._shown:
            await self._show(self.text)
        self._closed = False


async def deliver(
    events: AsyncIterator[Event],
    surface: ReplySurface,
    *,
    interval: float = 1.0,
    on_shown: OnShown | None = None,
) -> Event | None:
    """Render a turn on `surface`; returns the last event (`Completed`, `Failed`, `Ignored`).

    Cancelled mid-turn (a shutdown that outlasted its grace period), it tells the user the
    answer was interrupted before it lets the cancellation through. `on_shown` hears of a
    turn a restart would return to, and of what shows its answer.
    """
    return await _Delivery(surface, interval, on_shown).run(events)


class _Delivery:
    """One turn rendered on one surface."""

    def __init__(self, surface: ReplySurface, interval: float, on_shown: OnShown | None) -> None:
        self._surface = surface
        self._pump = _Pump(surface, interval, after_show=self._report)
        self._on_shown = on_shown
        self._started = False
        self._turn_id: int | None = None
        self._reported: str | None = None
        self._not_approved: set[str] = set()  # calls whose ask was declined or unanswered

    async def run(self, events: AsyncIterator[Event]) -> Event | None:
        try:
            async for event in events:
                if await self._show(event):
                    return event
        except asyncio.CancelledError:
            await self._pump.close()
            if self._started:
                text = RESUMING if self._turn_id is not None else INTERRUPTED
                with suppress(Exception):
                    failing = self._surface.fail(text, self._pump.text)
                    await asyncio.wait_for(failing, _LAST_WORDS_SECONDS)
            raise
        finally:
            await self._pump.close()
        return None

    async def _show(self, event: Event) -> bool:
        """Show one event; True when it ends the turn."""
        surface, pump = self._surface, self._pump
        if isinstance(event, Thinking):
            self._started, self._turn_id = True, event.turn_id
            await surface.begin()
            await self._report(always=True)
        elif isinstance(event, TextDelta):
            pump.add(event.text)
        elif isinstance(event, ToolStarted):
            await pump.pause()
            await self._report()
            await surface.tool_started(event.name, event.arguments)
        elif isinstance(event, ToolFinished) and not event.ok:
            if event.call_id not in self._not_approved:  # the ask already said it did not run
                await surface.tool_failed(event.name)
        elif isinstance(event, ApprovalAsked):
            await pump.pause()
            await self._report()
            await surface.ask_approval(event)
        elif isinstance(event, ApprovalDecided):
            if event.decision != "approved":
                self._not_approved.add(event.call_id)
            await surface.approval_decided(event)
        elif isinstance(event, Completed):
            await pump.close()
            text = event.text if event.text.strip() else EMPTY_ANSWER
            await surface.complete(text, event.message_id, sources=event.sources)
        elif isinstance(event, Failed):
            await pump.close()
            await surface.fail(event.user_message, pump.text or event.partial_text)
        return isinstance(event, Completed | Failed | Ignored)

    async def _report(self, *, always: bool = False) -> None:
        """Tell `on_shown` what shows the owed answer, when that is new."""
        if self._on_shown is None or self._turn_id is None:
            return
        shown = self._surface.shown_id()
        if always or (shown is not None and shown != self._reported):
            self._reported = shown
            await self._on_shown(self._turn_id, shown)
