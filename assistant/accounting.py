"""One record per model call, and a turn's totals: tokens, cost (or unpriced), timing."""

from __future__ import annotations

from collections.abc import Sequence

from assistant.llm import ChatRequest, Completion, LlmError, Usage, wire_messages
from assistant.pricing import PriceTable
from assistant.records import CallRecord
from assistant.tokens import TokenCounter
from assistant.turns import TurnUsage

CONTRACT_ERROR_LIMIT = 500  # the stored reason a reply broke its version's schema


class Ledger:
    """Every model call of one turn, in order. A phase adds the record of each call as the
    call ends, so a turn that fails or is abandoned part-way still accounts for what it spent."""

    def __init__(self) -> None:
        self._calls: list[CallRecord] = []

    def add(self, call: CallRecord) -> None:
        self._calls.append(call)

    @property
    def calls(self) -> tuple[CallRecord, ...]:
        return tuple(self._calls)


def completed_call(
    *,
    purpose: str,
    request: ChatRequest,
    completion: Completion,
    prices: PriceTable,
    counter: TokenCounter,
    error_class: str | None = None,
    contract_error: str | None = None,
) -> CallRecord:
    usage = completion.usage or estimate_usage(counter, request, completion.text)
    model = completion.model or request.model
    return CallRecord(
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
        error_class=error_class,
        contract_error=contract_error[:CONTRACT_ERROR_LIMIT] if contract_error else None,
    )


def failed_call(*, purpose: str, model: str, error: LlmError) -> CallRecord:
    return CallRecord(
        purpose=purpose,
        model=model,
        ttft_ms=error.ttft_ms,
        total_ms=error.total_ms,
        status="error",
        error_class=type(error).__name__,
    )


def abandoned_call(
    *,
    request: ChatRequest,
    text: str,
    elapsed_ms: float,
    prices: PriceTable,
    counter: TokenCounter,
) -> CallRecord:
    """A call cut short because nobody was listening any more: the provider still bills what
    it read and wrote, so the tokens are estimated and priced."""
    usage = estimate_usage(counter, request, text)
    return CallRecord(
        purpose="reply",
        model=request.model,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost_usd=prices.cost(
            request.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        ),
        total_ms=elapsed_ms,
        status="cancelled",
        error_class="Abandoned",
    )


def cache_hit_call(*, model: str, elapsed_ms: float) -> CallRecord:
    """A reply served from the cache: no model call, so no tokens and a real $0."""
    return CallRecord(
        purpose="reply",
        model=model,
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


def turn_usage(calls: Sequence[CallRecord]) -> TurnUsage:
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
