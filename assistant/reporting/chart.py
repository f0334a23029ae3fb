"""A report's chart: daily cost over daily reply latency, drawn as a PNG (matplotlib, loaded
only by whoever draws one)."""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

from assistant.reporting.figures import DailyFigures, Report
from assistant.reporting.wording import count


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
        title += f", lower bound: {count(report.unpriced_calls, 'call')} unpriced"
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
