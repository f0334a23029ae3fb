"""The engine's contract against every real server's manner, through the real client and the
fake in that server's personality: a plain turn, a tool turn, a context overflow and the next
message, usage (or its estimate), one-slot concurrency, reasoning models and `doctor`."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from assistant.engine import Assistant
from assistant.evals.runner import EvalRunner
from assistant.evals.suite import load_suite
from assistant.llm import OpenAIChatModel, Timeouts
from assistant.model_traits import ModelTable
from assistant.store import Store
from assistant.testing import CallTools, DemoModel, FakeLlm, Reply
from assistant.testing.fake_llm import Script
from assistant.testing.personalities import PERSONALITIES
from assistant.tools import ToolRegistry
from assistant.turns import Completed, Failed
from tests.conftest import REF, build_assistant, collect, inbound, write_prompt
from tests.test_cli import REPO
from tests.test_cli import assistant as cli

SERVERS = sorted(PERSONALITIES)


@dataclass
class Served:
    server: FakeLlm
    model: OpenAIChatModel
    assistant: Assistant


@pytest.fixture
async def serve(store: Store, prompts_dir: Path, tools: ToolRegistry) -> AsyncIterator[object]:
    """`await serve(like, **fake_options)`: the engine in front of that server's fake."""
    opened: list[Served] = []

    async def start(like: str, *, max_concurrency: int | None = None, **options: object) -> Served:
        options.setdefault("models", ("gpt-4o-mini",))
        server = await FakeLlm(like=like, **options).start()  # type: ignore[arg-type]
        model = OpenAIChatModel.connect(
            api_key=None,
            base_url=server.base_url,
            timeouts=Timeouts(first_token=5.0, idle=2.0, total=20.0),
            max_retries=2,
            models=ModelTable.load(),
            max_concurrency=max_concurrency,
        )
        served = Served(server, model, await build_assistant(store, model, prompts_dir, tools))
        opened.append(served)
        return served

    yield start
    for served in opened:
        await served.model.close()
        await served.server.stop()


async def ask(assistant: Assistant, text: str) -> Completed | Failed:
    last = (await collect(assistant.respond(inbound(text))))[-1]
    assert isinstance(last, Completed | Failed)
    return last


@pytest.mark.parametrize("like", SERVERS)
async def test_a_plain_turn_answers(serve, like):
    served = await serve(like)
    done = await ask(served.assistant, "hello there")
    assert isinstance(done, Completed) and "hello there" in done.text
    assert "Authorization" not in served.server.headers[-1]  # no key configured, none sent


@pytest.mark.parametrize("like", SERVERS)
async def test_a_tool_turn_gets_the_calculators_84(serve, like):
    served = await serve(like)
    done = await ask(served.assistant, "what is 6 * 14?")
    assert isinstance(done, Completed) and "84" in done.text, done
    first = served.server.requests[0]
    assert first["tool_choice"] == "auto" and first["tools"]
    done = await ask(served.assistant, "and 7 * 12?")  # llama.cpp: learnt, so no failed try
    assert isinstance(done, Completed) and "84" in done.text


@pytest.mark.parametrize("like", SERVERS)
async def test_usage_is_the_servers_or_a_marked_estimate(serve, like):
    served = await serve(like)
    done = await ask(served.assistant, "hello")
    assert isinstance(done, Completed)
    sends_usage = PERSONALITIES[like].stream_usage != "never"
    assert done.usage.estimated is not sends_usage
    assert done.usage.prompt_tokens > 0


@pytest.mark.parametrize("like", SERVERS)
async def test_an_overflow_is_answered_in_plain_words_and_the_next_message_recovers(
    serve, like, store
):
    served = await serve(like, context_tokens=1024)
    long_message = "Please read all of this. " + "The quarterly numbers look fine. " * 150
    first = await ask(served.assistant, long_message)  # ~1,000 of our tokens; more of theirs
    if PERSONALITIES[like].overflow == "truncate":  # Ollama cuts the prompt without a word
        assert isinstance(first, Completed)
    else:
        assert isinstance(first, Failed) and "too long" in first.user_message, first
    done = await ask(served.assistant, "ok, a short one: hello?")
    assert isinstance(done, Completed) and "hello?" in done.text
    sent = [m["content"] for m in served.server.requests[-1]["messages"]]
    if not isinstance(first, Completed):
        assert long_message not in sent  # refused once, never sent again
    done = await ask(served.assistant, "still fine?")
    assert isinstance(done, Completed)


@pytest.mark.parametrize("like", SERVERS)
async def test_a_long_conversation_shrinks_to_what_the_server_holds_and_keeps_answering(
    serve, like
):
    served = await serve(like, context_tokens=2048)
    for number in range(8):  # each fits; together they pass the server's (not our) window
        done = await ask(served.assistant, f"note {number}: " + "details of the plan " * 40)
        assert isinstance(done, Completed), (number, done)


async def test_a_single_slot_server_cuts_concurrent_calls_unless_they_queue(
    serve, prompts_dir, tools, store
):
    """llama-cpp-python ends a running stream when another request arrives: two eval cases
    at once fail as cut off; with EVAL_CONCURRENCY=1 (or LLM_MAX_CONCURRENCY=1) both pass."""
    (prompts_dir / "assistant" / "evals.yaml").write_text(
        "cases:\n"
        "  - {name: one, input: first question, expect: [{contains: first question}]}\n"
        "  - {name: two, input: second question, expect: [{contains: second question}]}\n"
    )
    suite = load_suite(
        prompts_dir / "assistant" / "evals.yaml", prompt="assistant", known_tools=tools.names()
    )

    async def run(concurrency: int, *, llm_slots: int | None = None) -> int:
        served = await serve("llamacpp", max_concurrency=llm_slots, responder=slow_echo)
        runner = EvalRunner(
            assistant=served.assistant,
            store=store,
            model=served.model,
            tools=tools,
            judge_model="gpt-4o-mini",
            concurrency=concurrency,
        )
        return (await runner.run(suite, 1)).passed

    assert await run(2) < 2  # the cut the users saw
    assert await run(1) == 2
    assert await run(2, llm_slots=1) == 2


def slow_echo(body: dict[str, Any]) -> Script:
    """The demo model's echo, slow enough that two answers overlap."""
    reply = DemoModel()(body)
    return replace(reply, chunk_chars=4, chunk_delay=0.02) if isinstance(reply, Reply) else reply


async def test_a_reasoning_model_gets_max_completion_tokens_and_its_reasoning_is_priced(
    serve, prompts_dir, store
):
    write_prompt(prompts_dir, model="o4-mini", params={"temperature": 0.2, "max_tokens": 300})
    served = await serve("openai", models=("o4-mini",))
    done = await ask(served.assistant, "think about it")
    assert isinstance(done, Completed), done  # the fake refuses max_tokens and temperature
    body = served.server.requests[-1]
    assert body["max_completion_tokens"] == 300 and "max_tokens" not in body
    assert "temperature" not in body
    conversation = await store.find_conversation(REF)
    [call] = await store.llm_calls(conversation.id)
    assert call.reasoning_tokens == 64 and call.completion_tokens >= 64
    price_in, price_out = 1.10, 4.40  # o4-mini, per million
    expected = (call.prompt_tokens * price_in + call.completion_tokens * price_out) / 1e6
    assert call.cost_usd == pytest.approx(expected)


@pytest.mark.parametrize(
    ("like", "says"),
    [
        (
            "llamacpp",
            [
                "usage in streams",
                "not sent",
                "refused by the server",
                "2,048 tokens",
                "1 (the server's slots)",
                "set LLM_MAX_CONCURRENCY=1",
            ],
        ),
        ("openai", ["12 prompt", "calculator(", "not reported"]),
        ("vllm", ["8,192 tokens"]),
        ("ollama", ["4,096 tokens"]),
    ],
)
def test_doctor_tells_what_each_server_does(tmp_path: Path, like: str, says: list[str]):
    result = cli("doctor", "--fake", like, env=_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for phrase in says:
        assert phrase in result.stdout, result.stdout
    assert "Ready" in result.stdout


@pytest.mark.parametrize(
    ("like", "embedding_model", "says"),
    [
        ("vllm", None, "EMBEDDING_MODEL is not set"),
        ("llamacpp", "fake-embedding", "fake-embedding: 256 dimensions"),
        ("openai", "fake-embedding", "cannot make embeddings with 'fake-embedding'"),
    ],
)
def test_doctor_says_whether_knowledge_gets_vectors(
    tmp_path: Path, like: str, embedding_model: str | None, says: str
):
    env = _env(tmp_path)
    if embedding_model is not None:
        env["EMBEDDING_MODEL"] = embedding_model
    result = cli("doctor", "--fake", like, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [row for row in result.stdout.splitlines() if row.startswith("│ embeddings")]
    assert len(rows) == 1 and says in " ".join(result.stdout.split()), result.stdout


def test_doctor_against_an_unreachable_server_says_so_in_one_line(tmp_path: Path):
    env = dict(_env(tmp_path), OPENAI_BASE_URL="http://127.0.0.1:9/v1")
    result = cli("doctor", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: cannot reach http://127.0.0.1:9/v1/ (Connection error.)"
    ]


def test_doctor_with_a_model_the_server_does_not_serve_is_a_blocker(tmp_path: Path):
    env = dict(_env(tmp_path), ASSISTANT_MODEL="served-one")  # the fake serves only that
    result = cli("doctor", "--fake", "vllm", env=env, cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    assert "not listed: gpt-4o-mini" in result.stdout and "blocker" in result.stdout
    assert "The model `gpt-4o-mini` does not exist" in result.stdout


def test_doctor_knows_llamacpp_answers_whatever_model_is_named(tmp_path: Path):
    env = dict(_env(tmp_path), ASSISTANT_MODEL="served-one")
    result = cli("doctor", "--fake", "llamacpp", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert "not listed: gpt-4o-mini (it answers anyway)" in result.stdout


def _env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SLACK_"))}
    clean.update(DATABASE_URL=f"sqlite:///{tmp_path}/d.db", PROMPTS_DIR=str(REPO / "prompts"))
    clean["COLUMNS"] = "200"  # one table row a line, as a wide terminal shows it
    return clean


async def test_an_overflow_from_tool_results_is_learnt_and_the_next_tool_turn_fits(
    serve, prompts_dir, tools, store
):
    """A later round's overflow cannot be tried again (the tools ran), but the next turn's
    tool results are cut to what the server holds."""

    def lookup(query: str) -> str:
        """Look something up."""
        return "fact " * 4000

    tools.register(lookup)
    write_prompt(prompts_dir, tools=["lookup"])
    served = await serve("openai", context_tokens=3000)
    for _ in range(2):
        served.server.script(CallTools(calls=(("lookup", {"query": "x"}),)), Reply(text="done"))
    first = await ask(served.assistant, "look up x")
    assert isinstance(first, Failed) and "too long" in first.user_message
    second = await ask(served.assistant, "look up x")
    assert isinstance(second, Completed) and second.text == "done"


async def test_the_answers_max_tokens_is_kept_free_when_the_context_shrinks(serve, prompts_dir):
    """vLLM counts the prompt and the answer's max_tokens against its window: shrinking the
    prompt to the window alone would be refused again."""
    write_prompt(
        prompts_dir,
        params={"max_tokens": 1500},
        tools=[],
        memory={"context_tokens": 6000, "summarize_over_tokens": 0},
    )
    served = await serve("vllm", context_tokens=4096)
    for number in range(8):
        before = len(served.server.requests)
        done = await ask(served.assistant, f"question {number} " + "context words here " * 60)
        assert isinstance(done, Completed), (number, done)
        assert len(served.server.requests) - before <= 2  # refused at most once, then it fits
