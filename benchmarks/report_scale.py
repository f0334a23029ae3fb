"""Reports, the chart, `prompt show` and the scheduled alert checks on a store of a million calls.

Seeds a real store (the real schema, built by the real migrations) with N model calls spread
over 90 days, shaped like a team's traffic: three prompts with versions released over the
quarter and A/B splits, four models (one unpriced, one reasoning), Slack, Discord and terminal
conversations of a few turns each with their user and assistant messages, tool rounds, rolling
summaries, errors, cache hits, contract violations, fallbacks, estimated token counts, votes,
eval turns (the eval platform) and the bundled fake model's traffic, plus a daily scheduled eval
run of each prompt (and CLI and fake-model runs) with per-case results. Rows go in through the raw
driver in large batches (sqlite3's executemany, asyncpg's COPY), not through the engine.

Then times, several repetitions each (p50 and max), the very code each command runs:
  report 24h | 7d | 30d   `build_report` + `report_text` (what `assistant report` prints)
  chart 24h | 30d         `chart_png` of that report (`chart_figures` + matplotlib drawing)
  prompt show             `AdminCommands.run("prompt show <name>")`
  alert checks            `Duties.check_alerts` (the daily budget and the error spike)
  eval gate               `EvalGate.check` of every version (the drift/gate comparisons' reads)
each next to its goal (p50 <= 1 s), at every store size in `--sizes`, with the growth from the
smallest size to the largest as a ratio. The last line is one JSON object.

    python benchmarks/report_scale.py [--calls 1000000] [--sizes 100000,1000000]
        [--database sqlite|postgres|both] [--postgres-url postgresql://postgres@127.0.0.1/postgres]
        [--repeat 5] [--keep DIR] [--revision REV]
    python benchmarks/report_scale.py --quick    # 20,000 calls on both databases, < 1 minute

`--keep DIR` keeps the seeded stores (SQLite files in DIR; Postgres databases named
`report_scale_<calls>`) and reuses them on the next run, so the same data can be timed at
another schema revision (`--revision 0007`: the indexes of 0008 dropped) or by another
checkout of the code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from assistant.admin.commands import AdminCommands, CommandContext
from assistant.admin.gate import EvalGate
from assistant.evals.suite import EvalSuite
from assistant.reporting.chart import chart_png
from assistant.reporting.duties import Duties, DutySettings
from assistant.reporting.figures import Period, build_report
from assistant.reporting.notices import Notice
from assistant.reporting.wording import report_text
from assistant.store import Store, migrate
from assistant.store.database import sqlite_driver
from assistant.store.tables import (
    Conversation,
    EvalResult,
    EvalRun,
    Feedback,
    LlmCall,
    Message,
    PromptVersionRow,
)
from assistant.turns import Actor

GOAL_SECONDS = 1.0
DAYS = 90
BATCH = 20_000  # rows per executemany or COPY
QUICK_CALLS = 20_000
DAILY_BUDGET_USD = 50.0
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# (prompt, share of conversations, [(version, released on day), ...], models by weight)
PROMPTS: tuple[
    tuple[str, float, tuple[tuple[int, int], ...], tuple[tuple[str, float], ...]], ...
] = (
    (
        "assistant",
        0.70,
        ((1, 0), (2, 25), (3, 55), (4, 80)),
        (("gpt-4o-mini", 0.8), ("gpt-4o", 0.2)),
    ),
    ("support", 0.20, ((1, 0), (2, 40), (3, 70)), (("gpt-4o", 0.9), ("llama-3.1-70b", 0.1))),
    ("triage", 0.10, ((1, 0), (2, 60)), (("o4-mini", 0.7), ("llama-3.1-70b", 0.3))),
)
# USD per 1M tokens (input, output); llama is unpriced (cost NULL)
PRICES = {"gpt-4o-mini": (0.15, 0.6), "gpt-4o": (2.5, 10.0), "o4-mini": (1.1, 4.4)}
FAKE = "fake"
PLATFORMS = (("slack", 0.6), ("discord", 0.3), ("terminal", 0.1))
EVAL_SHARE, FAKE_SHARE = 0.05, 0.02  # of turns
ERROR_RATE, TOOL_ROUND, SUMMARY_RATE = 0.02, 0.15, 0.04
CALLS_PER_TURN = 1 + TOOL_ROUND + SUMMARY_RATE
NEW_CONVERSATION = 0.25  # a turn starts a conversation; else continues a recent one
VOTE_RATE = 0.04
EVAL_CASES = 24


# ---- seeding


# Each table's columns in the order the seeder builds its row tuples: written as they are by
# sqlite3's executemany or asyncpg's COPY, no ORM or Core statement in between.
CONVERSATION_COLUMNS = (
    "id", "platform", "workspace", "channel", "thread", "summary", "summary_tokens",
    "summary_through_id", "created_at",
)  # fmt: skip
MESSAGE_COLUMNS = (
    "id", "conversation_id", "role", "author_id", "author_name", "text", "token_count",
    "status", "prompt_version_id", "platform_message_id", "created_at",
)  # fmt: skip
CALL_COLUMNS = (
    "id", "conversation_id", "message_id", "prompt_version_id", "purpose", "model",
    "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "token_source",
    "fallback_for", "cost_usd", "ttft_ms", "total_ms", "status", "error_class", "cache_hit",
    "contract_error", "created_at",
)  # fmt: skip
FEEDBACK_COLUMNS = (
    "id", "message_id", "prompt_version_id", "user_id", "vote", "created_at", "updated_at",
)  # fmt: skip
Row = tuple[Any, ...]
Stamp = Callable[[datetime], Any]  # a UTC datetime as the driver takes it


@dataclass
class _Rows:
    """Rows waiting for the next batch write, in foreign-key order."""

    conversations: list[Row] = field(default_factory=list)
    messages: list[Row] = field(default_factory=list)
    calls: list[Row] = field(default_factory=list)
    feedback: list[Row] = field(default_factory=list)

    @staticmethod
    def check_columns() -> None:
        """The tuples name every column of the tables the migrations made, and no other."""
        models = (Conversation, Message, LlmCall, Feedback)
        for model, (name, columns, _) in zip(models, _Rows().tables(), strict=True):
            table = _table(model)
            stored = {column.name for column in table.columns}
            if table.name != name or stored != set(columns):
                raise SystemExit(f"the seeder's {name} columns are not the table's: {stored}")

    def tables(self) -> Iterator[tuple[str, tuple[str, ...], list[Row]]]:
        yield "conversations", CONVERSATION_COLUMNS, self.conversations
        yield "messages", MESSAGE_COLUMNS, self.messages
        yield "llm_calls", CALL_COLUMNS, self.calls
        yield "feedback", FEEDBACK_COLUMNS, self.feedback

    def __len__(self) -> int:
        return len(self.messages) + len(self.calls)


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


def sqlite_stamp(moment: datetime) -> str:
    """What SQLAlchemy's DateTime stores in SQLite: UTC text, always with microseconds
    (isoformat is several times cheaper than strftime; the offset is cut off)."""
    return moment.isoformat(" ", "microseconds")[:26]


def postgres_stamp(moment: datetime) -> datetime:
    return moment


@dataclass(frozen=True, kw_only=True)
class Seeded:
    calls: int
    messages: int
    conversations: int
    votes: int
    eval_runs: int
    eval_results: int
    seconds: float


class _Seeder:
    """Generates a quarter of traffic turn by turn, in time order, with explicit ids."""

    def __init__(self, calls: int, now: datetime, rng: random.Random, stamp: Stamp) -> None:
        self.target = calls
        self.stamp = stamp
        self.now = now
        self.start = now - timedelta(days=DAYS)
        self.rng = rng
        self.rows = _Rows()
        self.ids = {"conversation": 0, "message": 0, "call": 0, "feedback": 0}
        self.counts = {"calls": 0, "messages": 0, "conversations": 0, "votes": 0}
        self.version_ids: dict[tuple[str, int], int] = {}
        self.active: dict[str, list[tuple[int, str, str]]] = {}  # kind -> (id, prompt, model)

    def next_id(self, kind: str) -> int:
        self.ids[kind] += 1
        return self.ids[kind]

    def moment(self, u: float) -> datetime:
        """Traffic grows over the quarter: density 1 + x on [0, 1], inverted."""
        x = -1 + math.sqrt(1 + 3 * u)
        return self.start + timedelta(seconds=x * DAYS * 86400)

    def version_at(self, prompt: str, when: datetime) -> int:
        day = (when - self.start).days
        releases = next(r for name, _, r, _ in PROMPTS if name == prompt)
        released = [v for v, on in releases if on <= day]
        if len(released) > 1 and self.rng.random() < 0.1:  # an A/B split keeps the previous
            return self.version_ids[(prompt, released[-2])]
        return self.version_ids[(prompt, released[-1])]

    def conversation(self, kind: str, when: datetime) -> tuple[int, str, str]:
        pool = self.active.setdefault(kind, [])
        if pool and self.rng.random() > NEW_CONVERSATION:
            return self.rng.choice(pool)
        conversation_id = self.next_id("conversation")
        if kind == "eval":
            place = ("eval", "eval", f"run-{when:%Y%m%d}", f"case-{conversation_id}")
        elif kind == "fake":
            place = ("terminal", "local", "chat", f"fake-{conversation_id}")
        else:
            platform_name = _pick(self.rng, PLATFORMS)
            place = (platform_name, "T1", f"C{conversation_id % 40}", f"t{conversation_id}")
        self.rows.conversations.append((conversation_id, *place, "", 0, 0, self.stamp(when)))
        self.counts["conversations"] += 1
        prompt = _pick(self.rng, tuple((name, share) for name, share, _, _ in PROMPTS))
        models = next(m for name, _, _, m in PROMPTS if name == prompt)
        model = FAKE if kind == "fake" else _pick(self.rng, models)
        entry = (conversation_id, prompt, model)
        pool.append(entry)
        if len(pool) > 64:
            pool.pop(0)
        return entry

    def turn(self, when: datetime) -> None:
        rng = self.rng
        roll = rng.random()
        kind = "eval" if roll < EVAL_SHARE else "fake" if roll < EVAL_SHARE + FAKE_SHARE else "prod"
        conversation_id, prompt, model = self.conversation(kind, when)
        if kind == "eval" and rng.random() < 0.2:
            model = FAKE  # `eval run --fake`
        version_id = self.version_at(prompt, when) if rng.random() > 0.01 else None
        user_id = self.message(conversation_id, "user", when, None)
        rounds = 2 if rng.random() < TOOL_ROUND else 1
        failed = rng.random() < ERROR_RATE
        moment = when
        for index in range(rounds):
            last = index == rounds - 1
            moment = self.call(
                conversation_id, user_id, version_id, model, moment, "reply", failed and last
            )
        if rng.random() < SUMMARY_RATE:
            self.call(conversation_id, None, version_id, model, moment, "summary", False)
        if failed:
            return
        reply_id = self.message(conversation_id, "assistant", moment, version_id)
        if kind == "prod" and rng.random() < VOTE_RATE:
            self.vote(reply_id, version_id, moment)

    def message(
        self, conversation_id: int, role: str, when: datetime, version_id: int | None
    ) -> int:
        message_id = self.next_id("message")
        user = role == "user"
        self.rows.messages.append(
            (
                message_id,
                conversation_id,
                role,
                "U1" if user else "",
                "Ann" if user else "",
                f"message {message_id}: the status of service {message_id % 37}",
                12,
                "ok",
                version_id,
                f"{when.timestamp():.6f}" if user else None,
                self.stamp(when),
            )
        )
        self.counts["messages"] += 1
        return message_id

    def call(
        self,
        conversation_id: int | None,
        message_id: int | None,
        version_id: int | None,
        model: str,
        when: datetime,
        purpose: str,
        failed: bool,
    ) -> datetime:
        rng = self.rng
        cache_hit = purpose == "reply" and not failed and rng.random() < 0.03
        fallback = None
        if model == "gpt-4o" and rng.random() < 0.01:
            model, fallback = "gpt-4o-mini", "gpt-4o"
        prompt_tokens = 0 if failed or cache_hit else rng.randint(400, 4000)
        completion = 0 if failed or cache_hit else rng.randint(30, 600)
        reasoning = rng.randint(0, completion) if model == "o4-mini" else 0
        cached = prompt_tokens // 2 if rng.random() < 0.3 else 0
        ttft = None if failed else (4.0 if cache_hit else rng.lognormvariate(6.3, 0.5))
        total = (
            rng.uniform(500, 30000) if failed else (ttft or 0.0) + completion * rng.uniform(8, 25)
        )
        self.rows.calls.append(
            (
                self.next_id("call"),
                conversation_id,
                message_id,
                version_id,
                purpose,
                model,
                prompt_tokens,
                completion,
                cached,
                reasoning,
                "estimate:o200k_base" if rng.random() < 0.02 else "server",
                fallback,
                _cost(model, prompt_tokens, completion, failed, cache_hit),
                ttft,
                total,
                "error" if failed else "ok",
                rng.choice(("RateLimitError", "APITimeoutError")) if failed else None,
                cache_hit,
                "at /answer: required" if rng.random() < 0.005 else None,
                self.stamp(when),
            )
        )
        self.counts["calls"] += 1
        return when + timedelta(milliseconds=total)

    def vote(self, message_id: int, version_id: int | None, when: datetime) -> None:
        later = when + timedelta(minutes=self.rng.uniform(0, 600))
        self.rows.feedback.append(
            (
                self.next_id("feedback"),
                message_id,
                version_id,
                "slack:U1",
                1 if self.rng.random() < 0.7 else -1,
                self.stamp(when),
                self.stamp(min(later, self.now - timedelta(seconds=1))),
            )
        )
        self.counts["votes"] += 1


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    names, weights = zip(*weighted, strict=True)
    return rng.choices(names, weights)[0]


def _cost(model: str, prompt: int, completion: int, failed: bool, cache_hit: bool) -> float | None:
    if cache_hit:
        return 0.0
    price = PRICES.get(model)
    if price is None and model != FAKE:
        return None
    if failed or price is None:
        return 0.0 if not failed else None
    return (prompt * price[0] + completion * price[1]) / 1_000_000


async def seed(store: Store, calls: int, *, now: datetime, rng_seed: int = 14) -> Seeded:
    """Fill an empty, migrated store with `calls` model calls over the 90 days before `now`
    (and the conversations, messages, votes, versions and eval runs around them)."""
    began = time.perf_counter()
    _Rows.check_columns()
    writer = await _Writer.open(store.engine)
    seeder = _Seeder(calls, now, random.Random(rng_seed), writer.stamp)
    try:
        async with store.engine.begin() as connection:
            await _insert_versions(connection, seeder)
        turns = round(calls / CALLS_PER_TURN)
        for index in range(turns):
            if seeder.counts["calls"] >= calls:
                break
            seeder.turn(seeder.moment(index / turns))
            if len(seeder.rows) >= BATCH:
                await writer.write(seeder.rows)
        await writer.write(seeder.rows)
    finally:
        await writer.close()
    runs, results = await _insert_eval_runs(store.engine, seeder)
    await _after_seeding(store.engine)
    return Seeded(
        calls=seeder.counts["calls"],
        messages=seeder.counts["messages"],
        conversations=seeder.counts["conversations"],
        votes=seeder.counts["votes"],
        eval_runs=runs,
        eval_results=results,
        seconds=time.perf_counter() - began,
    )


class _Writer:
    """Batches of row tuples into the store through its raw driver: sqlite3's executemany on
    SQLite (one transaction for the whole seeding), asyncpg's COPY on Postgres."""

    stamp: Stamp

    @staticmethod
    async def open(engine: AsyncEngine) -> _Writer:
        if engine.dialect.name == "postgresql":
            url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            return _PostgresWriter(await asyncpg.connect(url))
        return _SqliteWriter(str(engine.url.database))

    async def write(self, rows: _Rows) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class _SqliteWriter(_Writer):
    stamp = staticmethod(sqlite_stamp)

    def __init__(self, path: str) -> None:
        # the store's own SQLite library: two libraries must never open one file in a process
        driver = sqlite_driver().module
        self._connection = driver.connect(path, isolation_level=None, check_same_thread=False)
        self._connection.execute("PRAGMA synchronous=OFF")
        self._connection.execute("BEGIN")

    async def write(self, rows: _Rows) -> None:
        batches = [(table, columns, list(batch)) for table, columns, batch in rows.tables()]
        for _, _, batch in rows.tables():
            batch.clear()
        await asyncio.to_thread(self._write, batches)

    def _write(self, batches: list[tuple[str, tuple[str, ...], list[Row]]]) -> None:
        for table, columns, batch in batches:
            marks = ", ".join("?" * len(columns))
            self._connection.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", batch
            )

    async def close(self) -> None:
        self._connection.execute("COMMIT")
        self._connection.close()


class _PostgresWriter(_Writer):
    stamp = staticmethod(postgres_stamp)

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    async def write(self, rows: _Rows) -> None:
        for table, columns, batch in rows.tables():
            if batch:
                await self._connection.copy_records_to_table(
                    table, records=batch, columns=list(columns)
                )
                batch.clear()

    async def close(self) -> None:
        await self._connection.close()


async def _insert_versions(connection: AsyncConnection, seeder: _Seeder) -> None:
    rows = []
    for name, _, releases, _ in PROMPTS:
        for version, day in releases:
            version_id = len(rows) + 1
            seeder.version_ids[(name, version)] = version_id
            body = f"name: {name}\nversion: {version}\nsystem: |\n" + "  Be helpful.\n" * 60
            rows.append(
                {
                    "id": version_id,
                    "name": name,
                    "version": version,
                    "content_hash": f"{version_id:064x}",
                    "source_file": f"prompts/{name}/{version}.yaml",
                    "body": body,
                    "created_at": seeder.start + timedelta(days=day),
                }
            )
    await connection.execute(insert(_table(PromptVersionRow)), rows)


async def _insert_eval_runs(engine: AsyncEngine, seeder: _Seeder) -> tuple[int, int]:
    """A scheduled run of each prompt's version in use every day at 03:00, a CLI run of each
    version the day before its release, and a weekly run on the fake model."""
    rng, runs, results = seeder.rng, [], []
    for name, _, releases, _ in PROMPTS:
        for day in range(DAYS):
            when = seeder.start + timedelta(days=day, hours=3)
            released = [v for v, on in releases if on <= day]
            plan = [(released[-1], "gpt-4o-mini", "schedule")]
            plan += [(v, "gpt-4o-mini", "cli") for v, on in releases if on == day + 1]
            if day % 7 == 0:
                plan.append((released[-1], FAKE, "cli"))
            for version, model, trigger in plan:
                run_id = len(runs) + 1
                passed = sum(rng.random() < 0.92 for _ in range(EVAL_CASES))
                runs.append(
                    {
                        "id": run_id,
                        "prompt_name": name,
                        "version": version,
                        "prompt_version_id": seeder.version_ids[(name, version)],
                        "model": model,
                        "trigger": trigger,
                        "cases": EVAL_CASES,
                        "passed": passed,
                        "pass_rate": passed / EVAL_CASES,
                        "threshold": 0.8,
                        "consistency": rng.uniform(0.8, 1.0),
                        "self_check_rate": rng.uniform(0.8, 1.0),
                        "tool_cases": 2,
                        "tool_passed": 2,
                        "failed_turns": 0,
                        "cost_usd": rng.uniform(0.01, 0.2),
                        "started_at": when,
                        "finished_at": when + timedelta(minutes=3),
                    }
                )
                results += [
                    {
                        "id": len(results) + case + 1,
                        "run_id": run_id,
                        "kind": "case" if case < 18 else "self_check" if case < 22 else "tool",
                        "case": f"case-{case}",
                        "attempt": 1,
                        "passed": case < passed,
                        "failures": "" if case < passed else "expected 'deploy'",
                        "answer": "The deploy finished at 14:02 UTC.",
                        "cost_usd": 0.002,
                        "latency_ms": rng.uniform(300, 3000),
                    }
                    for case in range(EVAL_CASES)
                ]
    async with engine.begin() as connection:
        await connection.execute(insert(_table(EvalRun)), runs)
        for start in range(0, len(results), BATCH):
            await connection.execute(insert(_table(EvalResult)), results[start : start + BATCH])
    return len(runs), len(results)


async def _after_seeding(engine: AsyncEngine) -> None:
    """Postgres: move the id sequences past the explicit ids, and let the planner see the data
    as autovacuum would. (SQLite gets no ANALYZE: the product never runs one.)"""
    if engine.dialect.name != "postgresql":
        return
    async with engine.begin() as connection:
        for table in ("conversations", "messages", "llm_calls", "feedback", "eval_runs"):
            await connection.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT coalesce(max(id), 1) FROM {table}))"
                )
            )
        for table in ("prompt_versions", "eval_results"):
            await connection.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT coalesce(max(id), 1) FROM {table}))"
                )
            )
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("VACUUM (ANALYZE)"))


# ---- timing


@dataclass
class _Recorder:
    notices: list[Notice] = field(default_factory=list)

    async def post(self, channel: str, notice: Notice) -> None:
        self.notices.append(notice)


def _suites() -> dict[str, EvalSuite]:
    return {
        name: EvalSuite(
            prompt=name,
            path=Path(f"prompts/{name}/evals.yaml"),
            threshold=0.8,
            consistency_runs=1,
            self_check=None,
            cases=(),
            tool_cases=(),
        )
        for name, _, _, _ in PROMPTS
    }


def _actions(store: Store, now: datetime) -> dict[str, Callable[[], Awaitable[Any]]]:
    """Each timed action: the code path its command runs, on a fixed `now`."""
    reports: dict[str, Any] = {}

    def report(spec: str) -> Callable[[], Awaitable[str]]:
        async def run() -> str:
            found = await build_report(
                store, Period.last(spec, now=now), daily_budget_usd=DAILY_BUDGET_USD
            )
            reports[spec] = found
            return report_text(found)

        return run

    def chart(spec: str) -> Callable[[], Awaitable[bytes]]:
        async def run() -> bytes:
            return await asyncio.to_thread(chart_png, reports[spec])

        return run

    commands = AdminCommands(prompts=store.prompts, versions=None, admins=())  # type: ignore[arg-type]
    context = CommandContext(actor=Actor(platform="shell", user_id="bench"), surface="shell")

    async def show() -> str:
        result = await commands.run("prompt show assistant", context)
        assert result.ok, result.text
        return result.text

    duties = Duties(
        store=store,
        runner=None,  # type: ignore[arg-type]  # check_alerts runs no evals
        suites={},
        notifier=_Recorder(),
        settings=DutySettings(
            channels=["slack:C1"],
            eval_cron="0 3 * * *",
            report_cron="0 9 * * *",
            daily_budget_usd=DAILY_BUDGET_USD,
        ),
        clock=lambda: now,
    )
    gate = EvalGate(evals=store.evals, suites=_suites())

    async def gate_all() -> None:
        for name, _, releases, _ in PROMPTS:
            versions = [v for v, _ in releases]
            await gate.check(name, versions, versions[-1], force=True)

    return {
        "report 24h": report("24h"),
        "chart 24h": chart("24h"),
        "report 7d": report("7d"),
        "report 30d": report("30d"),
        "chart 30d": chart("30d"),
        "prompt show": show,
        "alert checks": duties.check_alerts,
        "eval gate": gate_all,
    }


async def time_actions(store: Store, now: datetime, repeat: int) -> dict[str, dict[str, float]]:
    actions = _actions(store, now)
    samples: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(repeat):
        for name, action in actions.items():
            began = time.perf_counter()
            await action()
            samples[name].append(time.perf_counter() - began)
    return {
        name: {"p50": statistics.median(values), "max": max(values)}
        for name, values in samples.items()
    }


# ---- stores


@dataclass(frozen=True, kw_only=True)
class _Target:
    database: str
    calls: int
    url: str
    cleanup: Callable[[], Awaitable[None]]


async def _open(database: str, calls: int, args: argparse.Namespace, scratch: Path) -> _Target:
    if database == "sqlite":
        folder = Path(args.keep) if args.keep else scratch
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"report_scale_{calls}.db"

        async def remove() -> None:
            if not args.keep:
                for suffix in ("", "-wal", "-shm"):
                    await asyncio.to_thread(Path(f"{path}{suffix}").unlink, missing_ok=True)

        return _Target(database=database, calls=calls, url=f"sqlite:///{path}", cleanup=remove)
    name = f"report_scale_{calls}"
    admin_url = args.postgres_url
    admin = await asyncpg.connect(admin_url)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()

    async def drop() -> None:
        if args.keep:
            return
        connection = await asyncpg.connect(admin_url)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()

    base = admin_url.rsplit("/", 1)[0]
    return _Target(database=database, calls=calls, url=f"{base}/{name}", cleanup=drop)


async def _stored_calls(store: Store) -> int:
    async with store.engine.connect() as connection:
        has_table = await connection.run_sync(
            lambda sync: sync.dialect.has_table(sync, "llm_calls")
        )
        if not has_table:
            return 0
        return int(
            (await connection.execute(select(func.count()).select_from(LlmCall))).scalar_one()
        )


async def _seeded_at(store: Store) -> datetime:
    """The `now` the stored data was seeded for: just after its newest call."""
    async with store.engine.connect() as connection:
        newest = (await connection.execute(select(func.max(LlmCall.created_at)))).scalar_one()
    moment: datetime = newest if newest.tzinfo else newest.replace(tzinfo=UTC)
    return moment.replace(second=0, microsecond=0) + timedelta(minutes=1)


async def measure(target: _Target, args: argparse.Namespace) -> dict[str, Any]:
    store = Store.connect(target.url)
    try:
        stored = await _stored_calls(store)
        if stored and abs(stored - target.calls) > target.calls // 50:  # seeded for another size
            raise SystemExit(f"{target.url} holds {stored} calls, not {target.calls}: remove it")
        await migrate.upgrade(store.engine)
        seeded: Seeded | None = None
        if not stored:
            now = datetime.now(UTC).replace(second=0, microsecond=0)
            seeded = await seed(store, target.calls, now=now)
            print(
                f"  seeded {seeded.calls:,} calls, {seeded.messages:,} messages, "
                f"{seeded.conversations:,} conversations, {seeded.votes:,} votes, "
                f"{seeded.eval_runs:,} eval runs ({seeded.eval_results:,} results) "
                f"in {seeded.seconds:.1f} s",
                flush=True,
            )
        if args.revision != "head":
            await migrate.downgrade(store.engine, args.revision)
        now = await _seeded_at(store)
        figures = await time_actions(store, now, args.repeat)
        return {"seed_seconds": seeded.seconds if seeded else None, "figures": figures}
    finally:
        await store.close()
        await target.cleanup()


def _print_figures(database: str, calls: int, figures: dict[str, dict[str, float]]) -> None:
    print(f"  {database}, {calls:,} calls:")
    for name, figure in figures.items():
        verdict = "met" if figure["p50"] <= GOAL_SECONDS else "NOT met"
        print(
            f"    {name:<14} p50 {figure['p50'] * 1000:8.0f} ms"
            f"   max {figure['max'] * 1000:8.0f} ms   goal p50 <= {GOAL_SECONDS:g} s: {verdict}"
        )


def _growth(results: dict[str, dict[int, Any]]) -> dict[str, dict[str, float]]:
    growth: dict[str, dict[str, float]] = {}
    for database, by_size in results.items():
        sizes = sorted(by_size)
        if len(sizes) < 2:
            continue
        small, large = by_size[sizes[0]]["figures"], by_size[sizes[-1]]["figures"]
        growth[database] = {
            name: large[name]["p50"] / small[name]["p50"] for name in large if small[name]["p50"]
        }
        print(f"  growth {database}, p50 at {sizes[-1]:,} / p50 at {sizes[0]:,} calls:")
        for name, ratio in growth[database].items():
            print(f"    {name:<14} {ratio:6.2f}x   (store {sizes[-1] / sizes[0]:g}x larger)")
    return growth


async def main(args: argparse.Namespace) -> None:
    databases = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    sizes = sorted({int(size) for size in args.sizes.split(",")} if args.sizes else {args.calls})
    results: dict[str, dict[int, Any]] = {}
    print(
        f"report_scale: {platform.machine()}, {platform.system()}, "
        f"Python {platform.python_version()}, sizes {sizes}, {args.repeat} repetitions, "
        f"revision {args.revision}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="report_scale_") as scratch:
        for database in databases:
            for calls in sizes:
                print(f"{database}, {calls:,} calls", flush=True)
                target = await _open(database, calls, args, Path(scratch))
                found = await measure(target, args)
                results.setdefault(database, {})[calls] = found
                _print_figures(database, calls, found["figures"])
    growth = _growth(results)
    summary = {
        "goal_p50_s": GOAL_SECONDS,
        "revision": args.revision,
        "results": {
            database: {
                str(calls): {
                    "seed_s": None
                    if found["seed_seconds"] is None
                    else round(found["seed_seconds"], 1),
                    **{
                        name: {
                            "p50_ms": round(f["p50"] * 1000, 1),
                            "max_ms": round(f["max"] * 1000, 1),
                        }
                        for name, f in found["figures"].items()
                    },
                }
                for calls, found in by_size.items()
            }
            for database, by_size in results.items()
        },
        "growth_p50": {
            database: {name: round(ratio, 2) for name, ratio in ratios.items()}
            for database, ratios in growth.items()
        },
    }
    print(json.dumps(summary))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000, help="model calls in the store")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_CALLS:,} calls only, one size, both databases, 3 repetitions "
        "(for `./dev bench`)",
    )
    parser.add_argument(
        "--sizes",
        default=None,
        help="store sizes to compare, e.g. 100000,1000000 (default: "
        "a tenth of --calls and --calls)",
    )
    parser.add_argument("--database", choices=("sqlite", "postgres", "both"), default="sqlite")
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", default=None, help="keep (and reuse) the seeded stores here")
    parser.add_argument(
        "--revision", default="head", help="time at this schema revision (e.g. 0007: before)"
    )
    args = parser.parse_args()
    if args.quick:
        args.calls, args.sizes, args.database, args.repeat = QUICK_CALLS, None, "both", 3
    if args.sizes is None:
        args.sizes = str(QUICK_CALLS) if args.quick else f"{max(args.calls // 10, 1)},{args.calls}"
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
