"""The terminal chat: the same engine as Slack and Discord, rendered to a console."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console

from assistant.turns import (
    ESTIMATE_MARK,
    Actor,
    ApprovalAsked,
    ApprovalDecided,
    Completed,
    ConversationRef,
    Inbound,
    Source,
    TurnUsage,
)
from bots.render import SOURCES_TITLE, source_lines

# The engine, the admin commands and the turn runner load while the prompt waits for a line.
if TYPE_CHECKING:
    from assistant.admin.commands import AdminCommands
    from assistant.engine import Assistant
    from bots.turn_runner import TurnRunner

HELP = (
    "Commands: /cost (tokens, cost and latency of the last turn), /good and /bad (rate the "
    "last answer), /new [NAME] (another conversation), /list, /prompt … /report … /eval run … "
    "/knowledge … /budget … "
    "(the admin commands), /help, /quit"
)
ADMIN_WORDS = ("prompt", "report", "eval", "knowledge", "budget")
TERMINAL_ASK_LIMIT = 8000  # a tool's ask on a console: long arguments are cut, not scrolled


ESTIMATE_LEGEND = f"{ESTIMATE_MARK} estimated: the model server sent no usage"


def describe(done: Completed) -> str:
    """One line of figures for a finished turn. When some call's tokens were our tokenizer's
    estimate, every token figure and the cost priced from them are marked `~`, with a legend:
    the totals include a guess, so none of them is what the provider billed."""
    usage = done.usage
    mark = ESTIMATE_MARK if usage.estimated else ""
    cost = f"{mark}${usage.cost_usd:.6f}" if usage.cost_usd is not None else "unpriced"
    if usage.unpriced_models:
        cost += f" (no price for {', '.join(usage.unpriced_models)})"
    ttft = f"{done.ttft_ms:.0f} ms" if done.ttft_ms is not None else "n/a"
    details = f"{mark}{usage.cached_tokens} cached"
    if usage.reasoning_tokens:
        details += f", {mark}{usage.reasoning_tokens} reasoning"
    line = (
        f"{mark}{usage.prompt_tokens} prompt + {mark}{usage.completion_tokens} completion tokens "
        f"({details}) in {usage.calls} call(s){_kinds(usage, mark)}, {cost}; "
        f"first token {ttft}, total {done.total_ms:.0f} ms; {done.prompt_version} on {done.model}"
    )
    return f"{line} ({ESTIMATE_LEGEND})" if usage.estimated else line


def _kinds(usage: TurnUsage, mark: str) -> str:
    """What the calls were for, when not all were replies: every call a turn made (a summary
    fold, a contract repair, a search's embedding, a fallback) is in its cost, and said so."""
    kinds = usage.purposes
    if not usage.fallbacks and all(kind.purpose == "reply" for kind in kinds):
        return ""
    parts = [
        f"{kind.calls} {kind.purpose} "
        + (f"{mark}${kind.cost_usd:.6f}" if kind.cost_usd is not None else "unpriced")
        for kind in kinds
    ]
    if usage.fallbacks:
        parts.append(f"{usage.fallbacks} by a fallback model")
    return f" ({', '.join(parts)})"


class HeldLogs(logging.Handler):
    """Prints log lines on the console between answers: a retry's warning printed while an
    answer streams would land in the middle of its text."""

    def __init__(self, console: Console, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self._console = console
        self._held: list[str] = []
        self._holding = False

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        if self._holding:
            self._held.append(line)
        else:
            self._print(line)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold log lines while the body runs (an answer streams); print them after it."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            held, self._held = self._held, []
            for line in held:
                self._print(line)

    def _print(self, line: str) -> None:
        self._console.print(line, style="yellow", markup=False, highlight=False)


@dataclass(frozen=True, kw_only=True)
class Opening:
    """An engine still opening when the chat starts. The greeting counts with `history_length`
    (the store is open); `start` begins once the prompt shows, and a line that needs the engine
    waits for it. A failure of `start` ends the chat with its error, also at /quit or EOF."""

    history_length: Callable[[ConversationRef], Awaitable[int]]
    start: Callable[[], Awaitable[tuple[Assistant, AdminCommands | None]]]


class TerminalChat:
    """One conversation in a console; its turns run inline, one line at a time."""

    def __init__(
        self,
        assistant: Assistant | Opening,
        *,
        ref: ConversationRef,
        actor: Actor,
        console: Console,
        show_cost: bool = False,
        read_line: Callable[[], str] = lambda: input("you> "),
        logs: HeldLogs | None = None,
        commands: AdminCommands | None = None,
    ) -> None:
        self._opening = assistant if isinstance(assistant, Opening) else None
        self._history_length = assistant.history_length
        self._opened = None if isinstance(assistant, Opening) else (assistant, commands)
        self._ready: asyncio.Future[tuple[Assistant, AdminCommands | None]] | None = None
        self._ref = ref
        self._actor = actor
        self._console = console
        self._show_cost = show_cost
        self._read_line = read_line
        self._turns: TurnRunner | None = None
        self._last: Completed | None = None
        self._logs = logs  # the process's log handler, held while an answer prints
        self._typed: asyncio.Future[str] | None = None  # a line being read, not yet taken

    async def run(self) -> None:
        await self._greet()
        while True:
            try:
                line = (await self._next_line()).strip()
            except (EOFError, KeyboardInterrupt):
                self._console.print()
                await self._engine()  # what went wrong while opening is still said
                return
            if not line:
                continue
            if line in ("/quit", "/exit"):
                await self._engine()
                return
            if not await self._command(line):
                await self._turn(line)

    async def _next_line(self) -> str:
        """The next line typed, read on a thread of its own (a daemon: a chat ending while the
        prompt waits must not wait for a line). The engine starts opening once the prompt
        shows; should that fail first, the chat ends with its error then."""
        line = self._reading()
        if self._opened is None:
            ready = self._start()
            either: list[asyncio.Future[Any]] = [line, ready]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not line.done() and ready.exception() is not None:
                self._console.print()  # the prompt's line stays as it was; the error goes below
                ready.result()  # raises
        self._typed = None
        return await line

    def _reading(self) -> asyncio.Future[str]:
        """The line being typed: one reader at a time, so a line an approval stopped waiting
        for is the next line the chat reads, never lost to a second reader."""
        if self._typed is None:
            loop = asyncio.get_running_loop()
            self._typed = loop.create_future()
            threading.Thread(target=self._read_into, args=(loop, self._typed), daemon=True).start()
        return self._typed

    async def _approve(self, asked: ApprovalAsked) -> str:
        """y/N for a tool that acts for the user; what the engine made of the answer. No line
        within the ask's time is a no (that line is then read as the next message)."""
        from bots.chat_actions import record_approval

        line = self._reading()
        await asyncio.wait([line], timeout=asked.timeout_s)
        if not line.done() or line.exception() is not None:
            return "No answer in time: it was not run."
        self._typed = None
        yes = line.result().strip().lower() in ("y", "yes")
        assistant, _ = await self._engine()
        return await record_approval(assistant, str(asked.approval_id), self._actor, approve=yes)

    def _read_into(self, loop: asyncio.AbstractEventLoop, line: asyncio.Future[str]) -> None:
        try:
            typed: str | BaseException = self._read_line()
        except BaseException as exc:  # EOFError, KeyboardInterrupt: the chat's to handle
            typed = exc
        loop.call_soon_threadsafe(_settle, line, typed)

    async def _engine(self) -> tuple[Assistant, AdminCommands | None]:
        """The engine and the admin commands, once open (waiting for them the first time)."""
        if self._opened is None:
            self._opened = await self._start()
        return self._opened

    def _start(self) -> asyncio.Future[tuple[Assistant, AdminCommands | None]]:
        if self._ready is None:
            assert self._opening is not None
            self._ready = asyncio.ensure_future(self._opening.start())
        return self._ready

    async def _greet(self) -> None:
        previous = await self._history_length(self._ref)
        where = f"conversation '{self._ref.thread}'"
        opening = f"Resuming {where} ({previous} messages)." if previous else f"New {where}."
        self._console.print(f"{opening} {HELP}", style="dim", highlight=False)

    async def _command(self, line: str) -> bool:
        """Run `line` when it is a command (it starts with /); False when it is a message."""
        if not line.startswith("/"):
            return False
        word, _, rest = line[1:].partition(" ")
        if word == "help":
            self._say(HELP, "dim")
        elif word == "cost":
            self._say(describe(self._last) if self._last else "No turn yet in this session.")
        elif word in ("good", "bad"):
            await self._rate(1 if word == "good" else -1)
        elif word == "new":
            await self._open(rest.strip() or datetime.now(UTC).strftime("%Y-%m-%d-%H%M%S"))
        elif word == "list":
            await self._list()
        elif word in ADMIN_WORDS:
            await self._admin(line[1:])
        else:
            self._say(f"Unknown command /{word[:24]}. {HELP}", "yellow")
        return True

    def _say(self, text: str, style: str = "cyan") -> None:
        self._console.print(text, style=style, markup=False, highlight=False)

    async def _rate(self, vote: int) -> None:
        """A 👍/👎 on the last answer, stored as a button click on Slack or Discord is."""
        if self._last is None:
            self._say("No answer to rate yet in this session.", "yellow")
            return
        from bots.chat_actions import record_vote

        assistant, _ = await self._engine()
        said = await record_vote(
            assistant,
            str(self._last.message_id),
            self._actor,
            vote=vote,
            clicked_in=self._ref.thread,
        )
        self._say(said)

    async def _open(self, name: str) -> None:
        self._ref = replace(self._ref, thread=name[:128])
        self._last = None
        await self._greet()

    async def _list(self) -> None:
        assistant, _ = await self._engine()
        threads = await assistant.threads_in(self._ref)
        for thread, count in threads:
            here = "  (this one)" if thread == self._ref.thread else ""
            self._say(f"  {thread}: {count} messages{here}")
        if not threads:
            self._say("No conversations yet.")

    async def _admin(self, text: str) -> None:
        from assistant.admin.grammar import CommandContext
        from bots.chat_actions import run_admin

        _, commands = await self._engine()
        if commands is None:
            self._say("Admin commands are not available here.", "yellow")
            return
        context = CommandContext(actor=self._actor, surface="cli", ref=self._ref)
        result = await run_admin(commands, text, context)
        self._say(result.text, "cyan" if result.ok else "yellow")

    async def _turn(self, text: str) -> None:
        from bots.turn_runner import Turn, TurnRunner

        if self._turns is None:
            assistant, _ = await self._engine()
            self._turns = TurnRunner(assistant, surface="terminal", interval=0)
        inbound = Inbound(ref=self._ref, actor=self._actor, text=text)
        with self._logs.held() if self._logs else contextlib.nullcontext():
            turn = Turn(inbound=inbound, surface=ConsoleReply(self._console, approve=self._approve))
            last = await self._turns.answer(turn)
        if isinstance(last, Completed):
            self._last = last
            if self._show_cost:
                self._console.print(describe(last), style="cyan", highlight=False)


def _settle(line: asyncio.Future[str], typed: str | BaseException) -> None:
    if line.done():  # the chat ended meanwhile
        return
    if isinstance(typed, BaseException):
        line.set_exception(typed)
    else:
        line.set_result(typed)


class ConsoleReply:
    """A `ReplySurface` on a console: text is printed as it grows, notes on lines of their own."""

    def __init__(
        self, console: Console, *, approve: Callable[[ApprovalAsked], Awaitable[str]]
    ) -> None:
        self._out = console
        self._approve = approve
        self._printed = ""  # the part of the answer already on screen
        self._line_open = False  # something is on the current line; a note starts afresh

    async def begin(self) -> None:
        self._out.print("assistant> ", style="bold green", end="")
        self._line_open = True

    async def progress(self, text: str) -> None:
        if not text.startswith(self._printed):
            return  # only the final text can differ; complete() prints what is missing
        new, self._printed = text[len(self._printed) :], text
        if not self._line_open:
            new = new.lstrip("\n")
        if new:
            self._out.print(new, end="", markup=False, highlight=False)
            self._line_open = True

    async def tool_started(self, name: str, arguments: str) -> None:
        self._note(f"[{name} {arguments}]")

    async def tool_failed(self, name: str) -> None:
        self._note(f"[{name} failed]")

    async def ask_approval(self, asked: ApprovalAsked) -> None:
        from bots.chat_actions import approval_request

        self._note(approval_request(asked, "you", limit=TERMINAL_ASK_LIMIT).replace("\n", "\n  "))
        self._out.print("  Approve? Type y for yes, anything else for no.", style="bold")
        self._note(await self._approve(asked))

    async def approval_decided(self, decided: ApprovalDecided) -> None:
        from bots.chat_actions import approval_outcome

        self._note(approval_outcome(decided, None))

    def _note(self, line: str) -> None:
        self._out.print(("\n" if self._line_open else "") + "  " + line, style="dim", markup=False)
        self._line_open = False

    async def complete(self, text: str, message_id: int, sources: Sequence[Source] = ()) -> None:
        if text.startswith(self._printed):
            await self.progress(text)
        else:  # e.g. a validated structured answer, not streamed: show it whole
            self._out.print(("\n" if self._line_open else "") + text, markup=False, highlight=False)
        self._out.print()
        if sources:
            self._print_sources(sources)

    def _print_sources(self, sources: Sequence[Source]) -> None:
        """Dim, under the answer: where it came from, each link whole so a terminal can open it."""
        self._out.print(f"{SOURCES_TITLE}:", style="dim", markup=False, highlight=False)
        for line in source_lines(sources):
            self._out.print(f"  {line}", style="dim", markup=False, highlight=False)

    async def fail(self, message: str, partial: str) -> None:
        self._out.print(f"\n! {message}", style="bold red", highlight=False, markup=False)

    async def close(self) -> None:
        return None

    def shown_id(self) -> str | None:
        return None  # a terminal turn is never resumed: its user is right there
