"""What traces and metrics add to a turn: the same turn with both on and with both off.

Two engines, each on its own SQLite store seeded with 100 messages (as `engine_overhead.py`
does), answer alternately, so both see the same machine state. One has no observer (the
default, as a process without OTEL_EXPORTER_OTLP_* and without metrics runs); the other has
Prometheus metrics (`assistant.observability.metrics.Metrics`) and OpenTelemetry tracing
(`open_tracing`, batching spans to an OTLP/HTTP receiver on loopback that reads and discards
them). Each turn calls the calculator before answering (two model calls, one tool run: four
spans a turn), against the fake model server. The fake and the receiver run in processes of
their own, as a real model server and collector would, so their work is not counted.

    python benchmarks/instruments_overhead.py [--turns 300] [--quick]

Last line: one JSON object; `ratio_p50` is on / off at the median (goal <= 1.05).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from engine_overhead import ACTOR, REF, engine_for, free_port, percentile, wait_until_up

from assistant import accounting
from assistant.engine import Assistant
from assistant.observability.metrics import Metrics
from assistant.observability.traces import Tracing, open_tracing
from assistant.observe import (
    Guarded,
    Observer,
    Observers,
    ToolRun,
    TurnEnded,
    TurnStarted,
)
from assistant.records import CallRecord
from assistant.testing import CallTools, FakeLlm, Reply
from assistant.testing.scripts import Script
from assistant.turns import Inbound

HISTORY = 100
ANSWER = "25 times 8 is 200. The deploy finished at 14:02 UTC and all services are healthy."


def answer(body: dict[str, Any]) -> Script:
    """The calculator first, then the answer once its result is in the messages."""
    if body["messages"][-1]["role"] == "tool":
        return Reply(text=ANSWER, chunk_chars=8)
    return CallTools(calls=(("calculator", {"expression": "25 * 8"}),))


def serve_fake(port: int) -> None:
    async def serve() -> None:
        await FakeLlm(responder=answer).start(port=port)
        await asyncio.Event().wait()

    asyncio.run(serve())


def serve_receiver(port: int) -> None:
    """An OTLP/HTTP collector that reads each export and throws it away."""
    from aiohttp import web

    async def export(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", export)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


def wait_for_receiver(url: str) -> None:
    for _ in range(600):
        try:
            request = urllib.request.Request(f"{url}/v1/traces", data=b"", method="POST")
            with urllib.request.urlopen(request):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the OTLP receiver did not start")


async def turn(assistant: Assistant, index: int) -> float:
    started = time.perf_counter()
    inbound = Inbound(ref=REF, actor=ACTOR, text=f"What is 25 * 8, and any news on OPS-{index}?")
    async for _ in assistant.respond(inbound):
        pass
    return (time.perf_counter() - started) * 1000


def watch_cost(observer: Observer, repeat: int = 400) -> float:
    """The instruments' own work for one such turn, in microseconds: what the engine tells
    them (a start, two calls, a tool run, an end), with no model or store around it. 400
    turns: their spans fit the batch queue (2,048), so none is dropped uncounted."""
    ref = REF
    started = TurnStarted(
        started_ns=time.time_ns(), surface="bench", conversation=ref,
        prompt_version="assistant@1", model="gpt-4o-mini", message_id=1, text="What is 25 * 8?",
    )  # fmt: skip
    call = CallRecord(
        purpose="reply", model="gpt-4o-mini", total_ms=12.0, status="ok", prompt_tokens=900,
        completion_tokens=30, cost_usd=0.0002, ttft_ms=4.0, finish_reason="stop",
    )  # fmt: skip
    ended = TurnEnded(
        outcome="completed", error_class=None, usage=accounting.turn_usage([call, call]),
        ttft_ms=4.0, total_ms=30.0, text=ANSWER,
    )  # fmt: skip
    begun = time.perf_counter()
    for _ in range(repeat):
        watch = Guarded(observer.turn(started))
        watch.call(call)
        now = time.time_ns()
        watch.tool(ToolRun(name="calculator", call_id="c1", ok=True, started_ns=now, ended_ns=now))
        watch.call(call)
        watch.end(ended)
    return (time.perf_counter() - begun) / repeat * 1e6


async def measure(base_url: str, turns: int, measured: str) -> dict[str, list[float]]:
    tracing: Tracing | None = open_tracing(capture_content=False)
    if tracing is None:
        raise RuntimeError("tracing did not open: OTEL_EXPORTER_OTLP_ENDPOINT is not set")
    chosen: dict[str, list[Observer]] = {
        "traces": [tracing],
        "metrics": [Metrics()],
        "both": [Metrics(), tracing],
        "none": [],
    }
    instruments = Observers(*chosen[measured])
    runs: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as off_dir, tempfile.TemporaryDirectory() as on_dir:
        off, off_store, off_model = await engine_for(Path(off_dir), HISTORY, base_url)
        on, on_store, on_model = await engine_for(Path(on_dir), HISTORY, base_url, instruments)
        for index in range(10):  # warm up connections, caches, the tokenizer, the exporter
            await turn(off, index)
            await turn(on, index)
        for index in range(turns):
            first, second = ("on", "off") if index % 2 else ("off", "on")
            for name in (first, second):
                runs[name].append(await turn(on if name == "on" else off, index))
        for closing in (off_store, on_store, off_model, on_model):
            await closing.close()
    runs["watch_us"] = [watch_cost(instruments)]
    await tracing.close()
    return runs


def report(runs: dict[str, list[float]], turns: int) -> dict[str, Any]:
    off, on = runs["off"], runs["on"]
    off50, on50 = statistics.median(off), statistics.median(on)
    print(f"instruments overhead: {turns} turns each, alternating; {platform.platform()}")
    print(f"python {platform.python_version()}; a turn: 2 model calls, 1 tool run; times in ms")
    print(f"{'':>26} {'p50':>8} {'p90':>8} {'p99':>8}")
    for label, samples in (("off (no observer)", off), ("on (traces + metrics)", on)):
        print(
            f"{label:>26} {statistics.median(samples):>8.2f} {percentile(samples, 0.9):>8.2f} "
            f"{percentile(samples, 0.99):>8.2f}"
        )
    ratio = on50 / off50
    print(f"on / off at p50: {ratio:.3f} (goal <= 1.05)")
    print(f"the instruments' own work per turn: {runs['watch_us'][0]:.0f} us")
    return {
        "watch_us_per_turn": round(runs["watch_us"][0], 1),
        "off_p50_ms": round(off50, 3),
        "on_p50_ms": round(on50, 3),
        "off_p99_ms": round(percentile(off, 0.99), 3),
        "on_p99_ms": round(percentile(on, 0.99), 3),
        "ratio_p50": round(ratio, 3),
        "turns": turns,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="60 turns each")
    parser.add_argument(
        "--measure",
        choices=("both", "traces", "metrics", "none"),
        default="both",
        help="what is on",
    )
    args = parser.parse_args()
    turns = 60 if args.quick else args.turns
    llm_port, otlp_port = free_port(), free_port()
    spawn = multiprocessing.get_context("spawn")
    servers = [
        spawn.Process(target=serve_fake, args=(llm_port,)),
        spawn.Process(target=serve_receiver, args=(otlp_port,)),
    ]
    for server in servers:
        server.start()
    try:
        base_url = f"http://127.0.0.1:{llm_port}/v1"
        wait_until_up(base_url)
        wait_for_receiver(f"http://127.0.0.1:{otlp_port}")
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{otlp_port}"
        runs = asyncio.run(measure(base_url, turns, args.measure))
    finally:
        for server in servers:
            server.terminate()
            server.join()
    print(json.dumps(report(runs, turns)))


if __name__ == "__main__":
    main()
