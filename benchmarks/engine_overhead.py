"""What the engine costs on top of the model call, and whether it grows with history length.

One turn through `Assistant.respond` (store the message, build the context, stream, account,
persist) against a bare `AsyncOpenAI` streamed call to the same fake server, alternating the two
so both see the same machine state. Histories of 10, 100, 1,000 and 10,000 stored messages, on
SQLite. The fake server runs in its own process, as a real model server would, so its work is
not counted as the engine's.

The bare call sends the very body the engine sent (the same history, tools and parameters):
the difference is then the engine's own work. It is timed two ways: through
`chat.completions.create` as most code calls it, and through the client's raw `post` as the
engine does (the stricter baseline; `ratio_p50_*` use it). Last line: one JSON object.

    python benchmarks/engine_overhead.py [--turns 200] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import platform
import socket
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import openai
import yaml
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from sqlalchemy import insert, update

from assistant.builtin_tools import builtin_registry
from assistant.engine import Assistant
from assistant.llm import OpenAIChatModel, Timeouts
from assistant.observe import NO_OBSERVER, Observer
from assistant.pricing import PriceTable
from assistant.prompts.files import PromptCatalog, load_prompts_dir
from assistant.store import Store, migrate
from assistant.store.tables import Conversation, Message
from assistant.testing import FakeLlm, Reply
from assistant.tokens import TokenCounter
from assistant.turns import Actor, ConversationRef, Inbound

SIZES = (10, 100, 1_000, 10_000)
ANSWER = (
    "The deploy finished at 14:02 UTC. All 12 services are healthy; the billing job "
    "was retried once and then succeeded. Nothing needs your attention right now."
)
REF = ConversationRef(platform="bench", workspace="W", channel="C", thread="T")
ACTOR = Actor(platform="bench", user_id="U1", display_name="Bench")
PROMPT = {
    "name": "assistant",
    "version": 1,
    "model": "gpt-4o-mini",
    "system": "You are the team's assistant, talking with {{ user_name }}. Today is {{ today }}.",
    "tools": ["current_time", "calculator"],
    "memory": {"context_tokens": 6000, "summarize_over_tokens": 4000},
}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def seed(store: Store, size: int) -> None:
    """A conversation of `size` messages in the steady state a long one reaches: summarized
    up to its last 40 messages."""
    counter = TokenCounter("gpt-4o-mini")
    conversation = await store.conversation(REF)
    rows: list[dict[str, Any]] = []
    for index in range(size):
        role = "user" if index % 2 == 0 else "assistant"
        text = f"Message {index}: status of service {index % 37} and ticket OPS-{index}?"
        rows.append(
            {
                "conversation_id": conversation.id,
                "role": role,
                "author_id": "bench:U1",
                "author_name": "Bench",
                "text": text,
                "token_count": counter.count_message(text),
                "status": "ok",
            }
        )
    async with store.engine.begin() as connection:
        for start in range(0, len(rows), 1000):
            await connection.execute(insert(Message), rows[start : start + 1000])
        if size > 40:
            await connection.execute(
                update(Conversation)
                .where(Conversation.id == conversation.id)  # type: ignore[arg-type]
                .values(
                    summary="Earlier: routine status questions about services and tickets.",
                    summary_tokens=16,
                    summary_through_id=size - 40,
                )
            )


async def engine_for(
    directory: Path, size: int, base_url: str, observer: Observer = NO_OBSERVER
) -> tuple[Assistant, Store, OpenAIChatModel]:
    """An engine on a store of its own in `directory`, `size` messages of history, answering
    through `base_url`, told to `observer` (traces and metrics, or nobody)."""
    prompts = directory / "prompts" / "assistant"
    prompts.mkdir(parents=True)
    (prompts / "1.yaml").write_text(yaml.safe_dump(PROMPT))
    tools = builtin_registry()
    store = Store.connect(f"sqlite:///{directory}/bench.db")
    await migrate.upgrade(store.engine)
    await seed(store, size)
    model = OpenAIChatModel.connect(
        api_key="bench", base_url=base_url, timeouts=Timeouts(), max_retries=0
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
        observer=observer,
    )
    await assistant.sync_prompts()
    return assistant, store, model


async def engine_turn(assistant: Assistant, index: int) -> float:
    started = time.perf_counter()
    inbound = Inbound(ref=REF, actor=ACTOR, text=f"Any news on ticket OPS-{index}?")
    async for _ in assistant.respond(inbound):
        pass
    return (time.perf_counter() - started) * 1000


async def bare_create(client: openai.AsyncOpenAI, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    stream = await client.chat.completions.create(**body)
    async for _ in stream:
        pass
    return (time.perf_counter() - started) * 1000


async def bare_post(client: openai.AsyncOpenAI, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    stream = await client.post(
        "/chat/completions",
        cast_to=ChatCompletion,
        body=body,
        stream=True,
        stream_cls=openai.AsyncStream[ChatCompletionChunk],
    )
    async for _ in stream:
        pass
    return (time.perf_counter() - started) * 1000


def serve_fake(port: int) -> None:
    """The fake model server, in a process of its own."""

    async def serve() -> None:
        await FakeLlm(responder=lambda _body: Reply(text=ANSWER, chunk_chars=8)).start(port=port)
        await asyncio.Event().wait()

    asyncio.run(serve())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def last_request(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base_url.removesuffix('/v1')}/_fake/requests") as response:
        body: dict[str, Any] = json.load(response)["requests"][-1]
    return body


def wait_until_up(base_url: str) -> None:
    for _ in range(200):
        try:
            with urllib.request.urlopen(f"{base_url}/models"):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the fake LLM server did not start")


async def measure(
    base_url: str, turns: int, sizes: tuple[int, ...]
) -> dict[int, dict[str, list[float]]]:
    results: dict[int, dict[str, list[float]]] = {}
    # the bare calls use the transport the engine uses (the SDK's aiohttp client), so the
    # ratio is the engine's own work, not a difference of HTTP stacks
    client = openai.AsyncOpenAI(
        api_key="bench",
        base_url=base_url,
        max_retries=0,
        http_client=openai.DefaultAioHttpClient(),
    )
    for size in sizes:
        with tempfile.TemporaryDirectory() as directory:
            assistant, store, model = await engine_for(Path(directory), size, base_url)
            for index in range(10):  # warm up connections, caches, the tokenizer
                await engine_turn(assistant, index)
            body = await asyncio.to_thread(last_request, base_url)
            for _ in range(10):
                await bare_create(client, body)
                await bare_post(client, body)
            runs: dict[str, list[float]] = {"engine": [], "create": [], "post": []}
            for index in range(turns):
                runs["engine"].append(await engine_turn(assistant, index))
                runs["create"].append(await bare_create(client, body))
                runs["post"].append(await bare_post(client, body))
            await store.close()
            await model.close()
        results[size] = runs
    await client.close()
    return results


def report(results: dict[int, dict[str, list[float]]], turns: int) -> dict[str, Any]:
    print(f"engine overhead: {turns} turns per size; {platform.platform()}")
    print(f"python {platform.python_version()}; times in ms; bare = the same request body")
    print(
        f"{'history':>8} {'engine p50':>10} {'p99':>7} {'bare post p50':>13} {'p99':>7} "
        f"{'create p50':>10} {'ratio/post':>10} {'ratio/create':>12}"
    )
    figures: dict[str, Any] = {}
    for size, runs in results.items():
        engine, post, create = runs["engine"], runs["post"], runs["create"]
        e50, p50, c50 = (statistics.median(r) for r in (engine, post, create))
        print(
            f"{size:>8} {e50:>10.2f} {percentile(engine, 0.99):>7.2f} {p50:>13.2f} "
            f"{percentile(post, 0.99):>7.2f} {c50:>10.2f} {e50 / p50:>10.2f} {e50 / c50:>12.2f}"
        )
        figures[f"engine_p50_ms_{size}"] = round(e50, 3)
        figures[f"engine_p99_ms_{size}"] = round(percentile(engine, 0.99), 3)
        figures[f"bare_p50_ms_{size}"] = round(p50, 3)
        figures[f"bare_create_p50_ms_{size}"] = round(c50, 3)
        figures[f"ratio_p50_{size}"] = round(e50 / p50, 3)
        figures[f"ratio_vs_create_p50_{size}"] = round(e50 / c50, 3)
    if 10_000 in results and 100 in results:
        growth = statistics.median(results[10_000]["engine"]) / statistics.median(
            results[100]["engine"]
        )
        figures["growth_10000_vs_100"] = round(growth, 3)
        print(f"engine p50 at 10,000 messages / at 100: {growth:.2f} (goal <= 1.5)")
    print(f"engine / bare at p50, 100 messages: {figures['ratio_p50_100']:.2f} (goal <= 1.1)")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="100 messages only, 50 turns")
    args = parser.parse_args()
    sizes = (100,) if args.quick else SIZES
    turns = 50 if args.quick else args.turns
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=serve_fake, args=(port,))
    server.start()
    try:
        wait_until_up(f"http://127.0.0.1:{port}/v1")
        results = asyncio.run(measure(f"http://127.0.0.1:{port}/v1", turns, sizes))
    finally:
        server.terminate()
        server.join()
    figures = report(results, turns)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
