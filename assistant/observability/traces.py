"""OpenTelemetry traces of every turn, after the GenAI semantic conventions, sent over OTLP/HTTP.

A turn is one trace: an `invoke_agent` span with a child per model call (`chat MODEL`, or
`embeddings MODEL` for a search's query), per tool run (`execute_tool NAME`) and per knowledge
search (`retrieval COLLECTIONS`). The engine reports each call as it ends, so a call's span is
drawn from its record afterwards (start = end - its total time) with explicit times: no
context variables, and the figures are the very ones the store, `/cost` and reports show.

Tracing is on only when OpenTelemetry's own OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT)
is set; the SDK reads the rest of its settings itself. Without them nothing of OpenTelemetry is
imported and the engine keeps its do-nothing observer, so an untraced process pays nothing.
Messages go into spans only with OTEL_CAPTURE_CONTENT=true: traces often leave the team.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from assistant.observe import Retrieval, ToolRun, TurnEnded, TurnStarted, TurnWatch
from assistant.records import NO_TOKENS, CallRecord

if TYPE_CHECKING:  # the SDK is imported by `open_tracing` alone, and only when configured
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
SERVICE_NAME = "team-assistant"  # unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES names one
PROVIDER = "openai"  # gen_ai.provider.name: the API every model server here speaks
SCOPE = "assistant"  # the instrumentation scope's name


class TracingConfigError(ValueError):
    """An OTEL_* setting this process cannot honour; the message names it."""


def tracing_wanted(environ: Mapping[str, str]) -> bool:
    """An OTLP endpoint is set and the SDK is not disabled (OTEL_SDK_DISABLED=true)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINTS)


def check_settings(environ: Mapping[str, str]) -> None:
    """Refuse at start what would otherwise fail at every export, unseen: gRPC (this build
    has the OTLP/HTTP exporter only) and an endpoint that is not an http(s) URL."""
    for name in PROTOCOLS:
        protocol = environ.get(name, "").strip().lower()
        if protocol and protocol != "http/protobuf":
            raise TracingConfigError(
                f"{name}={protocol}: traces are sent over OTLP/HTTP only (http/protobuf); "
                "set it to http/protobuf or leave it unset, and point the endpoint at the "
                "collector's HTTP port (usually 4318), not gRPC's (4317)"
            )
    for name in ENDPOINTS:
        value = environ.get(name, "").strip()
        parts = urlsplit(value)
        if value and (parts.scheme not in ("http", "https") or not parts.netloc):
            raise TracingConfigError(
                f"{name}: expected an http:// or https:// URL such as http://localhost:4318, "
                f"got {value!r}"
            )


def adopt_dotenv(environ: MutableMapping[str, str], env_file: Path = Path(".env")) -> None:
    """OTEL_* settings written in `.env` join the environment (which wins), as every other
    setting does: the SDK reads the process environment alone."""
    if not env_file.is_file():
        return
    from dotenv import dotenv_values  # pydantic-settings' own .env reader

    for name, value in dotenv_values(env_file).items():
        if name.upper().startswith("OTEL_") and value and name not in environ:
            environ[name] = value


def open_tracing(*, capture_content: bool, env_file: Path = Path(".env")) -> Tracing | None:
    """The process's tracing, exporting in batches over OTLP/HTTP; None when no endpoint is
    set (then OpenTelemetry is never imported). TracingConfigError names a bad setting."""
    adopt_dotenv(os.environ, env_file)
    if not tracing_wanted(os.environ):
        return None
    check_settings(os.environ)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # OTEL_TRACES_SAMPLER and its argument
    # the endpoint, headers, timeout, compression and certificates: from OTEL_EXPORTER_OTLP_*
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return Tracing(provider, capture_content=capture_content)


class Tracing:
    """The engine's observer that turns what a turn reports into spans."""

    def __init__(self, provider: TracerProvider, *, capture_content: bool) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer(SCOPE)
        self._capture = capture_content

    def turn(self, started: TurnStarted) -> TurnWatch:
        return _TurnSpans(self._tracer, started, capture=self._capture)

    def call(self, record: CallRecord, *, surface: str) -> None:
        """A call outside any turn (an eval's judge, a sync's embeddings): a trace of its own."""
        _call_span(self._tracer, record, parent=None, extra={"assistant.surface": surface})

    async def close(self) -> None:
        """Send what is buffered and stop (the exporter's timeout bounds it; off the loop)."""
        await asyncio.to_thread(self._provider.shutdown)


class _TurnSpans:
    """One turn's trace: its span opens when the turn starts and its children hang from it."""

    def __init__(self, tracer: Tracer, started: TurnStarted, *, capture: bool) -> None:
        from opentelemetry.trace import SpanKind, set_span_in_context

        self._tracer = tracer
        self._capture = capture
        self._started = started
        name, _, version = started.prompt_version.partition("@")
        attributes: dict[str, str | int] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.agent.name": name,
            "gen_ai.agent.version": version,
            "gen_ai.request.model": started.model,
            "gen_ai.conversation.id": conversation_id(started),
            "assistant.surface": started.surface,
            "assistant.prompt_version": started.prompt_version,
            "assistant.message_id": started.message_id,
        }
        self._span: Span = tracer.start_span(
            f"invoke_agent {name}",
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            start_time=started.started_ns,  # when the message arrived
        )
        self._context: Context = set_span_in_context(self._span)
        self._extra = {
            "assistant.surface": started.surface,
            "assistant.prompt_version": started.prompt_version,
            "gen_ai.conversation.id": conversation_id(started),
        }

    def call(self, record: CallRecord) -> None:
        _call_span(self._tracer, record, parent=self._context, extra=self._extra)

    def tool(self, run: ToolRun) -> None:
        from opentelemetry.trace import SpanKind, StatusCode

        # a name no tool has is the model's invention: never a span name (names are indexed)
        name = run.name if run.source != "unknown" else "unknown"
        span = self._tracer.start_span(
            f"execute_tool {name}",
            context=self._context,
            kind=SpanKind.INTERNAL,
            start_time=run.started_ns,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": name,
                "gen_ai.tool.call.id": run.call_id,
                # a built-in runs here (function); an MCP server's runs elsewhere (extension)
                "gen_ai.tool.type": "function" if run.source == "built-in" else "extension",
                "assistant.tool.source": run.source,
            },
        )
        if not run.ok:
            span.set_attribute("error.type", "tool_error")
            span.set_status(StatusCode.ERROR, "the tool reported an error to the model")
        span.end(end_time=run.ended_ns)

    def retrieval(self, search: Retrieval) -> None:
        from opentelemetry.trace import SpanKind

        source = ",".join(search.collections)
        attributes: dict[str, str | int | tuple[str, ...]] = {
            "gen_ai.operation.name": "retrieval",
            "assistant.retrieval.collections": search.collections,
            "assistant.retrieval.hits": search.hits,
            "assistant.retrieval.mode": search.mode,
        }
        if source:
            attributes["gen_ai.data_source.id"] = source
        if self._capture:
            attributes["gen_ai.retrieval.query.text"] = search.query
        span = self._tracer.start_span(
            f"retrieval {source}" if source else "retrieval",
            context=self._context,
            kind=SpanKind.CLIENT,
            start_time=search.started_ns,
            attributes=attributes,
        )
        span.end(end_time=search.ended_ns)

    def end(self, ended: TurnEnded) -> None:
        from opentelemetry.trace import StatusCode

        span, usage = self._span, ended.usage
        span.set_attribute("assistant.outcome", ended.outcome)
        span.set_attribute("assistant.total_ms", ended.total_ms)
        span.set_attribute("assistant.calls", usage.calls)
        span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
        if usage.cached_tokens:
            span.set_attribute("gen_ai.usage.cache_read.input_tokens", usage.cached_tokens)
        if usage.estimated:
            span.set_attribute("assistant.tokens_estimated", True)
        if usage.cost_usd is not None:
            span.set_attribute("assistant.cost_usd", usage.cost_usd)
        else:
            span.set_attribute("assistant.unpriced", True)
            span.set_attribute("assistant.unpriced_models", usage.unpriced_models)
        if ended.ttft_ms is not None:
            span.set_attribute("assistant.ttft_ms", ended.ttft_ms)
        if self._capture:
            span.set_attribute("gen_ai.input.messages", _messages("user", self._started.text))
            span.set_attribute("gen_ai.output.messages", _messages("assistant", ended.text))
        if ended.outcome == "failed":
            span.set_attribute("error.type", ended.error_class or "_OTHER")
            span.set_status(StatusCode.ERROR, ended.error_class or "the turn failed")
        span.end()


def _call_span(
    tracer: Tracer,
    record: CallRecord,
    *,
    parent: Context | None,
    extra: Mapping[str, str],
) -> None:
    """A model call's span, drawn from its record as the call ended (just now)."""
    from opentelemetry.trace import SpanKind, StatusCode

    ended = time.time_ns()
    operation = "embeddings" if record.purpose == "embedding" else "chat"
    span = tracer.start_span(
        f"{operation} {record.model}",
        context=parent,
        kind=SpanKind.CLIENT,
        start_time=ended - int(record.total_ms * 1_000_000),
        attributes={**extra, **call_attributes(record, operation)},
    )
    if record.status != "ok":
        span.set_status(StatusCode.ERROR, record.error_class or record.status)
    span.end(end_time=ended)


Attribute = str | int | float | bool | tuple[str, ...]


def call_attributes(record: CallRecord, operation: str) -> dict[str, Attribute]:
    """The conventions' attributes of one model call, and ours under `assistant.`."""
    found: dict[str, Attribute] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.request.model": record.model,  # a fallback's own: it is what was asked
        "gen_ai.response.model": record.model,
        "assistant.purpose": record.purpose,
        "assistant.status": record.status,
        "assistant.token_source": record.token_source,
        "assistant.cache_hit": record.cache_hit,
    }
    if record.token_source != NO_TOKENS:
        found["gen_ai.usage.input_tokens"] = record.prompt_tokens
        if operation != "embeddings":
            found["gen_ai.usage.output_tokens"] = record.completion_tokens
        if record.cached_tokens:
            found["gen_ai.usage.cache_read.input_tokens"] = record.cached_tokens
        if record.reasoning_tokens:
            found["gen_ai.usage.reasoning.output_tokens"] = record.reasoning_tokens
    if record.cost_usd is not None:
        found["assistant.cost_usd"] = record.cost_usd
    elif record.status == "ok":
        found["assistant.unpriced"] = True  # never a silent $0
    if record.ttft_ms is not None:
        found["assistant.ttft_ms"] = record.ttft_ms
        if operation == "chat":
            found["gen_ai.response.time_to_first_chunk"] = record.ttft_ms / 1000
    reason = finish_reason(record)
    if reason is not None:
        found["gen_ai.response.finish_reasons"] = (reason,)
    if record.fallback_for:
        found["assistant.fallback_for"] = record.fallback_for
    if record.contract_error:
        found["assistant.contract_broken"] = True
    if record.status != "ok":
        found["error.type"] = record.error_class or record.status
    return found


def finish_reason(record: CallRecord) -> str | None:
    """Why the model stopped: the record's own, or what its error class says of a cut-off."""
    if record.finish_reason:
        return record.finish_reason
    if record.error_class and record.error_class.startswith("finish_reason:"):
        return record.error_class.removeprefix("finish_reason:")
    return None


def conversation_id(started: TurnStarted) -> str:
    """The conversation as one string, the same for every turn of it (platform ids only)."""
    ref = started.conversation
    return ":".join((ref.platform, ref.workspace, ref.channel, ref.thread))


def _messages(role: str, text: str) -> str:
    """The conventions' message list (JSON), one text part."""
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])
