"""Traces as a collector receives them: a local OTLP/HTTP receiver decodes the protobuf the
real OpenTelemetry exporter sends, and each test reads the spans of real turns (the engine, the
fake model server, the store) as Jaeger, Tempo or Langfuse would get them."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as WireSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from assistant.builtin_tools import builtin_registry
from assistant.config import load_settings
from assistant.engine import Assistant
from assistant.knowledge.embeddings import Embedder
from assistant.knowledge.service import Knowledge
from assistant.llm import OpenAIChatModel
from assistant.observability.traces import Tracing, TracingConfigError, open_tracing
from assistant.pricing import PriceTable
from assistant.prompts.bindings import Scope
from assistant.records import CallRecord
from assistant.runtime import open_runtime
from assistant.store import Store
from assistant.testing import CallTools, Fail, FakeLlm, Reply
from assistant.turns import Completed, Failed
from tests.conftest import REF, build_assistant, collect, inbound, write_prompt
from tests.test_cli import REPO

HOLIDAYS = "# Holidays\n\nEveryone gets 25 days of paid holiday a year.\n"
QUESTION = "How many days of holiday do we get, in hours?"
ANSWER = "25 days [1], which is 200 hours."


@dataclass
class Received:
    """What one span looks like on the wire, its attributes decoded."""

    name: str
    trace_id: str
    span_id: str
    parent: str
    kind: int
    start_ns: int
    end_ns: int
    error: bool
    attributes: dict[str, Any]
    resource: dict[str, Any] = field(default_factory=dict)


class Receiver:
    """An OTLP/HTTP collector on loopback: POST /v1/traces, protobuf, gzip or not."""

    def __init__(self) -> None:
        self.spans: list[Received] = []
        self.requests = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _export(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        self.requests += 1
        for resource_spans in export.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(_received(s, resource) for s in scope_spans.spans)
        answer = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type="application/x-protobuf")

    def traces(self) -> dict[str, list[Received]]:
        found: dict[str, list[Received]] = {}
        for span in self.spans:
            found.setdefault(span.trace_id, []).append(span)
        return found


def _received(span: WireSpan, resource: dict[str, Any]) -> Received:
    return Received(
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent=span.parent_span_id.hex(),
        kind=span.kind,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        error=span.status.code == Status.STATUS_CODE_ERROR,
        attributes=_attributes(span.attributes),
        resource=resource,
    )


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


@pytest.fixture
async def receiver(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Receiver]:
    """The receiver, and the standard settings pointing at it (the SDK reads them itself)."""
    found = Receiver()
    await found.start()
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", found.url)
    yield found
    await found.close()


def tracing(*, capture_content: bool = False) -> Tracing:
    opened = open_tracing(capture_content=capture_content)
    assert opened is not None
    return opened


@pytest.fixture
def knowledge(store: Store, model: OpenAIChatModel) -> Knowledge:
    return Knowledge(
        store, Embedder(model.client, model="fake-embedding", prices=PriceTable.load())
    )


async def knowing_assistant(
    store: Store, model: OpenAIChatModel, knowledge: Knowledge, tmp_path: Path, observer: Tracing
) -> Assistant:
    """An engine whose version may search a synced handbook and use the calculator."""
    folder = tmp_path / "handbook"
    folder.mkdir()
    (folder / "holidays.md").write_text(HOLIDAYS, encoding="utf-8")
    info = await knowledge.store.add_collection(
        "handbook", str(folder), link=None, description="", origin="cli", actor="t", surface="cli"
    )
    await knowledge.store.bind("handbook", Scope(kind="global"), actor="t", surface="cli")
    await knowledge.sync(info)
    prompts = tmp_path / "prompts"
    write_prompt(prompts, tools=["search_knowledge", "calculator"], examples=[])
    tools = builtin_registry(knowledge.search_knowledge)
    return await build_assistant(store, model, prompts, tools, observer=observer)


def script_search_turn(fake_llm: FakeLlm) -> None:
    fake_llm.script(
        CallTools(
            calls=(
                ("search_knowledge", {"query": "holiday days"}),
                ("calculator", {"expression": "25 * 8"}),
            )
        ),
        Reply(text=ANSWER),
    )


def by_name(spans: list[Received]) -> dict[str, list[Received]]:
    found: dict[str, list[Received]] = {}
    for span in spans:
        found.setdefault(span.name, []).append(span)
    return found


async def test_a_turn_is_one_trace_a_span_per_model_call_tool_and_search(
    receiver, store, model, knowledge, fake_llm, tmp_path
):
    traced = tracing()
    assistant = await knowing_assistant(store, model, knowledge, tmp_path, traced)
    script_search_turn(fake_llm)

    done = (await collect(assistant.respond(inbound(QUESTION))))[-1]
    await traced.close()

    assert isinstance(done, Completed) and done.text == ANSWER
    [spans] = receiver.traces().values()  # one trace for the turn
    named = by_name(spans)
    [turn] = named["invoke_agent assistant"]
    assert turn.parent == ""  # the trace's root
    assert all(s.parent == turn.span_id for s in spans if s is not turn)
    assert sorted(named) == sorted(
        [
            "invoke_agent assistant",
            "chat gpt-4o-mini",
            "embeddings fake-embedding",
            "execute_tool search_knowledge",
            "execute_tool calculator",
            "retrieval handbook",
        ]
    )
    assert len(named["chat gpt-4o-mini"]) == 2
    assert turn.resource["service.name"] == "team-assistant"
    assert turn.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert turn.attributes["gen_ai.agent.name"] == "assistant"
    assert turn.attributes["assistant.prompt_version"] == "assistant@1"
    assert turn.attributes["gen_ai.conversation.id"] == "test:W1:C1:T1"
    assert turn.attributes["assistant.outcome"] == "completed" and not turn.error

    # each model call's span carries the very figures the store keeps of it
    conversation = await store.find_conversation(REF)
    rows = await store.llm_calls(conversation.id)
    calls = sorted(named["chat gpt-4o-mini"] + named["embeddings fake-embedding"], key=_start)
    assert [c.attributes["assistant.purpose"] for c in calls] == [r.purpose for r in rows]
    for span, row in zip(calls, rows, strict=True):
        assert span.attributes["gen_ai.usage.input_tokens"] == row.prompt_tokens
        assert span.attributes["assistant.cost_usd"] == pytest.approx(row.cost_usd)
        assert span.attributes["gen_ai.response.model"] == row.model
        assert span.attributes["assistant.token_source"] == row.token_source
        assert span.attributes["gen_ai.provider.name"] == "openai"
        assert span.end_ns - span.start_ns == pytest.approx(row.total_ms * 1e6, abs=1e3)
    asked, answered = sorted(named["chat gpt-4o-mini"], key=_start)
    assert asked.attributes["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert answered.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert answered.attributes["gen_ai.usage.output_tokens"] > 0
    assert answered.attributes["assistant.ttft_ms"] > 0
    assert answered.attributes["gen_ai.response.time_to_first_chunk"] > 0
    assert turn.attributes["assistant.cost_usd"] == pytest.approx(done.usage.cost_usd)
    assert turn.attributes["gen_ai.usage.input_tokens"] == done.usage.prompt_tokens

    [search] = named["execute_tool search_knowledge"]
    assert search.attributes["gen_ai.tool.name"] == "search_knowledge"
    assert (
        search.attributes["gen_ai.tool.type"] == "function"
        and search.attributes["gen_ai.tool.call.id"]
    )
    [retrieval] = named["retrieval handbook"]
    assert retrieval.attributes["gen_ai.operation.name"] == "retrieval"
    assert retrieval.attributes["gen_ai.data_source.id"] == "handbook"
    assert retrieval.attributes["assistant.retrieval.hits"] >= 1
    assert search.start_ns <= retrieval.start_ns <= retrieval.end_ns <= search.end_ns

    # by default no message reaches a span: not the question, the answer or the query
    shown = json.dumps([s.attributes for s in spans])
    assert "holiday" not in shown and "200 hours" not in shown
    assert "gen_ai.input.messages" not in turn.attributes


async def test_messages_are_in_the_spans_only_when_capture_is_on(
    receiver, store, model, knowledge, fake_llm, tmp_path
):
    traced = tracing(capture_content=True)
    assistant = await knowing_assistant(store, model, knowledge, tmp_path, traced)
    script_search_turn(fake_llm)

    await collect(assistant.respond(inbound(QUESTION)))
    await traced.close()

    named = by_name(receiver.spans)
    [turn] = named["invoke_agent assistant"]
    [asked] = json.loads(turn.attributes["gen_ai.input.messages"])
    [answered] = json.loads(turn.attributes["gen_ai.output.messages"])
    assert asked == {"role": "user", "parts": [{"type": "text", "content": QUESTION}]}
    assert answered["role"] == "assistant" and answered["parts"][0]["content"] == ANSWER
    [retrieval] = named["retrieval handbook"]
    assert retrieval.attributes["gen_ai.retrieval.query.text"] == "holiday days"


async def test_a_fallback_and_a_failed_turn_show_as_errors_each_turn_its_own_trace(
    receiver, store, model, fake_llm, prompts_dir
):
    write_prompt(prompts_dir, fallback_models=["gpt-4.1-mini"])
    traced = tracing()
    assistant = await build_assistant(
        store, model, prompts_dir, builtin_registry(), observer=traced
    )
    fake_llm.script(*[Fail(status=503, message="overloaded")] * 3, Reply(text="From the fallback."))
    rescued = (await collect(assistant.respond(inbound("hello"))))[-1]
    fake_llm.script(*[Fail(status=400, message="bad request")] * 2)
    failed = (await collect(assistant.respond(inbound("again"))))[-1]
    await traced.close()

    assert isinstance(rescued, Completed) and isinstance(failed, Failed)
    first, second = sorted(receiver.traces().values(), key=lambda t: min(map(_start, t)))
    named = by_name(first)
    [down] = named["chat gpt-4o-mini"]
    assert down.error and down.attributes["error.type"] == "LlmUnavailable"
    assert "assistant.cost_usd" not in down.attributes  # nothing billed, nothing guessed
    [stood_in] = named["chat gpt-4.1-mini"]
    assert stood_in.attributes["assistant.fallback_for"] == "gpt-4o-mini"
    assert not stood_in.error and stood_in.attributes["assistant.cost_usd"] > 0
    [turn] = named["invoke_agent assistant"]
    assert not turn.error and turn.attributes["assistant.outcome"] == "completed"

    [turn] = by_name(second)["invoke_agent assistant"]
    assert turn.error and turn.attributes["assistant.outcome"] == "failed"
    assert turn.attributes["error.type"] == failed.error_class


async def test_a_judge_call_outside_any_turn_is_a_trace_of_its_own(
    receiver, store, model, prompts_dir, tools
):
    traced = tracing()
    assistant = await build_assistant(store, model, prompts_dir, tools, observer=traced)
    judged = CallRecord(purpose="judge", model="unpriced-model", total_ms=12.0, status="ok")
    await assistant.record_calls([judged], surface="eval")  # as the eval runner does
    await traced.close()

    [span] = receiver.spans
    assert span.name == "chat unpriced-model" and span.parent == ""
    assert span.attributes["assistant.purpose"] == "judge"
    assert span.attributes["assistant.surface"] == "eval"
    assert span.attributes["assistant.unpriced"] is True
    assert "assistant.cost_usd" not in span.attributes


async def test_the_runtime_traces_when_an_endpoint_is_set_and_sends_it_all_on_close(
    receiver, fake_llm, tmp_path, monkeypatch
):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "helpdesk-bot")
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path}/t.db", prompts_dir=REPO / "prompts"
    )
    runtime = await open_runtime(settings, base_url=fake_llm.base_url, fake=True, mcp=False)
    try:
        done = (await collect(runtime.assistant.respond(inbound("hello there"))))[-1]
    finally:
        await runtime.close()

    assert isinstance(done, Completed)
    [spans] = receiver.traces().values()
    names = {s.name for s in spans}
    assert any(n.startswith("invoke_agent ") for n in names) and "chat fake" in names
    assert {s.resource["service.name"] for s in spans} == {"helpdesk-bot"}


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "OTLP/HTTP only"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json", "OTLP/HTTP only"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "expected an http:// or https:// URL"),
    ],
)
def test_a_setting_tracing_cannot_honour_is_refused_naming_it(monkeypatch, name, value, said):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv(name, value)
    with pytest.raises(TracingConfigError) as refused:
        open_tracing(capture_content=False)
    assert str(refused.value).startswith(f"{name}") and said in str(refused.value)


def test_without_an_endpoint_or_when_disabled_nothing_is_traced(monkeypatch, tmp_path):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert open_tracing(capture_content=True, env_file=tmp_path / "none") is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/traces")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert open_tracing(capture_content=True, env_file=tmp_path / "none") is None


def test_an_endpoint_written_in_dotenv_turns_tracing_on(tmp_path):
    """The SDK reads the process environment only; `.env` is read like every other setting."""
    (tmp_path / ".env").write_text("OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:9/\n")
    probe = (
        "import os\nfrom assistant.observability.traces import open_tracing\n"
        "traced = open_tracing(capture_content=False)\n"
        "print(traced is not None, os.environ['OTEL_EXPORTER_OTLP_ENDPOINT'])\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env,
        check=True, timeout=120,
    )  # fmt: skip
    assert result.stdout.split() == ["True", "http://127.0.0.1:9/"]


def _start(span: Received) -> int:
    return span.start_ns
