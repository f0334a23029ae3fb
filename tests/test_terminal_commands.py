"""The terminal chat as a full surface: 👍/👎 on the last answer, other conversations, and
the admin commands in the same words as Slack and Discord."""

from __future__ import annotations

import io

from rich.console import Console

from assistant.admin.commands import AdminCommands
from assistant.testing import Reply
from assistant.turns import Actor, ConversationRef
from bots.terminal import TerminalChat

ME = Actor(platform="terminal", user_id="me", display_name="me")
HERE = ConversationRef(platform="terminal", workspace="local", channel="me", thread="default")


async def chat(assistant, store, lines: list[str]) -> str:
    """Type `lines` into a terminal chat; what it printed."""
    output = io.StringIO()
    typed = iter(lines)

    def read_line() -> str:
        for line in typed:
            return line
        raise EOFError

    await TerminalChat(
        assistant,
        ref=HERE,
        actor=ME,
        console=Console(file=output, width=10_000, color_system=None),
        read_line=read_line,
        commands=AdminCommands(prompts=store.prompts, versions=assistant.versions, admins=[]),
    ).run()
    return output.getvalue()


async def test_good_and_bad_rate_the_last_answer(make_assistant, fake_llm, store):
    assistant = await make_assistant()
    fake_llm.script(Reply(text="An answer."))
    printed = await chat(assistant, store, ["/good", "hello", "/good", "/bad"])
    assert "No answer to rate yet" in printed
    assert "Thanks, your 👍 is recorded." in printed and "Thanks, your 👎 is recorded." in printed
    conversation = await store.find_conversation(HERE)
    [answer] = [m for m in await store.messages(conversation.id) if m.role == "assistant"]
    [vote] = await store.votes.of(answer.id)
    assert (vote.user_id, vote.vote) == ("terminal:me", -1)  # the later vote stands


async def test_new_and_list_keep_conversations_apart(make_assistant, fake_llm, store):
    assistant = await make_assistant()
    printed = await chat(assistant, store, ["first", "/new side", "second", "third", "/list"])
    assert "New conversation 'side'." in printed
    assert "  side: 4 messages  (this one)" in printed
    assert "  default: 2 messages" in printed


async def test_admin_commands_answer_as_on_slack_and_discord(make_assistant, store):
    assistant = await make_assistant()
    printed = await chat(assistant, store, ["/prompt list", "/prompt use assistant 9", "/nope"])
    assert "assistant" in printed and "has no version 9" in printed
    assert "Unknown command /nope." in printed
