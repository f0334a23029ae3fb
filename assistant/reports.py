"""What the assistant cost, how fast and how good it was over a period: the figures, read from
the store, and their renderings for a terminal or chat command, Slack, Discord and a chart.

Only production traffic counts: conversations of the eval platform are left out of everything
but `Report.eval_cost_usd`. Unpriced calls (no price for their model) are never counted as $0:
costs are sums of priced calls, and every rendering says how many calls were left out.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

from assistant.store import Store
from assistant.store.report_store import (
    CallTotals,
    EvalPoint,
    MessageCounts,
    ReplyTiming,
    ReportQueries,
    Votes,
)

K = TypeVar("K", bound=Hashable)

_SPEC = re.compile(r"(\d+)([hd])")
_LONGEST = timedelta(days=366)
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

    def days(self) -> list[date]:
        """The UTC days the period touches, partly or wholly."""
        if self.end <= self.start:
            return []
        first, last = self.start.date(), (self.end - timedelta(microseconds=1)).date()
        return [first + timedelta(days=n) for n in range((last - first).days + 1)]


@dataclass(frozen=True, kw_only=True)
class Percentiles:
    """Nearest-rank percentiles: the p-th is the value at rank ceil(p/100 * n) of the n sorted
    values, so it is always a latency that was actually seen; None when there were none."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None

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
    cost_usd: float  # priced calls only
    unpriced_calls: int
    messages: int  # assistant replies
    thumbs_up: int
    thumbs_down: int
    eval_pass_rate: float | None  # the latest run finished before the period's end
    eval_pass_change: float | None  # since the run before it, as a fraction
    consistency: float | None
    consistency_change: float | None


@dataclass(frozen=True, kw_only=True)
class DailyFigures:
    day: date
    cost_usd: float
    ttft_p50_ms: float | None
    total_p50_ms: float | None
    total_p95_ms: float | None
    total_p99_ms: float | None


@dataclass(frozen=True, kw_only=True)
class Report:
    period: Period
    conversations: int  # with a message in the period
    messages: int  # user and assistant
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float  # priced calls only: a lower bound when unpriced_calls > 0
    unpriced_calls: int
    unpriced_models: tuple[str, ...]
    eval_cost_usd: float  # eval turns: apart from every other figure
    eval_unpriced_calls: int
    cost_by_model: dict[str, float]  # priced models, most expensive first
    by_version: list[VersionFigures]
    ttft_ms: Percentiles  # reply calls answered by the model (not the cache)
    total_ms: Percentiles
    calls: int
    errors: int
    error_rate: float  # errors / calls, 0 when there were no calls
    daily: list[DailyFigures]
    budget_usd: float | None
    budget_used: float | None  # spend on the UTC day of period.end / budget_usd


@dataclass(kw_only=True)
class _Tally:
    calls: int = 0
    errors: int = 0
    unpriced: int = 0
    cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def add(self, row: CallTotals) -> None:
        self.calls += row.calls
        self.errors += row.errors
        self.unpriced += row.unpriced
        self.cost_usd += row.cost_usd
        self.prompt_tokens += row.prompt_tokens
        self.completion_tokens += row.completion_tokens
        self.cached_tokens += row.cached_tokens


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
    store: Store, period: Period, *, daily_budget_usd: float | None = None
) -> Report:
    """Read the period's figures from `store`.

    Args:
        daily_budget_usd: compared with the production spend of the UTC day of `period.end`;
            None or 0 means no budget.
    """
    queries = ReportQueries(store.engine)
    rows = await queries.call_totals(period.start, period.end)
    production = [row for row in rows if not row.is_eval]
    timings = await queries.reply_timings(period.start, period.end)
    traffic = await queries.message_counts(period.start, period.end)
    votes = await queries.votes(period.start, period.end)
    total, evals = _tally(production), _tally(row for row in rows if row.is_eval)
    by_model = _tally_by(production, lambda row: row.model)
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
        by_version=await _by_version(queries, period, production, traffic, votes),
        ttft_ms=Percentiles.of(t.ttft_ms for t in timings if t.ttft_ms is not None),
        total_ms=Percentiles.of(t.total_ms for t in timings),
        calls=total.calls,
        errors=total.errors,
        error_rate=total.errors / total.calls if total.calls else 0.0,
        daily=_daily(period, production, timings),
        budget_usd=daily_budget_usd or None,
        budget_used=await _budget_used(queries, period, daily_budget_usd),
    )


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
) -> list[VersionFigures]:
    """Every version that made a call, gave a reply or got a vote in the period; by name and
    version, the unversioned last."""
    tallies = _tally_by(rows, lambda row: row.prompt_version_id)
    ids = set(tallies) | set(traffic.replies_by_version) | set(votes)
    labels = await queries.version_labels({i for i in ids if i is not None})
    history = await queries.eval_history(set(labels.values()), before=period.end)

    def sort_key(version_id: int | None) -> tuple[bool, str, int]:
        name, number = labels.get(version_id, ("", 0)) if version_id is not None else ("", 0)
        return version_id is None, name, number

    figures = []
    for version_id in sorted(ids, key=sort_key):
        named = labels.get(version_id) if version_id is not None else None
        figures.append(
            _version_figures(
                f"{named[0]}@{named[1]}" if named else UNVERSIONED,
                tallies.get(version_id, _Tally()),
                replies=traffic.replies_by_version.get(version_id, 0),
                votes=votes.get(version_id, Votes(up=0, down=0)),
                runs=history.get(named, []) if named else [],
            )
        )
    return figures


def _version_figures(
    label: str, tally: _Tally, *, replies: int, votes: Votes, runs: Sequence[EvalPoint]
) -> VersionFigures:
    """`runs`: the version's latest eval run and the one before it, newest first."""
    latest = runs[0] if runs else None
    previous = runs[1] if len(runs) > 1 else None
    return VersionFigures(
        label=label,
        calls=tally.calls,
        cost_usd=tally.cost_usd,
        unpriced_calls=tally.unpriced,
        messages=replies,
        thumbs_up=votes.up,
        thumbs_down=votes.down,
        eval_pass_rate=latest.pass_rate if latest else None,
        eval_pass_change=_change(latest, previous, lambda run: run.pass_rate),
        consistency=latest.consistency if latest else None,
        consistency_change=_change(latest, previous, lambda run: run.consistency),
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


def _daily(
    period: Period, rows: Sequence[CallTotals], timings: Sequence[ReplyTiming]
) -> list[DailyFigures]:
    """Every day of the period, quiet ones too: a gap in a chart should look like one."""
    cost = _tally_by(rows, lambda row: row.day)
    by_day: dict[date, list[ReplyTiming]] = {}
    for timing in timings:
        by_day.setdefault(timing.created_at.astimezone(UTC).date(), []).append(timing)
    days = []
    for day in period.days():
        found = by_day.get(day, [])
        ttft = Percentiles.of(t.ttft_ms for t in found if t.ttft_ms is not None)
        total = Percentiles.of(t.total_ms for t in found)
        days.append(
            DailyFigures(
                day=day,
                cost_usd=cost[day].cost_usd if day in cost else 0.0,
                ttft_p50_ms=ttft.p50,
                total_p50_ms=total.p50,
                total_p95_ms=total.p95,
                total_p99_ms=total.p99,
            )
        )
    return days


# ---- renderings: pure functions of a Report

SLACK_HEADER_LIMIT = 150
SLACK_TEXT_LIMIT = 3000
SLACK_FIELD_LIMIT = 2000
SLACK_FIELDS = 10
DISCORD_TITLE_LIMIT = 256
DISCORD_DESCRIPTION_LIMIT = 4096
DISCORD_FIELDS = 25
DISCORD_NAME_LIMIT = 256
DISCORD_VALUE_LIMIT = 1024
DISCORD_TOTAL_LIMIT = 6000
_NOTE_LIMIT = 1000  # an unpriced note naming many models is cut to this
_GREEN, _AMBER, _RED = 0x2EA043, 0xE8A33D, 0xD93F3F
_WARN_ERROR_RATE, _BAD_ERROR_RATE = 0.05, 0.25
_WARN_BUDGET = 0.8
_METHOD = "latency: nearest-rank percentiles of replies the model answered"


def unpriced_note(report: Report) -> str | None:
    """The warning every rendering shows when some calls could not be priced."""
    if not report.unpriced_calls:
        return None
    models = ", ".join(report.unpriced_models)
    note = f"{_count(report.unpriced_calls, 'call')} unpriced ({models}): cost is a lower bound"
    return _clip(note, _NOTE_LIMIT)


def report_text(report: Report) -> str:
    """Markdown for the terminal and chat commands: short lines in a few sections."""
    lines = [f"**Assistant report, {report.period.describe()}**"]
    note = unpriced_note(report)
    if note:
        lines.append(f"⚠️ {note}")
    lines += ["", "**Traffic**", f"- {_traffic(report, ', ')}", f"- {_calls(report, ', ')}"]
    lines += ["", "**Cost**", f"- {_cost(report)} in production, eval runs {_eval_cost(report)}"]
    lines += [f"  - {line}" for line in _model_lines(report)]
    lines.append(f"- tokens: {_tokens(report, ', ')}")
    budget = _budget(report)
    if budget:
        lines.append(f"- budget: {budget}")
    lines += ["", "**Reply latency** (nearest-rank percentiles)"]
    lines.append(f"- first token: {_latency(report.ttft_ms, ', ')}")
    lines.append(f"- total: {_latency(report.total_ms, ', ')}")
    lines += ["", "**Prompt versions**"]
    for version in report.by_version:
        lines += [f"- {version.label}: {_version_traffic(version)}", f"  {_quality(version)}"]
    if not report.by_version:
        lines.append("- no traffic")
    return "\n".join(lines)


def slack_blocks(report: Report) -> list[dict[str, Any]]:
    """Block Kit for a report: a header, the figures as fields, versions, a context line."""
    title = f"Assistant report, {report.period.describe()}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(title, 150)}}
    ]
    note = unpriced_note(report)
    if note:
        blocks.append(_slack_section(f"⚠️ *{_slack_escape(note)}*"))
    fields = [
        {"type": "mrkdwn", "text": _clip(f"*{name}*\n{_slack_escape(value)}", SLACK_FIELD_LIMIT)}
        for name, value in _summary(report)[:SLACK_FIELDS]
    ]
    blocks.append({"type": "section", "fields": fields})
    if report.cost_by_model:
        models = [_slack_escape(line) for line in _model_lines(report)]
        blocks.append(_slack_section(_fit_lines("*Cost by model*", models, SLACK_TEXT_LIMIT)))
    versions = [
        f"*{_slack_escape(v.label)}*: {_slack_escape(_version_traffic(v))}\n    {_quality(v)}"
        for v in report.by_version
    ] or ["no traffic"]
    blocks.append(_slack_section(_fit_lines("*Prompt versions*", versions, SLACK_TEXT_LIMIT)))
    context = f"{_span(report.period)} · production traffic only · {_METHOD}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return blocks


def discord_embed(report: Report) -> dict[str, Any]:
    """A Discord embed: the figures as inline fields, a field per version while room lasts."""
    note = unpriced_note(report)
    description = "\n".join(
        [f"⚠️ **{note}**"] * bool(note) + [f"Production traffic only; {_METHOD}."]
    )
    fields = [{"name": name, "value": value, "inline": True} for name, value in _summary(report)]
    if report.cost_by_model:
        value = _fit_lines("", _model_lines(report), DISCORD_VALUE_LIMIT).strip()
        fields.append({"name": "Cost by model", "value": value, "inline": False})
    embed: dict[str, Any] = {
        "title": _clip(f"Assistant report, {report.period.describe()}", DISCORD_TITLE_LIMIT),
        "description": _clip(description, DISCORD_DESCRIPTION_LIMIT),
        "color": _color(report),
        "fields": fields,
        "footer": {"text": _span(report.period)},
    }
    _add_version_fields(embed, report.by_version)
    return embed


def discord_embed_size(embed: dict[str, Any]) -> int:
    """The characters Discord counts against an embed's 6000, counted as UTF-16 units (an
    emoji is two): never fewer than Discord counts, however it counts them."""
    texts = [
        embed.get("title", ""),
        embed.get("description", ""),
        embed.get("footer", {}).get("text", ""),
        embed.get("author", {}).get("name", ""),
    ]
    texts += [part for field in embed.get("fields", []) for part in (field["name"], field["value"])]
    return sum(len(text.encode("utf-16-le")) // 2 for text in texts)


def _add_version_fields(embed: dict[str, Any], versions: Sequence[VersionFigures]) -> None:
    """One field a version, while the field count and the character total allow; then a
    field that says how many were left out (room for it is kept)."""
    fields: list[dict[str, Any]] = embed["fields"]
    reserve = 64
    for index, version in enumerate(versions):
        name = _clip(version.label, DISCORD_NAME_LIMIT)
        value = _clip(f"{_version_traffic(version)}\n{_quality(version)}", DISCORD_VALUE_LIMIT)
        size = len(name) + len(value)
        if (
            len(fields) + 2 > DISCORD_FIELDS
            or discord_embed_size(embed) + size + reserve > DISCORD_TOTAL_LIMIT
        ):
            left = len(versions) - index
            more = f"{left} more version{'' if left == 1 else 's'}"
            fields.append({"name": more, "value": "see `assistant report`", "inline": False})
            return
        fields.append({"name": name, "value": value, "inline": False})


def _color(report: Report) -> int:
    used = report.budget_used or 0.0
    if used >= 1 or report.error_rate >= _BAD_ERROR_RATE:
        return _RED
    if report.unpriced_calls or used >= _WARN_BUDGET or report.error_rate >= _WARN_ERROR_RATE:
        return _AMBER
    return _GREEN


def _summary(report: Report) -> list[tuple[str, str]]:
    """The headline figures, as (name, value) pairs: Slack fields, Discord inline fields."""
    pairs = [
        ("Traffic", _traffic(report, "\n")),
        ("Model calls", _calls(report, "\n")),
        ("Cost", _cost(report)),
        ("Eval runs", _eval_cost(report)),
        ("Tokens", _tokens(report, "\n")),
        ("First token", _latency(report.ttft_ms, "\n")),
        ("Reply time", _latency(report.total_ms, "\n")),
    ]
    budget = _budget(report)
    if budget:
        pairs.append(("Budget", budget))
    return pairs


def _traffic(report: Report, separator: str) -> str:
    return (
        _count(report.conversations, "conversation")
        + separator
        + _count(report.messages, "message")
    )


def _calls(report: Report, separator: str) -> str:
    errors = f"{_count(report.errors, 'error')} ({report.error_rate:.1%})"
    return _count(report.calls, "model call") + separator + errors


def _cost(report: Report) -> str:
    return _usd(report.cost_usd) + (" (lower bound)" if report.unpriced_calls else "")


def _eval_cost(report: Report) -> str:
    unpriced = report.eval_unpriced_calls
    return _usd(report.eval_cost_usd) + (f" + {unpriced} unpriced" if unpriced else "")


def _tokens(report: Report, separator: str) -> str:
    prompt = f"{report.prompt_tokens:,} prompt ({report.cached_tokens:,} cached)"
    return f"{prompt}{separator}{report.completion_tokens:,} completion"


def _latency(figures: Percentiles, separator: str) -> str:
    if figures.p50 is None:
        return "no replies"
    parts = [("p50", figures.p50), ("p95", figures.p95), ("p99", figures.p99)]
    return separator.join(f"{name} {_ms(value)}" for name, value in parts)


def _budget(report: Report) -> str | None:
    if report.budget_usd is None or report.budget_used is None:
        return None
    spent = report.budget_used * report.budget_usd
    return f"{_usd(spent)} of {_usd(report.budget_usd)} today ({report.budget_used:.0%})"


def _model_lines(report: Report) -> list[str]:
    return [f"{model}: {_usd(cost)}" for model, cost in report.cost_by_model.items()]


def _version_traffic(version: VersionFigures) -> str:
    cost = _usd(version.cost_usd)
    if version.unpriced_calls:
        cost += f" + {version.unpriced_calls} unpriced"
    return (
        f"{_count(version.calls, 'call')}, {cost}, {_count(version.messages, 'reply')}, "
        f"👍 {version.thumbs_up} 👎 {version.thumbs_down}"
    )


def _quality(version: VersionFigures) -> str:
    if version.eval_pass_rate is None:
        return "no eval run"
    quality = f"eval {_rate(version.eval_pass_rate, version.eval_pass_change)}"
    if version.consistency is not None:
        quality += f", consistency {_rate(version.consistency, version.consistency_change)}"
    return quality


def _rate(value: float, change: float | None) -> str:
    """ "92% (+4 pts)": a rate and its change since the previous eval run."""
    if change is None:
        return f"{value:.0%}"
    points = round(change * 100)
    return f"{value:.0%} ({'±0' if points == 0 else f'{points:+d}'} pts)"


def _usd(amount: float) -> str:
    """Cents for dollars and more; four places below, where single calls live."""
    return f"${amount:,.2f}" if amount == 0 or abs(amount) >= 1 else f"${amount:.4f}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ms"


def _count(number: int, noun: str) -> str:
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{number:,} {noun if number == 1 else plural}"


def _span(period: Period) -> str:
    return f"{period.start:%Y-%m-%d %H:%M} to {period.end:%Y-%m-%d %H:%M} UTC"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fit_lines(heading: str, lines: Sequence[str], limit: int) -> str:
    """`heading` and as many whole lines as fit in `limit`, then how many were left out."""
    reserve = 32  # "… and 1,000 more"
    text = heading
    for index, line in enumerate(lines):
        if len(text) + 1 + len(line) > limit - reserve:
            return f"{text}\n… and {len(lines) - index:,} more"
        text = f"{text}\n{line}"
    return _clip(text, limit)


def _slack_section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, SLACK_TEXT_LIMIT)}}


def _slack_escape(text: str) -> str:
    """The three characters Slack's mrkdwn reads as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---- the chart


def chart_png(report: Report) -> bytes:
    """Two panels, daily cost (bars) over daily reply latency (p50/p95/p99 lines), as PNG.

    Built on a Figure of its own with the Agg canvas: no pyplot, no global state.
    """
    figure = Figure(figsize=(8, 6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    cost_axes = figure.add_subplot(2, 1, 1)
    latency_axes = figure.add_subplot(2, 1, 2, sharex=cost_axes)
    figure.suptitle(f"Assistant report, {report.period.describe()}")
    _draw_cost(cost_axes, report)
    _draw_latency(latency_axes, report.daily)
    _label_days(latency_axes, report.daily)
    cost_axes.tick_params(labelbottom=False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _draw_cost(axes: Axes, report: Report) -> None:
    title = "Daily cost (USD)"
    if report.unpriced_calls:
        title += f", lower bound: {_count(report.unpriced_calls, 'call')} unpriced"
    axes.set_title(title, fontsize=10)
    axes.yaxis.set_major_formatter(StrMethodFormatter("${x:,.2f}"))
    if not report.daily:
        _no_data(axes)
        return
    positions = range(len(report.daily))
    axes.bar(positions, [day.cost_usd for day in report.daily], color="#4C78A8")
    if any(day.cost_usd for day in report.daily):
        axes.set_ylim(bottom=0)


def _draw_latency(axes: Axes, daily: Sequence[DailyFigures]) -> None:
    axes.set_title("Daily reply latency (ms)", fontsize=10)
    if all(day.total_p50_ms is None for day in daily):
        _no_data(axes)
        return
    positions = list(range(len(daily)))
    lines: list[tuple[str, Callable[[DailyFigures], float | None]]] = [
        ("p50", lambda day: day.total_p50_ms),
        ("p95", lambda day: day.total_p95_ms),
        ("p99", lambda day: day.total_p99_ms),
    ]
    for name, figure in lines:
        values = [_nan_if_none(figure(day)) for day in daily]
        axes.plot(positions, values, marker="o", label=name)
    if any(day.total_p99_ms for day in daily):
        axes.set_ylim(bottom=0)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(loc="lower right", ncols=3, fontsize=8)


def _label_days(axes: Axes, daily: Sequence[DailyFigures]) -> None:
    if not daily:
        axes.set_xticks([])
        return
    step = math.ceil(len(daily) / 12)  # about a dozen labels, however long the period
    ticks = list(range(0, len(daily), step))
    axes.set_xticks(ticks, [f"{daily[i].day:%b %d}" for i in ticks])
    axes.set_xlim(-0.6, len(daily) - 0.4)


def _no_data(axes: Axes) -> None:
    axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes)
    axes.set_yticks([])


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value
