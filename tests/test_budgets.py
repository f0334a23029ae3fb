"""Budgets from chat: a spent budget stops new turns in its scope with a plain answer (no model
call), an admin raising it lets the next turn through; scopes, UTC periods, evals counted but
never stopped, alerts once per level, the grammar, the audit, the CLI and Discord."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from assistant.admin.commands import AdminCommands, CommandContext
from assistant.admin.grammar import (
    USAGE,
    SetBudget,
    ShowBudgets,
    UsageError,
    Where,
    parse,
)
from assistant.budgets import BUDGET_EXCEEDED, Budgets, period_end, period_start
from assistant.reporting.duties import Duties, DutySettings
from assistant.reporting.figures import Period, build_report
from assistant.reporting.notices import Notice
from assistant.reporting.wording import report_text
from assistant.store import Store
from assistant.store.budget_store import Place
from assistant.store.tables import LlmCall, utcnow
from assistant.testing import Reply
from assistant.turns import Actor, Completed, ConversationRef, Failed
from bots.discord_app import DiscordAdapter
from tests.conftest import (
    DISCORD_ADMIN,
    DISCORD_GUILD_ID,
    DISCORD_TOKEN,
    collect,
    inbound,
    settle,
    write_prompt,
)
from tests.fakes.discord_api import CHANNEL_ID as DISCORD_CHANNEL
from tests.fakes.discord_api import FakeDiscord

NOW = datetime(2026, 11, 24, 15, 30, tzinfo=UTC)  # mid-afternoon, late in the month
ADMIN = Actor(platform="test", user_id="A1", display_name="Ada")
MEMBER = Actor(platform="test", user_id="U2", display_name="Bo")
CHANNEL_1 = ConversationRef(platform="test", workspace="W1", channel="C1", thread="T1")
CHANNEL_2 = ConversationRef(platform="test", workspace="W1", channel="C2", thread="T1")
OTHER_WORKSPACE = ConversationRef(platform="test", workspace="W2", channel="C1", thread="T1")
EVAL_CASE = ConversationRef(platform="eval", workspace="run1", channel="assistant@1", thread="c")


async def spend(
    store: Store,
    usd: float | None,
    *,
    ref: ConversationRef | None = CHANNEL_1,
    at: datetime | None = None,
    purpose: str = "reply",
    status: str = "ok",
) -> None:
    """A model call that cost `usd` (None: unpriced) in `ref` (None: in no conversation)."""
    conversation_id = await store.conversation_id(ref) if ref is not None else None
    call = LlmCall(
        conversation_id=conversation_id,
        purpose=purpose,
        model="gpt-4o-mini",
        cost_usd=usd,
        total_ms=100.0,
        status=status,
        created_at=at or utcnow(),
    )
    async with AsyncSession(store.engine) as session:  # a call made at `at`, not now
        session.add(call)
        await session.commit()


def budgets_at(store: Store, now: datetime = NOW, daily: float | None = None) -> Budgets:
    """Budgets whose every check sums afresh (a serving process reuses a sum for seconds)."""
    return Budgets(store.budgets, daily_usd=daily, clock=lambda: now, reuse_seconds=0)


async def set_budget(
    store: Store, kind: str, usd: float, *, period: str = "day", ref: ConversationRef = CHANNEL_1
) -> None:
    place = Place(scope=kind)
    if kind != "global":
        place = Place(scope=kind, platform=ref.platform, workspace=ref.workspace)
    if kind == "channel":
        place = Place(
            scope=kind, platform=ref.platform, workspace=ref.workspace, channel=ref.channel
        )
    await store.budgets.set(place, period, usd, actor="test:A1", surface="test")


def commands_for(store: Store, assistant: Any) -> AdminCommands:
    return AdminCommands(
        prompts=store.prompts,
        versions=assistant.versions,
        admins=[ADMIN.qualified_id],
        budgets=assistant.budgets,
    )


# ---- the scenario: reached mid-day, plain answer, raised, answered


async def test_a_spent_budget_gets_a_plain_answer_until_an_admin_raises_it(
    make_assistant, store, fake_llm
):
    assistant = await make_assistant()
    commands = commands_for(store, assistant)
    here = CommandContext(actor=ADMIN, surface="test", ref=CHANNEL_1)
    done = await commands.run("budget set 1", here)
    assert done.ok, done.text
    assert "Budget set: channel test/W1/C1, daily, $1.00 (no budget before)" in done.text
    await spend(store, 1.02)  # the channel's talk so far today

    asked = len(fake_llm.requests)
    events = await collect(assistant.respond(inbound("one more question", ref=CHANNEL_1)))
    ended = events[-1]
    assert isinstance(ended, Failed) and ended.error_class == BUDGET_EXCEEDED
    assert not ended.retryable
    assert ended.user_message == (
        "This channel's budget of $1.00 for today is used up ($1.02 spent). It resets at "
        "00:00 UTC, or an admin can raise it with `budget set`."
    )
    assert len(fake_llm.requests) == asked, "no model call for a spent budget"
    conversation = await store.find_conversation(CHANNEL_1)
    assert conversation is not None and conversation.id is not None
    stored = await store.messages(conversation.id)
    assert [m.text for m in stored if m.role == "user"] == ["one more question"]  # kept

    shown = await commands.run(
        "budget show", CommandContext(actor=MEMBER, surface="test", ref=CHANNEL_1)
    )
    assert shown.ok and "channel test/W1/C1, daily: $1.02 spent of $1.00 (102%)" in shown.text
    assert "used up" in shown.text

    raised = await commands.run("budget set 5", here)
    assert raised.ok and "(was $1.00)" in raised.text
    fake_llm.script(Reply(text="Answered again."))
    events = await collect(assistant.respond(inbound("and now?", ref=CHANNEL_1)))
    assert isinstance(events[-1], Completed) and events[-1].text == "Answered again."


# ---- which budgets apply where


async def test_a_channel_budget_stops_only_its_channel(db: Store):
    await set_budget(db, "channel", 1.0)
    await spend(db, 1.5)
    budgets = budgets_at(db, now=utcnow())
    assert await budgets.refusal(CHANNEL_1) is not None
    assert await budgets.refusal(CHANNEL_2) is None
    assert await budgets.refusal(OTHER_WORKSPACE) is None


async def test_a_workspace_budget_stops_every_channel_of_it_and_no_other(db: Store):
    await set_budget(db, "workspace", 1.0)
    await spend(db, 0.6, ref=CHANNEL_1)
    await spend(db, 0.6, ref=CHANNEL_2)  # neither channel alone spent it
    await spend(db, 5.0, ref=OTHER_WORKSPACE)
    budgets = budgets_at(db, now=utcnow())
    refusal = await budgets.refusal(CHANNEL_2)
    assert refusal is not None and refusal.startswith("This workspace's budget of $1.00")
    assert await budgets.refusal(CHANNEL_1) is not None
    assert await budgets.refusal(OTHER_WORKSPACE) is None


async def test_a_global_budget_stops_everyone_and_counts_calls_outside_conversations(db: Store):
    await set_budget(db, "global", 1.0)
    await spend(db, 0.5, ref=OTHER_WORKSPACE)
    budgets = budgets_at(db, now=utcnow())
    assert await budgets.refusal(CHANNEL_1) is None
    await spend(db, 0.5, ref=None, purpose="embedding")  # a knowledge sync's
    refusal = await budgets.refusal(CHANNEL_1)
    assert refusal is not None and refusal.startswith("The assistant's overall budget of $1.00")


async def test_daily_budget_usd_applies_until_a_global_daily_budget_is_set_from_chat(db: Store):
    await spend(db, 2.0)
    budgets = budgets_at(db, now=utcnow(), daily=1.5)
    assert await budgets.refusal(CHANNEL_2) is not None
    await set_budget(db, "global", 10.0)  # the row set from chat wins over the setting
    assert await budgets.refusal(CHANNEL_2) is None
    [shown] = await budgets.in_force(CHANNEL_2)
    assert (shown.usd, shown.set_by) == (10.0, "test:A1")


async def test_the_month_runs_from_the_first_and_the_day_from_midnight_utc(db: Store):
    await set_budget(db, "channel", 3.0, period="month")
    await set_budget(db, "channel", 2.0, period="day")
    await spend(db, 2.5, at=datetime(2026, 11, 2, 8, 0, tzinfo=UTC))  # this month, not today
    await spend(db, 9.0, at=datetime(2026, 10, 31, 23, 59, tzinfo=UTC))  # last month
    await spend(db, 0.4, at=datetime(2026, 11, 24, 0, 0, tzinfo=UTC))  # today
    budgets = budgets_at(db)
    by_period = {s.budget.period: s for s in await budgets.statuses(CHANNEL_1)}
    assert by_period["day"].spent.usd == pytest.approx(0.4)
    assert by_period["month"].spent.usd == pytest.approx(2.9)
    assert await budgets.refusal(CHANNEL_1) is None
    await spend(db, 0.2, at=datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
    refusal = await budgets.refusal(CHANNEL_1)
    assert refusal == (
        "This channel's budget of $3.00 for this month is used up ($3.10 spent). It resets on "
        "1 December at 00:00 UTC, or an admin can raise it with `budget set`."
    )
    assert period_start("month", NOW) == datetime(2026, 11, 1, tzinfo=UTC)
    assert period_end("month", datetime(2026, 12, 31, 23, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )
    assert period_end("day", NOW) == datetime(2026, 11, 25, tzinfo=UTC)


async def test_a_turns_check_reuses_a_recent_sum_and_reads_the_budgets_afresh(db: Store):
    await set_budget(db, "channel", 1.0)
    await spend(db, 0.9)
    budgets = Budgets(db.budgets, daily_usd=None, reuse_seconds=3600)
    assert await budgets.refusal(CHANNEL_1) is None
    await spend(db, 0.5)  # spent now, but the sum of a moment ago stands for a turn's check
    assert await budgets.refusal(CHANNEL_1) is None
    assert "$1.40 spent of $1.00" in await budgets.show(CHANNEL_1)  # `budget show` sums afresh
    await set_budget(db, "channel", 0.5)  # lowered: the budget itself is read on every turn
    assert await budgets.refusal(CHANNEL_1) is not None


async def test_unpriced_calls_are_shown_as_unknown_never_as_free(db: Store):
    await set_budget(db, "channel", 1.0)
    await spend(db, 0.25)
    await spend(db, None)  # a model with no price
    await spend(db, None, status="error")  # a failed call was not billed
    shown = await budgets_at(db, now=utcnow()).show(CHANNEL_1)
    assert "$0.25 spent, plus 1 call of unknown cost (unpriced) of $1.00 (25%)" in shown


# ---- evals: counted, never stopped


async def test_evals_and_their_judge_count_toward_the_global_budget_but_are_never_stopped(
    make_assistant, store, fake_llm
):
    assistant = await make_assistant()
    await set_budget(store, "global", 1.0)
    await spend(store, 0.7, ref=EVAL_CASE)  # an eval turn
    await spend(store, 0.4, ref=None, purpose="judge")  # its judge, in no conversation
    assert await assistant.budgets.refusal(CHANNEL_1) is not None

    fake_llm.script(Reply(text="an eval answer"))
    events = await collect(assistant.respond(inbound("eval question", ref=EVAL_CASE)))
    assert isinstance(events[-1], Completed)


async def test_reports_show_judge_calls_apart_from_production(db: Store):
    now = utcnow()
    await spend(db, 0.10, at=now - timedelta(minutes=5))  # production
    await spend(db, 0.30, ref=EVAL_CASE, at=now - timedelta(minutes=5))
    await spend(db, 0.05, ref=None, purpose="judge", at=now - timedelta(minutes=5))

    report = await build_report(db, Period(start=now - timedelta(hours=1), end=now))

    assert report.cost_usd == pytest.approx(0.10)
    assert report.eval_cost_usd == pytest.approx(0.35)
    assert report.eval_calls == 2
    assert "eval runs $0.3500 (their judge's calls included)" in report_text(report)


# ---- alerts


class Recorder:
    def __init__(self) -> None:
        self.posted: list[tuple[str, Notice]] = []

    async def post(self, channel: str, notice: Notice) -> None:
        self.posted.append((channel, notice))


def duties(store: Store, recorder: Recorder, *, daily: float | None = None) -> Duties:
    return Duties(
        store=store,
        runner=None,  # type: ignore[arg-type]  # alerts run no evals
        suites={},
        notifier=recorder,
        settings=DutySettings(
            channels=["slack:C0REPORTS"],
            eval_cron="0 3 * * *",
            report_cron="0 9 * * *",
            daily_budget_usd=daily,
        ),
        clock=lambda: NOW,
    )


async def test_each_budget_alerts_once_at_80_and_once_at_100_percent(db: Store):
    await set_budget(db, "channel", 1.0)
    await set_budget(db, "workspace", 10.0, period="month")
    recorder = Recorder()
    await spend(db, 0.85, at=NOW - timedelta(hours=2))
    await duties(db, recorder, daily=2.0).check_alerts()
    await duties(db, recorder, daily=2.0).check_alerts()
    assert [n.text for _, n in recorder.posted] == [
        "⚠️ Budget of channel test/W1/C1, daily: $0.85 spent today, 85% of $1.00 (set by test:A1)."
    ]

    await spend(db, 0.90, at=NOW - timedelta(hours=1))  # $1.75 today: 100% of the channel's
    await spend(db, 6.50, at=NOW - timedelta(days=10))  # this month: $8.25 of $10
    for _ in range(2):
        await duties(db, recorder, daily=2.0).check_alerts()
    texts = [n.text for _, n in recorder.posted]
    assert len(texts) == 4, texts
    assert "channel test/W1/C1, daily: $1.75 spent today, 175% of $1.00" in texts[1]
    assert "workspace test/W1, monthly: $8.25 spent this month, 82% of $10.00" in texts[2]
    assert texts[3] == "⚠️ Daily budget: $1.75 spent today, 88% of $2.00 (DAILY_BUDGET_USD)."

    await set_budget(db, "channel", 5.0)  # raised: a new budget, alerts anew when it is reached
    await duties(db, recorder, daily=2.0).check_alerts()
    assert len(recorder.posted) == 4


# ---- the grammar


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("budget", ShowBudgets()),
        ("budget show", ShowBudgets()),
        ("/assistant budget show", ShowBudgets()),
        ("budget set 5", SetBudget(usd=5.0, where=Where())),
        ("budget set $12.50 --period month", SetBudget(usd=12.5, where=Where(), period="month")),
        (
            "budget set 1,000 --scope workspace --period day",
            SetBudget(usd=1000.0, where=Where(scope="workspace")),
        ),
        (
            "budget set 0.0005 --target slack/T1/C1 --scope channel",
            SetBudget(
                usd=0.0005,
                where=Where(
                    scope="channel",
                    target=ConversationRef(platform="slack", workspace="T1", channel="C1"),
                ),
            ),
        ),
    ],
)
def test_budget_commands_parse(text: str, command: object) -> None:
    assert parse(text) == command


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("budget set", "'budget set' takes an amount"),
        ("budget set 5 6", "'budget set' takes an amount"),
        ("budget set 0", "above 0"),
        ("budget set -5", "not '-5'"),
        ("budget set abc", "not 'abc'"),
        ("budget set 1e3", "not '1e3'"),
        ("budget set nan", "not 'nan'"),
        ("budget set inf", "not 'inf'"),
        ("budget set 2000000", "at most 1,000,000"),
        ("budget set 5.123456", "not '5.123456'"),
        ("budget set 1,50", "with a decimal point, like 12.50, not '1,50'"),  # not $150
        ("budget set 0,5", "with a decimal point"),
        ("budget set 1,0,0,0", "a comma only groups thousands"),
        ("budget set 5 --period week", "--period is day or month, not 'week'"),
        ("budget set 5 --period", "--period is day or month, not nothing"),
        ("budget set 5 --scope team", "the scope is global, workspace or channel"),
        ("budget set 5 --force", "'budget set' takes an amount"),
        ("budget show all", "'budget show' takes no arguments"),
        ("budget raise 5", "'budget' takes show or set"),
    ],
)
def test_malformed_budget_commands_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=None) as raised:
        parse(text)
    assert says in str(raised.value)


def test_usage_lists_the_budget_commands() -> None:
    assert "budget show" in USAGE and "budget set USD" in USAGE and "--period day|month" in USAGE


@pytest.mark.parametrize("usd", [0.0, -1.0, math.nan, math.inf, 5_000_000.0])
async def test_a_typed_budget_out_of_bounds_is_refused_as_parsing_would(
    make_assistant, store, usd: float
) -> None:
    commands = commands_for(store, await make_assistant())
    result = await commands.execute(
        SetBudget(usd=usd, where=Where()),
        CommandContext(actor=ADMIN, surface="test", ref=CHANNEL_1),
    )
    assert not result.ok and "above 0 and at most $1,000,000.00" in result.text
    assert await store.budgets.all() == []


# ---- who may, and the audit


async def test_only_admins_set_budgets_everyone_reads_them_and_changes_are_audited(
    make_assistant, store
):
    commands = commands_for(store, await make_assistant())
    member = CommandContext(actor=MEMBER, surface="test", ref=CHANNEL_1)
    admin = CommandContext(actor=ADMIN, surface="slack", ref=CHANNEL_1)

    empty = await commands.run("budget show", member)
    assert empty.ok and empty.text.startswith("No budget applies here. An admin sets one with")

    refused = await commands.run("budget set 5", member)
    assert not refused.ok and "Only admins" in refused.text and "test:U2" in refused.text
    assert await store.budgets.all() == []

    assert (await commands.run("budget set 5 --scope workspace --period month", admin)).ok
    assert (await commands.run("budget set 8 --scope workspace --period month", admin)).ok
    [audit_2, audit_1] = await store.budgets.history()
    assert (audit_1.actor, audit_1.surface, audit_1.scope, audit_1.workspace) == (
        "test:A1",
        "slack",
        "workspace",
        "W1",
    )
    assert (audit_1.period, audit_1.before_usd, audit_1.after_usd) == ("month", None, 5.0)
    assert (audit_2.before_usd, audit_2.after_usd) == (5.0, 8.0)

    shown = await commands.run("budget show", member)
    assert "workspace test/W1, monthly: $0.00 spent of $8.00 (0%)" in shown.text
    assert "resets on 1 " in shown.text and "set by test:A1" in shown.text

    from_shell = CommandContext(actor=Actor(platform="cli", user_id="op"), surface="cli")
    needs_place = await commands.run("budget set 3 --scope channel", from_shell)
    assert not needs_place.ok and "--target" in needs_place.text


# ---- the surfaces


@pytest.fixture
async def discord_with_budgets(
    make_assistant: Callable[..., Any], store: Store, discord_fake: FakeDiscord
) -> AsyncIterator[DiscordAdapter]:
    assistant = await make_assistant()
    commands = AdminCommands(
        prompts=store.prompts,
        versions=assistant.versions,
        admins=[f"discord:{DISCORD_ADMIN}"],
        budgets=assistant.budgets,
    )
    adapter = DiscordAdapter(
        assistant=assistant,
        commands=commands,
        token=DISCORD_TOKEN,
        guild_id=int(DISCORD_GUILD_ID),
        edit_interval=0.01,
        guild_ready_timeout=0.05,
    )
    await adapter.start()
    yield adapter
    await adapter.close()


async def test_discord_budget_set_and_show_and_the_plain_answer(
    discord_with_budgets, discord_fake, store, fake_llm
):
    bot = discord_with_budgets
    refused = await discord_fake.interact(
        discord_fake.slash_command(group="budget", sub="set", options={"usd": 1.0})
    )
    await settle(bot, discord_fake)
    assert "Only admins" in discord_fake.responses_for(refused)[-1]["content"]

    options = {"usd": 1.0, "period": "day"}
    done = await discord_fake.interact(
        discord_fake.slash_command(
            user_id=DISCORD_ADMIN, group="budget", sub="set", options=options
        )
    )
    await settle(bot, discord_fake)
    assert "Budget set: channel discord/" in discord_fake.responses_for(done)[-1]["content"]

    place = ConversationRef(
        platform="discord", workspace=DISCORD_GUILD_ID, channel=DISCORD_CHANNEL, thread="x"
    )
    await spend(store, 1.25, ref=place)
    asked = len(fake_llm.requests)
    await discord_fake.send_message("still there?", mention_bot=True)
    await settle(bot, discord_fake)
    said = [m.content for m in discord_fake.shown(DISCORD_CHANNEL) if m.interaction_id is None]
    assert any("This channel's budget of $1.00 for today is used up" in s for s in said), said
    assert len(fake_llm.requests) == asked

    shown = await discord_fake.interact(discord_fake.slash_command(group="budget", sub="show"))
    await settle(bot, discord_fake)
    assert "$1.25 spent of $1.00 (125%)" in discord_fake.responses_for(shown)[-1]["content"]


def test_the_cli_shows_and_sets_budgets(tmp_path: Path) -> None:
    write_prompt(tmp_path / "prompts")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SLACK_"))}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path}/cli.db",
        PROMPTS_DIR=str(tmp_path / "prompts"),
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",  # never called: budgets need no model
        DAILY_BUDGET_USD="3",
    )
    command = [str(Path(sys.executable).parent / "assistant"), "budget"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args], capture_output=True, text=True, env=env, timeout=60, check=False
        )

    shown = run("show")
    assert shown.returncode == 0, shown.stderr
    assert "global, daily: $0.00 spent of $3.00 (0%)" in shown.stdout
    assert "set by DAILY_BUDGET_USD" in shown.stdout

    done = run("set", "7.5", "--scope", "workspace", "--target", "slack/T1", "--period", "month")
    assert done.returncode == 0, done.stderr
    assert "Budget set: workspace slack/T1, monthly, $7.50 (no budget before)" in done.stdout
    overridden = run("set", "4")  # global from the shell
    assert "$4.00 (was $3.00 from DAILY_BUDGET_USD, which this now overrides)" in overridden.stdout

    listed = run("show")
    assert "workspace slack/T1, monthly" in listed.stdout and "global, daily" in listed.stdout
    assert "$3.00" not in listed.stdout  # the row set from chat wins

    wrong = run("set", "lots")
    assert wrong.returncode == 1 and "not 'lots'" in wrong.stderr and "Usage:" in wrong.stderr
    assert run().returncode == 2  # no action: the usage
