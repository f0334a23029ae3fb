"""The turn: claim the delivery, resolve the version, store the message, build the context,
call the model and run tools, check the contract, persist.

Each phase takes what it needs and returns what it produced; `respond` strings them together,
so the data flow of a turn reads top to bottom in one function. Every model call's record goes
into the turn's `Ledger` as the call ends, which is how a turn that fails or is abandoned still
accounts for what it spent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from assistant import accounting, contracts
from assistant.accounting import Ledger
from assistant.llm import ChatMessage, ChatModel, LlmError
from assistant.memory import ContextBuilder, MessageTooLong, Speaker, clean_name
from assistant.pricing import PriceTable
from assistant.prompts.files import PromptCatalog, PromptFile, PromptVersion
from assistant.prompts.versions import VersionResolver
from assistant.records import NewMessage
from assistant.rounds import Answer, ModelRounds
from assistant.store import Store
from assistant.store.repository import History
from assistant.store.tables import PromptVersionRow
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
)

log = logging.getLogger(__name__)

DEDUPE_WINDOW = timedelta(hours=24)  # Slack redelivers for minutes; keep keys far longer
CACHE_TTL = timedelta(hours=24)
CLAIM_FAILED = (
    "The assistant could not reach its database, so it did not answer. Please send your "
    "message again in a moment."
)
SETUP_FAILED = (
    "The assistant could not work out which prompt answers here, so it did not answer. "
    "Please send your message again in a moment."
)
STORE_FAILED = (
    "The assistant could not save your message, so it did not answer. Please send it again."
)
SOMETHING_WRONG = "Something went wrong on the assistant's side. Please try again."


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    default_model: str = "gpt-4o-mini"
    tool_timeout: float = 15.0
    max_tool_rounds: int = 5


class TurnRefused(Exception):
    """A turn we will not answer; the message tells the user what to change."""


@dataclass(frozen=True, kw_only=True)
class TurnSetup:
    """What resolution decided for one turn: where it belongs and which version answers."""

    inbound: Inbound
    prompt: PromptFile
    conversation_id: int
    prompt_version_id: int | None
    speaker: Speaker
    started: float = field(default_factory=time.perf_counter)

    @property
    def version(self) -> PromptVersion:
        return self.prompt.version

    @property
    def model(self) -> str:
        return self.speaker.model

    @property
    def counter(self) -> TokenCounter:
        return self.speaker.counter


@dataclass(kw_only=True)
class _Shown:
    """What the user has been shown of the answer, and when its first text came."""

    started: float
    text: str = ""
    ttft_ms: float | None = None

    def see(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            if self.ttft_ms is None:
                self.ttft_ms = (time.perf_counter() - self.started) * 1000
            self.text += event.text


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
        self.versions = VersionResolver(catalog, store.prompts)
        self._context = ContextBuilder(
            store=store, model=model, tools=tools, prices=prices, clock=clock
        )
        self._rounds = ModelRounds(
            model=model,
            tools=tools,
            prices=prices,
            context=self._context,
            tool_timeout=config.tool_timeout,
            max_rounds=config.max_tool_rounds,
        )
        self._prompt_rows: dict[str, int] = {}
        self._counters: dict[str, TokenCounter] = {}

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

    # ---- the turn

    async def respond(self, inbound: Inbound) -> AsyncGenerator[Event, None]:
        """The turn's events. A consumer may stop early (a user left, a socket closed): what
        the turn cost and any partial answer are still recorded."""
        opened: _Opened | None = None
        async with aclosing(self._open(inbound)) as steps:
            async for step in steps:
                if isinstance(step, _Opened):
                    opened = step
                else:
                    yield step
        if opened is not None:
            async with aclosing(self._answer(opened)) as events:
                async for event in events:
                    yield event

    async def _open(self, inbound: Inbound) -> AsyncGenerator[Event | _Opened, None]:
        """Claim the delivery, resolve the version and store the message; each step that
        fails tells the user what happened in its own words."""
        try:
            fresh = not inbound.dedupe_keys or await self._store.claim_event(
                inbound.dedupe_keys, keep=DEDUPE_WINDOW
            )
        except Exception:
            log.exception("could not claim the delivery")
            yield Failed(user_message=CLAIM_FAILED, retryable=True, error_class="StoreError")
            return
        if not fresh:
            yield Ignored(reason="duplicate delivery")
            return
        yield Thinking()
        try:
            setup = await self._setup(inbound)
        except TurnRefused as exc:
            yield Failed(user_message=str(exc), retryable=False, error_class="TurnRefused")
            return
        except Exception:
            log.exception("could not resolve the prompt version")
            yield Failed(user_message=SETUP_FAILED, retryable=True, error_class="StoreError")
            return
        message = _user_message(setup)
        try:
            message_id, history = await self._store_user_message(setup, message)
        except Exception:
            log.exception("could not store the user's message")
            yield Failed(user_message=STORE_FAILED, retryable=True, error_class="StoreError")
            return
        yield _Opened(
            setup=setup, message_id=message_id, message_tokens=message.token_count, history=history
        )

    async def _answer(self, opened: _Opened) -> AsyncGenerator[Event, None]:
        """Everything after the message is safe: the model's answer, persisted however the
        turn ends."""
        setup, message_id = opened.setup, opened.message_id
        ledger = Ledger()
        shown = _Shown(started=setup.started)
        recorded = False
        try:
            async with aclosing(self._converse(opened, ledger)) as events:
                async for event in events:
                    shown.see(event)
                    yield event
            completed = await self._finish(setup, shown, ledger)
            recorded = True
            yield completed
        except Exception as exc:
            recorded = True
            yield await self._fail(setup, message_id, shown, ledger, exc)
        except (GeneratorExit, asyncio.CancelledError):
            if not recorded:
                await asyncio.shield(self._record_unfinished(setup, message_id, shown, ledger))
            raise

    async def _setup(self, inbound: Inbound) -> TurnSetup:
        conversation_id = await self._store.conversation_id(inbound.ref)
        prompt = await self._prompt_for(inbound, conversation_id)
        model = prompt.version.model or self._config.default_model
        return TurnSetup(
            inbound=inbound,
            prompt=prompt,
            conversation_id=conversation_id,
            prompt_version_id=await self._prompt_row_id(prompt),
            speaker=Speaker(
                version=prompt.version,
                actor=inbound.actor,
                model=model,
                counter=self._counter(model),
            ),
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

    async def _store_user_message(
        self, setup: TurnSetup, message: NewMessage
    ) -> tuple[int, History]:
        policy = setup.version.memory
        return await self._store.begin_turn(
            setup.conversation_id,
            message,
            prompt_version_id=setup.prompt_version_id,
            token_limit=max(policy.summarize_over_tokens, policy.context_tokens),
        )

    async def _converse(self, opened: _Opened, ledger: Ledger) -> AsyncGenerator[Event, None]:
        """Answer from the cache, or call the model (with tools) and check its contract."""
        setup = opened.setup
        messages = await self._context.build(
            setup.speaker, opened.history, message_tokens=opened.message_tokens, ledger=ledger
        )
        use_cache = setup.version.cache and setup.inbound.use_cache
        cache_key = _cache_key(setup, messages) if use_cache else None
        if cache_key is not None:
            cached = await self._from_cache(setup, cache_key, ledger)
            if cached is not None:
                yield TextDelta(text=cached)
                return
        answer: Answer | None = None
        async with aclosing(self._rounds.answer(setup.speaker, messages, ledger)) as items:
            async for item in items:
                if isinstance(item, Answer):
                    answer = item
                else:
                    yield item
        assert answer is not None
        text = answer.text
        if setup.version.response_schema is not None:
            text = await self._rounds.settle_contract(setup.speaker, messages, answer.final, ledger)
            yield TextDelta(text=text)
        if cache_key is not None and not answer.used_tools and setup.prompt_version_id:
            await self._store.prompts.cache_reply(cache_key, setup.prompt_version_id, text)

    async def _from_cache(self, setup: TurnSetup, key: str, ledger: Ledger) -> str | None:
        cached = await self._store.prompts.cached_reply(key, max_age=CACHE_TTL)
        if cached is not None:
            elapsed = (time.perf_counter() - setup.started) * 1000
            ledger.add(accounting.cache_hit_call(model=setup.model, elapsed_ms=elapsed))
        return cached

    async def _finish(self, setup: TurnSetup, shown: _Shown, ledger: Ledger) -> Completed:
        calls = ledger.calls
        reply_id = await self._store.finish_turn(
            setup.conversation_id,
            prompt_version_id=setup.prompt_version_id,
            reply=_reply(setup, shown.text, status="ok"),
            calls=calls,
        )
        assert reply_id is not None
        return Completed(
            message_id=reply_id,
            text=shown.text,
            usage=accounting.turn_usage(calls),
            ttft_ms=shown.ttft_ms,
            total_ms=(time.perf_counter() - setup.started) * 1000,
            prompt_version=setup.version.label,
            model=setup.model,
        )

    async def _fail(
        self, setup: TurnSetup, message_id: int, shown: _Shown, ledger: Ledger, exc: Exception
    ) -> Failed:
        """Record what happened and tell the user in words they can act on."""
        message, retryable = _user_facing(exc)
        try:
            if isinstance(exc, MessageTooLong):
                # never fed back as history: it would be refused again, or poison a summary
                await self._store.set_message_status(message_id, "refused")
            await self._record_unfinished(setup, message_id, shown, ledger)
        except Exception:
            log.exception("could not record the failed turn")
        return Failed(
            user_message=message,
            retryable=retryable,
            error_class=type(exc).__name__,
            partial_text=shown.text,
        )

    async def _record_unfinished(
        self, setup: TurnSetup, message_id: int, shown: _Shown, ledger: Ledger
    ) -> None:
        """The calls a turn made, and its partial answer (kept, never fed back as history)."""
        await self._store.finish_turn(
            setup.conversation_id,
            prompt_version_id=setup.prompt_version_id,
            reply=_reply(setup, shown.text, status="incomplete") if shown.text else None,
            calls=ledger.calls,
            user_message_id=message_id,
        )


@dataclass(frozen=True, kw_only=True)
class _Opened:
    """A turn whose message is stored: what answering it needs."""

    setup: TurnSetup
    message_id: int
    message_tokens: int
    history: History


def _user_message(setup: TurnSetup) -> NewMessage:
    inbound = setup.inbound
    return NewMessage(
        role="user",
        author_id=inbound.actor.qualified_id[:128],
        author_name=clean_name(inbound.actor.display_name),
        text=inbound.text,
        token_count=setup.counter.count_message(inbound.text),
        platform_message_id=(inbound.platform_message_id or "")[:128] or None,
    )


def _reply(setup: TurnSetup, text: str, *, status: str) -> NewMessage:
    return NewMessage(
        role="assistant",
        text=text,
        token_count=setup.counter.count_message(text),
        status=status,
    )


def _user_facing(exc: Exception) -> tuple[str, bool]:
    if isinstance(exc, LlmError):
        log.warning("model call failed: %s: %s", type(exc).__name__, exc)
        return exc.user_message, exc.retryable
    if isinstance(exc, contracts.ContractViolation):
        return exc.user_message, True
    if isinstance(exc, MessageTooLong | TurnRefused):
        return str(exc), False
    log.error("turn failed", exc_info=exc)
    return SOMETHING_WRONG, True


def _cache_key(setup: TurnSetup, messages: list[ChatMessage]) -> str:
    """Identical context under the same version: same content hash, model, messages, tools
    and parameters."""
    material = {
        "version": setup.prompt.content_hash,
        "model": setup.model,
        "messages": [[m.role, m.content] for m in messages],
        "tools": sorted(setup.version.tools),
        "params": setup.version.params.request_fields(),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
