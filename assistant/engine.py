"""The turn: resolve the prompt, store the message, build the context, call, run tools, persist.

Each phase is a method that fits on a screen; `respond` only strings them together and turns
every failure into a `Failed` event, after the user's message is safely stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from assistant import memory
from assistant.llm import ChatMessage, ChatModel, ChatRequest, Completion, LlmError, Usage
from assistant.pricing import PriceTable
from assistant.prompts import PromptCatalog, PromptFile, PromptVersion
from assistant.store import Store
from assistant.store.repository import ConversationState, HistoryEntry
from assistant.store.tables import LlmCall, Message, PromptVersionRow
from assistant.tokens import TokenCounter
from assistant.tools import ToolRegistry
from assistant.turns import (
    Completed,
    ConversationRef,
    Event,
    Failed,
    Ignored,
    Inbound,
    TextDelta,
    Thinking,
    ToolFinished,
    ToolStarted,
    TurnUsage,
)

log = logging.getLogger(__name__)

DEDUPE_WINDOW = timedelta(hours=24)  # Slack redelivers for minutes; keep keys far longer
SUMMARY_WORDS = 200


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    default_model: str = "gpt-4o-mini"
    tool_timeout: float = 15.0
    max_tool_rounds: int = 5


class TurnRefused(Exception):
    """A turn we will not send to the model; the message tells the user what to change."""


@dataclass(kw_only=True)
class _Turn:
    """What one turn has gathered so far: enough to account for it however it ends."""

    inbound: Inbound
    prompt: PromptFile
    prompt_row_id: int | None
    model: str
    counter: TokenCounter
    conversation_id: int | None = None
    user_message: Message | None = None
    calls: list[LlmCall] = field(default_factory=list)
    text: str = ""
    started: float = field(default_factory=time.perf_counter)
    ttft_ms: float | None = None

    @property
    def version(self) -> PromptVersion:
        return self.prompt.version


class Assistant:
    """The engine every surface shares; it never imports a platform."""

    def __init__(
        self,
        *,
        store: Store,
        model: ChatModel,
        catalog: PromptCatalog,
        tools: ToolRegistry,
        prices: PriceTable,
        config: EngineConfig = EngineConfig(),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._model = model
        self._catalog = catalog
        self._tools = tools
        self._prices = prices
        self._config = config
        self._clock = clock
        self._prompt_rows: dict[str, int] = {}
        self._counters: dict[str, TokenCounter] = {}
        self._fixed_tokens: dict[str, int] = {}

    async def sync_prompts(self) -> None:
        """Store every loaded version (refusing edited released files) and remember their ids."""
        for prompt in self._catalog.files:
            row = await self._store.save_prompt_version(
                PromptVersionRow(
                    name=prompt.version.name,
                    version=prompt.version.version,
                    content_hash=prompt.content_hash,
                    source_file=str(prompt.path),
                    body=prompt.text,
                )
            )
            assert row.id is not None
            self._prompt_rows[prompt.version.label] = row.id

    async def history_length(self, ref: ConversationRef) -> int:
        """How many messages a conversation already holds (0 for a new one)."""
        conversation = await self._store.find_conversation(ref)
        if conversation is None or conversation.id is None:
            return 0
        return await self._store.count_messages(conversation.id)

    async def respond(self, inbound: Inbound) -> AsyncIterator[Event]:
        if inbound.dedupe_keys and not await self._store.claim_event(
            inbound.dedupe_keys, keep=DEDUPE_WINDOW
        ):
            yield Ignored(reason="duplicate delivery")
            return
        turn = self._start(inbound)
        yield Thinking()
        try:
            history = await self._store_user_message(turn)
        except Exception:
            log.exception("could not store the user's message")
            yield Failed(
                user_message="The assistant could not save your message, so it did not answer. "
                "Please send it again.",
                retryable=True,
                error_class="StoreError",
            )
            return
        try:
            async for event in self._converse(turn, history):
                yield event
            yield await self._finish(turn)
        except Exception as exc:
            yield await self._fail(turn, exc)

    def _start(self, inbound: Inbound) -> _Turn:
        prompt = self._catalog.latest(self._catalog.default_name)
        model = prompt.version.model or self._config.default_model
        return _Turn(
            inbound=inbound,
            prompt=prompt,
            prompt_row_id=self._prompt_rows.get(prompt.version.label),
            model=model,
            counter=self._counter(model),
        )

    def _counter(self, model: str) -> TokenCounter:
        if model not in self._counters:
            self._counters[model] = TokenCounter(model)
        return self._counters[model]

    async def _store_user_message(
        self, turn: _Turn
    ) -> tuple[ConversationState, list[HistoryEntry]]:
        inbound = turn.inbound
        message = Message(
            conversation_id=0,
            role="user",
            author_id=inbound.actor.qualified_id,
            author_name=inbound.actor.display_name,
            text=inbound.text,
            token_count=turn.counter.count_message(inbound.text),
            prompt_version_id=turn.prompt_row_id,
            platform_message_id=inbound.platform_message_id,
        )
        memory_policy = turn.version.memory
        history = await self._store.begin_turn(
            inbound.ref,
            message,
            token_limit=max(memory_policy.summarize_over_tokens, memory_policy.context_tokens),
        )
        turn.conversation_id = message.conversation_id
        turn.user_message = message
        return history

    async def _build_context(
        self, turn: _Turn, history: tuple[ConversationState, list[HistoryEntry]]
    ) -> list[ChatMessage]:
        version = turn.version
        conversation, newest = history
        fixed = self._fixed(turn)
        budget = version.memory.context_tokens
        if turn.user_message and fixed + turn.user_message.token_count > budget:
            raise TurnRefused(
                f"Your message is too long for this assistant ({turn.user_message.token_count} "
                f"tokens; about {max(budget - fixed, 0)} fit). Please shorten it or split it up."
            )
        plan = memory.plan_fold(newest, summarize_over=version.memory.summarize_over_tokens)
        if plan.fold:
            conversation = await self._fold(turn, conversation, plan.fold)
        history_budget = budget - fixed - conversation.summary_tokens
        window = memory.fit_window(plan.keep, budget=history_budget)
        messages = self._preamble(turn)
        if conversation.summary:
            messages.append(memory.summary_message(conversation.summary))
        return messages + memory.history_messages(window)

    def _preamble(self, turn: _Turn) -> list[ChatMessage]:
        version, actor = turn.version, turn.inbound.actor
        system = version.render_system(
            now=self._clock(), platform=actor.platform, user_name=actor.display_name or "a user"
        )
        messages = [ChatMessage(role="system", content=system)]
        for example in version.examples:
            messages.append(ChatMessage(role="user", content=example.user))
            messages.append(ChatMessage(role="assistant", content=example.assistant))
        return messages

    def _fixed(self, turn: _Turn) -> int:
        """Tokens of what every request of this version carries: preamble, tools, reply primer."""
        label = turn.version.label
        if label not in self._fixed_tokens:
            preamble = self._preamble(turn)
            tools = [t.to_openai() for t in self._tools.definitions(turn.version.tools)]
            wire = [{"role": m.role, "content": m.content} for m in preamble]
            # the rendered system prompt varies by user and date: leave headroom for it
            self._fixed_tokens[label] = turn.counter.count_request(wire, tools) + 32
        return self._fixed_tokens[label]

    async def _fold(
        self, turn: _Turn, conversation: ConversationState, fold: list[HistoryEntry]
    ) -> ConversationState:
        """Summarize older turns with one extra call; if it fails, answer without it."""
        request = ChatRequest(
            model=turn.model,
            messages=memory.summary_request(conversation.summary, fold, words=SUMMARY_WORDS),
            params={"temperature": 0, "max_tokens": SUMMARY_WORDS * 2},
        )
        try:
            completion = await self._complete(request)
        except LlmError as exc:
            log.warning("summary folding failed, answering with the trimmed history: %s", exc)
            turn.calls.append(self._failed_call(turn, "summary", exc))
            return conversation
        turn.calls.append(self._call_row(turn, "summary", request, completion))
        summary = completion.text.strip()
        folded = replace(
            conversation,
            summary=summary,
            summary_tokens=turn.counter.count_message(summary),
            summary_through_id=fold[-1].id,
        )
        await self._store.save_summary(
            conversation.id,
            summary=folded.summary,
            tokens=folded.summary_tokens,
            through_id=folded.summary_through_id,
        )
        return folded

    async def _complete(self, request: ChatRequest) -> Completion:
        async for item in self._model.stream(request):
            if isinstance(item, Completion):
                return item
        raise LlmError("the model stream ended without a completion")

    async def _converse(
        self, turn: _Turn, history: tuple[ConversationState, list[HistoryEntry]]
    ) -> AsyncIterator[Event]:
        """Call the model, run the tools it asks for, and repeat until it answers in text."""
        messages = await self._build_context(turn, history)
        version = turn.version
        for round_number in range(self._config.max_tool_rounds + 1):
            last_round = round_number == self._config.max_tool_rounds
            tools = [] if last_round else self._tools.definitions(version.tools)
            request = ChatRequest(
                model=turn.model,
                messages=messages,
                tools=tools,
                params=version.params.request_fields(),
            )
            completion: Completion | None = None
            async for item in self._call_streaming(turn, request):
                if isinstance(item, TextDelta):
                    yield item
                else:
                    completion = item
            assert completion is not None
            if not completion.tool_calls:
                return
            async for event in self._run_tools(turn, completion, messages):
                yield event

    async def _call_streaming(
        self, turn: _Turn, request: ChatRequest
    ) -> AsyncIterator[TextDelta | Completion]:
        separate = bool(turn.text) and not turn.text.endswith("\n")
        try:
            async for item in self._model.stream(request):
                if isinstance(item, Completion):
                    turn.calls.append(self._call_row(turn, "reply", request, item))
                    yield item
                    continue
                if turn.ttft_ms is None:
                    turn.ttft_ms = (time.perf_counter() - turn.started) * 1000
                if separate:  # a later round's text starts on its own paragraph
                    separate = False
                    turn.text += "\n\n"
                    yield TextDelta(text="\n\n")
                turn.text += item
                yield TextDelta(text=item)
        except LlmError as exc:
            turn.calls.append(self._failed_call(turn, "reply", exc))
            raise

    async def _run_tools(
        self, turn: _Turn, completion: Completion, messages: list[ChatMessage]
    ) -> AsyncIterator[Event]:
        calls = completion.tool_calls
        messages.append(ChatMessage(role="assistant", content=completion.text, tool_calls=calls))
        for call in calls:
            yield ToolStarted(call_id=call.id, name=call.name, arguments=call.arguments)
        results = await self._tools.run_all(
            [(c.id, c.name, c.arguments) for c in calls],
            allowed=turn.version.tools,
            time_limit=self._config.tool_timeout,
        )
        for result in results:
            if not result.ok:
                log.info("tool %s failed: %s", result.name, result.content)
            yield ToolFinished(call_id=result.call_id, name=result.name, ok=result.ok)
            messages.append(
                ChatMessage(role="tool", content=result.content, tool_call_id=result.call_id)
            )

    def _call_row(
        self, turn: _Turn, purpose: str, request: ChatRequest, completion: Completion
    ) -> LlmCall:
        usage = completion.usage or self._estimate_usage(turn, request, completion)
        return LlmCall(
            conversation_id=turn.conversation_id,
            prompt_version_id=turn.prompt_row_id,
            purpose=purpose,
            model=completion.model or request.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            cost_usd=self._prices.cost(
                completion.model or request.model,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cached_tokens=usage.cached_tokens,
            ),
            ttft_ms=completion.ttft_ms,
            total_ms=completion.total_ms,
            status="ok",
        )

    def _estimate_usage(self, turn: _Turn, request: ChatRequest, completion: Completion) -> Usage:
        """Servers that send no usage (some local ones) are counted with our tokenizer."""
        wire = [{"role": m.role, "content": m.content} for m in request.messages]
        tools = [t.to_openai() for t in request.tools]
        return Usage(
            prompt_tokens=turn.counter.count_request(wire, tools),
            completion_tokens=turn.counter.count(completion.text),
        )

    def _failed_call(self, turn: _Turn, purpose: str, exc: LlmError) -> LlmCall:
        return LlmCall(
            conversation_id=turn.conversation_id,
            prompt_version_id=turn.prompt_row_id,
            purpose=purpose,
            model=turn.model,
            ttft_ms=exc.ttft_ms,
            total_ms=exc.total_ms,
            status="error",
            error_class=type(exc).__name__,
        )

    async def _finish(self, turn: _Turn) -> Completed:
        assert turn.conversation_id is not None
        reply = Message(
            conversation_id=turn.conversation_id,
            role="assistant",
            text=turn.text,
            token_count=turn.counter.count_message(turn.text),
            prompt_version_id=turn.prompt_row_id,
        )
        await self._store.finish_turn(reply, turn.calls)
        assert reply.id is not None
        return Completed(
            message_id=reply.id,
            text=turn.text,
            usage=_total_usage(turn.calls),
            ttft_ms=turn.ttft_ms,
            total_ms=(time.perf_counter() - turn.started) * 1000,
            prompt_version=turn.version.label,
            model=turn.model,
        )

    async def _fail(self, turn: _Turn, exc: Exception) -> Failed:
        """Record what happened and tell the user in words they can act on."""
        if isinstance(exc, LlmError):
            message, retryable = exc.user_message, exc.retryable
        elif isinstance(exc, TurnRefused):
            message, retryable = str(exc), False
        else:
            log.exception("turn failed", exc_info=exc)
            message, retryable = (
                "Something went wrong on the assistant's side. Please try again.",
                True,
            )
        partial = None
        if turn.text and turn.conversation_id is not None:
            partial = Message(
                conversation_id=turn.conversation_id,
                role="assistant",
                text=turn.text,
                token_count=turn.counter.count_message(turn.text),
                status="incomplete",
                prompt_version_id=turn.prompt_row_id,
            )
        elif turn.user_message is not None:
            for call in turn.calls:
                call.message_id = turn.user_message.id
        try:
            await self._store.finish_turn(partial, turn.calls)
        except Exception:
            log.exception("could not record the failed turn")
        return Failed(
            user_message=message,
            retryable=retryable,
            error_class=type(exc).__name__,
            partial_text=turn.text,
        )


def _total_usage(calls: list[LlmCall]) -> TurnUsage:
    unpriced = tuple(sorted({c.model for c in calls if c.status == "ok" and c.cost_usd is None}))
    cost = None if unpriced else sum(c.cost_usd or 0.0 for c in calls)
    return TurnUsage(
        calls=len(calls),
        prompt_tokens=sum(c.prompt_tokens for c in calls),
        completion_tokens=sum(c.completion_tokens for c in calls),
        cached_tokens=sum(c.cached_tokens for c in calls),
        cost_usd=cost,
        unpriced_models=unpriced,
    )
