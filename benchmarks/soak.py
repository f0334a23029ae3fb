"""A soak: 1,000 Slack conversations over 10 minutes on `assistant run --workers 2`, with
Slack's redeliveries, model errors and a worker killed in the middle.

Three kinds of process, as in production: the real `assistant run` (its supervisor and
workers, on SQLite or a scratch Postgres database); a child serving the fake model; and this
one, playing Slack (the fake Web API, and the sender of signed events at an even rate). Along
the way:
  redeliveries   one event in ten is sent again 1-3 s later with Slack's retry headers, as
                 Slack does when an ack is slow; and any event whose POST fails (its worker
                 was just killed) is sent again, as Slack would
  model errors   one model request in twenty is answered HTTP 500 (the client retries it);
                 one in a hundred is cut mid-answer (the user gets the partial answer and a
                 warning: a failed turn still answers)
  a worker dies  halfway through, one worker is killed (SIGKILL); the supervisor starts
                 another, and the answers it owed are finished by a live worker
Figures: each worker's resident memory (VmRSS) at the end of warm-up (the first fifth of the
run) and at the end, and their ratio (goal: flat, at most 1.10); whether every conversation
ended with exactly one finished answer and nothing left streaming; whether every question is
stored exactly once and no answer is still owed. The last line is JSON.

    python benchmarks/soak.py [--conversations 1000] [--minutes 10] [--workers 2]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres] [--quick]

`--quick`: 120 conversations over one minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402
from workers_load import logged, stage, start_run  # noqa: E402

from assistant.store.database import async_database_url  # noqa: E402
from bots.recovery import ANSWERING_AGAIN  # noqa: E402
from tests.fakes.slack_api import BOT_USER, FakeSlack  # noqa: E402

ANSWER = " ".join(f"word{i}" for i in range(60)) + "."
CHANNELS = 20
MEMORY_GOAL = 1.10  # RSS at the end over RSS after warm-up


# ---- the child: the model, with errors


async def serve_model(llm_seconds: float) -> None:
    from assistant.testing import Cut, Fail, FakeLlm, Reply

    served = itertools.count(1)
    reply = Reply(text=ANSWER, chunk_chars=24, chunk_delay=llm_seconds / 20)

    def respond(_body: dict[str, Any]) -> Fail | Cut | Reply:
        number = next(served)
        if number % 20 == 0:
            return Fail(status=500, message="the model server is overloaded")
        if number % 100 == 7:
            return Cut(text=ANSWER[:40])
        return reply

    llm = await FakeLlm(responder=respond).start()
    print(llm.base_url, flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until the parent closes it
    await llm.stop()


# ---- this process: Slack, and `assistant run`


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    async with stage(__file__, args) as (slack, llm_url, url, scratch):
        return await run(args, slack, llm_url, url, scratch)


async def run(
    args: argparse.Namespace, slack: FakeSlack, llm_url: str, database_url: str, scratch: Path
) -> dict[str, Any]:
    process, url, log_path = await start_run(
        args.workers,
        slack,
        llm_url,
        database_url,
        scratch,
        WORKER_HEARTBEAT_SECONDS="1",  # a killed worker's answers are taken over within ~3 s
    )
    memory = Memory(process.pid)
    try:
        await logged(log_path, "bots.services: serving;", args.workers, process)
        figures = await drive(args, slack, url, memory, process.pid, log_path)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=180)
    asked, distinct, owed = await stored(database_url)
    figures |= {
        "questions_stored_once": asked == distinct == args.conversations,
        "questions_stored": asked,
        "answers_still_owed": owed,
        "workers_started": log_path.read_text(errors="replace").count("bots.services: serving;"),
        "served": served(log_path),
    }
    return figures


async def drive(
    args: argparse.Namespace,
    slack: FakeSlack,
    url: str,
    memory: Memory,
    supervisor: int,
    log_path: Path,
) -> dict[str, Any]:
    seconds = args.minutes * 60
    gap = seconds / args.conversations
    chance = random.Random(14)  # a repeatable schedule
    started = time.monotonic()
    sending: list[asyncio.Task[None]] = []
    sampler = asyncio.create_task(memory.sample_until(started + seconds + 30))
    killed: int | None = None
    for index in range(args.conversations):
        await asyncio.sleep(max(0.0, started + index * gap - time.monotonic()))
        sending.append(asyncio.create_task(deliver(slack, url, index, chance)))
        if killed is None and time.monotonic() - started >= seconds / 2:
            killed = kill_one_worker(supervisor)
    await asyncio.gather(*sending)
    for _ in range(15):  # five minutes at most; the figures say which were never answered
        with contextlib.suppress(TimeoutError):
            await slack.wait_until(lambda: all_answered(slack, args.conversations))
            break
    await asyncio.sleep(2.0)  # a second answer to anything would arrive now
    sampler.cancel()
    warm = started + seconds / 5
    return {
        "conversations": args.conversations,
        "minutes": args.minutes,
        "workers": args.workers,
        "killed_worker": killed,
        "redelivered": sum(1 for sent in slack.sent if "X-Slack-Retry-Num" in sent.headers),
        "exactly_one_answer_each": exactly_one_each(slack, args.conversations),
        "failed_turns_told": told(slack, args.conversations),
        **memory.figures(warm, end=time.monotonic()),
    }


async def deliver(slack: FakeSlack, url: str, index: int, chance: random.Random) -> None:
    """One conversation's event, as Slack sends it: again while it is not acked (up to three
    retries), and now and then again anyway, with the retry headers."""
    event = {"type": "app_mention", "user": f"U{index % 50}", "text": f"<@{BOT_USER}> q{index}"}
    event |= {"ts": thread(index), "channel": channel(index)}
    redeliver = chance.random() < 0.1
    delay = chance.uniform(1.0, 3.0)
    for retry in range(4):
        try:
            options = {"retry_num": retry} if retry else {}
            if await slack.send_event(url, event, event_id=f"Ev{index}", **options) == 200:
                break
        except OSError:
            pass  # its worker was just killed: Slack tries again
        await asyncio.sleep(1.0)
    if redeliver:
        await asyncio.sleep(delay)
        await slack.send_event(url, event, event_id=f"Ev{index}", retry_num=1)


def thread(index: int) -> str:
    return f"1700000000.{index:06d}"


def channel(index: int) -> str:
    return f"C{index % CHANNELS}"


def finished(slack: FakeSlack, index: int) -> list[str]:
    """The finished answers in a conversation's thread: the whole answer, or a warning."""
    return [
        m.text
        for m in slack.thread(channel(index), thread(index))
        if not m.streaming and ANSWERING_AGAIN not in m.text and m.text.strip()
    ]


def all_answered(slack: FakeSlack, conversations: int) -> bool:
    return all(finished(slack, index) for index in range(conversations))


def exactly_one_each(slack: FakeSlack, conversations: int) -> bool:
    for index in range(conversations):
        messages = slack.thread(channel(index), thread(index))
        if any(m.streaming for m in messages) or len(finished(slack, index)) != 1:
            return False
    return True


def told(slack: FakeSlack, conversations: int) -> int:
    """Conversations whose turn failed (a cut model answer) and said so."""
    return sum(
        1 for index in range(conversations) if any("⚠️" in text for text in finished(slack, index))
    )


def kill_one_worker(supervisor: int) -> int | None:
    workers = children(supervisor)
    if not workers:
        return None
    os.kill(workers[-1], signal.SIGKILL)
    return workers[-1]


def children(pid: int) -> list[int]:
    """The worker processes of the supervisor (multiprocessing's own helper has no VmRSS
    worth sampling, and is left out by having no `assistant` worker name)."""
    try:
        listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(child) for child in listed if is_worker(int(child))]


def is_worker(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"multiprocessing" in command and b"resource_tracker" not in command


class Memory:
    """Each worker's VmRSS, sampled every second (a restarted worker is a new series)."""

    def __init__(self, supervisor: int) -> None:
        self._supervisor = supervisor
        self.samples: dict[int, list[tuple[float, int]]] = {}

    async def sample_until(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            now = time.monotonic()
            for pid in children(self._supervisor):
                rss = resident_kb(pid)
                if rss is not None:
                    self.samples.setdefault(pid, []).append((now, rss))
            await asyncio.sleep(1.0)

    def figures(self, warm: float, *, end: float) -> dict[str, Any]:
        """Per worker that lived from warm-up to the end: MB after warm-up, MB at the end, and
        their ratio (the killed worker and its replacement have no such span)."""
        rows = {}
        for pid, series in self.samples.items():
            after = [kb for at, kb in series if at >= warm]
            if series[0][0] > warm or series[-1][0] < end - 5 or not after:
                continue
            rows[str(pid)] = {
                "mb_after_warm_up": round(after[0] / 1024, 1),
                "mb_at_end": round(after[-1] / 1024, 1),
                "growth": round(after[-1] / after[0], 3),
            }
        growth = max((row["growth"] for row in rows.values()), default=None)
        return {
            "memory": rows,
            "memory_growth_max": growth,
            "memory_flat": growth is not None and growth <= MEMORY_GOAL,
        }


def resident_kb(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def served(log_path: Path) -> list[str]:
    said = log_path.read_text(errors="replace")
    return [line.split("] ", 1)[-1] for line in said.splitlines() if "served " in line]


async def stored(database_url: str) -> tuple[int, int, int]:
    """The questions stored, how many of them differ (each conversation asks its own), and the
    answers still owed."""
    engine = create_async_engine(async_database_url(database_url))
    try:
        async with engine.connect() as connection:
            asked = await connection.execute(
                text("SELECT count(*), count(DISTINCT text) FROM messages WHERE role = 'user'")
            )
            total, distinct = asked.one()
            owed = await connection.execute(text("SELECT count(*) FROM open_turns"))
            return int(total), int(distinct), int(owed.scalar_one())
    finally:
        await engine.dispose()


def arguments() -> argparse.Namespace:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--llm-seconds", type=float, default=1.0)
    parser.add_argument("--postgres", default=None, help="a Postgres server's URL")
    parser.add_argument("--quick", action="store_true", help="120 conversations in a minute")
    parser.add_argument("--model", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.conversations, args.minutes = 120, 1.0
    return args


def main() -> None:
    args = arguments()
    if args.model:
        asyncio.run(serve_model(args.llm_seconds))
        return
    figures = asyncio.run(soak(args))
    for key, value in figures.items():
        print(f"{key:>24}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
