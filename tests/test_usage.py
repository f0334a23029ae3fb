"""Honest usage: every call says where its token counts came from (the server, or our
tokenizer when the server sent none), reasoning tokens are kept, and whatever shows tokens
marks an estimate with `~`. Real engine, real database, the fake model server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

import assistant.tokens
from assistant import accounting
from assistant.engine import Assistant
from assistant.llm import (
    ChatMessage,
    ChatRequest,
    Completion,
    LlmError,
    OpenAIChatModel,
    Timeouts,
    Usage,
)
from assistant.pricing import PriceTable
from assistant.records import CallRecord
from assistant.reporting.figures import Period, build_report
from assistant.reporting.wording import report_text
from assistant.store import Store
from assistant.testing import FakeLlm, Reply
from assistant.testing.fake_llm import Streamed
from assistant.tokens import TokenCounter, load_encoder
from assistant.tools import ToolRegistry
from assistant.turns import Completed
from bots.terminal import describe
from tests.conftest import REF, build_assistant, collect, inbound

PRICES = PriceTable.load()
REASONING = 500


class SilentUsageLlm(FakeLlm):
    """A server like llama.cpp's: it streams the answer but never the usage chunk, whatever
    the request asks for (the client always asks, so the request is read as if it had not)."""

    async def _stream(
        self, request: web.Request, body: dict[str, Any], script: Streamed
    ) -> web.StreamResponse:
        quiet = {key: value for key, value in body.items() if key != "stream_options"}
        return await super()._stream(request, quiet, script)


class ReasoningLlm(FakeLlm):
    """A reasoning model's server: `REASONING` thinking tokens on top of the visible answer,
    inside completion_tokens and said again in completion_tokens_details, as OpenAI sends."""

    def _usage(self, body: dict[str, Any], script: Streamed) -> dict[str, Any]:
        usage = super()._usage(body, script)
        usage["completion_tokens"] += REASONING
        usage["total_tokens"] += REASONING
        usage["completion_tokens_details"] = {"reasoning_tokens": REASONING}
        return usage


@asynccontextmanager
async def served_by(
    server: FakeLlm, store: Store, prompts_dir: Path, tools: ToolRegistry
) -> AsyncIterator[Assistant]:
    """An engine over the shared store whose model is `server`."""
    async with server:
        model = OpenAIChatModel.connect(
            api_key="sk-test-not-a-real-key",
            base_url=server.base_url,
            timeouts=Timeouts(first_token=10.0, idle=2.0, total=30.0),
            max_retries=0,
        )
        try:
            yield await build_assistant(store, model, prompts_dir, tools)
        finally:
            await model.close()


def around_now() -> Period:
    now = datetime.now(UTC)
    return Period(start=now - timedelta(hours=1), end=now + timedelta(minutes=1))


# ---- a turn end to end


async def test_a_server_without_usage_is_estimated_and_says_so(store, prompts_dir, tools):
    async with served_by(SilentUsageLlm(), store, prompts_dir, tools) as assistant:
        events = await collect(assistant.respond(inbound("How is the build?")))

    done = events[-1]
    assert isinstance(done, Completed)
    conversation = await store.find_conversation(REF)
    [call] = await store.llm_calls(conversation.id)
    assert call.token_source == "estimate:o200k_base"  # gpt-4o-mini's encoding
    assert call.prompt_tokens > 0 and call.completion_tokens > 0
    assert call.cost_usd is not None and call.cost_usd > 0  # still priced: it was still billed
    assert done.usage.estimated
    footer = describe(done)
    prompt, completion = done.usage.prompt_tokens, done.usage.completion_tokens
    assert footer.startswith(f"~{prompt} prompt + ~{completion} completion tokens (~0 cached)")
    assert f"~${done.usage.cost_usd:.6f}" in footer
    assert footer.endswith("(~ estimated: the model server sent no usage)")

    text = report_text(await build_report(store, around_now()))
    assert f"- tokens: {prompt:,} prompt (0 cached, ~{prompt:,} estimated), " in text
    assert f"{completion:,} completion (~{completion:,} estimated)" in text
    assert "  - ~ estimated by our tokenizer (1 call without usage from the server)" in text


async def test_a_server_that_reports_usage_shows_no_estimate(make_assistant, fake_llm, store):
    assistant = await make_assistant()
    fake_llm.script(Reply(text="The build is green."))

    done = (await collect(assistant.respond(inbound("How is the build?"))))[-1]

    assert isinstance(done, Completed) and not done.usage.estimated
    conversation = await store.find_conversation(REF)
    [call] = await store.llm_calls(conversation.id)
    assert (call.token_source, call.reasoning_tokens) == ("server", 0)
    assert "~" not in describe(done)
    assert describe(done).startswith(f"{done.usage.prompt_tokens} prompt + ")
    text = report_text(await build_report(store, around_now()))
    assert "~" not in text and "estimated" not in text and "reasoning" not in text


async def test_a_reasoning_models_thinking_is_kept_and_shown(store, prompts_dir, tools):
    async with served_by(ReasoningLlm(), store, prompts_dir, tools) as assistant:
        done = (await collect(assistant.respond(inbound("Think hard about it."))))[-1]

    assert isinstance(done, Completed)
    conversation = await store.find_conversation(REF)
    [call] = await store.llm_calls(conversation.id)
    assert (call.token_source, call.reasoning_tokens) == ("server", REASONING)
    assert call.completion_tokens > REASONING  # the thinking is a part of the output
    assert done.usage.reasoning_tokens == REASONING
    assert f"(0 cached, {REASONING} reasoning)" in describe(done)
    text = report_text(await build_report(store, around_now()))
    assert f"{call.completion_tokens:,} completion ({REASONING} reasoning)" in text


# ---- the records accounting makes


def a_request(model: str = "gpt-4o-mini") -> ChatRequest:
    return ChatRequest(model=model, messages=[ChatMessage(role="user", content="hello there")])


def a_completion(usage: Usage | None, model: str = "gpt-4o-mini") -> Completion:
    return Completion(
        text="General Kenobi.",
        tool_calls=(),
        finish_reason="stop",
        usage=usage,
        model=model,
        ttft_ms=1.0,
        total_ms=2.0,
        attempts=1,
    )


def completed(usage: Usage | None, model: str = "gpt-4o-mini") -> CallRecord:
    return accounting.completed_call(
        purpose="reply",
        request=a_request(model),
        completion=a_completion(usage, model),
        prices=PRICES,
        counter=TokenCounter(model),
    )


def test_a_call_without_usage_names_the_tokenizer_that_estimated_it():
    assert completed(None).token_source == "estimate:o200k_base"
    assert completed(None, "gpt-4").token_source == "estimate:cl100k_base"
    assert completed(None, "llama-3.1-8b-instruct").token_source == "estimate:o200k_base"
    counted = completed(None)
    counter = TokenCounter("gpt-4o-mini")
    assert counted.completion_tokens == counter.count("General Kenobi.")
    assert counted.estimated
    reported = completed(Usage(prompt_tokens=9, completion_tokens=4))
    assert (reported.token_source, reported.prompt_tokens) == ("server", 9)
    assert not reported.estimated


def test_a_reasoning_calls_cost_counts_its_reasoning_tokens_once():
    # o3-mini: $1.10 in, $4.40 out per million; 500 of the 800 output tokens were thinking.
    usage = Usage(prompt_tokens=100, completion_tokens=800, reasoning_tokens=500)

    call = completed(usage, "o3-mini")

    assert (call.completion_tokens, call.reasoning_tokens) == (800, 500)
    assert call.cost_usd is not None
    assert abs(call.cost_usd - (100 * 1.10 + 800 * 4.40) / 1e6) < 1e-12
    assert accounting.turn_usage([call]).reasoning_tokens == 500


def test_failed_calls_and_cache_hits_count_no_tokens():
    failed = accounting.failed_call(purpose="reply", model="m", error=LlmError("gone"))
    hit = accounting.cache_hit_call(model="m", elapsed_ms=1.0)

    assert (failed.token_source, failed.prompt_tokens) == ("none", 0)
    assert (hit.token_source, hit.prompt_tokens) == ("none", 0)
    assert not accounting.turn_usage([failed, hit, completed(Usage())]).estimated
    assert accounting.turn_usage([failed, completed(None)]).estimated


def test_without_tiktoken_the_estimate_is_named_chars(monkeypatch, tmp_path):
    url, _ = assistant.tokens._SOURCES["o200k_base"]
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(assistant.tokens._SOURCES, "o200k_base", (url, "0" * 64))
    load_encoder.cache_clear()
    try:
        call = completed(None)
    finally:
        load_encoder.cache_clear()
    assert call.token_source == "estimate:chars"
    assert call.completion_tokens == (len("General Kenobi.") + 3) // 4
