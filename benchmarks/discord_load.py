"""200 concurrent Discord conversations through the real gateway, a fake LLM streaming 1 s.

Two processes, as in production: this one runs the assistant (discord.py client through the
Discord adapter, engine, SQLite); a child plays Discord and the model (the fake Discord REST
API and gateway, the fake LLM), and floods the gateway with one MESSAGE_CREATE mention per
conversation, each in a channel of its own, back to back. Figures:
  to model p50/p99    the flood's first dispatch -> the model asked for the answer
  first text p50/p99  gateway dispatch -> the first REST message or edit carrying text
  total / LLM p50/p99 gateway dispatch -> the final edit (the answer with its buttons),
                      over the fake LLM's time
  CPU per conversation  the assistant process's CPU time (all threads) over the run, and its
                      main thread's (the event loop)
  loop lag p99/max    how late a 10 ms timer fired in the assistant's event loop
and whether every conversation got exactly one complete reply. The last line is JSON.

    python benchmarks/discord_load.py [--conversations 200] [--llm-seconds 1.0]
        [--profile cprofile|yappi]

--profile writes the assistant process's profile over the flood to discord_load.{pstats,txt}
in the temporary directory (cProfile: the main thread; yappi: every thread; both on the CPU
clock) and prints its own time by package.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness import (  # noqa: E402
    Costs,
    answer_text,
    pct,
    spawn,
    streamed_answer,
    warm_up,
    write_prompt,
)

from assistant.config import load_settings  # noqa: E402
from assistant.runtime import open_runtime  # noqa: E402
from bots.discord_app import DiscordAdapter, point_at  # noqa: E402

# ---- the child: Discord and the model


async def play_discord(conversations: int, llm_seconds: float) -> None:
    from assistant.testing import FakeLlm
    from tests.fakes.discord_api import FakeDiscord

    text = answer_text()
    reply = streamed_answer(llm_seconds)
    asked: list[float] = []  # when the model was asked, in order

    def answer(_body: Any) -> Any:
        asked.append(time.time())
        return reply

    llm = await FakeLlm(responder=answer).start()
    await warm_up(llm.base_url)
    asked.clear()
    discord_fake = await FakeDiscord(echo=True).start()  # own messages echo, as on Discord
    channels = [discord_fake.add_text_channel() for _ in range(conversations)]
    urls = {"llm": llm.base_url, "rest": discord_fake.rest_base}
    print(json.dumps(urls | {"gateway": discord_fake.gateway_url}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the assistant is connected and ready

    mentions = [
        discord_fake.message_create(
            f"q{index}",
            mention_bot=True,
            channel_id=channel,
            author_id=str(5000 + index),
            author_name=f"user{index}",
        )
        for index, channel in enumerate(channels)
    ]
    first_call = len(discord_fake.calls)
    sent = await discord_fake.flood("MESSAGE_CREATE", mentions)
    sends = dict(zip(channels, sent, strict=True))
    await discord_fake.wait_until(
        lambda: _finished(discord_fake) >= conversations, within=60 + 20 * llm_seconds
    )
    await asyncio.sleep(0.5)  # anything extra (a second reply) would arrive now
    calls = discord_fake.calls[first_call:]
    figures = _figures(discord_fake, calls, sends, text, llm_seconds)
    to_model = [(at - sent[0]) * 1000 for at in asked]  # the flood's start -> the model asked
    figures |= {"to_model_p50_ms": pct(to_model, 50), "to_model_p99_ms": pct(to_model, 99)}
    print(json.dumps(figures), flush=True)
    await discord_fake.stop()
    await llm.stop()


def _finished(fake: Any) -> int:
    return sum(1 for m in fake.messages.values() if m.components)


def _figures(
    fake: Any, calls: list[Any], sends: dict[str, float], text: str, llm_s: float
) -> dict[str, Any]:
    first_text: dict[str, float] = {}
    done: dict[str, float] = {}
    for call in calls:
        channel = call.path.split("/")[2] if call.path.startswith("/channels/") else ""
        body = call.json_body if isinstance(call.json_body, dict) else {}
        if call.method in ("POST", "PATCH") and "/messages" in call.path and body.get("content"):
            first_text.setdefault(channel, call.at)
            if body.get("components"):
                done[channel] = call.at
    exactly_one = all(
        [(m.content, bool(m.components)) for m in fake.shown(channel)] == [(text, True)]
        for channel in sends
    )
    firsts = [(first_text[c] - at) * 1000 for c, at in sends.items()]
    totals = [(done[c] - at) / llm_s for c, at in sends.items()]
    kinds = collections.Counter(f"{c.method} {_route(c.path)}" for c in calls)
    return {
        "first_text_p50_ms": pct(firsts, 50),
        "first_text_p99_ms": pct(firsts, 99),
        "total_over_llm_p50": round(statistics.median(totals), 3),
        "total_over_llm_p99": round(pct(totals, 99, digits=3), 3),
        "exactly_one_reply": exactly_one,
        "rest_calls": dict(kinds),
    }


def _route(path: str) -> str:
    parts = path.split("/")
    return "/".join("*" if part.isdigit() else part for part in parts)


# ---- the parent: the assistant


class Profiler:
    """cProfile on the main thread or yappi on every thread (CPU clock), over the flood."""

    def __init__(self, kind: str | None) -> None:
        self.kind = kind
        self._cprofile: Any = None

    def start(self) -> None:
        if self.kind == "cprofile":
            import cProfile

            self._cprofile = cProfile.Profile(time.thread_time)  # CPU, not waiting
            self._cprofile.enable()
        elif self.kind == "yappi":
            import yappi

            yappi.set_clock_type("cpu")
            yappi.start(builtins=True)

    def stop(self) -> None:
        if self.kind is None:
            return
        import pstats

        out = Path(tempfile.gettempdir()) / "discord_load.pstats"
        if self.kind == "cprofile":
            self._cprofile.disable()
            self._cprofile.dump_stats(out)
        else:
            import yappi

            yappi.stop()
            yappi.get_func_stats().save(str(out), type="pstat")
        stats = pstats.Stats(str(out))
        with open(out.with_suffix(".txt"), "w", encoding="utf-8") as report:
            stats.stream = report  # type: ignore[attr-defined]
            stats.sort_stats("tottime").print_stats(60)
        by_package = _by_package(stats)
        total = sum(by_package.values())
        print(f"profile ({self.kind}, {out}): {total:.2f} s own time; by package:")
        for name, seconds in by_package.most_common(25):
            print(f"  {name:<40} {seconds:7.2f} s  {100 * seconds / total:5.1f} %")


def _by_package(stats: Any) -> collections.Counter[str]:
    totals: collections.Counter[str] = collections.Counter()
    for (filename, _line, function), row in stats.stats.items():  # type: ignore[attr-defined]
        totals[_package(filename, function)] += row[2]
    return totals


def _package(filename: str, function: str) -> str:
    if filename == "~" or not filename.endswith(".py"):
        return f"builtin {function}"[:60] if filename == "~" else filename
    path = Path(filename)
    parts = path.parts
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1 :]
        return rest[0] if rest[0] not in ("discord",) else "/".join(rest[:2])
    if str(REPO) in filename:
        rel = path.relative_to(REPO).parts
        return "/".join(rel[:2]) if rel[0] in ("assistant", "bots") else rel[0]
    return f"stdlib {path.parent.name}/{path.name}" if "python3" in filename else filename


async def serve_assistant(conversations: int, llm_seconds: float, profile: str | None) -> None:
    asked = ("--conversations", str(conversations), "--llm-seconds", str(llm_seconds))
    child, line = await spawn(__file__, "--child", *asked)
    urls = json.loads(line)
    profiler = Profiler(profile)
    with tempfile.TemporaryDirectory() as scratch:
        prompts = write_prompt(Path(scratch))
        settings = load_settings(
            database_url=f"sqlite:///{scratch}/bench.db",
            prompts_dir=prompts,
            openai_api_key="sk-bench",
            openai_base_url=urls["llm"],
        )
        runtime = await open_runtime(settings)
        point_at(urls["rest"], urls["gateway"])
        from tests.fakes.discord_api import GUILD_ID, TOKEN

        adapter = DiscordAdapter(
            assistant=runtime.assistant,
            commands=runtime.commands,
            token=TOKEN,
            guild_id=int(GUILD_ID),
        )
        await adapter.start()
        profiler.start()
        async with Costs() as costs:
            child.stdin.write(b"go\n")
            await child.stdin.drain()
            figures = json.loads(await child.stdout.readline())
        profiler.stop()
        await child.wait()
        await adapter.close()
        await runtime.close()
    figures |= costs.figures(conversations)
    figures |= {"conversations": conversations, "llm_seconds": llm_seconds}
    for key, value in figures.items():
        print(f"{key:>32}: {value}")
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--llm-seconds", type=float, default=1.0)
    parser.add_argument("--profile", choices=("cprofile", "yappi"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(play_discord(args.conversations, args.llm_seconds))
    else:
        asyncio.run(serve_assistant(args.conversations, args.llm_seconds, args.profile))


if __name__ == "__main__":
    main()
