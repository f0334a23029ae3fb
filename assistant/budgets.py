"""Spending limits: which apply where, what was spent under each, and the words for both.

A budget is set from chat for everything (global), a workspace or a channel, per UTC day or
month; DAILY_BUDGET_USD is the global daily one until an admin sets that from chat (the row set
from chat wins: it is the newer decision, and it is audited). A turn in a place where any
budget that applies is spent gets a plain answer instead of a model call; evals are never
stopped (they are how an admin checks a version) but what they and their judge spend counts
toward the global budgets, like every other call.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from assistant.prompts.bindings import Scope, ScopeKind
from assistant.store.budget_store import BudgetStore, Measured, Place, Spent
from assistant.store.tables import BudgetRow
from assistant.turns import ConversationRef

log = logging.getLogger(__name__)

BudgetPeriod = Literal["day", "month"]
BUDGET_PERIODS: tuple[BudgetPeriod, ...] = get_args(BudgetPeriod)
MAX_USD = 1_000_000.0  # past this a figure is a typo, not a budget
ALERT_LEVELS = (0.8, 1.0)
BUDGET_EXCEEDED = "BudgetExceeded"  # the error class of a turn a spent budget stopped
SETTING = "DAILY_BUDGET_USD"
EVAL_PLATFORM = "eval"  # the eval runner's conversations: never stopped, always counted
# How long a turn's check reuses a sum it made (per process): a month of calls summed on every
# turn costs hundreds of ms (benchmarks/budget_gate.py); a spent budget may let turns through
# for this long at most. The budgets themselves are read on every turn: a raise holds at once.
REUSE_SUM_SECONDS = 5.0
_REMEMBERED = 1000  # sums kept at most (one per place and period start)
_ORDER: dict[str, int] = {"channel": 0, "workspace": 1, "global": 2}
HOW_TO_SET = (
    "An admin sets one with `budget set USD [--scope channel|workspace|global] "
    "[--period day|month]`."
)


@dataclass(frozen=True, kw_only=True)
class Budget:
    scope: Scope
    period: BudgetPeriod
    usd: float
    set_by: str  # platform:user_id, or SETTING

    @property
    def key(self) -> str:
        """Names the budget in an alert's key: one alert per budget, level and period."""
        place = "/".join((self.scope.platform, self.scope.workspace, self.scope.channel))
        return f"{self.scope.kind}:{place}:{self.period}"


@dataclass(frozen=True, kw_only=True)
class BudgetStatus:
    """A budget and what was spent under it in its current period."""

    budget: Budget
    spent: Spent
    start: datetime  # the period's start, UTC
    resets: datetime  # the next period's start

    @property
    def used(self) -> float:
        return self.spent.usd / self.budget.usd

    @property
    def exhausted(self) -> bool:
        return self.spent.usd >= self.budget.usd


def period_start(period: BudgetPeriod, now: datetime) -> datetime:
    """The UTC day's midnight, or the UTC month's first midnight."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day if period == "day" else day.replace(day=1)


def period_end(period: BudgetPeriod, now: datetime) -> datetime:
    start = period_start(period, now)
    if period == "day":
        return start + timedelta(days=1)
    return (start + timedelta(days=32)).replace(day=1)


def check_usd(usd: float) -> None:
    """A budget is a positive amount below MAX_USD; ValueError says what is wrong."""
    if not math.isfinite(usd) or not 0 < usd <= MAX_USD:
        raise ValueError(f"A budget is an amount in USD above 0 and at most {usd_text(MAX_USD)}.")


class Budgets:
    """The budgets over one store, read fresh on every use: a raise made on one replica holds
    on every other at once."""

    def __init__(
        self,
        store: BudgetStore,
        *,
        daily_usd: float | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        reuse_seconds: float = REUSE_SUM_SECONDS,
    ) -> None:
        self._store = store
        self._daily_usd = daily_usd or None  # 0 means none, as the report reads it
        self._clock = clock
        self._reuse_seconds = reuse_seconds
        self._sums: dict[Measured, tuple[float, Spent]] = {}  # -> (monotonic expiry, sum)

    async def in_force(self, ref: ConversationRef | None) -> list[Budget]:
        """The budgets that apply to `ref` (None: every budget), most specific first."""
        rows = await self._store.applying(ref) if ref is not None else await self._store.all()
        budgets = [_budget(row) for row in rows]
        overridden = any(b.scope.kind == "global" and b.period == "day" for b in budgets)
        if self._daily_usd is not None and not overridden:
            budgets.append(
                Budget(
                    scope=Scope(kind="global"), period="day", usd=self._daily_usd, set_by=SETTING
                )
            )
        return sorted(budgets, key=_specific_first)

    async def statuses(self, ref: ConversationRef | None) -> list[BudgetStatus]:
        return await self.measure(await self.in_force(ref))

    async def measure(
        self, budgets: Sequence[Budget], *, reuse: bool = False
    ) -> list[BudgetStatus]:
        """What was spent under each budget, in one query; `reuse`: sums made in the last
        `reuse_seconds` stand (a turn's check), the others are summed in that one query."""
        now = self._clock()
        measured = [
            Measured(place=_place(b.scope), since=period_start(b.period, now)) for b in budgets
        ]
        spent = await self._sums_of(measured) if reuse else await self._store.spent(measured)
        return [
            BudgetStatus(
                budget=b,
                spent=s,
                start=period_start(b.period, now),
                resets=period_end(b.period, now),
            )
            for b, s in zip(budgets, spent, strict=True)
        ]

    async def refusal(self, ref: ConversationRef) -> str | None:
        """The plain answer for a turn in `ref` when a budget that applies there is spent;
        None to answer as usual. With no budget in force, one small read and no sum."""
        if ref.platform == EVAL_PLATFORM:
            return None
        budgets = await self.in_force(ref)
        if not budgets:
            return None
        for status in await self.measure(budgets, reuse=True):
            if status.exhausted:
                return refusal_text(status, here=ref)
        return None

    async def _sums_of(self, measured: Sequence[Measured]) -> list[Spent]:
        """The sums of `measured`: those made less than `reuse_seconds` ago as they were, the
        rest in one query (and remembered)."""
        clock = time.monotonic()
        self._sums = {m: kept for m, kept in self._sums.items() if kept[0] > clock}
        if len(self._sums) > _REMEMBERED:  # many places this process answers in: start over
            self._sums = {}
        # read before the query: another turn may drop an expired sum while this one waits
        found = {m: self._sums[m][1] for m in measured if m in self._sums}
        missing = [m for m in dict.fromkeys(measured) if m not in found]
        if missing:
            until = clock + self._reuse_seconds
            summed = await self._store.spent(missing)
            fresh = dict(zip(missing, summed, strict=True))
            found.update(fresh)
            self._sums.update({m: (until, spent) for m, spent in fresh.items()})
        return [found[m] for m in measured]

    async def set(
        self, scope: Scope, period: BudgetPeriod, usd: float, *, actor: str, surface: str
    ) -> str:
        """Set a budget (audited) and say what it is now, with what is spent under it."""
        check_usd(usd)
        change = await self._store.set(_place(scope), period, usd, actor=actor, surface=surface)
        budget = Budget(scope=scope, period=period, usd=usd, set_by=actor)
        [status] = await self.measure([budget])
        if change.before is not None:
            was = f"was {usd_text(change.before)}"
        elif scope.kind == "global" and period == "day" and self._daily_usd is not None:
            was = f"was {usd_text(self._daily_usd)} from {SETTING}, which this now overrides"
        else:
            was = "no budget before"
        return f"Budget set: {_name(budget)}, {usd_text(usd)} ({was}).\n{show_line(status)}"

    async def show(self, ref: ConversationRef | None) -> str:
        statuses = await self.statuses(ref)
        if not statuses:
            where = "here" if ref is not None else "anywhere"
            return f"No budget applies {where}. {HOW_TO_SET}"
        heading = "Budgets that apply here:" if ref is not None else "Budgets:"
        return "\n".join([heading, *(f"- {show_line(s)}" for s in statuses)])


def _budget(row: BudgetRow) -> Budget:
    period: BudgetPeriod = "month" if row.period == "month" else "day"
    kind: ScopeKind = row.scope  # type: ignore[assignment]  # written from a ScopeKind
    scope = Scope(kind=kind, platform=row.platform, workspace=row.workspace, channel=row.channel)
    return Budget(scope=scope, period=period, usd=row.usd, set_by=row.set_by)


def _place(scope: Scope) -> Place:
    return Place(
        scope=scope.kind, platform=scope.platform, workspace=scope.workspace, channel=scope.channel
    )


def _specific_first(budget: Budget) -> tuple[int, int]:
    return _ORDER[budget.scope.kind], BUDGET_PERIODS.index(budget.period)


# ---- wording


def usd_text(usd: float) -> str:
    """Cents, but four places for an amount below a dollar that cents would misstate (a test
    budget of $0.0005 is not "$0.00")."""
    if abs(usd) < 1 and abs(usd - round(usd, 2)) > 1e-9:
        return f"${usd:.4f}"
    return f"${usd:,.2f}"


def _name(budget: Budget) -> str:
    """ "channel slack/T1/C1, daily" """
    daily = "daily" if budget.period == "day" else "monthly"
    return f"{budget.scope.describe()}, {daily}"


def _spent_text(spent: Spent) -> str:
    if not spent.unpriced:
        return f"{usd_text(spent.usd)} spent"
    calls = "call" if spent.unpriced == 1 else "calls"
    return f"{usd_text(spent.usd)} spent, plus {spent.unpriced} {calls} of unknown cost (unpriced)"


def _resets(status: BudgetStatus) -> str:
    if status.budget.period == "day":
        return "at 00:00 UTC"
    return f"on {status.resets:%-d %B} at 00:00 UTC"


def show_line(status: BudgetStatus) -> str:
    """ "channel slack/T1/C1, daily: $4.10 spent of $5.00 (82%); resets at 00:00 UTC; set by
    slack:U1" """
    budget = status.budget
    flag = " — used up: new turns get a plain answer" if status.exhausted else ""
    return (
        f"{_name(budget)}: {_spent_text(status.spent)} of {usd_text(budget.usd)} "
        f"({status.used:.0%}){flag}; resets {_resets(status)}; set by {budget.set_by}"
    )


def _whose(budget: Budget, here: ConversationRef) -> str:
    kind = budget.scope.kind
    if kind == "channel":
        return "This conversation's" if not here.workspace else "This channel's"
    if kind == "workspace":
        return "This workspace's"
    return "The assistant's overall"


def refusal_text(status: BudgetStatus, *, here: ConversationRef) -> str:
    """What a user is told instead of an answer."""
    budget = status.budget
    when = "today" if budget.period == "day" else "this month"
    return (
        f"{_whose(budget, here)} budget of {usd_text(budget.usd)} for {when} is used up "
        f"({_spent_text(status.spent)}). It resets {_resets(status)}, or an admin can raise it "
        "with `budget set`."
    )


def alert_text(status: BudgetStatus) -> str:
    """A budget alert for the report channels."""
    budget = status.budget
    when = "today" if budget.period == "day" else "this month"
    if budget.set_by == SETTING:
        title, source = "Daily budget", SETTING
    else:
        title, source = f"Budget of {_name(budget)}", f"set by {budget.set_by}"
    unknown = f", plus {status.spent.unpriced} unpriced calls" if status.spent.unpriced else ""
    return (
        f"⚠️ {title}: {usd_text(status.spent.usd)} spent {when}{unknown}, {status.used:.0%} of "
        f"{usd_text(budget.usd)} ({source})."
    )
