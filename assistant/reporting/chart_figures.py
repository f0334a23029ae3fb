"""What the report's chart shows, as plain data: the time buckets, the cost of each prompt
version in each of them, the latency percentiles, each version's error and eval pass rates,
and every axis's limits and tick labels.

Computed apart from the drawing (`chart.py` only draws these), so a test reads the very
numbers the picture is made of, and every decision about what the picture says lives here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from assistant.reporting.figures import HOUR, Report, VersionFigures
from assistant.reporting.wording import clip, left_out_note, unpriced_note

STACKED_VERSIONS = 6  # versions drawn apart in the cost bars; the rest are OTHER_VERSIONS
OTHER_VERSIONS = "other versions"
QUALITY_VERSIONS = 8  # versions in the quality panel; a note says how many more there were
TIME_LABELS = 12  # about this many labels under the time axis, however long the period
_INTERVALS = 4  # a value axis has at most this many steps above zero
_HEADROOM = 1.08  # the axis ends this much above its last tick (room for a bar's label)
_MANTISSAS = tuple(Decimal(m) for m in ("1", "2", "2.5", "5", "10"))
_LABEL_LIMIT = 28  # a version's name in a legend
_CATEGORY_LIMIT = 18  # a version's name under its bars
_UNPRICED_LIMIT = 160  # the unpriced note in the footnote (it may name many models)


@dataclass(frozen=True, kw_only=True)
class Axis:
    """A value axis from zero (never below: no figure here is negative) to `top`, with ticks
    at round values and labels people read at a glance ("$0.0004", "$1,500", "25%"). `top` is
    a little above the last tick, so a bar that reaches it does not look cut off."""

    top: float
    ticks: tuple[float, ...]
    labels: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Series:
    """One set of bars or one line. `values` has one entry per bucket (or per category);
    None where there is nothing to show (no answered reply that hour)."""

    name: str
    values: tuple[float | None, ...]
    labels: tuple[str, ...] = ()  # written on each bar, when the value is worth reading


@dataclass(frozen=True, kw_only=True)
class Panel:
    """One plot of the chart. `axis` is None when there is nothing to plot; `note` says why."""

    title: str
    series: tuple[Series, ...]
    axis: Axis | None
    note: str | None = None
    categories: tuple[str, ...] = ()  # bars by name (versions); empty: by time bucket


@dataclass(frozen=True, kw_only=True)
class ChartFigures:
    title: str
    empty: str | None  # set: nothing happened, and the whole chart says so in these words
    bucket: str  # "hour" | "day"
    buckets: tuple[datetime, ...]  # each bucket's start, UTC
    x_ticks: tuple[int, ...]  # bucket indexes that get a label
    x_labels: tuple[str, ...]
    cost: Panel  # stacked bars: one series per prompt version
    latency: Panel  # lines: p50 and p95 of reply time
    quality: Panel | None  # grouped bars per version; None: no version to show
    footnote: str  # what the figures leave out, and whether cost is a lower bound


def chart_figures(report: Report) -> ChartFigures:
    """The chart of `report`: hourly buckets for a day or less, daily ones for longer."""
    buckets = tuple(bucket.start for bucket in report.buckets)
    unit = "hour" if report.period.bucket == HOUR else "day"
    ticks, labels = time_labels(buckets, hourly=unit == "hour")
    return ChartFigures(
        title=f"Assistant report, {report.period.describe()}",
        empty=None if report.calls else f"No {_traffic(report)} in {report.period.describe()}",
        bucket=unit,
        buckets=buckets,
        x_ticks=ticks,
        x_labels=labels,
        cost=_cost_panel(report, unit),
        latency=_latency_panel(report, unit),
        quality=_quality_panel(report.by_version),
        footnote=_footnote(report),
    )


# ---- the panels


def _cost_panel(report: Report, unit: str) -> Panel:
    title = f"Cost per {unit} by prompt version (USD)"
    if report.unpriced_calls:
        title += ", a lower bound"
    top = max((bucket.cost_usd for bucket in report.buckets), default=0.0)
    if top <= 0:
        return Panel(title=title, series=(), axis=None, note="no priced spend")
    return Panel(title=title, series=_cost_series(report), axis=money_axis(top))


def _cost_series(report: Report) -> tuple[Series, ...]:
    """One series a version with spend, the costliest first (at the bottom of the stack);
    past STACKED_VERSIONS the rest are summed as one."""
    totals: dict[str, float] = {}
    for bucket in report.buckets:
        for label, cost in bucket.cost_by_version.items():
            totals[label] = totals.get(label, 0.0) + cost
    spent = sorted((label for label, total in totals.items() if total > 0), key=totals.__getitem__)
    spent.reverse()
    shown, rest = spent[:STACKED_VERSIONS], set(spent[STACKED_VERSIONS:])
    if len(rest) == 1:  # one more version needs no "other"
        shown, rest = spent, set()
    series = [
        Series(
            name=clip(label, _LABEL_LIMIT),
            values=tuple(b.cost_by_version.get(label, 0.0) for b in report.buckets),
        )
        for label in shown
    ]
    if rest:
        values = tuple(
            sum(c for label, c in b.cost_by_version.items() if label in rest)
            for b in report.buckets
        )
        series.append(Series(name=OTHER_VERSIONS, values=values))
    return tuple(series)


def _latency_panel(report: Report, unit: str) -> Panel:
    title = f"Reply time per {unit} (ms, nearest-rank percentiles)"
    p50 = tuple(bucket.total_ms.p50 for bucket in report.buckets)
    p95 = tuple(bucket.total_ms.p95 for bucket in report.buckets)
    top = max((value for value in p95 if value is not None), default=0.0)
    if top <= 0:
        return Panel(title=title, series=(), axis=None, note="no answered replies")
    series = (Series(name="p50", values=p50), Series(name="p95", values=p95))
    return Panel(title=title, series=series, axis=count_axis(top))


def _quality_panel(versions: Sequence[VersionFigures]) -> Panel | None:
    """Each version's error rate, and its latest eval pass rate when it has one. A version
    appears when it made a call or has an eval run; None when no version does."""
    shown = [v for v in versions if v.calls or v.eval_pass_rate is not None]
    if not shown:
        return None
    kept = sorted(shown, key=lambda v: v.calls, reverse=True)[:QUALITY_VERSIONS]
    kept.sort(key=shown.index)  # back in the report's order: by name and version
    series = [_rate_series("error rate", [v.error_rate for v in kept])]
    if any(v.eval_pass_rate is not None for v in kept):
        series.append(_rate_series("eval pass rate", [v.eval_pass_rate for v in kept]))
    left = len(shown) - len(kept)
    return Panel(
        title="Per prompt version: error rate, latest eval pass rate",
        series=tuple(series),
        axis=percent_axis(),
        note=f"and {left:,} more versions" if left else None,
        categories=tuple(clip(v.label, _CATEGORY_LIMIT) for v in kept),
    )


def _rate_series(name: str, rates: Sequence[float | None]) -> Series:
    labels = tuple("n/a" if rate is None else _percent(rate) for rate in rates)
    return Series(name=name, values=tuple(rates), labels=labels)


def _footnote(report: Report) -> str:
    notes = [left_out_note(report) + "."]
    unpriced = unpriced_note(report)
    if unpriced:
        notes.append(clip(unpriced[0].upper() + unpriced[1:] + ".", _UNPRICED_LIMIT))
    return " ".join(notes)


# ---- axes


def money_axis(top: float) -> Axis:
    """Dollars from $0 to a round amount at or above `top`, each tick with as many decimals
    as its step needs ("$0.0004", "$0.25", "$1,500"): never "$0.00" on every tick."""
    return _round_axis(top, _dollars)


def count_axis(top: float) -> Axis:
    """Plain numbers (milliseconds) from 0 to a round value at or above `top`."""
    return _round_axis(top, _number)


def percent_axis() -> Axis:
    ticks = (0.0, 0.25, 0.5, 0.75, 1.0)
    return Axis(top=_HEADROOM, ticks=ticks, labels=tuple(_percent(t) for t in ticks))


def _round_axis(top: float, label: Callable[[Decimal, int], str]) -> Axis:
    step = round_step(top)
    steps = max(math.ceil(Decimal(repr(top)) / step), 1)
    ticks = [step * n for n in range(steps + 1)]
    places = _places(step)
    return Axis(
        top=float(ticks[-1]) * _HEADROOM,
        ticks=tuple(float(tick) for tick in ticks),
        labels=tuple(label(tick, places) for tick in ticks),
    )


def round_step(top: float) -> Decimal:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten that reaches `top` (> 0) in at most
    four steps. Decimal, so 2.5 x 0.0001 is exactly 0.00025 and labels come out clean."""
    rough = Decimal(repr(top)) / _INTERVALS
    power = Decimal(1).scaleb(rough.adjusted())  # 10 ** floor(log10(rough))
    return next(m * power for m in _MANTISSAS if m * power >= rough)


def _places(step: Decimal) -> int:
    """The decimals that write `step` exactly: 0.00025 -> 5, 2.5 -> 1, 500 -> 0."""
    exponent = step.normalize().as_tuple().exponent
    return max(-exponent, 0) if isinstance(exponent, int) else 0


def _dollars(value: Decimal, places: int) -> str:
    """Cents whenever the step has a fraction of a dollar ("$0.50", not "$0.5"); "$0" at 0."""
    if value == 0:
        return "$0"
    return f"${value:,.{2 if 0 < places < 2 else places}f}"


def _number(value: Decimal, places: int) -> str:
    return f"{value:,.{places}f}"


def _percent(rate: float) -> str:
    return f"{rate:.0%}" if rate == 0 or rate >= 0.01 else f"{rate:.1%}"


# ---- the time axis


def time_labels(
    buckets: Sequence[datetime], *, hourly: bool
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """About TIME_LABELS evenly spaced labels: "Mar 03" for days; "14:00" for hours, with the
    date under the first label of each day."""
    if not buckets:
        return (), ()
    ticks = tuple(range(0, len(buckets), math.ceil(len(buckets) / TIME_LABELS)))
    labels, day = [], None
    for index in ticks:
        start = buckets[index]
        if not hourly:
            labels.append(f"{start:%b %d}")
            continue
        labels.append(f"{start:%H:%M}" + (f"\n{start:%b %d}" if start.date() != day else ""))
        day = start.date()
    return ticks, tuple(labels)


def _traffic(report: Report) -> str:
    return "traffic of the fake model" if report.fake else "production traffic"
