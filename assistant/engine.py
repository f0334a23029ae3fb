"""The turn: resolve the version, store the message, build the context, call, run tools, check
the contract, persist.

Each phase is a method that fits on a screen; `respond` only strings them together and turns
every failure into a `Failed` event, after the user's message is safely stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from assistant import accounting, contracts, memory
from assistant.llm import (
    ChatMessage,
    ChatModel,
    ChatRequest,
    Completion,
    LlmError,
    complete,
    wire_messages,
)
from assistant.pricing import PriceTable
from assistant.prompts.files import PromptCatalog, PromptFile, PromptVersion
from assistant.prompts.versions import VersionResolver
from assistant.store import Store
from assistant.store.repository import ConversationState, History, HistoryEntry
from assistant.store.tables import LlmCall, Message, PromptVersionRow
from assistant.tokens import TokenCounter
from assistant.tools import ToolRegistry
from assistant.turns import (
    Actor,
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
)

log = logging.getLogger(__name__)

DEDUPE_WINDOW = timedelta(hours=24)  # Slack redelivers for minutes; keep keys far longer
SUMMARY_WORDS = 200
CACHE_TTL = timedelta(hours=24)
FOLD_BACKOFF_SECONDS = 300.0  # after a failed summary call, answer without folding for a while
NAME_LIMIT = 64
TRUNCATED = " [truncated to fit the context]"
CUT_OFF_NOTES = {
    "length": "\n\n[The answer was cut off: it reached the length limit.]",
    "content_filter": "\n\n[The answer was stopped by the provider's content filter.]",
}


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
    context: accounting.CallContext
    counter: TokenCounter
    user_message: Message | None = None
    calls: list[LlmCall] = field(default_factory=list)
    text: str = ""
    round_text: str = ""  # the latest model call's text: what an output contract checks
    shown: bool = True  # whether text reaches the user as it streams (not for JSON contracts)
    used_tools: bool = False
    recorded: bool = False
    started: float = field(default_factory=time.perf_counter)
    ttft_ms: float | None = None

    @property
    def version(self) -> PromptVersion:
        return self.prompt.version

    @property
    def model(self) -> str:
        return self.context.model

    @property
    def conversation_id(self) -> int:
        assert self.context.conversation_id is not None
        return self.context.conversation_id


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
        self._tools = tools
        self._prices = prices
        self._config = config
        self._clock = clock
        self.versions = VersionResolver(catalog, store.prompts)
        self._prompt_rows: dict[str, int] = {}
        self._counters: dict[str, TokenCounter] = {}
        self._static_tokens: dict[str, int] = {}
        self._fold_failed_at: dict[int, float] = {}

    async def sync_prompts(self) -> None:
        """Store every loaded version (refusing edited released files) and remember their ids."""
        for prompt in self.versions.catalog.files:
            row = await self._store.prompts.save_version(
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
            # load the tokenizer now: loading it takes ~0.5 s, which the first turn must not
            self._counter(prompt.version.model or self._config.default_model)

    async def history_length(self, ref: ConversationRef) -> int:
        """How many messages a conversation already holds (0 for a new one)."""
        conversation = await self._store.find_conversation(ref)
        if conversation is None or conversation.id is None:
            return 0
        return await self._store.count_messages(conversation.id)

    async def knows(self, ref: ConversationRef) -> bool:
        """Whether this conversation already exists: a thread the assistant is part of, where
        follow-ups need no new mention."""
        return await self._store.find_conversation(ref) is not None

    async def conversation_with_message(
        self, platform: str, platform_message_id: str
    ) -> ConversationRef | None:
        """The conversation a user message belongs to: a reply to it continues that talk."""
        return await self._store.conversation_with_message(platform, platform_message_id)

    async def record_feedback(self, message_id: int, actor: Actor, *, vote: int) -> bool:
        """Store `actor`'s 👍 (+1) or 👎 (-1) on an answer, replacing their earlier vote;
        False when `message_id` is not an answer."""
        if vote not in (1, -1):
            raise ValueError(f"vote must be 1 or -1, got {vote}")
        return await self._store.record_feedback(message_id, actor.qualified_id, vote)

    async def respond(self, inbound: Inbound) -> AsyncGenerator[Event, None]:
        """The turn's events. A consumer may stop early (a user left, a socket closed): what
        the turn cost and any partial answer are still recorded."""
        try:
            fresh = not inbound.dedupe_keys or await self._store.claim_event(
                inbound.dedupe_keys, keep=DEDUPE_WINDOW
            )
            if fresh:
                yield Thinking()
                turn = await self._start(inbound)
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
        if not fresh:
            yield Ignored(reason="duplicate delivery")
            return
        try:
            async with aclosing(self._converse(turn, history)) as events:
                async for event in events:
                    yield event
            yield await self._finish(turn)
        except Exception as exc:
            yield await self._fail(turn, exc)
        except (GeneratorExit, asyncio.CancelledError):
            if not turn.recorded:
                await asyncio.shield(self._record_unfinished(turn))
            raise

    async def _start(self, inbound: Inbound) -> _Turn:
        conversation_id = await self._store.conversation_id(inbound.ref)
        prompt = await self._prompt_for(inbound, conversation_id)
        model = prompt.version.model or self._config.default_model
        context = accounting.CallContext(
            conversation_id=conversation_id,
            prompt_version_id=await self._prompt_row_id(prompt),
            model=model,
        )
        return _Turn(
            inbound=inbound,
            prompt=prompt,
            context=context,
            counter=self._counter(model),
            shown=prompt.version.response_schema is None,
        )

    async def _prompt_for(self, inbound: Inbound, conversation_id: int) -> PromptFile:
        if inbound.pinned_version is None:
            return await self.versions.resolve(inbound.ref, conversation_id)
        name, number = inbound.pinned_version
        pinned = await self.versions.version(name, number)
        if pinned is None:
            raise TurnRefused(f"There is no prompt version {name}@{number}.")
        return pinned

    async def _prompt_row_id(self, prompt: PromptFile) -> int | None:
        label = prompt.version.label
        if label not in self._prompt_rows:  # a version this process learnt from the store
            row = await self._store.prompts.version(prompt.version.name, prompt.version.version)
            if row is None or row.id is None:
                return None
            self._prompt_rows[label] = row.id
        return self._prompt_rows[label]

    def _counter(self, model: str) -> TokenCounter:
        if model not in self._counters:
            self._counters[model] = TokenCounter(model)
        return self._counters[model]

    async def _store_user_message(self, turn: _Turn) -> History:
        inbound = turn.inbound
        message = Message(
            conversation_id=turn.conversation_id,
            role="user",
            author_id=inbound.actor.qualified_id[:128],
            author_name=_clean_name(inbound.actor.display_name),
            text=inbound.text,
            token_count=turn.counter.count_message(inbound.text),
            prompt_version_id=turn.context.prompt_version_id,
            platform_message_id=(inbound.platform_message_id or "")[:128] or None,
        )
        policy = turn.version.memory
        history = await self._store.begin_turn(
            inbound.ref,
            message,
            token_limit=max(policy.summarize_over_tokens, policy.context_tokens),
        )
        turn.user_message = message
        return history

    async def _build_context(self, turn: _Turn, history: History) -> list[ChatMessage]:
        """Preamble, summary and the newest history, within the version's token budget."""
        budget = turn.version.memory.context_tokens
        preamble = self._preamble(turn)
        fixed = self._fixed(turn, preamble)
        assert turn.user_message is not None
        newest_tokens = turn.user_message.token_count
        if fixed + newest_tokens > budget:
            raise TurnRefused(
                f"Your message is too long for this assistant ({newest_tokens} tokens; about "
                f"{max(budget - fixed, 0)} fit). Please shorten it or split it up."
            )
        conversation = history.state
        fold = await self._fold_candidates(turn, history)
        if fold:
            conversation = await self._fold(turn, conversation, fold)
        summary_tokens = conversation.summary_tokens
        if fixed + summary_tokens + newest_tokens > budget:  # the newest message matters more
            summary_tokens = 0
        unsummarized = [e for e in history.newest if e.id > conversation.summary_through_id]
        window = memory.fit_window(unsummarized, budget=budget - fixed - summary_tokens)
        messages = preamble
        if summary_tokens:
            messages.append(memory.summary_message(conversation.summary))
        return messages + memory.history_messages(window)

    def _preamble(self, turn: _Turn) -> list[ChatMessage]:
        version, actor = turn.version, turn.inbound.actor
        system = version.render_system(
            now=self._clock(),
            platform=actor.platform,
            user_name=_clean_name(actor.display_name) or "a user",
        )
        messages = [ChatMessage(role="system", content=system)]
        for example in version.examples:
            messages.append(ChatMessage(role="user", content=example.user))
            messages.append(ChatMessage(role="assistant", content=example.assistant))
        return messages

    def _fixed(self, turn: _Turn, preamble: list[ChatMessage]) -> int:
        """Tokens every request of this turn carries: system prompt (it varies by user and
        date, so counted each turn), examples and tool schemas (counted once per version)."""
        label = turn.version.label
        if label not in self._static_tokens:
            examples = wire_messages(preamble[1:])
            tools = self._wire_tools(turn.version)
            self._static_tokens[label] = turn.counter.count_request(examples, tools)
        return self._static_tokens[label] + turn.counter.count_message(preamble[0].content)

    async def _fold_candidates(self, turn: _Turn, history: History) -> list[HistoryEntry]:
        """Older messages to fold now, oldest first and contiguous from the summary pointer,
        so no message is ever skipped."""
        state = history.state
        failed_at = self._fold_failed_at.get(state.id)
        if failed_at is not None and time.monotonic() - failed_at < FOLD_BACKOFF_SECONDS:
            return []
        limit = turn.version.memory.summarize_over_tokens
        plan = memory.plan_fold(history.newest, summarize_over=limit)
        if not plan.fold or history.complete:
            return plan.fold
        return await self._store.oldest_messages(
            state.id, after_id=state.summary_through_id, token_limit=limit
        )

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
            completion = await complete(self._model, request)
        except LlmError as exc:
            log.warning("summary folding failed, answering with the trimmed history: %s", exc)
            turn.calls.append(accounting.failed_call(turn.context, purpose="summary", error=exc))
            self._fold_failed_at[conversation.id] = time.monotonic()
            return conversation
        self._fold_failed_at.pop(conversation.id, None)
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

    async def _converse(self, turn: _Turn, history: History) -> AsyncGenerator[Event, None]:
        """Answer from the cache, or call the model (with tools) and check its contract."""
        messages = await self._build_context(turn, history)
        version = turn.version
        use_cache = version.cache and turn.inbound.use_cache
        cache_key = _cache_key(turn, messages) if use_cache else None
        if cache_key is not None and await self._answer_from_cache(turn, cache_key):
            yield TextDelta(text=turn.text)
            return
        async with aclosing(self._tool_loop(turn, messages)) as events:
            async for event in events:
                yield event
        if version.response_schema is not None:
            await self._enforce_contract(turn, messages, version.response_schema)
            yield TextDelta(text=turn.text)
        # an answer built on tool results (the time, a lookup) is not safe to reuse
        cacheable = cache_key is not None and not turn.used_tools
        if cacheable and turn.context.prompt_version_id is not None:
            assert cache_key is not None
            await self._store.prompts.cache_reply(
                cache_key, turn.context.prompt_version_id, turn.text
            )

    async def _answer_from_cache(self, turn: _Turn, key: str) -> bool:
        cached = await self._store.prompts.cached_reply(key, max_age=CACHE_TTL)
        if cached is None:
            return False
        elapsed = (time.perf_counter() - turn.started) * 1000
        turn.calls.append(accounting.cache_hit_call(turn.context, elapsed_ms=elapsed))
        turn.text, turn.ttft_ms = cached, elapsed
        return True

    async def _tool_loop(
        self, turn: _Turn, messages: list[ChatMessage]
    ) -> AsyncGenerator[Event, None]:
        """Call the model, run the tools it asks for, and repeat until it answers in text."""
        version = turn.version
        for round_number in range(self._config.max_tool_rounds + 1):
            last_round = round_number == self._config.max_tool_rounds
            request = ChatRequest(
                model=turn.model,
                messages=messages,
                tools=[] if last_round else self._tools.definitions(version.tools),
                params=version.params.request_fields(),
            )
            completion: Completion | None = None
            async with aclosing(self._call_streaming(turn, request)) as items:
                async for item in items:
                    if isinstance(item, Completion):
                        completion = item
                    elif turn.shown:
                        yield item
            assert completion is not None
            note = self._cut_off_note(turn, completion)
            if note and turn.shown:
                turn.text += note
                yield TextDelta(text=note)
            if not completion.tool_calls:
                return
            turn.used_tools = True
            async with aclosing(self._run_tools(turn, completion, messages)) as events:
                async for event in events:
                    yield event

    def _cut_off_note(self, turn: _Turn, completion: Completion) -> str:
        """A reply the provider stopped early is flagged, to the user and on its call row."""
        note = CUT_OFF_NOTES.get(completion.finish_reason, "")
        if note:
            log.warning("model reply stopped early: finish_reason=%s", completion.finish_reason)
            turn.calls[-1].error_class = f"finish_reason:{completion.finish_reason}"
        return note

    async def _call_streaming(
        self, turn: _Turn, request: ChatRequest
    ) -> AsyncGenerator[TextDelta | Completion, None]:
        separate = bool(turn.text) and not turn.text.endswith("\n")
        turn.round_text = ""
        started = time.perf_counter()
        try:
            async with aclosing(self._model.stream(request)) as stream:
                async for item in stream:
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
                    turn.round_text += item
                    yield TextDelta(text=item)
        except LlmError as exc:
            turn.calls.append(accounting.failed_call(turn.context, purpose="reply", error=exc))
            raise
        except (GeneratorExit, asyncio.CancelledError):
            turn.calls.append(
                accounting.abandoned_call(
                    turn.context,
                    request=request,
                    text=turn.round_text,
                    elapsed_ms=(time.perf_counter() - started) * 1000,
                    prices=self._prices,
                    counter=turn.counter,
                )
            )
            raise

    async def _run_tools(
        self, turn: _Turn, completion: Completion, messages: list[ChatMessage]
    ) -> AsyncGenerator[Event, None]:
        calls = completion.tool_calls
        messages.append(ChatMessage(role="assistant", content=completion.text, tool_calls=calls))
        for call in calls:
            yield ToolStarted(call_id=call.id, name=call.name, arguments=call.arguments)
        results = await self._tools.run_all(
            [(c.id, c.name, c.arguments) for c in calls],
            allowed=turn.version.tools,
            time_limit=self._config.tool_timeout,
        )
        room = turn.version.memory.context_tokens - self._request_tokens(turn, messages)
        share = max(room // len(results), 0)
        for result in results:
            if not result.ok:
                log.info("tool %s failed: %s", result.name, result.content)
            yield ToolFinished(call_id=result.call_id, name=result.name, ok=result.ok)
            content = _fit(result.content, share, turn.counter)
            messages.append(ChatMessage(role="tool", content=content, tool_call_id=result.call_id))

    def _request_tokens(self, turn: _Turn, messages: list[ChatMessage]) -> int:
        return turn.counter.count_request(wire_messages(messages), self._wire_tools(turn.version))

    def _wire_tools(self, version: PromptVersion) -> list[dict[str, Any]]:
        return [t.to_openai() for t in self._tools.definitions(version.tools)]

    async def _enforce_contract(
        self, turn: _Turn, messages: list[ChatMessage], schema: dict[str, Any]
    ) -> None:
        """Validate the reply; on a violation, one repair call that quotes the error."""
        check = contracts.check_reply(turn.round_text, schema)
        if not check.ok:
            turn.calls[-1].contract_error = check.error[:500]
            repair = [
                *messages,
                ChatMessage(role="assistant", content=turn.round_text),
                ChatMessage(role="user", content=contracts.repair_instruction(check.error, schema)),
            ]
            turn.text = ""
            request = ChatRequest(
                model=turn.model, messages=repair, params=turn.version.params.request_fields()
            )
            async with aclosing(self._call_streaming(turn, request)) as items:
                async for _ in items:
                    pass
            check = contracts.check_reply(turn.round_text, schema)
            if not check.ok:
                turn.calls[-1].contract_error = check.error[:500]
                raise contracts.ContractViolation(check.error)
        turn.text = check.text

    def _call_row(
        self, turn: _Turn, purpose: str, request: ChatRequest, completion: Completion
    ) -> LlmCall:
        return accounting.completed_call(
            turn.context,
            purpose=purpose,
            request=request,
            completion=completion,
            prices=self._prices,
            counter=turn.counter,
        )

    async def _finish(self, turn: _Turn) -> Completed:
        reply = _reply_message(turn, status="ok")
        await self._store.finish_turn(reply, turn.calls)
        turn.recorded = True
        assert reply.id is not None
        return Completed(
            message_id=reply.id,
            text=turn.text,
            usage=accounting.turn_usage(turn.calls),
            ttft_ms=turn.ttft_ms,
            total_ms=(time.perf_counter() - turn.started) * 1000,
            prompt_version=turn.version.label,
            model=turn.model,
        )

    async def _fail(self, turn: _Turn, exc: Exception) -> Failed:
        """Record what happened and tell the user in words they can act on."""
        message, retryable = _user_facing(exc)
        try:
            if isinstance(exc, TurnRefused) and turn.user_message and turn.user_message.id:
                # never fed back as history: it would be refused again, or poison a summary
                await self._store.set_message_status(turn.user_message.id, "refused")
            await self._record_unfinished(turn)
        except Exception:
            log.exception("could not record the failed turn")
        return Failed(
            user_message=message,
            retryable=retryable,
            error_class=type(exc).__name__,
            partial_text=turn.text if turn.shown else "",
        )

    async def _record_unfinished(self, turn: _Turn) -> None:
        """The calls a turn made, and its partial answer (kept, never fed back as history)."""
        partial = None
        if turn.text:
            partial = _reply_message(turn, status="incomplete")
        elif turn.user_message is not None:
            for call in turn.calls:
                call.message_id = turn.user_message.id
        await self._store.finish_turn(partial, turn.calls)
        turn.recorded = True


def _reply_message(turn: _Turn, *, status: str) -> Message:
    return Message(
        conversation_id=turn.conversation_id,
        role="assistant",
        text=turn.text,
        token_count=turn.counter.count_message(turn.text),
        status=status,
        prompt_version_id=turn.context.prompt_version_id,
    )


def _clean_name(name: str) -> str:
    """A display name as it may appear in a prompt: one line, bounded."""
    return " ".join(name.split())[:NAME_LIMIT]


def _fit(content: str, tokens: int, counter: TokenCounter) -> str:
    """A tool result cut to `tokens`, the room left for it in the context."""
    if counter.count_message(content) <= tokens:
        return content
    room = tokens - counter.count_message(TRUNCATED)
    if room < 8:
        return "error: no room left in the context for this result"
    cut = content[: room * 4]
    while counter.count(cut) > room:
        cut = cut[: len(cut) * 9 // 10]
    return cut + TRUNCATED


def _user_facing(exc: Exception) -> tuple[str, bool]:
    if isinstance(exc, LlmError):
        log.warning("model call failed: %s: %s", type(exc).__name__, exc)
        return exc.user_message, exc.retryable
    if isinstance(exc, contracts.ContractViolation):
        return exc.user_message, True
    if isinstance(exc, TurnRefused):
        return str(exc), False
    log.error("turn failed", exc_info=exc)
    return "Something went wrong on the assistant's side. Please try again.", True


def _cache_key(turn: _Turn, messages: list[ChatMessage]) -> str:
    """Identical context under the same version: same content hash, model, messages, tools
    and parameters."""
    material = {
        "version": turn.prompt.content_hash,
        "model": turn.model,
        "messages": [[m.role, m.content] for m in messages],
        "tools": sorted(turn.version.tools),
        "params": turn.version.params.request_fields(),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
