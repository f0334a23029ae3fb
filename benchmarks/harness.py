"""What the load benchmarks share: the model's answer, the loop-lag probe, percentiles."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
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


def write_prompt(scratch: Path) -> Path:
    """A prompts folder in `scratch` holding one plain prompt, `assistant@1`; its path."""
    import yaml

    prompts = scratch / "prompts"
    (prompts / "assistant").mkdir(parents=True)
    prompt = {"name": "assistant", "version": 1, "system": "You help.", "tools": []}
    (prompts / "assistant" / "1.yaml").write_text(yaml.safe_dump(prompt), encoding="utf-8")
    return prompts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Costs:
    """The process's CPU over the block (every thread, and the event loop's own) and how late
    its loop ran, as figures per conversation."""

    def __init__(self) -> None:
        self._lags: list[float] = []
        self._stop = asyncio.Event()
        self._monitor: asyncio.Task[None] | None = None
        self._cpu = self._loop_cpu = 0.0

    async def __aenter__(self) -> Costs:
        self._monitor = asyncio.create_task(lag_monitor(self._lags, self._stop))
        self._cpu, self._loop_cpu = time.process_time(), time.thread_time()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._cpu = time.process_time() - self._cpu
        self._loop_cpu = time.thread_time() - self._loop_cpu
        self._stop.set()
        if self._monitor is not None:
            await self._monitor

    def figures(self, conversations: int) -> dict[str, float]:
        return {
            "cpu_ms_per_conversation": round(self._cpu * 1000 / conversations, 1),
            "main_thread_ms_per_conversation": round(self._loop_cpu * 1000 / conversations, 1),
            "loop_lag_p99_ms": pct(self._lags, 99),
            "loop_lag_max_ms": round(max(self._lags, default=0.0), 1),
        }


async def spawn(script: str, *arguments: str) -> tuple[asyncio.subprocess.Process, bytes]:
    """`script` run again as a child (its other side: the fake servers), with the first line it
    prints: where its servers listen. It runs until its stdin is closed."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        script,
        *arguments,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    assert child.stdin is not None and child.stdout is not None
    return child, await child.stdout.readline()


async def send_mention(slack: Any, url: str, index: int) -> dict[str, float]:
    """Conversation `index` begun: a signed app_mention to the assistant's Slack endpoint; when
    it was sent, and how long the ack took."""
    from tests.fakes.slack_api import BOT_USER  # Slack's fakes: only the Slack benchmarks'

    ts = f"1700000000.{index:06d}"
    event = {"type": "app_mention", "user": f"U{index}", "text": f"<@{BOT_USER}> q{index}"}
    event |= {"ts": ts, "channel": f"C{index % 20}"}
    sent = time.time()
    status = await slack.send_event(url, event, event_id=f"Ev{index}")
    acked = time.time()
    assert status == 200, status
    return {"ts": float(ts), "sent": sent, "ack_ms": (acked - sent) * 1000}


def slack_answers_finished(slack: Any) -> int:
    """Answers whose stream ended with their feedback buttons: the conversations done."""
    return sum(1 for m in slack.messages.values() if m.text and not m.streaming and m.blocks)


def slack_thread_of(slack: Any, ts: str | None) -> str | None:
    message = slack.messages.get(ts) if ts else None
    return message.thread_ts if message else None
