"""What the budget check costs a turn (issue 17): `Budgets.refusal`, which `Assistant.answer`
runs before any model call, with no budget set (one read of the small budgets table), with a
channel budget, and with every kind at once (channel, workspace, global; day and month: one
aggregate query over the month's calls).

The store holds a month of a busy team's model calls: 100,000 by default, over 50 channels,
evenly spread over the last 30 days, so a monthly global budget sums all of them. Last line:
one JSON object.

    python benchmarks/budget_gate.py [--calls 100000] [--turns 200] [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import insert

from assistant.budgets import Budgets
from assistant.store import Store, migrate
from assistant.store.budget_store import Place
from assistant.store.tables import Conversation, LlmCall
from assistant.turns import ConversationRef

TEAM, CHANNELS = "T1", 50
HERE = ConversationRef(platform="slack", workspace=TEAM, channel="C0000", thread="hot")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def seed(store: Store, calls: int) -> None:
    """`calls` model calls over the last 30 days, one conversation per 20 calls."""
    now = datetime.now(UTC)
    conversations = calls // 20 + 1
    async with store.engine.begin() as connection:
        await connection.execute(
            insert(Conversation),
            [
                {
                    "platform": "slack",
                    "workspace": TEAM,
                    "channel": f"C{n % CHANNELS:04d}",
                    "thread": f"t{n}",
                }
                for n in range(conversations)
            ],
        )
        rows: list[dict[str, Any]] = []
        for n in range(calls):
            rows.append(
                {
                    "conversation_id": 1 + n % conversations,
                    "purpose": "reply",
                    "model": "gpt-4o-mini",
                    "cost_usd": 0.0004,
                    "total_ms": 900.0,
                    "status": "ok",
                    "created_at": now - timedelta(days=30) * (n / calls),
                }
            )
            if len(rows) == 5000:
                await connection.execute(insert(LlmCall), rows)
                rows = []
        if rows:
            await connection.execute(insert(LlmCall), rows)


async def measure(budgets: Budgets, turns: int) -> dict[str, float]:
    await budgets.refusal(HERE)  # warm: statements compiled, pages cached
    samples = []
    for _ in range(turns):
        started = time.perf_counter()
        await budgets.refusal(HERE)
        samples.append((time.perf_counter() - started) * 1000)
    return {
        "median_ms": round(statistics.median(samples), 3),
        "p95_ms": round(percentile(samples, 0.95), 3),
    }


async def cases(store: Store, turns: int) -> dict[str, dict[str, float]]:
    """Each check summing afresh (`reuse_seconds=0`), and as a serving process checks (a sum
    reused for REUSE_SUM_SECONDS) with every kind of budget set."""
    budgets = Budgets(store.budgets, daily_usd=None, reuse_seconds=0)
    found = {"no_budget": await measure(budgets, turns)}
    channel = Place(scope="channel", platform="slack", workspace=TEAM, channel=HERE.channel)
    await store.budgets.set(channel, "day", 1e6, actor="bench", surface="bench")
    found["channel_day"] = await measure(budgets, turns)
    workspace = Place(scope="workspace", platform="slack", workspace=TEAM)
    for place in (channel, workspace, Place(scope="global")):
        for period in ("day", "month"):
            await store.budgets.set(place, period, 1e6, actor="bench", surface="bench")
    found["all_six"] = await measure(budgets, max(turns // 10, 5))
    found["all_six_reused"] = await measure(Budgets(store.budgets, daily_usd=None), turns)
    return found


async def on_postgres(url: str, calls: int, turns: int) -> dict[str, dict[str, float]]:
    name = f"bench_budget_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        store = Store.connect(url.rsplit("/", 1)[0] + f"/{name}")
        try:
            await migrate.upgrade(store.engine)
            await seed(store, calls)
            async with store.engine.begin() as connection:
                await connection.exec_driver_sql("ANALYZE")
            return await cases(store, turns)
        finally:
            await store.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--postgres", help="a Postgres URL to measure there too")
    args = parser.parse_args()
    figures: dict[str, Any] = {"calls": args.calls, "machine": platform.machine()}
    with tempfile.TemporaryDirectory() as directory:
        store = Store.connect(f"sqlite:///{directory}/bench.db")
        try:
            await migrate.upgrade(store.engine)
            await seed(store, args.calls)
            figures["sqlite"] = await cases(store, args.turns)
        finally:
            await store.close()
    if args.postgres:
        figures["postgres"] = await on_postgres(args.postgres, args.calls, args.turns)
    for engine in ("sqlite", "postgres"):
        for case, shown in figures.get(engine, {}).items():
            median, p95 = shown["median_ms"], shown["p95_ms"]
            print(f"{engine:8} {case:12} median {median:8.3f} ms  p95 {p95:8.3f} ms")
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
