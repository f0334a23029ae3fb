"""`/metrics` as Prometheus scrapes it: after real turns through the engine and the fake model,
the parsed figures equal the accounting rows; labels stay bounded; several workers show one
set of figures on their shared port."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from assistant.access import AccessPolicy
from assistant.observability.health import Health
from assistant.observability.metrics import OTHER, LabelBounds, Metrics
from assistant.observe import Observers, ToolRun, TurnStarted, TurnWatch
from assistant.records import CallRecord
from assistant.store.tables import LlmCall
from assistant.testing import CallTools, Fail, Reply
from assistant.turns import Actor, Completed, ConversationRef, Failed, Inbound
from bots.ops_http import Ops, OpsServer
from tests.conftest import build_assistant, collect, inbound, migrated, write_prompt
from tests.test_run import env as env  # the fixture, shared
from tests.test_workers import answers, ask, serving

Samples = list[tuple[str, dict[str, str], float]]


async def scrape(url: str) -> Samples:
    """GET /metrics and parse it with Prometheus's own text parser."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        body = await response.text()
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    ]


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        value
        for sample, found, value in samples
        if sample == name and all(found.get(k) == v for k, v in labels.items())
    )


def values(samples: Samples, name: str, label: str) -> set[str]:
    return {found[label] for sample, found, _ in samples if sample == name}


@pytest.fixture
async def metrics_url() -> AsyncIterator[tuple[Metrics, str]]:
    metrics = Metrics()
    server = OpsServer(Ops(metrics=metrics, health=Health([])))
    port = await server.start(port=0, host="127.0.0.1")
    yield metrics, f"http://127.0.0.1:{port}/metrics"
    await server.close()


async def test_a_scrape_after_a_few_turns_matches_the_accounting_rows(
    store, model, prompts_dir, tools, fake_llm, metrics_url
):
    metrics, url = metrics_url
    write_prompt(prompts_dir, fallback_models=["gpt-4.1-mini"])
    assistant = await build_assistant(store, model, prompts_dir, tools, observer=metrics)
    fake_llm.script(
        Reply(text="A plain answer."),
        CallTools(calls=(("calculator", {"expression": "6*7"}),)),
        Reply(text="It is 42."),
        *[Fail(status=503, message="overloaded")] * 3,
        Reply(text="From the fallback."),
    )
    for index, text in enumerate(("hello", "what is 6*7?", "and now?")):
        ref = ConversationRef(platform="slack", workspace="W", channel="C", thread=f"T{index}")
        done = (await collect(assistant.respond(inbound(text, ref=ref))))[-1]
        assert isinstance(done, Completed), done
    judged = CallRecord(
        purpose="judge", model="gpt-4o-mini", total_ms=5.0, status="ok", prompt_tokens=30
    )
    await assistant.record_calls([judged], surface="eval")

    samples = await scrape(url)
    async with AsyncSession(store.engine) as session:
        rows = list((await session.exec(select(LlmCall))).all())

    assert total(samples, "assistant_turns_total") == 3
    assert total(samples, "assistant_turns_total", outcome="completed", surface="slack") == 3
    assert total(samples, "assistant_model_calls_total") == len(rows)
    by_kind = Counter((row.purpose, row.status) for row in rows)
    for (purpose, status), count in by_kind.items():
        assert total(samples, "assistant_model_calls_total", purpose=purpose, status=status) == (
            count
        )
    assert by_kind[("judge", "ok")] == 1 and by_kind[("reply", "error")] >= 1
    for direction, field in (
        ("input", "prompt_tokens"),
        ("output", "completion_tokens"),
        ("cached", "cached_tokens"),
        ("reasoning", "reasoning_tokens"),
    ):
        expected = sum(getattr(row, field) for row in rows)
        assert total(samples, "assistant_tokens_total", direction=direction) == expected
    priced = [row.cost_usd for row in rows if row.cost_usd is not None]
    assert total(samples, "assistant_cost_usd_total") == pytest.approx(sum(priced))
    billed_unpriced = [r for r in rows if r.cost_usd is None and r.status != "error"]
    assert total(samples, "assistant_unpriced_calls_total") == len(billed_unpriced)
    assert any(r.cost_usd is None and r.status == "error" for r in rows)  # not counted above
    fallbacks = [row for row in rows if row.fallback_for is not None]
    assert total(samples, "assistant_fallbacks_total", model="gpt-4.1-mini") == len(fallbacks) == 1
    failed = [row for row in rows if row.status == "error"]
    assert total(samples, "assistant_errors_total", stage="call") == len(failed)
    assert total(samples, "assistant_tool_calls_total", tool="calculator", ok="true") == 1
    assert total(samples, "assistant_turns_in_flight") == 0
    assert total(samples, "assistant_time_to_first_token_seconds_count") == 3
    assert total(samples, "assistant_turn_duration_seconds_count") == 3
    assert values(samples, "assistant_turns_total", "prompt_version") == {"assistant@1"}


async def test_a_flood_of_model_and_tool_names_stays_within_the_label_bounds():
    bounded = Metrics(LabelBounds(models=3, error_classes=2, tools=2))
    server = OpsServer(Ops(metrics=bounded, health=Health([])))
    port = await server.start(port=0, host="127.0.0.1")
    try:
        for index in range(50):  # a server naming a new model in every answer
            record = CallRecord(
                purpose="embedding" if index % 2 else "mystery",
                model=f"model-{index}-" + "x" * 200,
                total_ms=1.0,
                status="error",
                error_class=f"Error{index}",
            )
            bounded.call(record, surface="eval")
        for index in range(10):
            source = "unknown" if index % 2 else "built-in"
            run = ToolRun(
                name=f"tool{index}", call_id=str(index), ok=True, started_ns=0, ended_ns=1
            )
            bounded.count_tool(run if source == "built-in" else _unknown(run))
        samples = await scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        await server.close()

    models = values(samples, "assistant_model_calls_total", "model")
    assert len(models) == 4 and OTHER in models
    assert all(len(model) <= 64 for model in models)
    assert values(samples, "assistant_model_calls_total", "purpose") == {"embedding", OTHER}
    assert values(samples, "assistant_errors_total", "error_class") == {"Error0", "Error1", OTHER}
    assert values(samples, "assistant_tool_calls_total", "tool") == {
        "tool0",
        "tool2",
        OTHER,
        "unknown",
    }
    assert total(samples, "assistant_model_calls_total") == 50  # nothing lost, only grouped


def _unknown(run: ToolRun) -> ToolRun:
    """A tool the model made up: the registry knows no such name."""
    return ToolRun(
        name=run.name, call_id=run.call_id, ok=False, started_ns=0, ended_ns=1, source="unknown"
    )


async def test_two_workers_show_the_same_whole_figures_on_their_shared_port(
    env, tmp_path, sqlite_url
):
    async with serving(env, tmp_path, sqlite_url) as (workers, slack):
        asks = 6
        await asyncio.gather(*(ask(slack, workers.url, i) for i in range(asks)))
        await slack.wait_until(lambda: all(answers(slack, i) for i in range(asks)))
        metrics_url = workers.url.replace("/slack/events", "/metrics")
        # each scrape a new connection: the kernel hands them to either worker
        scraped = []
        for _ in range(12):
            samples = await scrape(metrics_url)
            scraped.append(total(samples, "assistant_turns_total", outcome="completed"))
        assert set(scraped) == {asks}, scraped
        async with migrated(sqlite_url) as store, AsyncSession(store.engine) as session:
            rows = list((await session.exec(select(LlmCall))).all())
        assert total(samples, "assistant_model_calls_total") == len(rows) == asks
        assert await workers.stop() == 0, workers.log[-4000:]


class BrokenInstrument:
    """An instrument that fails at everything (a misconfigured plugin, a bug)."""

    def turn(self, started: TurnStarted) -> TurnWatch:
        raise RuntimeError("broken instrument")

    def call(self, record: CallRecord, *, surface: str) -> None:
        raise RuntimeError("broken instrument")


async def test_a_broken_instrument_leaves_the_others_whole_and_the_turn_answered(
    store, model, prompts_dir, tools, fake_llm
):
    metrics = Metrics()
    assistant = await build_assistant(
        store, model, prompts_dir, tools, observer=Observers(BrokenInstrument(), metrics)
    )
    fake_llm.script(Reply(text="Still here."))

    events = await collect(assistant.respond(inbound("hello")))

    assert isinstance(events[-1], Completed) and events[-1].text == "Still here."
    counted = metrics.registry.get_sample_value
    assert counted("assistant_turns_in_flight", {"surface": "test"}) == 0
    turns = [
        s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == "assistant_turns_total" and s.labels.get("outcome") == "completed"
    ]
    assert turns == [1.0]


async def test_a_refused_message_is_counted_as_refused_not_as_an_error(
    store, model, prompts_dir, tools, fake_llm
):
    """A message the rules refuse gets no model call, yet shows on the dashboards: as a turn
    refused, not a failure to alert on."""
    metrics = Metrics()
    policy = AccessPolicy(blocked_users=frozenset({"slack:U9"}))
    assistant = await build_assistant(
        store, model, prompts_dir, tools, observer=metrics, access=policy
    )
    blocked = Inbound(
        ref=ConversationRef(platform="slack", workspace="T1", channel="C1", thread="1"),
        actor=Actor(platform="slack", user_id="U9"),
        text="let me in",
    )

    events = await collect(assistant.respond(blocked))

    assert isinstance(events[-1], Failed) and fake_llm.requests == []
    samples = [
        (s.name, s.labels, s.value) for family in metrics.registry.collect() for s in family.samples
    ]
    assert total(samples, "assistant_turns_total", outcome="refused", surface="slack") == 1
    assert total(samples, "assistant_errors_total") == 0
