"""One record per model call, and a turn's totals: tokens, cost (or unpriced), timing."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from assistant.llm import ChatRequest, Completion, LlmError, Usage, wire_messages
from assistant.pricing import PriceTable
from assistant.records import NO_TOKENS, SERVER_TOKENS, CallRecord, estimated_by
from assistant.tokens import TokenCounter
from assistant.turns import PurposeUsage, TurnUsage

CONTRACT_ERROR_LIMIT = 500  # the stored reason a reply broke its version's schema


class Ledger:
    """Every model call of one turn, in order. A phase adds the record of each call as the
    call ends, so a turn that fails or is abandoned part-way still accounts for what it spent."""

    def __init__(self, on_add: Callable[[CallRecord], None] | None = None) -> None:
        self._calls: list[CallRecord] = []
        self._on_add = on_add  # the turn's instruments hear of each call as it ends

    def add(self, call: CallRecord) -> None:
        self._calls.append(call)
        if self._on_add is not None:
            self._on_add(call)

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
    """The record of a call that finished. A server that sent no usage is counted with our
    tokenizer, and the record says so (`token_source`), so nobody reads the guess as billed.

    Reasoning tokens are copied as reported. They are already inside `completion_tokens` and
    are billed as output tokens, so the cost prices them with the rest of the output and they
    are never added a second time.
    """
    if completion.usage is None:
        usage = estimate_usage(counter, request, completion.text)
        source = estimated_by(counter.tokenizer)
    else:
        usage, source = completion.usage, SERVER_TOKENS
    model = completion.model or request.model
    return CallRecord(
        purpose=purpose,
        model=model,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        token_source=source,
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
        finish_reason=completion.finish_reason,
    )


def failed_call(*, purpose: str, model: str, error: LlmError) -> CallRecord:
    """A call that did not complete: no server usage arrived and none is guessed, so its
    token source is "none" (its zeros mean "not counted", not "the server said 0")."""
    return CallRecord(
        purpose=purpose,
        model=model,
        ttft_ms=error.ttft_ms,
        total_ms=error.total_ms,
        status="error",
        error_class=type(error).__name__,
        token_source=NO_TOKENS,
    )


def abandoned_call(
    *,
    purpose: str = "reply",
    request: ChatRequest,
    text: str,
    elapsed_ms: float,
    prices: PriceTable,
    counter: TokenCounter,
) -> CallRecord:
    """A call cut short because nobody was listening any more: the provider still bills what
    it read and wrote, so the tokens are estimated (always: the usage comes last in a stream)
    and priced."""
    usage = estimate_usage(counter, request, text)
    return CallRecord(
        purpose=purpose,
        model=request.model,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        token_source=estimated_by(counter.tokenizer),
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
        token_source=NO_TOKENS,
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
    """A turn's totals; `estimated` when any call's tokens were our tokenizer's count."""
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
        reasoning_tokens=sum(c.reasoning_tokens for c in calls),
        estimated=any(c.estimated for c in calls),
        purposes=tuple(_by_purpose(calls)),
        fallbacks=sum(c.fallback_for is not None for c in calls),
    )


def _by_purpose(calls: Sequence[CallRecord]) -> list[PurposeUsage]:
    purposes = list(dict.fromkeys(c.purpose for c in calls))
    found = []
    for purpose in purposes:
        these = [c for c in calls if c.purpose == purpose]
        unpriced = any(c.status == "ok" and c.cost_usd is None for c in these)
        cost = None if unpriced else sum(c.cost_usd or 0.0 for c in these)
        found.append(PurposeUsage(purpose=purpose, calls=len(these), cost_usd=cost))
    return found
