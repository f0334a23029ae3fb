"""The report's chart: the figures it is drawn from (buckets, series per version, percentiles,
axes), read back from the data and from the drawn matplotlib figure; and `--fake` traffic kept
out of it end to end."""

from __future__ import annotations

import io
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from matplotlib.axes import Axes
from matplotlib.image import imread

from assistant.admin.grammar import CommandContext
from assistant.config import load_settings
from assistant.reporting.chart import chart_png, draw
from assistant.reporting.chart_figures import (
    OTHER_VERSIONS,
    ChartFigures,
    chart_figures,
    count_axis,
    money_axis,
)
from assistant.reporting.figures import Percentiles, Period, build_report
from assistant.reporting.wording import report_text
from assistant.runtime import open_runtime
from assistant.store import Store
from assistant.testing import FakeLlm
from assistant.turns import Actor, Completed
from tests.conftest import collect, inbound
from tests.test_reports import NOW, START, WEEK, a_report, bucket, seed_week, version

PNG = b"\x89PNG\r\n\x1a\n"
ME = Actor(platform="terminal", user_id="ana")
DAY = Period(start=START, end=START + timedelta(hours=24))


def values(chart_panel: Any) -> dict[str, tuple[float | None, ...]]:
    return {series.name: series.values for series in chart_panel.series}


# ---- what the chart shows, as data


async def test_a_week_is_drawn_in_days_with_cost_per_version(db: Store):
    await seed_week(db)

    chart = chart_figures(await build_report(db, WEEK))

    assert chart.empty is None and chart.bucket == "day"
    assert chart.buckets == tuple(datetime(2025, 3, 3, tzinfo=UTC) + timedelta(n) for n in range(8))
    assert chart.x_labels == tuple(f"Mar {day:02d}" for day in range(3, 11))
    # Stacked costliest first: v1 $0.25 (today, on gpt-4o), v2 $0.187, unversioned $0.003.
    cost = values(chart.cost)
    assert list(cost) == ["assistant@1", "assistant@2", "unversioned"]
    assert cost["assistant@1"] == pytest.approx((0, 0, 0, 0, 0, 0, 0, 0.25))
    assert cost["assistant@2"] == pytest.approx((0.10, 0.08, 0, 0.007, 0, 0, 0, 0))
    assert cost["unversioned"] == pytest.approx((0, 0, 0, 0, 0, 0, 0, 0.003))
    assert chart.cost.title == "Cost per day by prompt version (USD), a lower bound"
    assert chart.cost.axis is not None
    assert chart.cost.axis.labels == ("$0", "$0.10", "$0.20", "$0.30")  # the top day: $0.253
    # Reply time: nearest-rank p50 and p95 of each day's answered replies; none on quiet days.
    latency = values(chart.latency)
    assert latency["p50"] == (600.0, 1600.0, None, None, None, None, None, None)
    assert latency["p95"] == (1200.0, 2000.0, None, None, None, None, None, None)
    assert chart.latency.axis is not None
    assert chart.latency.axis.labels == ("0", "500", "1,000", "1,500", "2,000")


async def test_each_versions_error_rate_and_eval_pass_rate(db: Store):
    await seed_week(db)

    quality = chart_figures(await build_report(db, WEEK)).quality

    assert quality is not None
    assert quality.categories == ("assistant@1", "assistant@2", "unversioned")
    rates = values(quality)
    assert rates["error rate"] == (0.0, pytest.approx(1 / 22), 0.0)
    assert rates["eval pass rate"] == (0.75, 0.92, None)
    labels = {series.name: series.labels for series in quality.series}
    assert labels == {"error rate": ("0%", "5%", "0%"), "eval pass rate": ("75%", "92%", "n/a")}
    assert quality.axis is not None and quality.axis.labels == ("0%", "25%", "50%", "75%", "100%")


async def test_a_day_is_drawn_in_hours(db: Store):
    await seed_week(db)

    chart = chart_figures(await build_report(db, DAY))

    assert chart.bucket == "hour" and len(chart.buckets) == 24
    assert chart.buckets[:2] == (START, START + timedelta(hours=1))
    # A label every two hours; the date under the first one of each day.
    assert chart.x_ticks == tuple(range(0, 24, 2))
    assert chart.x_labels[:2] == ("12:00\nMar 03", "14:00")
    assert chart.x_labels[6] == "00:00\nMar 04"
    assert chart.cost.title == "Cost per hour by prompt version (USD), a lower bound"
    assert values(chart.cost)["assistant@2"][:4] == (0.0, 0.0, 0.01, 0.01)
    assert values(chart.latency)["p50"][:3] == (100.0, 200.0, 300.0)
    assert chart.cost.axis is not None and chart.cost.axis.labels == (
        "$0",
        "$0.0025",
        "$0.0050",
        "$0.0075",
        "$0.0100",
    )


def test_the_24_hour_report_uses_hourly_buckets():
    day = Period.last("24h", now=NOW)
    report = a_report(period=day, buckets=[])
    assert chart_figures(report).bucket == "hour" and len(day.buckets()) == 24
    assert chart_figures(a_report()).bucket == "day"


@pytest.mark.parametrize(
    ("top", "labels"),
    [
        (0.0004, ("$0", "$0.0001", "$0.0002", "$0.0003", "$0.0004")),
        (0.00041, ("$0", "$0.0002", "$0.0004", "$0.0006")),
        (0.0009, ("$0", "$0.00025", "$0.00050", "$0.00075", "$0.00100")),
        (0.9, ("$0", "$0.25", "$0.50", "$0.75", "$1.00")),
        (2.3, ("$0", "$1", "$2", "$3")),
        (1200.0, ("$0", "$500", "$1,000", "$1,500")),
        (987_654.0, ("$0", "$250,000", "$500,000", "$750,000", "$1,000,000")),
    ],
)
def test_the_cost_axis_reads_well_at_any_spend(top: float, labels: tuple[str, ...]):
    axis = money_axis(top)
    assert axis.labels == labels
    assert axis.ticks[0] == 0 and axis.ticks[-1] >= top and axis.top > axis.ticks[-1]


@pytest.mark.parametrize("exponent", range(-8, 8))
@pytest.mark.parametrize("mantissa", [1.0, 1.01, 2.4, 3.7, 9.99])
def test_every_axis_starts_at_zero_and_its_labels_differ(exponent: int, mantissa: float):
    top = mantissa * 10**exponent
    for axis in (money_axis(top), count_axis(top)):
        assert axis.ticks[0] == 0 and all(
            b > a for a, b in zip(axis.ticks, axis.ticks[1:], strict=False)
        )
        assert top <= axis.ticks[-1] < top * 2.6 and 2 <= len(axis.ticks) <= 5
        assert axis.top == pytest.approx(axis.ticks[-1] * 1.08)
        assert len(set(axis.labels)) == len(axis.labels)
        assert not any(label.startswith("-") for label in axis.labels)


async def test_an_empty_period_is_a_clear_no_data_chart(db: Store):
    for period in (WEEK, Period(start=NOW, end=NOW)):
        chart = chart_figures(await build_report(db, period))

        assert chart.empty == f"No production traffic in {period.describe()}"
        assert chart.cost.axis is None and chart.cost.note == "no priced spend"
        assert chart.latency.axis is None and chart.quality is None
        figure = draw(chart)
        [axes] = figure.axes
        assert [t.get_text() for t in axes.texts] == [chart.empty]
        assert not axes.axison
    fake = chart_figures(await build_report(db, WEEK, fake=True))  # `report --fake`
    assert fake.empty == f"No traffic of the fake model in {WEEK.describe()}"


def test_calls_that_cost_nothing_draw_no_cost_axis():
    free = [bucket(n, cost=0.0) for n in range(8)]
    chart = chart_figures(a_report(buckets=free))
    assert chart.empty is None and chart.cost.axis is None
    assert chart.cost.note == "no priced spend"


def test_past_six_versions_the_rest_are_one_series():
    labels = [f"assistant@{n}" for n in range(1, 10)]
    spend = {label: 0.01 * n for n, label in enumerate(labels, start=1)}
    buckets = [replace(bucket(n), cost_by_version=spend, cost_usd=0.45) for n in range(3)]

    cost = values(chart_figures(a_report(buckets=buckets)).cost)

    assert list(cost) == [*reversed(labels[3:]), OTHER_VERSIONS]
    assert cost[OTHER_VERSIONS] == pytest.approx((0.06, 0.06, 0.06))  # 0.01 + 0.02 + 0.03
    assert sum(series[0] or 0 for series in cost.values()) == pytest.approx(0.45)


def test_the_footnote_says_what_was_left_out():
    report = a_report(eval_calls=4, fake_calls=12, fake_conversations=2)
    footnote = chart_figures(report).footnote
    assert footnote.startswith(
        "Production traffic only; left out: 4 eval-run calls ($1.50), 12 calls answered by the "
        "bundled fake model, 2 conversations only the fake model answered."
    )
    assert footnote.endswith("2 calls unpriced (model-x): cost is a lower bound.")
    assert chart_figures(a_report(unpriced_calls=0)).footnote == "Production traffic only."


def test_the_quality_panel_shows_eval_rates_only_when_there_are_some():
    versions = [version("assistant@1", eval_pass_rate=None, errors=11)]
    quality = chart_figures(a_report(by_version=versions)).quality
    assert quality is not None and values(quality) == {"error rate": (0.5,)}
    idle = [version(calls=0, eval_pass_rate=None)]
    assert chart_figures(a_report(by_version=idle)).quality is None


# ---- the drawing is made of those figures


def drawn(chart: ChartFigures) -> list[Axes]:
    return list(draw(chart).axes)


def tick_labels(axes: Axes, which: str = "y") -> list[str]:
    ticks = axes.get_yticklabels() if which == "y" else axes.get_xticklabels()
    return [tick.get_text() for tick in ticks]


async def test_the_drawn_axes_are_the_figures(db: Store):
    await seed_week(db)
    chart = chart_figures(await build_report(db, WEEK))
    assert chart.cost.axis and chart.latency.axis and chart.quality and chart.quality.axis

    cost, latency, quality = drawn(chart)

    assert cost.get_ylim() == (0.0, chart.cost.axis.top)
    assert tick_labels(cost) == list(chart.cost.axis.labels)
    bars = [patch.get_height() for patch in cost.patches]
    assert bars == pytest.approx([v for s in chart.cost.series for v in s.values if v is not None])
    assert [text.get_text() for text in cost.get_legend().get_texts()] == list(values(chart.cost))
    assert tick_labels(latency) == list(chart.latency.axis.labels)
    assert tick_labels(latency, "x") == list(chart.x_labels)
    p50, p95 = latency.get_lines()
    assert [None if math.isnan(y) else y for y in p50.get_ydata()] == list(
        values(chart.latency)["p50"]
    )
    assert p95.get_label() == "p95"
    assert tick_labels(quality, "x") == list(chart.quality.categories)
    assert tick_labels(quality) == list(chart.quality.axis.labels)
    for axes in (cost, quality):  # the limits are set, not autoscaled: no bar is cut off
        low, high = axes.get_xlim()
        assert all(low < bar.get_x() < bar.get_x() + bar.get_width() < high for bar in axes.patches)


@pytest.mark.parametrize(
    "buckets",
    [
        [],
        [bucket(0)],
        [bucket(0, cost=0.0, p50=None)],
        [bucket(n, p50=None if n == 3 else 600.0 + n) for n in range(8)],
        [bucket(n) for n in range(31)],
    ],
    ids=["no buckets", "one day", "one quiet day", "week with a gap", "month"],
)
def test_the_chart_is_a_png_of_three_panels(buckets: list[Any]):
    data = chart_png(a_report(buckets=buckets))
    assert data.startswith(PNG)
    assert imread(io.BytesIO(data), format="png").shape[:2] == (870, 800)


# ---- `--fake` traffic, end to end


async def test_fake_mode_asks_for_the_fake_model_and_its_calls_are_left_out(
    tmp_path: Path, prompts_dir: Path
):
    settings = load_settings(database_url=f"sqlite:///{tmp_path}/fake.db", prompts_dir=prompts_dir)
    async with FakeLlm() as fake:
        runtime = await open_runtime(settings, base_url=fake.base_url, fake=True)
        try:
            events = await collect(runtime.assistant.respond(inbound("hello there")))
            conversation = await runtime.store.find_conversation(inbound("x").ref)
            assert conversation is not None and conversation.id is not None
            calls = await runtime.store.llm_calls(conversation.id)
            now = datetime.now(UTC)
            report = await build_report(
                runtime.store, Period(start=now - timedelta(hours=1), end=now)
            )
            studied = await build_report(
                runtime.store, Period(start=now - timedelta(hours=1), end=now), fake=True
            )
            asked = await runtime.commands.run(
                "report 24h", CommandContext(actor=ME, surface="cli")
            )
        finally:
            await runtime.close()

    done = events[-1]
    assert isinstance(done, Completed) and "You said: hello there" in done.text
    assert done.model == "fake"  # whatever model the version names
    [call] = calls
    assert call.model == "fake" and call.cost_usd is not None and call.cost_usd > 0  # demo price
    assert fake.requests[0]["model"] == "fake"
    assert (report.calls, report.fake_calls, report.fake_conversations) == (0, 1, 1)
    assert (report.conversations, report.messages, report.total_ms) == (0, 0, Percentiles())
    assert "left out:\n- 1 call answered by the bundled fake model" in report_text(report)
    assert chart_figures(report).empty is not None

    # `assistant report --fake`: the same traffic, studied instead of left out
    assert (studied.calls, studied.conversations, studied.messages) == (1, 1, 2)
    assert studied.cost_usd == call.cost_usd and studied.fake_calls == 0
    assert report_text(studied).splitlines()[1].startswith("The bundled fake model's traffic")
    assert chart_figures(studied).empty is None
    assert "The bundled fake model's traffic only" in asked.text  # `/report` in `chat --fake`
