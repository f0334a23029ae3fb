"""`assistant run --workers 2`: two processes on one port and one database answer each thread
once, share the requests, run the schedule once, stop together and replace a killed one."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.interval import IntervalTrigger
from sqlmodel.ext.asyncio.session import AsyncSession

from assistant.config import load_settings
from assistant.reporting.schedule import ScheduledJob, Scheduler
from assistant.store import Store
from assistant.store.tables import JobRun
from assistant.testing import FakeLlm, Reply
from bots.services import cpu_quota, worker_count
from tests.conftest import migrated
from tests.fakes.slack_api import BOT_USER, SIGNING_SECRET, FakeSlack
from tests.test_cli import ASSISTANT, assistant
from tests.test_run import env as env  # the fixture, shared
from tests.test_run import free_port

CHANNEL = "C0WORK"
REPORTS = "C0REPORT"
ANSWER = "Answered by one of the workers, once."
THREADS = 40  # each sent three times at once: the event and two of Slack's retries


class Workers:
    """`assistant run --workers 2` serving Slack over HTTP, its log in a file."""

    def __init__(self, env: dict[str, str], cwd: Path, port: int) -> None:
        self._env, self._cwd = env, cwd
        self.url = f"http://127.0.0.1:{port}/slack/events"
        self.log_path = cwd / "run.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                *ASSISTANT, "run", "--workers", "2", env=self._env, cwd=self._cwd, stderr=log
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def logged(self, pattern: str, *, times: int = 1) -> list[re.Match[str]]:
        """Wait (120 s at most: a loaded machine starts Python slowly) for `pattern` to appear
        `times` times in the log; the matches."""
        deadline = time.monotonic() + 120
        while len(found := list(re.finditer(pattern, self.log))) < times:
            assert self.process is not None
            if self.process.returncode is not None or time.monotonic() > deadline:
                pytest.fail(f"never logged {pattern!r} x{times}:\n{self.log[-4000:]}")
            await asyncio.sleep(0.1)
        return found

    async def stop(self) -> int:
        """SIGTERM, as an operator stops it; its exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), timeout=60)


@asynccontextmanager
async def serving(
    env: dict[str, str], tmp_path: Path, database_url: str
) -> AsyncIterator[tuple[Workers, FakeSlack]]:
    """Two workers on the fake Slack and the fake model, each answer streamed over 0.3 s."""
    reply = Reply(text=ANSWER, chunk_chars=6, chunk_delay=0.05)
    async with FakeLlm(responder=lambda _body: reply) as llm:
        slack = await FakeSlack().start()
        port = free_port()
        env.update(
            DATABASE_URL=database_url,
            SLACK_BOT_TOKEN="xoxb-workers",
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=slack.api_url,
            SLACK_PORT=str(port),
            OPENAI_BASE_URL=llm.base_url,
            OPENAI_API_KEY="sk-workers-test",
            REPORT_CHANNELS=f"slack:{REPORTS}",
        )
        workers = Workers(env, tmp_path, port)
        try:
            await workers.start()
            await workers.logged(r"all 2 workers are serving")
            yield workers, slack
        finally:
            if workers.process is not None and workers.process.returncode is None:
                workers.process.kill()
                await workers.process.wait()
            await slack.stop()


async def ask(slack: FakeSlack, url: str, index: int) -> None:
    """One mention, delivered three times at once as Slack retries one it thinks was lost."""
    event = {"type": "app_mention", "user": f"U{index}", "text": f"<@{BOT_USER}> q{index}"}
    event |= {"ts": thread_of(index), "channel": CHANNEL}
    sends = [slack.send_event(url, event, event_id=f"EvW{index}")]
    sends += [slack.send_event(url, event, event_id=f"EvW{index}", retry_num=n) for n in (1, 2)]
    assert await asyncio.gather(*sends) == [200, 200, 200]


def thread_of(index: int) -> str:
    return f"1700000000.{index:06d}"


def answers(slack: FakeSlack, index: int) -> list[str]:
    return [m.text for m in slack.thread(CHANNEL, thread_of(index)) if not m.streaming]


async def overdue_report(database_url: str) -> None:
    """A report last run two days ago: whoever leads the schedule posts it once at start."""
    async with migrated(database_url) as store, AsyncSession(store.engine) as session:
        ago = datetime.now(UTC) - timedelta(days=2)
        session.add(JobRun(name="report", last_run_at=ago, status="ok"))
        await session.commit()


async def test_two_workers_answer_each_thread_once_and_share_the_port(env, tmp_path, database_url):
    await overdue_report(database_url)
    async with serving(env, tmp_path, database_url) as (workers, slack):
        await asyncio.gather(*(ask(slack, workers.url, i) for i in range(THREADS)))
        await slack.wait_until(lambda: all(answers(slack, i) for i in range(THREADS)))
        await slack.wait_until(lambda: bool(slack.thread(REPORTS, None)))
        await asyncio.sleep(1.0)  # time for a second answer, or a second report, to show
        assert await workers.stop() == 0, workers.log[-4000:]
    log = workers.log
    for index in range(THREADS):
        assert answers(slack, index) == [ANSWER], (index, log[-3000:])
    assert len(slack.thread(REPORTS, None)) == 1  # the overdue report, posted by one leader
    assert len(re.findall(r"\] assistant\.reporting\.schedule: scheduled jobs", log)) == 1
    assert len(re.findall(r"this one stands by", log)) == 1
    served = dict(re.findall(r"\[worker (\d)\] bots\.slack_app: served (\d+) Slack", log))
    assert set(served) == {"1", "2"} and all(int(n) > 0 for n in served.values()), log[-3000:]
    assert sum(map(int, served.values())) >= 3 * THREADS
    assert len(re.findall(r"\[worker \d\] bots\.services: stopping", log)) == 2  # gracefully
    assert "Traceback" not in log


async def test_a_killed_worker_is_replaced_and_the_port_keeps_answering(
    env, tmp_path, database_url
):
    async with serving(env, tmp_path, database_url) as (workers, slack):
        [first] = await workers.logged(r"worker 2 started \(pid (\d+)\)")
        os.kill(int(first.group(1)), signal.SIGKILL)
        await workers.logged(r"worker 2 ended unexpectedly \(killed by SIGKILL\)")
        [_, again] = await workers.logged(r"worker 2 started \(pid (\d+)\)", times=2)
        assert again.group(1) != first.group(1)
        await workers.logged(r"\[worker 2\] bots\.services: serving", times=2)
        await asyncio.gather(*(ask(slack, workers.url, i) for i in range(10)))
        await slack.wait_until(lambda: all(answers(slack, i) for i in range(10)))
        await asyncio.sleep(0.5)
        assert all(answers(slack, i) == [ANSWER] for i in range(10))
        assert await workers.stop() == 0, workers.log[-4000:]


async def test_a_worker_that_cannot_start_stops_the_run_with_its_line(env, tmp_path):
    slack = await FakeSlack().start()
    slack.refuse_token("xoxb-revoked")
    env.update(
        SLACK_BOT_TOKEN="xoxb-revoked",
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.api_url,
        SLACK_PORT=str(free_port()),
    )
    try:
        result = await asyncio.to_thread(
            assistant, "run", "--fake", "--workers", "2", env=env, cwd=tmp_path
        )
    finally:
        await slack.stop()
    assert result.returncode == 2, result.stderr
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: SLACK_BOT_TOKEN:"), result.stderr
    assert "starting it again" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("shared", [False, True], ids=["plain", "another-run's-shared-port"])
def test_a_port_in_use_is_refused_before_any_worker_starts(env, tmp_path, shared):
    """Also when its holder shares it (SO_REUSEPORT, as another `assistant run --workers`
    binds it): a second installation must not quietly take half of Slack's events."""
    with socket.socket() as taken:
        if shared:
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        env.update(
            SLACK_BOT_TOKEN="xoxb-x",
            SLACK_SIGNING_SECRET="s",
            SLACK_PORT=str(taken.getsockname()[1]),
        )
        result = assistant("run", "--fake", "--workers", "2", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "error: SLACK_PORT: cannot listen on port" in result.stderr
    assert "worker 1 started" not in result.stderr and "Traceback" not in result.stderr


def test_workers_default_to_the_cores_only_where_there_is_http_to_share():
    http = load_settings(slack_bot_token="xoxb-x", slack_signing_secret="s")
    cores = min(len(os.sched_getaffinity(0)), cpu_quota() or 10_000)
    assert worker_count(http, None) == (cores, None)
    assert worker_count(http, 3) == (3, None)
    socket_mode = load_settings(slack_bot_token="xoxb-x", slack_app_token="xapp-x")
    discord = load_settings(discord_token="d")
    for settings in (socket_mode, discord):
        assert worker_count(settings, None) == (1, None)
        count, why = worker_count(settings, 3)
        assert count == 1 and why is not None and "one connection per token" in why


async def test_processes_sharing_a_sqlite_file_elect_one_scheduler(sqlite_url):
    """The leader lock among workers on one SQLite file: one leads; when it stops (or dies:
    the lock is the kernel's, held by its open file) another takes over."""
    stores = [Store.connect(sqlite_url) for _ in range(2)]
    runs = [0, 0]

    def job_for(index: int) -> ScheduledJob:
        async def tick() -> None:
            runs[index] += 1

        return ScheduledJob(name="tick", trigger=IntervalTrigger(seconds=0.1), run=tick)

    async with migrated(sqlite_url):
        schedulers = [
            Scheduler(engine=store.engine, jobs=[job_for(i)], standby_retry=0.1)
            for i, store in enumerate(stores)
        ]
        try:
            for scheduler in schedulers:
                await scheduler.start()
            assert [s.leader for s in schedulers] == [True, False]
            await schedulers[0].stop()
            deadline = time.monotonic() + 30
            while not (schedulers[1].leader and runs[1]):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert not schedulers[0].leader
        finally:
            for scheduler in schedulers:
                await scheduler.stop()
            for store in stores:
                await store.close()


def test_a_containers_cpu_quota_bounds_the_default(tmp_path):
    """A 2-CPU pod on a big node starts 2 workers, not one per core of the node."""
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")
    assert cpu_quota(quota) == 2
    quota.write_text("max 100000\n")
    assert cpu_quota(quota) is None
    assert cpu_quota(tmp_path / "absent") is None
