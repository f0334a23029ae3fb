"""`assistant run` killed with SIGKILL at each phase of an answer, then started again: every
thread ends with one finished answer, nothing is left streaming, no message is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from assistant.store.database import async_database_url
from assistant.testing import FakeLlm, Reply
from bots.recovery import ANSWERING_AGAIN
from tests.fakes.slack_api import BOT_USER, SIGNING_SECRET, FakeSlack
from tests.test_run import ASSISTANT, free_port
from tests.test_run import env as env  # the fixture, shared

CHANNEL = "C0CRASH"
ANSWER = "A long answer that takes its time to stream, word after word, to the very end."
Phase = Callable[[FakeSlack], bool]


def streaming_started(slack: FakeSlack) -> bool:
    return bool(slack.calls_to("chat.appendStream"))


def most_of_it_shown(slack: FakeSlack) -> bool:
    shown = "".join(call.get("markdown_text", "") for call in slack.calls_to("chat.appendStream"))
    return len(shown) > len(ANSWER) * 2 // 3


PHASES: dict[str, Phase | None] = {
    # killed as soon as Slack has its HTTP 200, before the answer shows (a busy Slack is slow
    # to start the stream): the message must already be stored, since Slack never resends
    "after-ack": None,
    "mid-stream": streaming_started,
    "late-stream": most_of_it_shown,
}


class Serving:
    """One `assistant run` process serving Slack over HTTP."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self._env, self._cwd = env, cwd
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *ASSISTANT, "run", env=self._env, cwd=self._cwd, stderr=asyncio.subprocess.PIPE
        )

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        await self.process.communicate()

    async def stop(self) -> str:
        """SIGTERM, then what it logged (once: a second call returns what is left)."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(self.process.communicate(), timeout=30)
        return f"exit {self.process.returncode}\n" + (stderr or b"").decode()


# CRASH_ROUNDS=20 repeats each kill (the trial recorded in benchmarks/RESULTS.md)
ROUNDS = range(int(os.environ.get("CRASH_ROUNDS", "1")))


@pytest.mark.parametrize("round_", ROUNDS)
@pytest.mark.parametrize("phase", list(PHASES))
async def test_a_killed_answer_is_finished_by_the_next_process(
    phase, round_, env, tmp_path, database_url
):
    async with FakeLlm() as llm:
        llm.script(*[Reply(text=ANSWER, chunk_chars=4, chunk_delay=0.03)] * 2)
        slack = await FakeSlack().start()
        if phase == "after-ack":
            slack.slow_down("chat.startStream", 1.0)
        port = free_port()
        env.update(
            DATABASE_URL=database_url,
            SLACK_BOT_TOKEN="xoxb-crash",
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=slack.api_url,
            SLACK_PORT=str(port),
            OPENAI_BASE_URL=llm.base_url,
            OPENAI_API_KEY="sk-crash-test",
            WORKER_HEARTBEAT_SECONDS="0.2",
        )
        first, second = Serving(env, tmp_path), Serving(env, tmp_path)
        try:
            await first.start()
            thread_ts = await mention(slack, port)
            wait_for = PHASES[phase]
            if wait_for is not None:
                await slack.wait_until(lambda: wait_for(slack))
            await first.kill()
            await second.start()
            try:
                await slack.wait_until(lambda: answered(slack, thread_ts))
                await settled(database_url)  # the next process finished what was owed
            except TimeoutError:
                pytest.fail(f"never answered: {slack.calls}\n{await second.stop()}")
        finally:
            log = await second.stop() if second.process else ""
            await slack.stop()
        messages = slack.thread(CHANNEL, thread_ts)
        assert not any(m.streaming for m in messages), log
        finished = [m for m in messages if m.text.strip() == ANSWER]
        assert len(finished) == 1, [m.text for m in messages]
        assert all(ANSWERING_AGAIN in m.text for m in messages if m not in finished)
        assert await stored_questions(database_url) == (1, 0), log  # no message lost, none owed


async def test_a_replica_busy_recovering_is_not_taken_for_dead(env, tmp_path, database_url):
    """Found by a hostile run: a sweep waiting on a slow Slack held up its own heartbeat, so
    the replica looked dead and its turns (the one it had just adopted, and its own live one)
    were adopted back and forth and answered up to four times."""
    async with FakeLlm() as llm:
        llm.script(*[Reply(text=ANSWER, chunk_chars=4, chunk_delay=0.1)] * 8)
        slack = await FakeSlack().start()
        ports = [free_port() for _ in range(3)]
        replicas = []
        for port in ports:
            env_of = dict(env, DATABASE_URL=database_url, SLACK_PORT=str(port))
            env_of.update(
                SLACK_BOT_TOKEN="xoxb-crash",
                SLACK_SIGNING_SECRET=SIGNING_SECRET,
                SLACK_API_URL=slack.api_url,
                OPENAI_BASE_URL=llm.base_url,
                OPENAI_API_KEY="sk-crash-test",
                # 0.1 s let an ordinary stall under CPU load (two suites at once) pass for a
                # death; the sweep below still waits 2 s on Slack, four times the beat
                WORKER_HEARTBEAT_SECONDS="0.5",
            )
            replicas.append(Serving(env_of, tmp_path))
        killed, *serving = replicas
        threads = ("1700000000.000100", "1700000000.000200")
        try:
            for replica in replicas:
                await replica.start()
            await mention(slack, ports[0], threads[0], "EvKilled")
            await slack.wait_until(lambda: streaming_started(slack))
            await mention(slack, ports[1], threads[1], "EvLive")  # a live turn of its own
            slack.slow_down("conversations.replies", 2.0)  # recovery waits on Slack
            await killed.kill()
            await slack.wait_until(lambda: all(answered(slack, t) for t in threads))
            await settled(database_url)
            await asyncio.sleep(1.0)  # time for a wrong adoption to show itself
        finally:
            log = "\n".join([await replica.stop() for replica in serving])
            await slack.stop()
        for thread in threads:
            messages = slack.thread(CHANNEL, thread)
            finished = [m for m in messages if m.text.strip() == ANSWER]
            assert len(finished) == 1 and not any(m.streaming for m in messages), log[-3000:]


async def mention(
    slack: FakeSlack, port: int, ts: str = "1700000000.000100", event_id: str = "EvCrash"
) -> str:
    """Mention the assistant in a channel (retrying while the process starts); the thread."""
    url = f"http://127.0.0.1:{port}/slack/events"
    event = {"type": "app_mention", "user": "U1", "text": f"<@{BOT_USER}> tell me", "ts": ts}
    event["channel"] = CHANNEL
    deadline = time.monotonic() + 30
    while True:
        try:
            assert await slack.send_event(url, event, event_id=event_id) == 200
            return ts
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def answered(slack: FakeSlack, thread_ts: str) -> bool:
    messages = slack.thread(CHANNEL, thread_ts)
    return any(m.text.strip() == ANSWER and not m.streaming for m in messages)


async def settled(database_url: str) -> None:
    """Wait (20 s at most) until no answer is owed any more."""
    async with asyncio.timeout(20):
        for _ in iter(int, 1):  # another process writes it: nothing here to wait on but time
            if not (await stored_questions(database_url))[1]:
                return
            await asyncio.sleep(0.1)


async def stored_questions(database_url: str) -> tuple[int, int]:
    """How many times the question is stored, and how many answers are still owed."""
    engine = create_async_engine(async_database_url(database_url))
    try:
        async with engine.connect() as connection:
            asked = await connection.execute(
                text("SELECT count(*) FROM messages WHERE role = 'user' AND text = 'tell me'")
            )
            owed = await connection.execute(text("SELECT count(*) FROM open_turns"))
            return int(asked.scalar_one()), int(owed.scalar_one())
    finally:
        await engine.dispose()
