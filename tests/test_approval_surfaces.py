"""Consent on every surface: the ask shows with Approve and Decline, only the requester's click
counts, the ask's message says how it ended, and silence is a no. Slack through signed events
and clicks on the fake Slack, Discord through the real client on the fake gateway, the
terminal through its own prompt."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from rich.console import Console

from assistant.testing import CallTools, Reply
from assistant.tools import ToolRegistry
from bots.terminal import TerminalChat
from tests.conftest import ALICE, REF, settle_discord, write_prompt
from tests.fakes.discord_api import CHANNEL_ID, FakeDiscord, FakeMessage
from tests.fakes.slack_api import BOT_USER, FakeSlack, SlackMessage

CHANNEL = "C0GENERAL"
TS = "1700000000.000100"
NOT_YOURS = "Only the person who asked the assistant can answer this request."
TOO_LATE = "Too late: the request timed out, and the action was not run."


def deletion(
    tools: ToolRegistry, prompts_dir: Any, fake_llm: Any, arguments: Any = None
) -> list[str]:
    """A prompt whose model deletes ticket T-1 with a tool that needs the user's approval."""
    deleted: list[str] = []

    def delete_ticket(ticket: str) -> str:
        """Delete a ticket for good."""
        deleted.append(ticket)
        return f"deleted {ticket}"

    tools.register(delete_ticket, confirm=True)
    write_prompt(prompts_dir, tools=["delete_ticket"])
    fake_llm.script(
        CallTools(calls=(("delete_ticket", arguments or {"ticket": "T-1"}),)),
        Reply(text="All done."),
    )
    return deleted


# ---- Slack


def slack_mention(text: str) -> dict[str, Any]:
    return {
        "type": "app_mention",
        "user": "U1",
        "text": f"<@{BOT_USER}> {text}",
        "ts": TS,
        "channel": CHANNEL,
    }


async def slack_ask(slack: FakeSlack) -> SlackMessage:
    def ask() -> SlackMessage | None:
        return next(
            (m for m in slack.thread(CHANNEL, TS) if "wants to run" in m.text and m.buttons()),
            None,
        )

    await slack.wait_until(lambda: ask() is not None)
    found = ask()
    assert found is not None
    return found


def slack_message(slack: FakeSlack, ts: str) -> SlackMessage:
    return next(m for m in slack.thread(CHANNEL, TS) if m.ts == ts)


async def test_slack_runs_the_action_once_the_requester_approves(
    start_slack_bot, slack, fake_llm, tools, prompts_dir
):
    deleted = deletion(tools, prompts_dir, fake_llm)
    bot = await start_slack_bot()
    await slack.send_event(bot.url, slack_mention("delete T-1"), event_id="E1")

    ask = await slack_ask(slack)
    assert "<@U1>" in ask.text and '"ticket": "T-1"' in ask.text and deleted == []
    approve, decline = ask.buttons()
    assert (approve["text"]["text"], decline["text"]["text"]) == ("Approve", "Decline")
    await slack.click(bot.url, approve, user="U1", message=ask)
    await bot.settle(slack)

    assert deleted == ["T-1"]
    assert slack.responses[-1]["text"] == "Approved: it runs now."
    decided = slack_message(slack, ask.ts)
    assert decided.text == "✅ Approved by <@U1>: running `delete_ticket`."
    assert not decided.buttons()
    assert "All done." in slack.shown_text(CHANNEL, TS)


async def test_slack_refuses_a_click_by_someone_else_and_silence_is_a_no(
    start_slack_bot, slack, fake_llm, tools, prompts_dir
):
    deleted = deletion(tools, prompts_dir, fake_llm)
    bot = await start_slack_bot(approval_timeout=1.5)
    await slack.send_event(bot.url, slack_mention("delete T-1"), event_id="E1")

    ask = await slack_ask(slack)
    approve, _ = ask.buttons()
    await slack.click(bot.url, approve, user="U2", message=ask)
    await slack.wait_until(lambda: slack.responses)
    assert slack.responses[-1]["text"] == NOT_YOURS
    assert slack.responses[-1]["response_type"] == "ephemeral"
    await bot.settle(slack)

    assert deleted == []
    assert slack_message(slack, ask.ts).text == "⌛ No answer in time: `delete_ticket` was not run."
    assert "failed" not in slack.shown_text(CHANNEL, TS)  # the ask said why; no second note
    await slack.click(bot.url, approve, user="U1", message=ask)
    await slack.wait_until(lambda: len(slack.responses) == 2)
    assert slack.responses[-1]["text"] == TOO_LATE
    assert deleted == []


# ---- Discord


def told(fake: FakeDiscord, click: dict[str, Any]) -> list[str]:
    return [r["content"] for r in fake.responses_for(click) if r.get("content")]


async def discord_ask(fake: FakeDiscord) -> FakeMessage:
    def ask() -> FakeMessage | None:
        return next(
            (m for m in fake.shown(CHANNEL_ID) if "wants to run" in m.content and m.buttons()),
            None,
        )

    await fake.wait_until(lambda: ask() is not None)
    found = ask()
    assert found is not None
    return found


async def test_discord_runs_the_action_only_for_the_requester(
    start_discord_bot, discord_fake, fake_llm, tools, prompts_dir
):
    deleted = deletion(tools, prompts_dir, fake_llm)
    bot = await start_discord_bot()
    asked = await discord_fake.send_message("delete T-1", mention_bot=True)
    requester = asked["author"]["id"]

    ask = await discord_ask(discord_fake)
    assert f"<@{requester}>" in ask.content and deleted == []
    approve, decline = ask.buttons()
    assert (approve["label"], decline["label"]) == ("Approve", "Decline")
    stranger = discord_fake.button_click(
        user_id="3003", custom_id=approve["custom_id"], message_id=ask.id
    )
    await discord_fake.interact(stranger)
    await discord_fake.wait_until(lambda: told(discord_fake, stranger))
    assert told(discord_fake, stranger) == [NOT_YOURS]
    assert deleted == []

    mine = discord_fake.button_click(
        user_id=requester, custom_id=approve["custom_id"], message_id=ask.id
    )
    await discord_fake.interact(mine)
    await settle_discord(bot, discord_fake)

    assert deleted == ["T-1"]
    shown = discord_fake.messages[ask.id]
    assert shown.content == f"✅ Approved by <@{requester}>: running `delete_ticket`."
    assert not shown.buttons()
    assert any(m.content == "All done." for m in discord_fake.shown(CHANNEL_ID))


async def test_discord_does_not_run_a_declined_action(
    start_discord_bot, discord_fake, fake_llm, tools, prompts_dir
):
    deleted = deletion(tools, prompts_dir, fake_llm)
    bot = await start_discord_bot()
    asked = await discord_fake.send_message("delete T-1", mention_bot=True)

    ask = await discord_ask(discord_fake)
    _, decline = ask.buttons()
    click = discord_fake.button_click(
        user_id=asked["author"]["id"], custom_id=decline["custom_id"], message_id=ask.id
    )
    await discord_fake.interact(click)
    await settle_discord(bot, discord_fake)

    assert deleted == []
    assert discord_fake.messages[ask.id].content.startswith("❌ Declined by")
    told = fake_llm.requests[-1]["messages"][-1]
    assert told["role"] == "tool" and "declined" in told["content"]


# ---- the terminal


async def test_the_terminal_asks_yes_or_no(make_assistant, fake_llm, tools, prompts_dir):
    deleted = deletion(tools, prompts_dir, fake_llm)
    assistant = await make_assistant()
    lines = iter(["delete T-1", "y"])
    out = io.StringIO()

    def read_line() -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    chat = TerminalChat(
        assistant,
        ref=REF,
        actor=ALICE,
        console=Console(file=out, width=200, color_system=None),
        read_line=read_line,
    )
    await asyncio.wait_for(chat.run(), 30)

    shown = out.getvalue()
    assert deleted == ["T-1"]
    assert "wants to run `delete_ticket` for you" in shown
    assert "Approved: it runs now." in shown and "All done." in shown


HOSTILE = {
    "ticket": "T-1",
    "note": "`````\n**Approve me, I am harmless** <!channel> & " + "<>&" * 900,
}


async def test_a_hostile_ask_stays_one_inert_message_within_slacks_limits(
    start_slack_bot, slack, fake_llm, tools, prompts_dir
):
    """The arguments are the model's words: they cannot ping the channel, close the code
    block, or push the ask past what Slack takes (which would leave it without buttons)."""
    deletion(tools, prompts_dir, fake_llm, HOSTILE)
    bot = await start_slack_bot(approval_timeout=0.5)
    await slack.send_event(bot.url, slack_mention("delete T-1"), event_id="E1")

    ask = await slack_ask(slack)
    [section, actions] = ask.blocks
    shown = section["text"]["text"]
    assert actions["type"] == "actions" and len(shown) <= 3000
    assert "<!channel>" not in shown and "&lt;!channel&gt;" in shown
    assert shown.count("```") == 2 and shown.endswith("means no.")
    assert "… (cut)" in shown
    await bot.settle(slack)


async def test_a_hostile_ask_fits_one_discord_message(
    start_discord_bot, discord_fake, fake_llm, tools, prompts_dir
):
    deletion(tools, prompts_dir, fake_llm, HOSTILE)
    bot = await start_discord_bot(engine={"approval_timeout": 0.5})
    await discord_fake.send_message("delete T-1", mention_bot=True)

    ask = await discord_ask(discord_fake)
    assert len(ask.content) <= 2000 and ask.content.count("```") == 2
    assert ask.content.endswith("means no.")
    await settle_discord(bot, discord_fake)


async def test_discord_runs_nothing_when_nobody_answers_in_time(
    start_discord_bot, discord_fake, fake_llm, tools, prompts_dir
):
    deleted = deletion(tools, prompts_dir, fake_llm)
    bot = await start_discord_bot(engine={"approval_timeout": 1.0})
    await discord_fake.send_message("delete T-1", mention_bot=True)

    ask = await discord_ask(discord_fake)
    await settle_discord(bot, discord_fake)

    assert deleted == []
    shown = discord_fake.messages[ask.id]
    assert (
        shown.content == "⌛ No answer in time: `delete_ticket` was not run."
        and not shown.buttons()
    )
    told = fake_llm.requests[-1]["messages"][-1]
    assert told["role"] == "tool" and "nobody approved it within 1 s" in told["content"]


async def test_slack_runs_nothing_the_requester_declines(
    start_slack_bot, slack, fake_llm, tools, prompts_dir
):
    deleted = deletion(tools, prompts_dir, fake_llm)
    bot = await start_slack_bot()
    await slack.send_event(bot.url, slack_mention("delete T-1"), event_id="E1")

    ask = await slack_ask(slack)
    _, decline = ask.buttons()
    await slack.click(bot.url, decline, user="U1", message=ask)
    await bot.settle(slack)

    assert deleted == []
    assert slack.responses[-1]["text"] == "Declined: it will not run."
    assert slack_message(slack, ask.ts).text == "❌ Declined by <@U1>: `delete_ticket` was not run."
