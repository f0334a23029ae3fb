"""What the access rules cost a message before it is stored (issue 16): `Assistant.accept` with
no rules (the gate looks at nothing) against every rule on (allow and block lists, a per-user
and a per-channel rate limit, each counted in the store), alternating, on one SQLite store.

The store holds a week of a busy team: 200,000 user messages by 500 people over 50 channels,
and the measured user and channel have just under their limits in the last hour, so every
count reads as far as it can before it says yes. Nothing here calls a model: `accept` is the
part of a turn that runs before Slack is acked. Last line: one JSON object.

    python benchmarks/access_gate.py [--messages 200] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import insert

from assistant.access import AccessPolicy, RateLimit
from assistant.builtin_tools import builtin_registry
from assistant.engine import Accepted, Assistant, EngineConfig
from assistant.llm import OpenAIChatModel, Timeouts
from assistant.pricing import PriceTable
from assistant.prompts.files import PromptCatalog, load_prompts_dir
from assistant.store import Store, migrate
from assistant.store.tables import Conversation, Message
from assistant.turns import Actor, ConversationRef, Inbound

PROMPT = {"name": "assistant", "version": 1, "model": "gpt-4o-mini", "system": "Be brief."}
TEAM, CHANNEL, USER = "T1", "C0HOT", "U0HOT"
RULES = AccessPolicy(
    allowed_channels=frozenset({f"slack:C{n:04d}" for n in range(50)} | {f"slack:{CHANNEL}"}),
    blocked_users=frozenset({"slack:U9BLOCKED"}),
    user_rate=RateLimit(count=1_000_000, unit="hour"),  # never reached: each count seeks far
    channel_rate=RateLimit(count=1_000_000, unit="hour"),
)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def seed(store: Store, total: int, recent: int) -> None:
    """`total` user messages over the last week, one conversation per 40; `recent` of them in
    the last hour by USER in CHANNEL."""
    now = datetime.now(UTC)
    async with store.engine.begin() as connection:
        conversations = []
        for index in range(total // 40 + 1):
            channel = CHANNEL if index == 0 else f"C{index % 50:04d}"
            conversations.append(
                {"platform": "slack", "workspace": TEAM, "channel": channel, "thread": f"t{index}"}
            )
        await connection.execute(insert(Conversation), conversations)
        rows: list[dict[str, Any]] = []
        for index in range(total):
            hot = index >= total - recent
            age = timedelta(minutes=30) if hot else timedelta(days=7) * (1 - index / total)
            rows.append(
                {
                    "conversation_id": 1 if hot else 2 + index // 40,
                    "role": "user",
                    "author_id": f"slack:{USER}" if hot else f"slack:U{index % 500:04d}",
                    "author_name": "",
                    "text": f"question {index}",
                    "token_count": 3,
                    "status": "ok",
                    "created_at": now - age,
                }
            )
            if len(rows) == 2000:
                await connection.execute(insert(Message), rows)
                rows = []
        if rows:
            await connection.execute(insert(Message), rows)


async def engine(store: Store, directory: Path, policy: AccessPolicy) -> Assistant:
    tools = builtin_registry()
    model = OpenAIChatModel.connect(
        api_key="bench", base_url="http://127.0.0.1:9/v1", timeouts=Timeouts(), max_retries=0
    )
    assistant = Assistant(
        store=store,
        model=model,
        catalog=PromptCatalog(
            load_prompts_dir(directory / "prompts", known_tools=tools.names()),
            default_prompt="assistant",
        ),
        tools=tools,
        prices=PriceTable.load(),
        config=EngineConfig(access=policy),
    )
    await assistant.sync_prompts()
    return assistant


async def accept(assistant: Assistant, index: int) -> float:
    inbound = Inbound(
        ref=ConversationRef(platform="slack", workspace=TEAM, channel=CHANNEL, thread=f"b{index}"),
        actor=Actor(platform="slack", user_id=USER),
        text=f"bench question {index}",
        dedupe_keys=(f"bench:{index}",),
    )
    started = time.perf_counter()
    accepted = await assistant.accept(inbound)
    elapsed = (time.perf_counter() - started) * 1000
    assert isinstance(accepted, Accepted), accepted
    return elapsed


async def run(messages: int, total: int, recent: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        (directory / "prompts" / "assistant").mkdir(parents=True)
        (directory / "prompts" / "assistant" / "1.yaml").write_text(yaml.safe_dump(PROMPT))
        store = Store.connect(f"sqlite:///{directory}/bench.db")
        await migrate.upgrade(store.engine)
        await seed(store, total, recent)
        open_gate = await engine(store, directory, AccessPolicy())
        ruled = await engine(store, directory, RULES)
        samples: dict[str, list[float]] = {"open": [], "rules": []}
        for index in range(20):  # warm both
            await accept(open_gate if index % 2 else ruled, -index - 1)
        for index in range(messages):
            first, second = ("open", "rules") if index % 2 == 0 else ("rules", "open")
            for name in (first, second):
                gate = open_gate if name == "open" else ruled
                samples[name].append(await accept(gate, index * 2 + (name == "rules")))
        await store.close()
    figures: dict[str, Any] = {
        "machine": f"{platform.machine()} {platform.python_version()}",
        "messages_stored": total,
        "recent_by_the_user_and_channel": recent,
    }
    for name, values in samples.items():
        figures[f"accept_p50_ms_{name}"] = round(statistics.median(values), 2)
        figures[f"accept_p99_ms_{name}"] = round(percentile(values, 0.99), 2)
    figures["ratio_p50_rules_over_open"] = round(
        figures["accept_p50_ms_rules"] / figures["accept_p50_ms_open"], 2
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="20,000 stored, 50 messages")
    options = parser.parse_args()
    total, messages = (20_000, 50) if options.quick else (200_000, options.messages)
    figures = asyncio.run(run(messages, total, recent=1_000))
    for key, value in figures.items():
        print(f"{key}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
