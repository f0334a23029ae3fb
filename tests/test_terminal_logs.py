"""The terminal chat keeps its answers whole: a warning logged while an answer streams (a
retried model call) is printed after the answer, not in the middle of its text."""

from __future__ import annotations

import io
import logging

from rich.console import Console

from assistant.testing import CallTools, Fail, Reply
from assistant.turns import Actor, ConversationRef
from bots.terminal import HeldLogs, TerminalChat


async def test_a_warning_during_an_answer_is_printed_after_it(make_assistant, fake_llm):
    assistant = await make_assistant()
    fake_llm.script(
        CallTools(text="Let me check. ", calls=(("calculator", {"expression": "6*14"}),)),
        Fail(status=503, message="overloaded"),  # the second round is retried: a warning
        Reply(text="It is 84."),
    )
    output = io.StringIO()
    console = Console(file=output, width=10_000, color_system=None)
    logs = HeldLogs(console)
    logging.getLogger().addHandler(logs)
    lines = iter(["what is 6*14?"])

    def read_line() -> str:
        for line in lines:
            return line
        raise EOFError

    try:
        await TerminalChat(
            assistant,
            ref=ConversationRef(platform="terminal", channel="me", thread="logs"),
            actor=Actor(platform="terminal", user_id="me"),
            console=console,
            read_line=read_line,
            logs=logs,
        ).run()
    finally:
        logging.getLogger().removeHandler(logs)
    text = output.getvalue()
    answer = text.index("assistant> Let me check.")
    warning = text.index("WARNING assistant.llm: model call attempt 1 failed")
    assert answer < text.index("It is 84.") < warning
