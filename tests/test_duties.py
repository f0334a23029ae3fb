"""The scheduled duties end to end: a report posted to the fake Slack and the fake Discord with
its chart, a drift alert posted once, budget and error alerts once per condition."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlmodel.ext.asyncio.session import AsyncSession

from assistant.admin.commands import AdminCommands, CommandContext
from assistant.config import load_settings
from assistant.evals.runner import EvalRunner
from assistant.evals.suite import load_suites
from assistant.knowledge.service import Knowledge
from assistant.reporting.duties import Duties, DutySettings
from assistant.reporting.notices import Notice
from assistant.runtime import ChatDuties, Runtime
from assistant.store import Store
from assistant.store.tables import EvalRun, LlmCall
from assistant.testing import Reply
from assistant.turns import Actor
from bots.notifier import ChannelNotifier
from tests.conftest import collect, inbound
from tests.fakes.discord_api import CHANNEL_ID as DISCORD_CHANNEL

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
PNG = b"\x89PNG\r\n\x1a\n"


class Recorder:
    """A Notifier that keeps what it is asked to post."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, Notice]] = []

    async def post(self, channel: str, notice: Notice) -> None:
        self.posted.append((channel, notice))


@pytest.fixture
def runtime_for(
    make_assistant: Callable[..., Any], store: Store, model, tools, prompts_dir: Path
) -> Callable[..., Any]:
    async def build() -> Runtime:
        assistant = await make_assistant()
        suites = load_suites(prompts_dir, known_tools=tools.names())
        commands = AdminCommands(prompts=store.prompts, versions=assistant.versions, admins=[])
        runner = EvalRunner(
            assistant=assistant, store=store, model=model, tools=tools, judge_model="gpt-4o-mini"
        )
        return Runtime(
            store=store,
            model=model,
            assistant=assistant,
            commands=commands,
            tools=tools,
            suites=suites,
            runner=runner,
            knowledge=Knowledge(store, None),
        )

    return build


def duties(runtime: Runtime, notifier: Any, *, budget: float | None = None, now=NOW) -> Duties:
    return Duties(
        store=runtime.store,
        runner=runtime.runner,
        suites=runtime.suites,
        notifier=notifier,
        settings=DutySettings(
            channels=["slack:C0REPORTS", f"discord:{DISCORD_CHANNEL}"],
            eval_cron="0 3 * * *",
            report_cron="0 9 * * *",
            daily_budget_usd=budget,
        ),
        clock=lambda: now,
    )


async def test_the_report_is_posted_to_slack_and_discord_with_a_png_chart(
    runtime_for, slack_bot, slack, discord_bot, discord_fake, fake_llm, store
):
    runtime = await runtime_for()
    fake_llm.script(Reply(text="an answer"))
    await collect(runtime.assistant.respond(inbound("a question")))
    notifier = ChannelNotifier(slack=slack_bot.adapter, discord=discord_bot)
    clock = datetime.now(UTC) + timedelta(minutes=1)  # the turn above is in the last 24 h

    await duties(runtime, notifier, now=clock).post_report()

    [posted] = [p for p in slack.calls_to("chat.postMessage") if p["channel"] == "C0REPORTS"]
    assert posted["blocks"] and "report" in posted["text"].lower()
    [chart] = [f for f in slack.files.values() if f["channel"] == "C0REPORTS"]
    assert chart["bytes"].startswith(PNG)
    [shown] = [m for m in discord_fake.shown(DISCORD_CHANNEL) if m.embeds]
    assert shown.attachments and discord_fake.uploads[shown.attachments[0]["id"]].startswith(PNG)
    assert shown.embeds[0]["image"]["url"].startswith("attachment://")


def _suite(prompts_dir: Path) -> None:
    spec = {"cases": [{"name": "c", "input": "colour?", "expect": [{"contains": "blue"}]}]}
    (prompts_dir / "assistant" / "evals.yaml").write_text(yaml.safe_dump(spec), "utf-8")


async def test_a_drift_alert_is_posted_once(runtime_for, prompts_dir, fake_llm, store):
    _suite(prompts_dir)
    runtime = await runtime_for()
    await store.evals.save_run(
        EvalRun(prompt_name="assistant", version=1, model="gpt-4o-mini", pass_rate=1.0), []
    )
    recorder = Recorder()
    fake_llm.script(Reply(text="red"), Reply(text="red"))  # the model changed its mind

    [run] = await duties(runtime, recorder).run_evals()
    assert run.pass_rate == 0.0
    alerts = [n for _, n in recorder.posted]
    assert len(alerts) == 2  # one per channel
    assert "Drift" in alerts[0].title and "passed 0%" in alerts[0].text
    assert "down from 100%" in alerts[0].text

    await duties(runtime, recorder).check_alerts()  # nothing else to say
    assert len(recorder.posted) == 2


async def _spend(store: Store, *, usd: float, at: datetime, status: str = "ok", n: int = 1):
    conversation_id = await store.conversation_id(inbound("x").ref)
    calls = [
        LlmCall(
            conversation_id=conversation_id,
            purpose="reply",
            model="gpt-4o-mini",
            cost_usd=usd,
            total_ms=100.0,
            status=status,
            created_at=at,
        )
        for _ in range(n)
    ]
    async with AsyncSession(store.engine) as session:  # calls made at `at`, not now
        session.add_all(calls)
        await session.commit()


async def test_budget_alerts_come_once_at_80_and_once_at_100_percent(runtime_for, store):
    runtime = await runtime_for()
    recorder = Recorder()
    await _spend(store, usd=0.85, at=NOW - timedelta(hours=2))
    await duties(runtime, recorder, budget=1.0).check_alerts()
    await duties(runtime, recorder, budget=1.0).check_alerts()
    assert [n.text for c, n in recorder.posted if c.startswith("slack")] == [
        "⚠️ Daily budget: $0.85 spent today, 85% of $1.00 (DAILY_BUDGET_USD)."
    ]

    await _spend(store, usd=0.30, at=NOW - timedelta(hours=1))
    await duties(runtime, recorder, budget=1.0).check_alerts()
    await duties(runtime, recorder, budget=1.0).check_alerts()
    texts = [n.text for c, n in recorder.posted if c.startswith("slack")]
    assert len(texts) == 2 and "115% of $1.00" in texts[1]


async def test_an_error_spike_is_alerted_once_an_hour(runtime_for, store):
    runtime = await runtime_for()
    recorder = Recorder()
    await _spend(store, usd=0.0, at=NOW - timedelta(minutes=5), n=6)
    await _spend(store, usd=0.0, at=NOW - timedelta(minutes=4), status="error", n=6)
    for _ in range(3):
        await duties(runtime, recorder).check_alerts()
    [alert] = [n for c, n in recorder.posted if c.startswith("slack")]
    assert "6 of 12 model calls failed" in alert.text


async def test_report_and_eval_run_work_from_chat_and_eval_run_is_for_admins(
    make_assistant, store, model, tools, prompts_dir, fake_llm
):
    _suite(prompts_dir)
    assistant = await make_assistant()
    suites = load_suites(prompts_dir, known_tools=tools.names())
    runner = EvalRunner(
        assistant=assistant, store=store, model=model, tools=tools, judge_model="gpt-4o-mini"
    )
    chat = ChatDuties(
        store=store,
        assistant=assistant,
        runner=runner,
        suites=suites,
        knowledge=Knowledge(store, None),
        settings=load_settings(),
    )
    commands = AdminCommands(
        prompts=store.prompts,
        versions=assistant.versions,
        admins=["test:ADMIN1"],
        reporter=chat.report,
        evaluator=chat.evaluate,
    )
    admin = CommandContext(actor=Actor(platform="test", user_id="ADMIN1"), surface="test")
    someone = CommandContext(actor=Actor(platform="test", user_id="U9"), surface="test")

    fake_llm.script(Reply(text="blue"))
    ran = await commands.run("eval run assistant", admin)
    assert ran.ok and "assistant@1 ok: pass rate 100%" in ran.text
    refused = await commands.run("eval run", someone)
    assert not refused.ok and "Only admins" in refused.text

    shown = await commands.run("report 7d", someone)
    assert shown.ok and "Assistant report, 7 days" in shown.text
    assert "eval runs $" in shown.text  # the eval turn above is counted apart from traffic
