"""The terminal chat: the same engine as Slack and Discord, rendered to a console."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from rich.console import Console

from assistant.engine import Assistant
from assistant.turns import (
    Actor,
    Completed,
    ConversationRef,
    Failed,
    Inbound,
    TextDelta,
    ToolFinished,
    ToolStarted,
)

HELP = "Commands: /cost (tokens, cost and latency of the last turn), /help, /quit"


def describe(done: Completed) -> str:
    """One line of figures for a finished turn."""
    usage = done.usage
    cost = f"${usage.cost_usd:.6f}" if usage.cost_usd is not None else "unpriced"
    if usage.unpriced_models:
        cost += f" (no price for {', '.join(usage.unpriced_models)})"
    ttft = f"{done.ttft_ms:.0f} ms" if done.ttft_ms is not None else "n/a"
    return (
        f"{usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens "
        f"({usage.cached_tokens} cached) in {usage.calls} call(s), {cost}; "
        f"first token {ttft}, total {done.total_ms:.0f} ms; {done.prompt_version} on {done.model}"
    )


class TerminalChat:
    def __init__(
        self,
        assistant: Assistant,
        *,
        ref: ConversationRef,
        actor: Actor,
        console: Console,
        show_cost: bool = False,
        read_line: Callable[[], str] = lambda: input("you> "),
    ) -> None:
        self._assistant = assistant
        self._ref = ref
        self._actor = actor
        self._console = console
        self._show_cost = show_cost
        self._read_line = read_line
        self._last: Completed | None = None

    async def run(self) -> None:
        previous = await self._assistant.history_length(self._ref)
        where = f"conversation '{self._ref.thread}'"
        opening = f"Resuming {where} ({previous} messages)." if previous else f"New {where}."
        self._console.print(f"{opening} {HELP}", style="dim", highlight=False)
        while True:
            try:
                line = (await asyncio.to_thread(self._read_line)).strip()
            except (EOFError, KeyboardInterrupt):
                self._console.print()
                return
            if not line:
                continue
            if line in ("/quit", "/exit"):
                return
            if not await self._command(line):
                await self._turn(line)

    async def _command(self, line: str) -> bool:
        if line == "/help":
            self._console.print(HELP, style="dim", highlight=False)
        elif line == "/cost":
            figures = describe(self._last) if self._last else "No turn yet in this session."
            self._console.print(figures, style="cyan", highlight=False)
        elif line.startswith("/"):
            self._console.print(
                f"Unknown command {line.split()[0]}. {HELP}", style="yellow", markup=False
            )
        else:
            return False
        return True

    async def _turn(self, text: str) -> None:
        inbound = Inbound(ref=self._ref, actor=self._actor, text=text)
        out = self._console
        out.print("assistant> ", style="bold green", end="")
        line_open = True  # something is on the current line; a tool line must start afresh
        async for event in self._assistant.respond(inbound):
            if isinstance(event, TextDelta):
                text = event.text if line_open else event.text.lstrip("\n")
                out.print(text, end="", markup=False, highlight=False)
                line_open = line_open or bool(text)
            elif isinstance(event, ToolStarted | ToolFinished):
                line = _tool_line(event)
                if line:
                    out.print(("\n" if line_open else "") + line, style="dim", markup=False)
                    line_open = False
            elif isinstance(event, Completed):
                self._last = event
                out.print()
                if self._show_cost:
                    out.print(describe(event), style="cyan", highlight=False)
            elif isinstance(event, Failed):
                out.print(f"\n! {event.user_message}", style="bold red", highlight=False)


def _tool_line(event: ToolStarted | ToolFinished) -> str:
    if isinstance(event, ToolStarted):
        return f"  [{event.name} {event.arguments}]"
    return "" if event.ok else f"  [{event.name} failed]"
