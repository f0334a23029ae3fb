"""How fast `assistant chat --fake` starts, and how much memory a serving process holds.

Every figure comes from fresh processes of the installed `assistant` command, several of each:
  chat prompt       launch -> the terminal chat's `you> ` prompt on its stdout (it reads input
                    from then on; the database exists, as on every start after the first)
  chat first answer launch -> the first answer printed, when a message is sent at the prompt
  import top        `-X importtime` of a chat start, summed by top-level package (cumulative)
  RSS               VmRSS and VmHWM (peak) from /proc of: `assistant run` serving Slack over
                    HTTP only, Discord only (the fakes in tests/fakes, the fake model in this
                    process), and the terminal chat (`chat --fake`), each after a few turns
Each figure is printed next to the issue's goal (start < 1 s, <= 150 MB resident). `--code`
runs another tree's code (e.g. a `git worktree` of an earlier commit) through PYTHONPATH, with
the same installed dependencies. The last line is JSON.

    python benchmarks/startup.py [--repeat 5] [--turns 3] [--code PATH] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ASSISTANT = str(Path(sys.executable).parent / "assistant")  # the installed console script
START_GOAL_S = 1.0
RSS_GOAL_MB = 150.0
PROMPT = b"you> "
HEAVY = ("matplotlib", "discord", "slack_bolt", "slack_sdk", "numpy", "apscheduler")


def base_env(code: Path, scratch: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "SLACK_", "DISCORD_", "REPORT_", "EVAL_"))
    }
    env.update(
        PYTHONPATH=str(code),
        PYTHONUNBUFFERED="1",
        DATABASE_URL=f"sqlite:///{scratch}/bench.db",
        PROMPTS_DIR=str(code / "prompts"),
        TIKTOKEN_CACHE_DIR=str(scratch / "tiktoken"),  # seeded by the first (untimed) start
    )
    return env


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (the peak) of a live process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return fields


# ---- the terminal chat, driven through a pipe


class Chat:
    """`assistant chat --fake` on pipes, read until a marker shows on its stdout."""

    def __init__(self, env: dict[str, str], cwd: Path, *extra: str) -> None:
        # a file, not a pipe: a pipe left unread fills, and blocks the chat; closed by quit()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, *extra, ASSISTANT, "chat", "--fake"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=cwd,
        )
        self._seen = b""

    def until(self, marker: bytes, *, timeout: float = 120) -> float:
        """Seconds since launch when `marker` next appears on stdout."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while marker not in self._seen:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"no {marker!r}: {self._seen[-500:]!r}")
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                self._seen += os.read(fd, 65536)
        at = time.perf_counter() - self.started
        self._seen = self._seen.split(marker, 1)[1]
        return at

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def quit(self) -> str:
        self.process.communicate(b"/quit\n", timeout=60)
        self._stderr.seek(0)
        stderr = self._stderr.read().decode()
        self._stderr.close()
        if self.process.returncode != 0:
            raise RuntimeError(f"chat exited {self.process.returncode}: {stderr[-800:]}")
        return stderr


def chat_start(env: dict[str, str], cwd: Path) -> dict[str, float]:
    chat = Chat(env, cwd)
    prompt = chat.until(PROMPT)
    chat.send("How do I reset my VPN token?")
    answered = chat.until(PROMPT)  # the next prompt: the answer is printed whole
    chat.quit()
    return {"prompt_s": prompt, "first_answer_s": answered}


def chat_memory(env: dict[str, str], cwd: Path, turns: int) -> dict[str, float]:
    chat = Chat(env, cwd)
    chat.until(PROMPT)
    for turn in range(turns):
        chat.send(f"Question {turn}: what changed in the deploy of service {turn}?")
        chat.until(PROMPT)
    figures = memory_mb(chat.process.pid)
    chat.quit()
    return figures


def import_top(env: dict[str, str], cwd: Path, top: int = 12) -> dict[str, Any]:
    """`-X importtime` of one chat start: cumulative ms by top-level package, and which of the
    heavy optional packages were loaded at all."""
    chat = Chat(env, cwd, "-X", "importtime")
    chat.until(PROMPT)
    stderr = chat.quit()
    own: Counter[str] = Counter()
    loaded = set()
    for line in stderr.splitlines():
        found = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if found:
            own[found[2].split(".")[0]] += int(found[1])
            loaded.add(found[2].split(".")[0])
    return {
        "total_ms": round(sum(own.values()) / 1000),
        "top_ms": {name: round(us / 1000) for name, us in own.most_common(top)},
        "heavy_loaded": sorted(loaded & set(HEAVY)),
    }


# ---- `assistant run`, on the fakes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def serve_slack(env: dict[str, str], cwd: Path, turns: int) -> dict[str, float]:
    from tests.fakes.slack_api import BOT_USER, SIGNING_SECRET, FakeSlack

    slack = await FakeSlack().start()
    port = free_port()
    env = env | {
        "SLACK_BOT_TOKEN": "xoxb-bench",
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "SLACK_PORT": str(port),
        "WORKERS": "1",  # one serving process, the one measured
    }
    process = await asyncio.create_subprocess_exec(
        ASSISTANT, "run", env=env, cwd=cwd, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}/slack/events"
        for turn in range(turns):
            ts = f"1700000000.{turn + 1:06d}"
            event = {"type": "app_mention", "user": "U1", "text": f"<@{BOT_USER}> q {turn}"}
            await _post_when_listening(slack, url, event | {"ts": ts, "channel": "CB"}, turn)
            await _answered_within(slack, ts, seconds=300)
        return memory_mb(process.pid)
    finally:
        await _stop(process)
        await slack.stop()


async def _post_when_listening(slack: Any, url: str, event: dict[str, Any], turn: int) -> None:
    deadline = time.monotonic() + 300  # a loaded machine starts slowly
    while True:
        try:
            assert await slack.send_event(url, event, event_id=f"EvBench{turn}") == 200
            return
        except OSError:  # still starting
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _answered_within(slack: Any, ts: str, *, seconds: float) -> None:
    """The fake's own wait gives up after 20 s: too short for a first turn on a loaded machine."""
    deadline = time.monotonic() + seconds
    while not _slack_answered(slack, ts):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer in thread {ts} within {seconds} s")
        await asyncio.sleep(0.2)


def _slack_answered(slack: Any, ts: str) -> bool:
    return any(not m.streaming and m.text.startswith("Served") for m in slack.thread("CB", ts))


async def serve_discord(env: dict[str, str], cwd: Path, turns: int) -> dict[str, float]:
    from tests.fakes.discord_api import GUILD_ID, TOKEN, FakeDiscord

    async with FakeDiscord() as fake:
        env = env | {
            "DISCORD_TOKEN": TOKEN,
            "DISCORD_API_URL": fake.rest_base,
            "DISCORD_GATEWAY_URL": fake.gateway_url,
            "DISCORD_GUILD_ID": GUILD_ID,
        }
        process = await asyncio.create_subprocess_exec(
            ASSISTANT, "run", env=env, cwd=cwd, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            await fake.wait_ready()
            for turn in range(turns):
                await fake.send_message(f"q {turn}", mention_bot=True)
                await fake.wait_until(
                    lambda n=turn + 1: (
                        sum(m.content.startswith("Served") for m in fake.shown()) >= n
                    ),
                    within=120,
                )
            return memory_mb(process.pid)
        finally:
            await _stop(process)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=60)


async def serving(env: dict[str, str], cwd: Path, turns: int, repeat: int) -> dict[str, Any]:
    from assistant.testing import FakeLlm, Reply

    answer = "Served: the deploy finished at 14:02 UTC and every service is healthy again."
    llm = await FakeLlm(responder=lambda _body: Reply(text=answer)).start()
    env = env | {"OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "sk-bench"}
    try:
        slack = [await serve_slack(env, cwd, turns) for _ in range(repeat)]
        discord = [await serve_discord(env, cwd, turns) for _ in range(repeat)]
    finally:
        await llm.stop()
    return {"slack_http": slack, "discord": discord}


# ---- figures


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(samples), 3),
        "min": round(min(samples), 3),
        "max": round(max(samples), 3),
    }


def verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes per figure")
    parser.add_argument("--turns", type=int, default=3, help="turns before reading the RSS")
    parser.add_argument("--code", type=Path, default=REPO, help="the tree whose code runs")
    parser.add_argument("--quick", action="store_true", help="one process per figure (./dev bench)")
    args = parser.parse_args()
    if args.quick:
        args.repeat = 1
    code = args.code.resolve()
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        env = base_env(code, scratch)
        chat_start(env, scratch)  # untimed: creates the database, seeds the tiktoken cache
        starts = [chat_start(env, scratch) for _ in range(args.repeat)]
        imports = import_top(env, scratch)
        chats = [chat_memory(env, scratch, args.turns) for _ in range(args.repeat)]
        served = asyncio.run(serving(env, scratch, args.turns, args.repeat))

    prompt = summary([s["prompt_s"] for s in starts])
    first = summary([s["first_answer_s"] for s in starts])
    rss = {
        name: {
            "rss_mb": summary([m["VmRSS"] for m in samples]),
            "peak_mb": summary([m["VmHWM"] for m in samples]),
        }
        for name, samples in {"terminal_chat": chats, **served}.items()
    }
    print(f"code: {code}   {args.repeat} runs each; median (min-max)")
    print(
        f"chat --fake to its prompt   {prompt['median']:.2f} s ({prompt['min']:.2f}-"
        f"{prompt['max']:.2f})   goal < {START_GOAL_S:.0f} s: "
        f"{verdict(prompt['median'], START_GOAL_S)}"
    )
    span = f"{first['min']:.2f}-{first['max']:.2f}"
    print(f"chat --fake to 1st answer   {first['median']:.2f} s ({span})")
    print(f"imports of a chat start     {imports['total_ms']} ms (self times summed); by package:")
    print("   " + ", ".join(f"{k} {v}" for k, v in imports["top_ms"].items()))
    print(f"   heavy packages loaded by chat: {imports['heavy_loaded'] or 'none'}")
    for name, figures in rss.items():
        now, peak = figures["rss_mb"], figures["peak_mb"]
        print(
            f"{name:<15} RSS {now['median']:6.1f} MB ({now['min']:.1f}-{now['max']:.1f}), "
            f"peak {peak['median']:6.1f} MB   goal <= {RSS_GOAL_MB:.0f} MB: "
            f"{verdict(now['median'], RSS_GOAL_MB)}"
        )
    print(
        json.dumps(
            {
                "code": str(code),
                "python": platform.python_version(),
                "cores": os.cpu_count(),
                "repeat": args.repeat,
                "turns": args.turns,
                "chat_prompt_s": prompt,
                "chat_first_answer_s": first,
                "imports": imports,
                "memory": rss,
            }
        )
    )


if __name__ == "__main__":
    main()
