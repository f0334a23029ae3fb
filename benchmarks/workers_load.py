"""`assistant run --workers 1` with 200 simultaneous Slack conversations, then `--workers 2`
with 400, on the fake Slack and a fake model streaming each answer over 1 s.

Three kinds of process, as in production: the real `assistant run` command (its supervisor
and workers); a child serving the fake model; and this one, playing Slack (the fake Web API,
and the sender of signed events, which times each ack). Per run:
  ack p50/p99         event POST -> HTTP response (Slack redelivers after 3 s)
  first text p50      event POST -> the first text Slack received for that conversation
  total / LLM p50/p99 event POST -> the answer finished, over the fake model's 1 s
and whether every conversation got exactly one complete reply. The goal: 400 conversations on
2 workers take no longer (total / LLM) than 200 on 1. The last line is JSON.

    python benchmarks/workers_load.py [--per-worker 200] [--workers 1 2] [--llm-seconds 1.0]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres]  (a scratch database there)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness import (  # noqa: E402
    answer_text,
    free_port,
    pct,
    send_mention,
    slack_answers_finished,
    slack_thread_of,
    spawn,
    streamed_answer,
    write_prompt,
)

from tests.fakes.slack_api import SIGNING_SECRET, FakeSlack  # noqa: E402

ASSISTANT = str(Path(sys.executable).parent / "assistant")
# ---- the child: the model


async def serve_model(llm_seconds: float) -> None:
    from assistant.testing import FakeLlm

    reply = streamed_answer(llm_seconds)
    llm = await FakeLlm(responder=lambda _body: reply).start()
    print(llm.base_url, flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until the parent closes it
    await llm.stop()


# ---- this process: Slack, and `assistant run`


async def one_run(workers: int, conversations: int, args: argparse.Namespace) -> dict[str, Any]:
    async with stage(__file__, args) as (slack, llm_url, url, scratch):
        return await play(workers, conversations, args, slack, llm_url, url, str(scratch))


@contextlib.asynccontextmanager
async def stage(
    script: str, args: argparse.Namespace
) -> AsyncIterator[tuple[FakeSlack, str, str, Path]]:
    """What a run of `assistant run` is played against: the model served by `script --model`
    in a child process, the fake Slack here, a scratch folder and a fresh database (SQLite, or
    one on `args.postgres`). Yields (Slack, the model's URL, the database URL, the folder)."""
    model, line = await spawn(script, "--model", "--llm-seconds", str(args.llm_seconds))
    slack = await FakeSlack().start()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            async with database(args.postgres, scratch) as url:
                yield slack, line.decode().strip(), url, Path(scratch)
    finally:
        await slack.stop()
        assert model.stdin is not None
        model.stdin.close()
        await model.wait()


class database:
    """A fresh SQLite file, or a scratch database on the Postgres server given."""

    def __init__(self, postgres: str | None, scratch: str) -> None:
        self._postgres, self._scratch = postgres, scratch
        self._name = f"bench_{uuid.uuid4().hex[:10]}"

    async def __aenter__(self) -> str:
        if self._postgres is None:
            return f"sqlite:///{self._scratch}/bench.db"
        await self._admin(f'CREATE DATABASE "{self._name}"')
        return f"{self._postgres.rpartition('/')[0]}/{self._name}"

    async def __aexit__(self, *_exc: object) -> None:
        if self._postgres is not None:
            await self._admin(f'DROP DATABASE IF EXISTS "{self._name}" WITH (FORCE)')

    async def _admin(self, sql: str) -> None:
        import asyncpg

        assert self._postgres is not None
        connection = await asyncpg.connect(self._postgres)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()


async def play(
    workers: int,
    conversations: int,
    args: argparse.Namespace,
    slack: FakeSlack,
    llm_url: str,
    database_url: str,
    scratch: str,
) -> dict[str, Any]:
    process, url, log_path = await start_run(workers, slack, llm_url, database_url, Path(scratch))
    try:
        await logged(log_path, "bots.services: serving;", workers, process)
        await warm_up(slack, url, workers)
        sends = await asyncio.gather(*(send_mention(slack, url, i) for i in range(conversations)))
        await slack.wait_until(lambda: slack_answers_finished(slack) >= conversations)
        await asyncio.sleep(0.5)  # anything extra (a second reply) would arrive now
        figures = measured(slack, sends, answer_text(), args.llm_seconds)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=120)
    figures |= {"workers": workers, "conversations": conversations}
    return figures


async def start_run(
    workers: int,
    slack: FakeSlack,
    llm_url: str,
    database_url: str,
    scratch: Path,
    **settings: str,
) -> tuple[Any, str, Path]:
    """The real `assistant run --workers N` on the fake Slack and the fake model (and any
    other `settings`), its log in a file: the process, its events URL and the log's path."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DISCORD_"))}
    env.update(
        DATABASE_URL=database_url,
        PROMPTS_DIR=str(write_prompt(scratch)),
        OPENAI_API_KEY="sk-bench",
        OPENAI_BASE_URL=llm_url,
        SLACK_BOT_TOKEN="xoxb-bench",
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.api_url,
        SLACK_PORT=str(port),
        **settings,
    )
    log_path = scratch / "run.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            ASSISTANT, "run", "--workers", str(workers), env=env, cwd=scratch, stderr=log
        )
    return process, f"http://127.0.0.1:{port}/slack/events", log_path


async def warm_up(slack: FakeSlack, url: str, workers: int) -> None:
    """A few conversations first, left out of the figures: a fresh process pays for its first
    turns (the tokenizer, lazy imports, connection pools)."""
    count = 10 * workers
    await asyncio.gather(*(send_mention(slack, url, 900_000 + i) for i in range(count)))
    await slack.wait_until(lambda: slack_answers_finished(slack) >= count)
    slack.calls.clear()
    slack.messages.clear()


async def logged(path: Path, text: str, times: int, process: Any) -> None:
    deadline = time.monotonic() + 120
    while (said := await asyncio.to_thread(path.read_text, errors="replace")).count(text) < times:
        if process.returncode is not None or time.monotonic() > deadline:
            raise SystemExit(f"assistant run did not start:\n{said[-3000:]}")
        await asyncio.sleep(0.1)


def measured(
    slack: FakeSlack, sends: list[dict[str, float]], text: str, llm_s: float
) -> dict[str, Any]:
    """The figures of slack_load.py, from what the fake Slack recorded."""
    first_text: dict[str, float] = {}
    done: dict[str, float] = {}
    for call in slack.calls:
        thread = call.params.get("thread_ts") or slack_thread_of(slack, call.params.get("ts"))
        shown = call.params.get("markdown_text", call.params.get("text"))
        if call.method in ("chat.appendStream", "chat.update", "chat.postMessage") and shown:
            first_text.setdefault(thread or "", call.at)
        if call.method == "chat.stopStream":
            done[thread or ""] = call.at
    replies: dict[str | None, list[str]] = collections.defaultdict(list)
    for message in slack.messages.values():
        replies[message.thread_ts].append(message.text)
    keys = [f"{s['ts']:.6f}" for s in sends]
    exactly_one = all(replies.get(k) == [text] for k in keys) and len(replies) == len(sends)
    firsts = [(first_text[k] - s["sent"]) * 1000 for k, s in zip(keys, sends, strict=True)]
    totals = [(done[k] - s["sent"]) / llm_s for k, s in zip(keys, sends, strict=True)]
    acks = [s["ack_ms"] for s in sends]
    return {
        "ack_p50_ms": pct(acks, 50, digits=3),
        "ack_p99_ms": pct(acks, 99, digits=3),
        "first_text_p50_ms": pct(firsts, 50, digits=3),
        "total_over_llm_p50": round(statistics.median(totals), 3),
        "total_over_llm_p99": round(pct(totals, 99, digits=3), 3),
        "exactly_one_reply": exactly_one,
    }


async def main(args: argparse.Namespace) -> None:
    runs = []
    for workers in args.workers:
        figures = await one_run(workers, workers * args.per_worker, args)
        print(" ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
        runs.append(figures)
    base, most = runs[0], runs[-1]
    ratio = round(most["total_over_llm_p50"] / base["total_over_llm_p50"], 3)
    print(
        f"{most['conversations']} on {most['workers']} workers / {base['conversations']} on "
        f"{base['workers']}: total p50 ratio {ratio} (goal: <= 1)"
    )
    kind = "postgres" if args.postgres else "sqlite"
    print(json.dumps({"runs": runs, "p50_ratio": ratio, "database": kind}))


def arguments() -> argparse.Namespace:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-worker", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--llm-seconds", type=float, default=1.0)
    parser.add_argument("--postgres", default=None, help="a Postgres server's URL (asyncpg form)")
    parser.add_argument("--model", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    parsed = arguments()
    if parsed.model:
        asyncio.run(serve_model(parsed.llm_seconds))
    else:
        asyncio.run(main(parsed))
