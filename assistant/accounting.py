"""One accounting row per model call, and a turn's totals: tokens, cost (or unpriced), timing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from assistant.llm import ChatRequest, Completion, LlmError, Usage, wire_messages
from assistant.pricing import PriceTable
from assistant.store.tables import LlmCall
from assistant.tokens import TokenCounter
from assistant.turns import TurnUsage


@dataclass(frozen=True, kw_only=True)
class CallContext:
    """What every row of a turn shares."""

    conversation_id: int | None
    prompt_version_id: int | None
    model: str


def completed_call(
    context: CallContext,
    *,
    purpose: str,
    request: ChatRequest,
    completion: Completion,
    prices: PriceTable,
    counter: TokenCounter,
) -> LlmCall:
    usage = completion.usage or estimate_usage(counter, request, completion.text)
    model = completion.model or request.model
    return LlmCall(
        conversation_id=context.conversation_id,
        prompt_version_id=context.prompt_version_id,
        purpose=purpose,
        model=model,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        cost_usd=prices.cost(
            model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
        ),
        ttft_ms=completion.ttft_ms,
        total_ms=completion.total_ms,
        status="ok",
    )


def failed_call(context: CallContext, *, purpose: str, error: LlmError) -> LlmCall:
    return LlmCall(
        conversation_id=context.conversation_id,
        prompt_version_id=context.prompt_version_id,
        purpose=purpose,
        model=context.model,
        ttft_ms=error.ttft_ms,
        total_ms=error.total_ms,
        status="error",
        error_class=type(error).__name__,
    )


def abandoned_call(
    context: CallContext,
    *,
    request: ChatRequest,
    text: str,
    elapsed_ms: float,
    prices: PriceTable,
    counter: TokenCounter,
) -> LlmCall:
    """A call cut short because nobody was listening any more: the provider still bills what
    it read and wrote, so the tokens are estimated and priced."""
    usage = estimate_usage(counter, request, text)
    return LlmCall(
        conversation_id=context.conversation_id,
        prompt_version_id=context.prompt_version_id,
        purpose="reply",
        model=context.model,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost_usd=prices.cost(
            context.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        ),
        total_ms=elapsed_ms,
        status="cancelled",
        error_class="Abandoned",
    )


def cache_hit_call(context: CallContext, *, elapsed_ms: float) -> LlmCall:
    """A reply served from the cache: no model call, so no tokens and a real $0."""
    return LlmCall(
        conversation_id=context.conversation_id,
        prompt_version_id=context.prompt_version_id,
        purpose="reply",
        model=context.model,
        cost_usd=0.0,
        ttft_ms=elapsed_ms,
        total_ms=elapsed_ms,
        status="ok",
        cache_hit=True,
    )


def estimate_usage(counter: TokenCounter, request: ChatRequest, completion_text: str) -> Usage:
    """Servers that send no usage (some local ones) are counted with our tokenizer."""
    tools = [t.to_openai() for t in request.tools]
    return Usage(
        prompt_tokens=counter.count_request(wire_messages(request.messages), tools),
        completion_tokens=counter.count(completion_text),
    )


def turn_usage(calls: Sequence[LlmCall]) -> TurnUsage:
    unpriced = tuple(sorted({c.model for c in calls if c.status == "ok" and c.cost_usd is None}))
    cost = None if unpriced else sum(c.cost_usd or 0.0 for c in calls)
    return TurnUsage(
        calls=len(calls),
        prompt_tokens=sum(c.prompt_tokens for c in calls),
        completion_tokens=sum(c.completion_tokens for c in calls),
        cached_tokens=sum(c.cached_tokens for c in calls),
        cost_usd=cost,
        unpriced_models=unpriced,
        cache_hits=sum(c.cache_hit for c in calls),
    )
