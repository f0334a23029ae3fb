"""What the assistant cost, how fast and how good it was over a period: the figures, read from
the store once; `wording` and the surfaces decide how they read.

Only production traffic counts. Eval turns (conversations of the eval platform) and the calls
the bundled fake model answered (`assistant chat --fake`, `assistant run --fake`: recorded under
the model name "fake") are left out of every figure but the ones that say what was left out
(`eval_*`, `fake_*`). Unpriced calls (no price for their model) are never counted as $0:
costs are sums of priced calls, and every rendering says how many calls were left out. Tokens
our tokenizer estimated (the server sent no usage) are counted apart, so every rendering can
say how much of a total is a guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from assistant.evals.retrieval import RetrievalSummary, summarize
from assistant.store import Store
from assistant.store.report_store import (
    CallTotals,
    EvalPoint,
    MessageCounts,
    Ranks,
    ReplyLatency,
    ReportQueries,
    Traffic,
    Votes,
)

K = TypeVar("K", bound=Hashable)

_SPEC = re.compile(r"(\d+)([hd])")
_LONGEST = timedelta(days=366)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
_UNITS = (
    ("day", timedelta(days=1)),
    ("hour", timedelta(hours=1)),
    ("minute", timedelta(minutes=1)),
)
UNVERSIONED = "unversioned"


# ---- the figures


@dataclass(frozen=True, kw_only=True)
class Period:
    """A span of UTC time: `start` included, `end` excluded."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            moment: datetime = getattr(self, name)
            if moment.utcoffset() is None:
                raise ValueError(f"a period's {name} needs a time zone (UTC), got {moment}")
            object.__setattr__(self, name, moment.astimezone(UTC))
        if self.end < self.start:
            raise ValueError(f"a period cannot end ({self.end}) before it starts ({self.start})")

    @classmethod
    def last(cls, spec: str, *, now: datetime) -> Period:
        """The `spec` ("24h", "7d", "30d": hours or days, up to 366 days) that ends at `now`."""
        match = _SPEC.fullmatch(spec.strip().lower())
        amount = int(match[1]) if match else 0
        length = timedelta(hours=amount) if match and match[2] == "h" else timedelta(days=amount)
        if not amount or length > _LONGEST:
            raise ValueError(
                f"a report period is a number of hours or days up to 366 days, "
                f"such as 24h, 7d or 30d; got {spec!r}"
            )
        return cls(start=now - length, end=now)

    def describe(self) -> str:
        """ "24 hours to 2025-03-10 09:00 UTC"; a span of no round length "from … to …"."""
        end = f"{self.end:%Y-%m-%d %H:%M} UTC"
        length = self.end - self.start
        for unit, size in _UNITS:
            count, rest = divmod(length, size)
            if count and not rest and (unit != "day" or count > 1):
                return f"{count} {unit}{'' if count == 1 else 's'} to {end}"
        return f"{self.start:%Y-%m-%d %H:%M} to {end}"

    @property
    def bucket(self) -> timedelta:
        """How finely the period is cut for a chart: hours for a day or less (one daily bar
        would hide the whole day), days for longer."""
        return HOUR if self.end - self.start <= DAY else DAY

    def buckets(self) -> list[datetime]:
        """The start of every UTC hour or day (see `bucket`) the period touches, partly or
        wholly."""
        size = self.bucket
        starts, moment = [], bucket_start(self.start, size)
        while moment < self.end:
            starts.append(moment)
            moment += size
        return starts


def bucket_start(moment: datetime, size: timedelta) -> datetime:
    """The UTC hour or day (`size`) `moment` falls in."""
    hour = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return hour.replace(hour=0) if size == DAY else hour


@dataclass(frozen=True, kw_only=True)
class Percentiles:
    """Nearest-rank percentiles: the p-th is the value at rank ceil(p/100 * n) of the n sorted
    values, so it is always a latency that was actually seen; None when there were none."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None

    @classmethod
    def ranked(cls, ranks: Ranks) -> Percentiles:
        """From the nearest-rank values the store computed (`ReplyLatency`)."""
        return cls(p50=ranks.get(50), p95=ranks.get(95), p99=ranks.get(99))

    @classmethod
    def of(cls, values: Iterable[float]) -> Percentiles:
        ordered = sorted(values)
        if not ordered:
            return cls()
        return cls(
            p50=_nearest_rank(ordered, 50),
            p95=_nearest_rank(ordered, 95),
            p99=_nearest_rank(ordered, 99),
        )


def _nearest_rank(ordered: Sequence[float], percent: int) -> float:
    rank = -(-percent * len(ordered) // 100)  # ceil in integers: no float rounding at the edge
    return ordered[max(rank, 1) - 1]


@dataclass(frozen=True, kw_only=True)
class VersionFigures:
    """One prompt version's traffic, cost, votes and eval results."""

    label: str  # "name@version", or "unversioned"
    calls: int
    errors: int
    cost_usd: float  # priced calls only
    unpriced_calls: int
    messages: int  # assistant replies
    thumbs_up: int
    thumbs_down: int
    eval_pass_rate: float | None  # the latest run finished before the period's end
    eval_pass_change: float | None  # since the run before it, as a fraction
    consistency: float | None
    consistency_change: float | None
    retrieval: RetrievalSummary | None = None  # the latest run with retrieval cases
    retrieval_before: RetrievalSummary | None = None  # the one before it

    @property
    def error_rate(self) -> float | None:
        """Errors / calls; None for a version that made no call in the period."""
        return self.errors / self.calls if self.calls else None


@dataclass(frozen=True, kw_only=True)
class BucketFigures:
    """One UTC hour or day of the period (`Period.bucket`): production spend per prompt
    version, calls, and the latency of the replies the model answered."""

    start: datetime
    cost_usd: float  # priced calls only
    cost_by_version: dict[str, float]  # version label -> priced cost, versions that made a call
    calls: int
    errors: int
    ttft_ms: Percentiles
    total_ms: Percentiles


@dataclass(frozen=True, kw_only=True)
class Report:
    period: Period
    conversations: int  # with a message in the period
    messages: int  # user and assistant
    prompt_tokens: int
    completion_tokens: int  # reasoning tokens included
    cached_tokens: int
    cost_usd: float  # priced calls only: a lower bound when unpriced_calls > 0
    unpriced_calls: int
    unpriced_models: tuple[str, ...]
    eval_cost_usd: float  # eval turns and their judge: apart from every other figure
    eval_unpriced_calls: int
    cost_by_model: dict[str, float]  # priced models, most expensive first
    # what production's calls were for (reply, summary, repair, embedding …): calls and cost
    by_purpose: dict[str, tuple[int, float]] = field(default_factory=dict)
    by_version: list[VersionFigures]
    ttft_ms: Percentiles  # reply calls answered by the model (not the cache)
    total_ms: Percentiles
    calls: int
    errors: int
    error_rate: float  # errors / calls, 0 when there were no calls
    buckets: list[BucketFigures]  # every hour or day of the period, quiet ones too
    budget_usd: float | None
    budget_used: float | None  # spend on the UTC day of period.end / budget_usd
    reasoning_tokens: int = 0  # a part of completion_tokens
    estimated_calls: int = 0  # calls whose tokens our tokenizer counted (no usage was sent)
    estimated_prompt_tokens: int = 0  # the parts of the token totals those calls make up
    estimated_completion_tokens: int = 0
    fallback_answers: dict[str, int] = field(default_factory=dict)  # by the model that answered
    eval_calls: int = 0  # left out: eval turns' calls
    fake_calls: int = 0  # left out: calls the bundled fake model answered (its eval runs too)
    fake_conversations: int = 0  # left out: conversations only the fake model answered
    production_calls: int = 0  # left out when the report is the fake model's (`fake`)
    fake: bool = False  # the figures are the bundled fake model's traffic, not production's


@dataclass(kw_only=True)
class _Tally:
    calls: int = 0
    errors: int = 0
    unpriced: int = 0
    cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    estimated_calls: int = 0
    estimated_prompt_tokens: int = 0
    estimated_completion_tokens: int = 0
    fallback_answers: int = 0

    def add(self, row: CallTotals) -> None:
        self.calls += row.calls
        self.errors += row.errors
        self.unpriced += row.unpriced
        self.cost_usd += row.cost_usd
        self.prompt_tokens += row.prompt_tokens
        self.completion_tokens += row.completion_tokens
        self.cached_tokens += row.cached_tokens
        self.reasoning_tokens += row.reasoning_tokens
        self.estimated_calls += row.estimated_calls
        self.estimated_prompt_tokens += row.estimated_prompt_tokens
        self.estimated_completion_tokens += row.estimated_completion_tokens
        self.fallback_answers += row.fallback_answers


def _tally(rows: Iterable[CallTotals]) -> _Tally:
    total = _Tally()
    for row in rows:
        total.add(row)
    return total


def _tally_by(rows: Iterable[CallTotals], key: Callable[[CallTotals], K]) -> dict[K, _Tally]:
    tallies: dict[K, _Tally] = {}
    for row in rows:
        tallies.setdefault(key(row), _Tally()).add(row)
    return tallies


async def build_report(
    store: Store, period: Period, *, daily_budget_usd: float | None = None, fake: bool = False
) -> Report:
    """Read the period's figures from `store`.

    Args:
        daily_budget_usd: compared with the production spend of the UTC day of `period.end`;
            None or 0 means no budget.
        fake: report on the bundled fake model's traffic instead of production's (to try the
            report offline); production is then what is left out, and no budget applies.
    """
    queries = ReportQueries(store.engine, fake=fake)
    by_day = period.bucket == DAY
    kinds = _by_traffic(await queries.call_totals(period.start, period.end, by_day=by_day))
    studied = kinds["fake" if fake else "production"]  # the traffic these figures describe
    latency = await queries.reply_latency(period.start, period.end, by_day=by_day)
    traffic = await queries.message_counts(period.start, period.end)
    votes = await queries.votes(period.start, period.end)
    total, evals = _tally(studied), _tally(kinds["fake_eval" if fake else "eval"])
    by_model = _tally_by(studied, lambda row: row.model)
    # every version that made a call, gave a reply or got a vote in the period
    ids = {row.prompt_version_id for row in studied} | set(traffic.replies_by_version)
    ids |= set(votes)
    named = await queries.version_labels({i for i in ids if i is not None})
    searches = await _retrieval(store, set(named.values()), before=period.end, fake=fake)
    return Report(
        period=period,
        conversations=traffic.conversations,
        messages=traffic.messages,
        prompt_tokens=total.prompt_tokens,
        completion_tokens=total.completion_tokens,
        cached_tokens=total.cached_tokens,
        cost_usd=total.cost_usd,
        unpriced_calls=total.unpriced,
        unpriced_models=tuple(sorted(m for m, tally in by_model.items() if tally.unpriced)),
        eval_cost_usd=evals.cost_usd,
        eval_unpriced_calls=evals.unpriced,
        cost_by_model=_cost_by_model(by_model),
        by_purpose={
            purpose: (tally.calls, tally.cost_usd)
            for purpose, tally in _tally_by(studied, lambda row: row.purpose).items()
        },
        by_version=await _by_version(
            queries, period, studied, traffic, votes, ids, named, searches
        ),
        ttft_ms=Percentiles.ranked(latency.ttft_ms),
        total_ms=Percentiles.ranked(latency.total_ms),
        calls=total.calls,
        errors=total.errors,
        error_rate=total.errors / total.calls if total.calls else 0.0,
        buckets=_buckets(period, studied, latency, named),
        budget_usd=None if fake else daily_budget_usd or None,
        budget_used=None if fake else await _budget_used(queries, period, daily_budget_usd),
        reasoning_tokens=total.reasoning_tokens,
        estimated_calls=total.estimated_calls,
        estimated_prompt_tokens=total.estimated_prompt_tokens,
        estimated_completion_tokens=total.estimated_completion_tokens,
        fallback_answers={m: t.fallback_answers for m, t in by_model.items() if t.fallback_answers},
        eval_calls=evals.calls,
        fake_calls=0 if fake else _tally([*kinds["fake"], *kinds["fake_eval"]]).calls,
        fake_conversations=0
        if fake
        else await queries.fake_conversations(period.start, period.end),
        production_calls=_tally(kinds["production"]).calls if fake else 0,
        fake=fake,
    )


def _by_traffic(rows: Iterable[CallTotals]) -> dict[Traffic, list[CallTotals]]:
    kinds: dict[Traffic, list[CallTotals]] = {
        "production": [],
        "eval": [],
        "fake": [],
        "fake_eval": [],
    }
    for row in rows:
        kinds[row.traffic].append(row)
    return kinds


def _label(version_id: int | None, named: dict[int, tuple[str, int]]) -> str:
    found = named.get(version_id) if version_id is not None else None
    return f"{found[0]}@{found[1]}" if found else UNVERSIONED


def _cost_by_model(by_model: dict[str, _Tally]) -> dict[str, float]:
    """Models with at least one priced call: an unpriced model's $0 would be a false figure."""
    priced = [(model, t.cost_usd) for model, t in by_model.items() if t.calls > t.unpriced]
    return dict(sorted(priced, key=lambda item: (-item[1], item[0])))


async def _budget_used(
    queries: ReportQueries, period: Period, budget: float | None
) -> float | None:
    if not budget:
        return None
    midnight = period.end.replace(hour=0, minute=0, second=0, microsecond=0)
    return await queries.priced_cost(midnight, period.end) / budget


async def _by_version(
    queries: ReportQueries,
    period: Period,
    rows: Sequence[CallTotals],
    traffic: MessageCounts,
    votes: dict[int | None, Votes],
    ids: set[int | None],
    named: dict[int, tuple[str, int]],
    searches: dict[tuple[str, int], list[RetrievalSummary]],
) -> list[VersionFigures]:
    """The figures of each version in `ids`; by name and version, the unversioned last."""
    tallies = _tally_by(rows, lambda row: row.prompt_version_id)
    history = await queries.eval_history(set(named.values()), before=period.end)

    def sort_key(version_id: int | None) -> tuple[bool, str, int]:
        name, number = named.get(version_id, ("", 0)) if version_id is not None else ("", 0)
        return version_id is None, name, number

    return [
        _version_figures(
            _label(version_id, named),
            tallies.get(version_id, _Tally()),
            replies=traffic.replies_by_version.get(version_id, 0),
            votes=votes.get(version_id, Votes(up=0, down=0)),
            runs=history.get(named[version_id], []) if version_id in named else [],
            searches=searches.get(named[version_id], []) if version_id in named else [],
        )
        for version_id in sorted(ids, key=sort_key)
    ]


async def _retrieval(
    store: Store, versions: set[tuple[str, int]], *, before: datetime, fake: bool
) -> dict[tuple[str, int], list[RetrievalSummary]]:
    """Each version's two newest retrieval figures, newest first."""
    history = await store.evals.retrieval_history(versions, before=before, fake=fake)
    found: dict[tuple[str, int], list[RetrievalSummary]] = {}
    for version, runs in history.items():
        summaries = [summarize(run, results) for run, results in runs]
        found[version] = [summary for summary in summaries if summary is not None]
    return found


def _version_figures(
    label: str,
    tally: _Tally,
    *,
    replies: int,
    votes: Votes,
    runs: Sequence[EvalPoint],
    searches: Sequence[RetrievalSummary],
) -> VersionFigures:
    """`runs`: the version's latest eval run and the one before it, newest first; `searches`:
    the same of its runs with retrieval cases."""
    latest = runs[0] if runs else None
    previous = runs[1] if len(runs) > 1 else None
    return VersionFigures(
        label=label,
        calls=tally.calls,
        errors=tally.errors,
        cost_usd=tally.cost_usd,
        unpriced_calls=tally.unpriced,
        messages=replies,
        thumbs_up=votes.up,
        thumbs_down=votes.down,
        eval_pass_rate=latest.pass_rate if latest else None,
        eval_pass_change=_change(latest, previous, lambda run: run.pass_rate),
        consistency=latest.consistency if latest else None,
        consistency_change=_change(latest, previous, lambda run: run.consistency),
        retrieval=searches[0] if searches else None,
        retrieval_before=searches[1] if len(searches) > 1 else None,
    )


def _change(
    latest: EvalPoint | None,
    previous: EvalPoint | None,
    figure: Callable[[EvalPoint], float | None],
) -> float | None:
    if latest is None or previous is None:
        return None
    now, before = figure(latest), figure(previous)
    return None if now is None or before is None else now - before


def _buckets(
    period: Period,
    rows: Sequence[CallTotals],
    latency: ReplyLatency,
    named: dict[int, tuple[str, int]],
) -> list[BucketFigures]:
    """Every hour or day of the period, quiet ones too: a gap in a chart should look like one."""
    size = period.bucket
    calls: dict[datetime, list[CallTotals]] = {}
    for row in rows:
        calls.setdefault(bucket_start(row.start, size), []).append(row)
    return [
        _bucket(
            start,
            calls.get(start, []),
            ttft=Percentiles.ranked(latency.ttft_by_bucket.get(start, {})),
            total=Percentiles.ranked(latency.total_by_bucket.get(start, {})),
            named=named,
        )
        for start in period.buckets()
    ]


def _bucket(
    start: datetime,
    rows: Sequence[CallTotals],
    *,
    ttft: Percentiles,
    total: Percentiles,
    named: dict[int, tuple[str, int]],
) -> BucketFigures:
    tally = _tally(rows)
    versions = _tally_by(rows, lambda row: _label(row.prompt_version_id, named))
    return BucketFigures(
        start=start,
        cost_usd=tally.cost_usd,
        cost_by_version={label: t.cost_usd for label, t in versions.items()},
        calls=tally.calls,
        errors=tally.errors,
        ttft_ms=ttft,
        total_ms=total,
    )
