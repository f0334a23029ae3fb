"""A report's chart drawn as a PNG (matplotlib, loaded only by whoever draws one): a thin
drawing of `chart_figures`, which decides every number, series, limit and label on it."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from assistant.reporting.chart_figures import OTHER_VERSIONS, ChartFigures, Panel, chart_figures
from assistant.reporting.figures import Report

if TYPE_CHECKING:  # matplotlib (and numpy: ~50 MB, ~1 s) is imported by `draw`, on first use
    from matplotlib.axes import Axes
    from matplotlib.container import BarContainer
    from matplotlib.figure import Figure

_COLORS = ("#4C78A8", "#F58518", "#54A24B", "#B279A2", "#EECA3B", "#72B7B2", "#9D755D")
_OTHER_COLOR = "#BAB0AC"
_RATE_COLORS = {"error rate": "#D93F3F", "eval pass rate": "#2EA043"}
_WIDTH, _PANEL_HEIGHT, _DPI = 8.0, 2.9, 100
# Fixed margins, in inches, instead of a constrained layout (which measures every text on the
# figure once more before drawing it): room for the value labels on the left, the title above,
# the time or version labels and the footnote below, a panel's title and the time labels
# between two, and on the right the legend, as wide as its longest name needs.
_LEFT, _TOP, _GAP = 0.85, 0.7, 0.55
_BOTTOM = {1: 0.6, 2: 0.85, 3: 1.05}  # by panels: the quality panel's labels are rotated
_LEGEND_CHAR, _LEGEND_HANDLE = 0.062, 0.5  # inches per character of a 7-point name; the rest


def chart_png(report: Report) -> bytes:
    """The chart of `report`, as PNG bytes."""
    buffer = io.BytesIO()
    draw(chart_figures(report)).savefig(buffer, format="png")
    return buffer.getvalue()


def draw(chart: ChartFigures) -> Figure:
    """The chart on a Figure of its own with the Agg canvas: no pyplot, no global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = 1 if chart.empty else 2 + (chart.quality is not None)
    size = (_WIDTH, max(panels * _PANEL_HEIGHT, 4.0))
    figure = Figure(figsize=size, dpi=_DPI)
    FigureCanvasAgg(figure)
    _margins(figure, panels, _legend_width(chart))
    figure.suptitle(chart.title)
    figure.supxlabel(chart.footnote, fontsize=8, wrap=True)
    if chart.empty:
        _draw_empty(figure.add_subplot(), chart.empty)
        return figure
    cost = figure.add_subplot(panels, 1, 1)
    latency = figure.add_subplot(panels, 1, 2, sharex=cost)
    _draw_stacked(cost, chart.cost)
    _draw_lines(latency, chart.latency)
    _label_time(latency, chart)
    cost.tick_params(labelbottom=False)
    if chart.quality is not None:
        _draw_grouped(figure.add_subplot(panels, 1, 3), chart.quality)
    return figure


def _legend_width(chart: ChartFigures) -> float:
    """Inches right of the plots: the legends' longest name (none on an empty chart)."""
    if chart.empty:
        return _LEFT
    panels = (chart.cost, chart.latency, chart.quality)
    names = [series.name for panel in panels if panel for series in panel.series]
    return max(_LEFT, _LEGEND_HANDLE + _LEGEND_CHAR * max(map(len, names), default=0))


def _margins(figure: Figure, panels: int, right: float) -> None:
    width, height = figure.get_size_inches()
    bottom = _BOTTOM[panels]
    plot = (height - _TOP - bottom - (panels - 1) * _GAP) / panels
    figure.subplots_adjust(
        left=_LEFT / width,
        right=1 - right / width,
        top=1 - _TOP / height,
        bottom=bottom / height,
        hspace=_GAP / plot,
    )


def _draw_empty(axes: Axes, text: str) -> None:
    axes.set_axis_off()
    axes.text(0.5, 0.5, text, ha="center", va="center", fontsize=13, transform=axes.transAxes)


def _draw_stacked(axes: Axes, panel: Panel) -> None:
    if not _value_axis(axes, panel):
        return
    bottoms: list[float] = []
    for index, series in enumerate(panel.series):
        values = [value or 0.0 for value in series.values]
        bottoms = bottoms or [0.0] * len(values)
        color = _OTHER_COLOR if series.name == OTHER_VERSIONS else _COLORS[index % len(_COLORS)]
        _bars(axes, range(len(values)), values, bottoms=bottoms, color=color, label=series.name)
        bottoms = [low + value for low, value in zip(bottoms, values, strict=True)]
    _legend(axes)


def _draw_lines(axes: Axes, panel: Panel) -> None:
    if not _value_axis(axes, panel):
        return
    for series in panel.series:
        values = [math.nan if value is None else value for value in series.values]
        axes.plot(range(len(values)), values, marker="o", markersize=3, label=series.name)
    _legend(axes)


def _draw_grouped(axes: Axes, panel: Panel) -> None:
    if not _value_axis(axes, panel):
        return
    width = 0.8 / len(panel.series)
    for index, series in enumerate(panel.series):
        positions = [
            n + (index - (len(panel.series) - 1) / 2) * width for n in range(len(series.values))
        ]
        values = [value or 0.0 for value in series.values]
        color = _RATE_COLORS.get(series.name)
        bars = _bars(axes, positions, values, width=width, color=color, label=series.name)
        axes.bar_label(bars, labels=list(series.labels), fontsize=7)
    axes.set_xlim(-0.6, len(panel.categories) - 0.4)  # `_bars` leaves the limits to us
    crowded = len(panel.categories) > 4
    axes.set_xticks(
        range(len(panel.categories)),
        panel.categories,
        fontsize=7,
        rotation=15 if crowded else 0,
        ha="right" if crowded else "center",
    )
    _legend(axes)
    if panel.note:
        axes.set_xlabel(panel.note, fontsize=7)


def _bars(
    axes: Axes,
    positions: Sequence[float],
    values: Sequence[float],
    *,
    bottoms: Sequence[float] | None = None,
    width: float = 0.8,
    color: str | None,
    label: str,
) -> BarContainer:
    """`axes.bar`'s bars without its update of the data limits after each one (a fifth of the
    drawing's time at 30 days of seven versions): every axis here has fixed limits."""
    from matplotlib.container import BarContainer
    from matplotlib.patches import Rectangle

    lows = bottoms or [0.0] * len(values)
    rectangles = [
        Rectangle((x - width / 2, low), width, value, facecolor=color, label="_nolegend_")
        for x, low, value in zip(positions, lows, values, strict=True)
    ]
    for rectangle in rectangles:
        axes.add_artist(rectangle)
    bars = BarContainer(rectangles, datavalues=values, orientation="vertical", label=label)
    axes.add_container(bars)
    return bars


def _legend(axes: Axes) -> None:
    """Beside the plot, never over a bar or a line."""
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)


def _value_axis(axes: Axes, panel: Panel) -> bool:
    """The panel's title and value axis; False (and the panel's note) when nothing is plotted."""
    axes.set_title(panel.title, fontsize=10)
    if panel.axis is None:
        note = panel.note or "no data"
        axes.text(0.5, 0.5, note, ha="center", va="center", transform=axes.transAxes)
        axes.set_yticks([])
        return False
    axes.set_ylim(0, panel.axis.top)
    axes.set_yticks(panel.axis.ticks, panel.axis.labels, fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    return True


def _label_time(axes: Axes, chart: ChartFigures) -> None:
    axes.set_xticks(chart.x_ticks, chart.x_labels, fontsize=8)
    axes.set_xlim(-0.6, len(chart.buckets) - 0.4)
