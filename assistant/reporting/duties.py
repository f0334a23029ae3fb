"""The scheduled duties: run the evals, post the report, watch for alerts.

Each alert is claimed once in the store under a key naming its condition (a run that drifted,
a budget level on a day, an error spike in an hour), so it is posted once however often the
check runs and whichever replica leads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from assistant.budgets import ALERT_LEVELS, Budgets, alert_text
from assistant.evals.runner import EvalRunner, RunOutcome
from assistant.evals.suite import EvalSuite
from assistant.reporting.chart import chart_png
from assistant.reporting.figures import Period, build_report
from assistant.reporting.notices import Notice, Notifier
from assistant.reporting.schedule import ScheduledJob, cron
from assistant.reporting.wording import report_text
from assistant.store import Store
from assistant.store.tables import EvalRun

log = logging.getLogger(__name__)

DRIFT_POINTS = 0.10  # a version's pass rate falling this much since its previous run
SPIKE_WINDOW = timedelta(minutes=15)
SPIKE_MIN_CALLS = 10
SPIKE_RATE = 0.25
BUDGET_LEVELS = ALERT_LEVELS
_ALERT_MEMORY = timedelta(days=30)
Clock = Callable[[], datetime]


@dataclass(frozen=True, kw_only=True)
class DutySettings:
    channels: Sequence[str]
    eval_cron: str
    report_cron: str
    daily_budget_usd: float | None
    alert_cron: str = "*/5 * * * *"
    knowledge_cron: str = "*/30 * * * *"
    fake: bool = False  # `run --fake`: the reports are of the fake model's traffic


class Duties:
    def __init__(
        self,
        *,
        store: Store,
        runner: EvalRunner,
        suites: Mapping[str, EvalSuite],
        notifier: Notifier,
        settings: DutySettings,
        sync_knowledge: Callable[[], Awaitable[object]] | None = None,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self._sync_knowledge = sync_knowledge
        self._store = store
        self._runner = runner
        self._suites = suites
        self._notifier = notifier
        self._settings = settings
        self._clock = clock

    def jobs(self) -> list[ScheduledJob]:
        return [
            ScheduledJob(name="evals", trigger=cron(self._settings.eval_cron), run=self.run_evals),
            ScheduledJob(
                name="report", trigger=cron(self._settings.report_cron), run=self.post_report
            ),
            ScheduledJob(
                name="alerts", trigger=cron(self._settings.alert_cron), run=self.check_alerts
            ),
            *self._knowledge_job(),
        ]

    def _knowledge_job(self) -> list[ScheduledJob]:
        """knowledge.yaml's collections synced by the leader alone (one process of all the
        replicas and workers): at start, then every half hour, embedding only what changed."""
        if self._sync_knowledge is None:
            return []
        trigger = cron(self._settings.knowledge_cron)
        return [
            ScheduledJob(name="knowledge", trigger=trigger, run=self._sync_knowledge, at_start=True)
        ]

    # ---- evals and drift

    async def run_evals(self) -> list[EvalRun]:
        """Every suite at the version in use; a drop since its previous run is an alert: in
        the pass rate (the model changed) or in what the search finds (the index did)."""
        runner = self._runner
        runs = []
        for name in sorted(self._suites):
            version = await runner.version_in_use(name)
            outcome = await runner.run_and_compare(self._suites[name], version, trigger="schedule")
            log.info("scheduled evals: %s", outcome.summary())
            runs.append(outcome.run)
            previous, run = outcome.compared, outcome.run
            if previous is not None and _answers_drifted(previous, run):
                await self._alert(f"drift:{run.id}", _drift_notice(previous, run))
            if outcome.retrieval_drops:
                await self._alert(f"retrieval:{run.id}", _retrieval_notice(outcome))
        return runs

    # ---- the report

    async def post_report(self, spec: str = "24h") -> None:
        period = Period.last(spec, now=self._clock())
        report = await build_report(
            self._store,
            period,
            daily_budget_usd=self._settings.daily_budget_usd,
            fake=self._settings.fake,
        )
        notice = Notice(
            title=f"Assistant report, {period.describe()}",
            text=report_text(report),
            report=report,
            image_png=await asyncio.to_thread(chart_png, report),  # ~0.2 s of drawing
        )
        for channel in self._settings.channels:
            await self._post(channel, notice)

    # ---- alerts

    async def check_alerts(self) -> None:
        await self._check_budget()
        await self._check_errors()

    async def _check_budget(self) -> None:
        """Every budget (each set from chat, and DAILY_BUDGET_USD unless one overrides it)
        against what was spent in its period, in one query: an alert at each level, once per
        budget, amount and period (a raised budget is a new condition)."""
        budgets = Budgets(
            self._store.budgets, daily_usd=self._settings.daily_budget_usd, clock=self._clock
        )
        for status in await budgets.statuses(None):
            for level in BUDGET_LEVELS:
                if status.used >= level:
                    key = (
                        f"budget:{status.budget.key}:{status.start.date().isoformat()}:"
                        f"{status.budget.usd:g}:{level:g}"
                    )
                    await self._alert(key, Notice(title="Budget", text=alert_text(status)))

    async def _check_errors(self) -> None:
        now = self._clock()
        report = await build_report(self._store, Period(start=now - SPIKE_WINDOW, end=now))
        if report.calls < SPIKE_MIN_CALLS or report.error_rate < SPIKE_RATE:
            return
        text = (
            f"⚠️ Error spike: {report.errors} of {report.calls} model calls failed in the last "
            f"{SPIKE_WINDOW.seconds // 60} minutes ({report.error_rate:.0%})."
        )
        await self._alert(f"errors:{now:%Y-%m-%dT%H}", Notice(title="Errors", text=text))

    async def _alert(self, key: str, notice: Notice) -> None:
        """Post once per condition: the key is claimed before anything is posted."""
        if not await self._store.claim_event([f"alert:{key}"], keep=_ALERT_MEMORY):
            return
        log.warning("alert: %s", notice.text)
        for channel in self._settings.channels:
            await self._post(channel, notice)

    async def _post(self, channel: str, notice: Notice) -> None:
        try:
            await self._notifier.post(channel, notice)
        except Exception:
            log.exception("could not post %r to %s", notice.title, channel)


def _answers_drifted(previous: EvalRun, run: EvalRun) -> bool:
    """The pass rate fell; not when it is the retrieval cases' (a suite of nothing else), whose
    own alert says what changed."""
    rated_by_retrieval = run.retrieval_cases > 0 and not run.cases and not run.tool_cases
    return not rated_by_retrieval and previous.pass_rate - run.pass_rate >= DRIFT_POINTS


def _drift_notice(previous: EvalRun, run: EvalRun) -> Notice:
    label = f"{run.prompt_name}@{run.version}"
    text = (
        f"⚠️ Drift: {label} on {run.model} passed {run.pass_rate:.0%} of its evals (run "
        f"#{run.id}), down from {previous.pass_rate:.0%} (run #{previous.id}). The prompt did "
        "not change: the model's behaviour did."
    )
    return Notice(title=f"Drift in {label}", text=text)


def _retrieval_notice(outcome: RunOutcome) -> Notice:
    run, previous = outcome.run, outcome.compared
    assert previous is not None and outcome.retrieval is not None
    label = f"{run.prompt_name}@{run.version}"
    text = (
        f"⚠️ Retrieval drift: the knowledge search of {label} finds less of what its evals "
        f"expect (run #{run.id} against run #{previous.id}): "
        f"{', '.join(outcome.retrieval_drops)}. The prompt did not change: the index did "
        "(a collection emptied, moved or unbound?)."
    )
    return Notice(title=f"Retrieval drift in {label}", text=text)
