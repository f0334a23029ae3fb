"""200 concurrent Slack conversations through the real HTTP endpoint, a fake LLM streaming 1 s.

Two processes, as in production: this one runs the assistant (Bolt app, engine, SQLite); a
child plays Slack and the model (the fake Web API, the fake LLM, and the sender of signed
events, which times each ack). Figures:
  ack p50/p99         event POST -> HTTP response (Slack redelivers after 3 s)
  first text p50/p99  event POST -> the first text Slack received for that conversation
  total / LLM p50     event POST -> the answer finished, over the fake LLM's 1 s
  loop lag p99/max    how late a 10 ms timer fired in the assistant's event loop
  CPU per conversation  the assistant process's CPU time (all threads) over the run, and its
                      event loop's thread alone (the rest is the SQLite thread)
  web API calls       how many of each call Slack received
and whether every conversation got exactly one complete reply. The last line is JSON.

    python benchmarks/slack_load.py [--conversations 200] [--llm-seconds 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness import (  # noqa: E402
    Costs,
    answer_text,
    pct,
    send_mention,
    slack_answers_finished,
    slack_thread_of,
    spawn,
    streamed_answer,
    warm_up,
    write_prompt,
)

from assistant.config import load_settings  # noqa: E402
from assistant.runtime import open_runtime  # noqa: E402
from bots.slack_app import SlackAdapter  # noqa: E402

# ---- the child: Slack and the model


async def play_slack(conversations: int, llm_seconds: float) -> None:
    from assistant.testing import FakeLlm
    from tests.fakes.slack_api import FakeSlack

    text = answer_text()
    reply = streamed_answer(llm_seconds)
    llm = await FakeLlm(responder=lambda _body: reply).start()
    await warm_up(llm.base_url)
    slack = await FakeSlack().start()
    print(json.dumps({"llm": llm.base_url, "slack": slack.api_url}), flush=True)
    url = json.loads(await asyncio.to_thread(sys.stdin.readline))["url"]

    sends = await asyncio.gather(*(send_mention(slack, url, i) for i in range(conversations)))
    await slack.wait_until(lambda: slack_answers_finished(slack) >= conversations)
    await asyncio.sleep(0.5)  # anything extra (a second reply) would arrive now
    print(json.dumps(_figures(slack, sends, text, llm_seconds)), flush=True)
    await slack.stop()
    await llm.stop()


def _figures(slack: Any, sends: list[dict[str, float]], text: str, llm_s: float) -> dict[str, Any]:
    first_text: dict[str, float] = {}
    for call in slack.calls:
        if call.method in ("chat.appendStream", "chat.update", "chat.postMessage"):
            thread = call.params.get("thread_ts") or slack_thread_of(slack, call.params.get("ts"))
            if thread and call.params.get("markdown_text", call.params.get("text")):
                first_text.setdefault(thread, call.at)
    done: dict[str, float] = {}
    for call in slack.calls:
        if call.method == "chat.stopStream":
            done[slack_thread_of(slack, call.params["ts"]) or ""] = call.at
    replies: dict[str | None, list[str]] = {}
    for message in slack.messages.values():
        replies.setdefault(message.thread_ts, []).append(message.text)
    exactly_one = all(replies.get(f"{s['ts']:.6f}") == [text] for s in sends) and len(
        replies
    ) == len(sends)
    firsts = [(first_text[f"{s['ts']:.6f}"] - s["sent"]) * 1000 for s in sends]
    totals = [(done[f"{s['ts']:.6f}"] - s["sent"]) / llm_s for s in sends]
    acks = [s["ack_ms"] for s in sends]
    return {
        "ack_p50_ms": pct(acks, 50),
        "ack_p99_ms": pct(acks, 99),
        "first_text_p50_ms": pct(firsts, 50),
        "first_text_p99_ms": pct(firsts, 99),
        "total_over_llm_p50": round(statistics.median(totals), 3),
        "total_over_llm_p99": round(pct(totals, 99) / 1, 3),
        "exactly_one_reply": exactly_one,
        "web_api_calls": dict(Counter(call.method for call in slack.calls)),
    }


# ---- the parent: the assistant


async def serve_assistant(conversations: int, llm_seconds: float) -> None:
    asked = ("--conversations", str(conversations), "--llm-seconds", str(llm_seconds))
    child, line = await spawn(__file__, "--child", *asked)
    urls = json.loads(line)
    with tempfile.TemporaryDirectory() as scratch:
        prompts = write_prompt(Path(scratch))
        settings = load_settings(
            database_url=f"sqlite:///{scratch}/bench.db",
            prompts_dir=prompts,
            openai_api_key="sk-bench",
            openai_base_url=urls["llm"],
        )
        runtime = await open_runtime(settings)
        adapter = SlackAdapter(
            assistant=runtime.assistant,
            commands=runtime.commands,
            bot_token="xoxb-bench",
            signing_secret="test-signing-secret",
            api_url=urls["slack"],
        )
        port = await adapter.serve_http(port=0, host="127.0.0.1")
        async with Costs() as costs:
            url = f"http://127.0.0.1:{port}/slack/events"
            child.stdin.write(json.dumps({"url": url}).encode() + b"\n")
            await child.stdin.drain()
            figures = json.loads(await child.stdout.readline())
        await child.wait()
        await adapter.close()
        await runtime.close()
    figures |= costs.figures(conversations)
    figures |= {"conversations": conversations, "llm_seconds": llm_seconds}
    for key, value in figures.items():
        print(f"{key:>22}: {value}")
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--llm-seconds", type=float, default=1.0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(play_slack(args.conversations, args.llm_seconds))
    else:
        asyncio.run(serve_assistant(args.conversations, args.llm_seconds))


if __name__ == "__main__":
    main()
