"""Prometheus metrics of turns and model calls, fed by the engine's `Observer` hook.

The figures come from the very records the store keeps (`CallRecord`), so `/metrics`, `/cost`
and reports agree. Each `Metrics` has its own registry: two engines in one process (tests) never
share a series.

Labels are bounded, since every distinct value is a series Prometheus keeps for good. Prompt
versions and models come from the prompt files, but a server may name any model in its answer
and a model may ask for a tool that does not exist: a turn's calls are labelled with the model
the version asked for, unknown tools as "unknown", and each label admits a fixed number of
distinct values per process, after which new ones count as "other".

Several processes (`assistant run --workers N`) share one set of figures through
prometheus-client's multiprocess mode: `shared_across_processes` gives the supervisor's
children a folder of their own (PROMETHEUS_MULTIPROC_DIR, read by prometheus-client when it is
first imported), each worker writes its values there, and any worker's scrape sums them all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from assistant.observe import Retrieval, ToolRun, TurnEnded, TurnStarted, TurnWatch
from assistant.records import CallRecord

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
OTHER = "other"  # a label value past its bound
NO_PROMPT = "none"  # a call made outside any turn has no prompt version
MAX_LABEL_CHARS = 64
PURPOSES = frozenset({"reply", "repair", "summary", "embedding", "judge"})
# Model servers take from a fraction of a second to minutes: buckets from 100 ms to 5 min
TTFT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0)
TURN_BUCKETS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True, kw_only=True)
class LabelBounds:
    """How many distinct values each label admits per process before new ones are "other"."""

    models: int = 20
    prompt_versions: int = 50
    surfaces: int = 10
    error_classes: int = 30
    tools: int = 100


class BoundedLabel:
    """One label's values: the first `limit` distinct ones as they are, later ones as "other"."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        value = (value or "")[:MAX_LABEL_CHARS] or "unknown"
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(value)
        return value


@dataclass(frozen=True, kw_only=True)
class _TurnLabels:
    surface: str
    prompt_version: str
    model: str


class Metrics:
    """An `Observer` counting turns, model calls, tokens, cost, errors and tool runs."""

    def __init__(self, bounds: LabelBounds = LabelBounds()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._model = BoundedLabel(bounds.models)
        self._version = BoundedLabel(bounds.prompt_versions)
        self._surface = BoundedLabel(bounds.surfaces)
        self._error = BoundedLabel(bounds.error_classes)
        self._tool = BoundedLabel(bounds.tools)
        self.last_model_answer: float | None = None  # monotonic time of the last call ended ok
        self._define()

    def _define(self) -> None:
        turn = ("surface", "prompt_version", "model")
        call = (*turn, "purpose")
        registry = self.registry
        self.ttft = Histogram(
            "assistant_time_to_first_token_seconds",
            "Time from a turn's start to the first text shown, per answered turn.",
            turn,
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.turn_seconds = Histogram(
            "assistant_turn_duration_seconds",
            "Time a turn took, however it ended.",
            turn,
            buckets=TURN_BUCKETS,
            registry=registry,
        )
        self.turns = Counter(
            "assistant_turns", "Turns by how they ended.", (*turn, "outcome"), registry=registry
        )
        self.calls = Counter(
            "assistant_model_calls",
            "Model calls (replies, repairs, summary folds, embeddings, judges) by status.",
            (*call, "status"),
            registry=registry,
        )
        self.tokens = Counter(
            "assistant_tokens",
            "Tokens of model calls as accounted (reasoning and cached are parts of output/input).",
            (*call, "direction"),
            registry=registry,
        )
        self.cost = Counter(
            "assistant_cost_usd", "Cost of priced model calls.", call, registry=registry
        )
        self.unpriced = Counter(
            "assistant_unpriced_calls",
            "Model calls whose model has no price (their cost is unknown, not zero).",
            call,
            registry=registry,
        )
        self.errors = Counter(
            "assistant_errors",
            "Failed model calls (stage=call) and failed turns (stage=turn) by error class.",
            ("surface", "stage", "error_class"),
            registry=registry,
        )
        self.fallbacks = Counter(
            "assistant_fallbacks",
            "Model calls a fallback model made for the version's own (from_model).",
            ("surface", "prompt_version", "model", "from_model"),
            registry=registry,
        )
        self.cache_hits = Counter(
            "assistant_cache_hits",
            "Replies served from the response cache.",
            turn,
            registry=registry,
        )
        self.tool_calls = Counter(
            "assistant_tool_calls",
            "Tool runs by tool and result.",
            ("tool", "ok"),
            registry=registry,
        )
        self.in_flight = Gauge(
            "assistant_turns_in_flight",
            "Turns under way now.",
            ("surface",),
            registry=registry,
            multiprocess_mode="livesum",
        )

    # ---- the Observer hook

    def turn(self, started: TurnStarted) -> TurnWatch:
        labels = _TurnLabels(
            surface=self._surface(started.surface),
            prompt_version=self._version(started.prompt_version),
            model=self._model(started.model),
        )
        self.in_flight.labels(labels.surface).inc()
        return _Watch(self, labels)

    def call(self, record: CallRecord, *, surface: str) -> None:
        labels = _TurnLabels(surface=self._surface(surface), prompt_version=NO_PROMPT, model="")
        self.count_call(record, labels, model=self._model(record.model))

    # ---- counting

    def count_call(self, record: CallRecord, turn: _TurnLabels, *, model: str) -> None:
        purpose = record.purpose if record.purpose in PURPOSES else OTHER
        labels = (turn.surface, turn.prompt_version, model, purpose)
        self.calls.labels(*labels, record.status).inc()
        for direction, count in (
            ("input", record.prompt_tokens),
            ("output", record.completion_tokens),
            ("cached", record.cached_tokens),
            ("reasoning", record.reasoning_tokens),
        ):
            if count:
                self.tokens.labels(*labels, direction).inc(count)
        if record.cost_usd is None and record.status != "error":  # a failed call cost nothing
            self.unpriced.labels(*labels).inc()
        elif record.cost_usd is not None and record.cost_usd > 0:
            self.cost.labels(*labels).inc(record.cost_usd)
        if record.status == "error":
            self.errors.labels(turn.surface, "call", self._error(record.error_class)).inc()
        elif record.status == "ok" and not record.cache_hit:  # the server itself answered
            self.last_model_answer = time.monotonic()
        if record.fallback_for is not None:
            from_model = self._model(record.fallback_for)
            self.fallbacks.labels(turn.surface, turn.prompt_version, model, from_model).inc()
        if record.cache_hit:
            self.cache_hits.labels(turn.surface, turn.prompt_version, model).inc()

    def count_end(self, ended: TurnEnded, turn: _TurnLabels) -> None:
        labels = (turn.surface, turn.prompt_version, turn.model)
        self.in_flight.labels(turn.surface).dec()
        self.turns.labels(*labels, ended.outcome).inc()
        self.turn_seconds.labels(*labels).observe(ended.total_ms / 1000)
        if ended.ttft_ms is not None and ended.outcome == "completed":
            self.ttft.labels(*labels).observe(ended.ttft_ms / 1000)
        if ended.outcome == "failed":
            self.errors.labels(turn.surface, "turn", self._error(ended.error_class)).inc()

    def count_tool(self, run: ToolRun) -> None:
        tool = "unknown" if run.source == "unknown" else self._tool(run.name)
        self.tool_calls.labels(tool, "true" if run.ok else "false").inc()

    def model_label(self, record: CallRecord, turn: _TurnLabels) -> str:
        """The model a call is counted under: the one the version asked for, unless the call
        was another model's by design (a fallback, an embedding); a server may answer any
        name, and every name would be a series."""
        if record.fallback_for is None and record.purpose != "embedding":
            return turn.model
        return self._model(record.model)

    # ---- exposition

    def exposition(self) -> bytes:
        """The text a scrape of `/metrics` gets: this process's figures, or every worker's
        when the process is one of several (multiprocess mode)."""
        folder = os.environ.get(MULTIPROC_ENV)
        if not folder:
            return generate_latest(self.registry)
        gathered = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(gathered, path=folder)  # type: ignore[no-untyped-call]
        return generate_latest(gathered)


class _Watch:
    """One turn's share of the metrics."""

    def __init__(self, metrics: Metrics, labels: _TurnLabels) -> None:
        self._metrics = metrics
        self._labels = labels

    def call(self, record: CallRecord) -> None:
        model = self._metrics.model_label(record, self._labels)
        self._metrics.count_call(record, self._labels, model=model)

    def tool(self, run: ToolRun) -> None:
        self._metrics.count_tool(run)

    def retrieval(self, search: Retrieval) -> None:
        return None

    def end(self, ended: TurnEnded) -> None:
        self._metrics.count_end(ended, self._labels)


@contextlib.contextmanager
def shared_across_processes() -> Iterator[str]:
    """A fresh folder for the workers' figures, named in PROMETHEUS_MULTIPROC_DIR for the
    processes started inside the block (they import prometheus-client fresh: spawned), and
    removed after it. Fresh each run, as prometheus-client requires: old files would add a
    previous run's counts."""
    folder = tempfile.mkdtemp(prefix="assistant-metrics-")
    before = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = folder
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = before
        shutil.rmtree(folder, ignore_errors=True)


def process_ended(pid: int | None) -> None:
    """Forget a worker's live gauges (turns in flight) once it has ended; its counters stay,
    so totals never go backwards when a worker is replaced."""
    folder = os.environ.get(MULTIPROC_ENV)
    if folder and pid is not None:
        prometheus_multiprocess.mark_process_dead(pid, path=folder)  # type: ignore[no-untyped-call]
