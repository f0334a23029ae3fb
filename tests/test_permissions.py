"""What the assistant asks a workspace or server for is exactly what its code uses, and a
missing grant is named to the operator in one line.

The fakes enforce what Slack and Discord enforce: a Slack bot token holds the scopes
`manifest.yaml` asks for, a Discord bot the permissions its invite asks for, and every call
needs its own. So the manifest and the invite are under test in every flow, and one scope or
permission taken away shows what the product says about it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import discord
import pytest
import yaml

from assistant.evals.runner import EvalRunner
from assistant.reporting.duties import Duties, DutySettings
from assistant.store import Store
from assistant.testing import Reply
from bots.discord_app import PERMISSIONS, DiscordAdapter
from bots.discord_reply import permission_names
from bots.notifier import ChannelNotifier
from tests.conftest import SlackBot, collect, inbound, settle
from tests.fakes.discord_api import CHANNEL_ID as DISCORD_CHANNEL
from tests.fakes.discord_api import THREAD_ID, FakeDiscord
from tests.fakes.slack_api import (
    APP_TOKEN_SCOPES,
    BOT_USER,
    EVENT_SCOPES,
    MANIFEST,
    METHOD_SCOPES,
    FakeSlack,
    manifest_scopes,
)

BOTS = Path(__file__).resolve().parents[1] / "bots"
SLACK_REPORTS = "C0REPORTS"
PNG = b"\x89PNG\r\n\x1a\n"
TOKEN = "xoxb-test-token"  # the conftest's Slack adapter's
# a Web API call in our Slack code: client.chat_postMessage(, self._client.users_info(
_SLACK_CALL = re.compile(r"\b_?client\.([a-z]+_[A-Za-z0-9_]+)\(")
_SDK_HELPERS = {"files_upload_v2": ("files.getUploadURLExternal", "files.completeUploadExternal")}


# ---- the lists themselves


def slack_methods_called() -> set[str]:
    """Every Web API method the Slack code in bots/ calls (slack-sdk's helpers unfolded)."""
    names = {
        name
        for path in BOTS.glob("slack_*.py")
        for name in _SLACK_CALL.findall(path.read_text(encoding="utf-8"))
    }
    methods = set()
    for name in names:
        methods.update(_SDK_HELPERS.get(name, (name.replace("_", "."),)))
    return methods


def test_the_manifest_asks_for_exactly_the_scopes_the_code_uses():
    called = slack_methods_called()
    assert {"chat.postMessage", "files.completeUploadExternal", "users.info"} <= called
    unknown = called - METHOD_SCOPES.keys() - APP_TOKEN_SCOPES.keys()
    assert not unknown, f"add the scope Slack's reference gives {unknown} to METHOD_SCOPES"
    manifest = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    events = manifest["settings"]["event_subscriptions"]["bot_events"]
    # conversations.* read the kinds of conversation it answers in: the events' own scopes
    by_calls = {METHOD_SCOPES[m] for m in called - APP_TOKEN_SCOPES.keys()} - {None, "*:history"}
    by_events = {EVENT_SCOPES[event] for event in events} - {None}  # app_home_opened: none
    by_commands = {"commands"} if manifest["features"].get("slash_commands") else set()
    assert manifest_scopes() == by_calls | by_events | by_commands


async def test_the_invite_asks_for_exactly_the_permissions_the_code_uses(
    discord_bot, discord_fake, fake_llm, post_report
):
    """Answers in a channel and a thread, a long answer continued and trimmed, a report with
    its chart: what Discord required of every call is what the invite asks for."""
    fake_llm.script(
        Reply(text="In the channel."),
        Reply(text="In the thread."),
        Reply(text="word " * 500, chunk_chars=400, chunk_delay=0.02),  # past 2,000 characters
    )
    await discord_fake.send_message("hi", mention_bot=True)
    await discord_fake.send_message("hi", mention_bot=True, channel_id=THREAD_ID)
    await discord_fake.send_message("a long one", mention_bot=True)
    await settle(discord_bot, discord_fake)
    await post_report([f"discord:{DISCORD_CHANNEL}"], discord=discord_bot)

    required = discord.Permissions(**dict.fromkeys(discord_fake.required, True))
    assert required == PERMISSIONS, permission_diff(required, PERMISSIONS)


def test_the_readme_quotes_the_invite_the_code_makes():
    readme = (BOTS.parent / "README.md").read_text(encoding="utf-8")
    discord_section = readme.split("\n## Discord\n", 1)[1].split("\n## ", 1)[0]
    assert f"permissions={PERMISSIONS.value}`" in discord_section
    for name in permission_names(PERMISSIONS):
        assert name in discord_section.replace("\n   ", " "), name


def permission_diff(used: discord.Permissions, asked: discord.Permissions) -> str:
    extra = [name for name, on in asked if on and not getattr(used, name)]
    missing = [name for name, on in used if on and not getattr(asked, name)]
    return f"asked for but unused: {extra}; used but not asked for: {missing}"


# ---- a report, as the scheduler posts it

REPORT = "'Assistant report, 24 hours to "  # how a log line quotes the report's title


@pytest.fixture
def post_report(
    make_assistant: Callable[..., Any], store: Store, model: Any, tools: Any, fake_llm: Any
) -> Callable[..., Any]:
    """One turn to report on, then the scheduled report posted to `channels` through the
    adapters given, as the scheduler posts it."""

    async def post(
        channels: list[str], *, slack: SlackBot | None = None, discord: DiscordAdapter | None = None
    ) -> None:
        assistant = await make_assistant()
        fake_llm.script(Reply(text="an answer"))
        await collect(assistant.respond(inbound("a question")))
        notifier = ChannelNotifier(slack=slack.adapter if slack else None, discord=discord)
        runner = EvalRunner(
            assistant=assistant, store=store, model=model, tools=tools, judge_model="gpt-4o-mini"
        )
        settings = DutySettings(
            channels=channels, eval_cron="0 3 * * *", report_cron="0 9 * * *",
            daily_budget_usd=None,
        )  # fmt: skip
        later = datetime.now(UTC) + timedelta(minutes=1)  # the turn above is in the last 24 h
        duties = Duties(
            store=store, runner=runner, suites={}, notifier=notifier, settings=settings,
            clock=lambda: later,
        )  # fmt: skip
        await duties.post_report()

    return post


def said(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level]


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.exc_info]


# ---- a scope or a permission taken away


async def test_without_files_write_the_report_comes_without_its_chart_and_says_why(
    slack_bot, slack, post_report, caplog
):
    slack.grant(TOKEN, manifest_scopes() - {"files:write"})
    await post_report([f"slack:{SLACK_REPORTS}"], slack=slack_bot)

    [posted] = [p for p in slack.calls_to("chat.postMessage") if p["channel"] == SLACK_REPORTS]
    assert posted["blocks"]  # the figures are there
    assert slack.calls_to("files.getUploadURLExternal")  # the chart was tried, and refused
    assert not [f for f in slack.files.values() if f["channel"] == SLACK_REPORTS]
    [line] = said(caplog)
    assert line.startswith(f"Slack: the chart of {REPORT}")
    assert line.endswith(
        f"UTC' was not posted in {SLACK_REPORTS}: the Slack app lacks the files:write scope; add"
        " it under OAuth & Permissions (manifest.yaml lists every scope the assistant uses) and"
        " reinstall the app"
    )
    assert tracebacks(caplog) == []


async def test_without_chat_write_nothing_is_posted_and_the_scope_is_named(
    slack_bot, slack, post_report, caplog
):
    slack.grant(TOKEN, manifest_scopes() - {"chat:write"})
    await post_report([f"slack:{SLACK_REPORTS}"], slack=slack_bot)

    assert slack.calls_to("files.getUploadURLExternal") == []  # no chart without its message
    [line] = said(caplog)
    assert line.startswith(f"Slack: {REPORT}") and "UTC' was not posted" in line
    assert "lacks the chat:write scope" in line
    assert tracebacks(caplog) == []


async def test_an_answer_without_chat_write_names_the_scope(slack_bot, slack, fake_llm, caplog):
    slack.grant(TOKEN, manifest_scopes() - {"chat:write"})
    fake_llm.script(Reply(text="You will not see this."))
    event = {"type": "app_mention", "user": "U1", "text": f"<@{BOT_USER}> hi"}
    event |= {"ts": "1700000000.000100", "channel": "C0GENERAL"}
    await slack.send_event(slack_bot.url, event, event_id="EvNoScope")
    await slack_bot.settle(slack)

    assert slack.messages == {}
    [line] = said(caplog)  # not one a refused call: the answer's one line
    assert line.startswith("Slack: an answer in C0GENERAL was not shown: the Slack app lacks")
    assert "the chat:write scope; add it under OAuth & Permissions" in line
    assert tracebacks(caplog) == []


@pytest.fixture
def start_bot_without(
    start_discord_bot: Callable[..., Any], discord_fake: FakeDiscord
) -> Callable[..., Any]:
    """Start the Discord adapter in a server it was invited to without one permission."""

    async def start(**missing: bool) -> DiscordAdapter:
        taken = discord.Permissions(**missing)
        discord_fake.bot_permissions = PERMISSIONS.value & ~taken.value
        return await start_discord_bot()  # type: ignore[no-any-return]

    return start


async def test_without_attach_files_the_report_is_refused_and_the_permission_named(
    start_bot_without, discord_fake, post_report, caplog
):
    bot = await start_bot_without(attach_files=True)
    await post_report([f"discord:{DISCORD_CHANNEL}"], discord=bot)

    assert [m for m in discord_fake.shown(DISCORD_CHANNEL) if m.embeds] == []
    started, refused = said(caplog)
    assert started.startswith("Discord: in server 'Test Guild' the bot lacks Attach Files;")
    assert refused.startswith(f"Discord: {REPORT}")
    assert refused.endswith(
        f"UTC' was not posted in channel {DISCORD_CHANNEL} (Missing Permissions); the bot lacks"
        " Attach Files there; grant it to its role (Server Settings, Roles) or in the channel,"
        " or re-invite it with the invite URL the log shows at start"
    )
    assert tracebacks(caplog) == []


async def test_without_embed_links_the_figures_are_dropped_and_the_permission_named(
    start_bot_without, discord_fake, post_report, caplog
):
    bot = await start_bot_without(embed_links=True)
    await post_report([f"discord:{DISCORD_CHANNEL}"], discord=bot)

    [shown] = [m for m in discord_fake.shown(DISCORD_CHANNEL) if m.attachments]
    assert shown.embeds == []  # Discord dropped them; the chart alone came through
    assert any(
        line.startswith(f"Discord: the figures of {REPORT}")
        and "UTC' were dropped in channel" in line
        and "the bot lacks Embed Links there" in line
        for line in said(caplog, logging.ERROR)
    )
    assert tracebacks(caplog) == []


async def test_without_read_message_history_an_answer_names_it(
    start_bot_without, discord_fake, fake_llm, caplog
):
    bot = await start_bot_without(read_message_history=True)  # every answer replies
    fake_llm.script(Reply(text="You will not see this."))
    await discord_fake.send_message("hi", mention_bot=True)
    await settle(bot, discord_fake)

    assert discord_fake.shown() == []
    [error] = said(caplog, logging.ERROR)
    assert error.startswith(f"Discord: no permission to answer in channel {DISCORD_CHANNEL} ")
    assert "the bot lacks Read Message History there" in error


async def test_the_fakes_refuse_as_slack_and_discord_do():
    """The refusals' shapes, which the product reads: Slack's missing_scope (HTTP 200), and
    Discord's 403 Missing Permissions."""
    slack = await FakeSlack(scopes=manifest_scopes() - {"files:write"}).start()
    try:
        status, body = await slack.post(
            f"{slack.api_url}files.getUploadURLExternal",
            b"filename=a.png&length=3",
            {
                "Authorization": f"Bearer {TOKEN}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
    finally:
        await slack.stop()
    answer = json.loads(body)
    assert status == 200
    assert answer["ok"] is False and answer["error"] == "missing_scope"
    assert answer["needed"] == "files:write" and "chat:write" in answer["provided"].split(",")
