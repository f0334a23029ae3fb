"""What the load benchmarks share: the model's answer, the loop-lag probe, percentiles."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

ANSWER_WORDS = 100
CHUNKS = 20


def answer_text() -> str:
    return " ".join(f"word{i}" for i in range(ANSWER_WORDS)) + "."


def streamed_answer(llm_seconds: float) -> Any:
    """The fake model's answer: 100 words in 20 chunks spread over `llm_seconds`."""
    from assistant.testing import Reply

    text = answer_text()
    return Reply(text=text, chunk_chars=-(-len(text) // CHUNKS), chunk_delay=llm_seconds / CHUNKS)


async def warm_up(llm_url: str) -> None:
    """One request first: the fake model loads its tokenizer then (about a second here), which
    would otherwise stall its process, and the fake platform with it, mid-flood."""
    import aiohttp

    question = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "warm up"}]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{llm_url}/chat/completions", json=question) as response,
    ):
        await response.read()


async def lag_monitor(samples: list[float], stop: asyncio.Event) -> None:
    """How late a 10 ms timer fires in this event loop, until `stop`."""
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(0.01)
        samples.append((time.perf_counter() - start - 0.01) * 1000)


def pct(values: list[float], percent: int, *, digits: int = 1) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))], digits)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
