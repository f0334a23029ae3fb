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
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from assistant import accounting, contracts
from assistant.access import GATED_PLATFORMS, AccessGate, AccessPolicy, decide
from assistant.accounting import Ledger
from assistant.approvals import Approvals
from assistant.attachments import NO_FILES, AttachmentLimits, PreparedMessage, prepare
from assistant.budgets import BUDGET_EXCEEDED, Budgets
from assistant.llm import ChatMessage, ChatModel, LlmError, LlmImagesRefused
from assistant.memory import ContextBuilder, MessageTooLong, clean_name
from assistant.observe import (
    NO_OBSERVER,
    UNWATCHED,
    Guarded,
    Observer,
    TurnEnded,
    TurnStarted,
    TurnWatch,
    tell_calls,
)
from assistant.owed import OwedAnswers, new_worker_id
from assistant.planning import TurnPlanner, TurnRefused, TurnSetup
from assistant.pricing import PriceTable
from assistant.prompts.files import PromptCatalog, PromptVersion
from assistant.prompts.versions import VersionResolver
from assistant.records import CallRecord, NewMessage, OrphanedTurn, PendingReply
from assistant.rounds import Answer, ModelRounds
from assistant.store import Store
from assistant.store.approval_store import Verdict
from assistant.store.report_store import CallTotals, ReportQueries
from assistant.store.repository import History
from assistant.tools import ToolContext, ToolRegistry
from assistant.turns import (
    Actor,
    Completed,
    ConversationRef,
    Event,
    Failed,
    Ignored,
    Inbound,
    Source,
    TextDelta,
    Thinking,
)

log = logging.getLogger(__name__)

DEDUPE_WINDOW = timedelta(hours=24)  # Slack redelivers for minutes; keep keys far longer
CACHE_TTL = timedelta(hours=24)
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
    approval_timeout: float = 120.0  # a tool that acts for the user waits this long for a yes
    max_tool_rounds: int = 5
    heartbeat_seconds: float = 10.0  # how often a serving process says it is alive
    only_model: str | None = None  # every version asks this model, fallbacks none (`--fake`)
    access: AccessPolicy = field(default_factory=AccessPolicy)  # who may talk (all: open)
    # what adapters fetch of the files users send (ATTACHMENT_MAX_BYTES, ATTACHMENT_MAX_COUNT)
    attachments: AttachmentLimits = field(default_factory=AttachmentLimits)
    daily_budget_usd: float | None = None  # DAILY_BUDGET_USD: a budget set from chat wins


@dataclass(kw_only=True)
class _Shown:
    """What the user has been shown of the answer, and when its first text came."""

    started: float
    text: str = ""
    ttft_ms: float | None = None

    def see(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            if self.ttft_ms is None and not event.aside:
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
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self._store = store
        self._observer = observer  # traces and metrics, when the process has them
        self._model = model
        self._tools = tools
        self._prices = prices
        self._config = config
        self.versions = VersionResolver(catalog, store.prompts)
        self.approvals = Approvals(store.approvals, timeout=config.approval_timeout)
        self._planner = TurnPlanner(
            store, self.versions, default_model=config.default_model, only_model=config.only_model
        )
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
            approvals=self.approvals,
        )
        self.owed = OwedAnswers(
            store, worker_id=new_worker_id(), beat_seconds=config.heartbeat_seconds
        )
        self._access = AccessGate(config.access, store, keep=DEDUPE_WINDOW, clock=clock)
        self.budgets = Budgets(store.budgets, daily_usd=config.daily_budget_usd, clock=clock)

    @property
    def prices(self) -> PriceTable:
        return self._prices

    async def record_calls(self, calls: Sequence[CallRecord], *, surface: str) -> None:
        """Model calls made outside any turn (an eval's judge): stored, so reports, budgets
        and `/cost` count them, and told to the instruments, so traces and metrics agree."""
        await self._store.record_calls(calls)
        tell_calls(self._observer, calls, surface=surface)

    @property
    def access(self) -> AccessPolicy:
        """Who may talk here: an adapter reads what the rules need (a DM author's roles)."""
        return self._config.access

    def listed_out(self, inbound: Inbound) -> bool:
        """Whether the access lists refuse `inbound` (no store read): an adapter fetches no
        file of a message that will not be answered. `accept` still says the refusal."""
        gated = inbound.ref.platform in GATED_PLATFORMS
        return gated and decide(self._config.access, inbound) is not None

    @property
    def attachment_limits(self) -> AttachmentLimits:
        """What an adapter may fetch of a message's files (it checks before downloading)."""
        return self._config.attachments

    async def sync_prompts(self) -> None:
        """Store every loaded version (refusing edited released files) and remember their ids."""
        await self._planner.sync_prompts()

    async def history_length(self, ref: ConversationRef) -> int:
        """How many messages a conversation already holds (0 for a new one)."""
        conversation = await self._store.find_conversation(ref)
        if conversation is None or conversation.id is None:
            return 0
        return await self._store.count_messages(conversation.id)

    async def threads_in(self, ref: ConversationRef) -> list[tuple[str, int]]:
        """The conversations in `ref`'s channel, newest first, with their message counts."""
        return await self._store.threads(ref.platform, ref.workspace, ref.channel)

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
        return await self._store.votes.record(message_id, actor.qualified_id, vote)

    async def claim_event(self, keys: Sequence[str], *, keep: timedelta) -> bool:
        """Whether this delivery is new (none of `keys` seen before): every replica asks the
        same store, so a platform event, or a replayed slash command, acts once."""
        return await self._store.claim_event(keys, keep=keep)

    async def sources_of(self, message_id: int) -> list[Source]:
        """The sources stored with an answer: shown again when a restart shows it again."""
        return await self._store.sources_of(message_id)

    async def decide(self, approval_id: int, actor: Actor, *, approve: bool) -> Verdict:
        """`actor` pressed Approve or Decline on a tool's ask: it counts only when they are the
        one asked and the ask is still open (see `Verdict`)."""
        return await self.approvals.decide(approval_id, actor, approve=approve)

    async def answer_conversation(self, message_id: int) -> ConversationRef | None:
        """Where answer `message_id` was given (votes count only there); None for no answer."""
        return await self._store.votes.answer_place(message_id)

    async def version_for(self, ref: ConversationRef) -> PromptVersion:
        """The version that answers in `ref` now, as a turn there would resolve it: a greeting
        and a home tab name the one that will answer. The conversation is created if new, so
        an A/B split draws once and the greeting and the answers agree."""
        conversation_id = await self._store.conversation_id(ref)
        return (await self.versions.resolve(ref, conversation_id)).version

    async def calls_between(self, start: datetime, end: datetime) -> list[CallTotals]:
        """The model calls of [start, end), summed by the report's own query (a home tab shows
        today's spend: its figure agrees with the report's)."""
        return await ReportQueries(self._store.engine).call_totals(start, end, by_day=True)

    # ---- the turn

    async def respond(self, inbound: Inbound) -> AsyncGenerator[Event, None]:
        """The turn's events: `accept`, then `answer`. A consumer may stop early (a user left, a
        socket closed): what the turn cost and any partial answer are still recorded."""
        accepted = await self.accept(inbound)
        if not isinstance(accepted, Accepted):
            yield accepted
            return
        async with aclosing(self.answer(accepted)) as events:
            async for event in events:
                yield event

    async def accept(self, inbound: Inbound) -> Accepted | Failed | Ignored:
        """`_accept`, with a message that gets no answer from the model told to the
        instruments: a database outage or a refusal shows on the dashboards too."""
        accepted = await self._accept(inbound)
        if isinstance(accepted, Failed):
            self._unanswered(inbound, accepted)
        return accepted

    def _unanswered(self, inbound: Inbound, failed: Failed) -> None:
        started = TurnStarted(
            started_ns=time.time_ns(),
            surface=inbound.ref.platform,
            conversation=inbound.ref,
            prompt_version="",
            model="",
            message_id=0,
            text=inbound.text,
        )
        ended = _ended(failed, _Shown(started=time.perf_counter()), Ledger())
        self._watching(started).end(ended)

    async def _accept(self, inbound: Inbound) -> Accepted | Failed | Ignored:
        """Resolve the version, then claim the delivery and store the message in one
        transaction. Fast enough to finish before a platform is acked, so an acked message is
        never lost; each step that fails says so in its own words. A message its sender may not
        send (see `assistant.access`) is refused first: nothing of it is stored."""
        try:
            refusal = await self._access.check(inbound)
            if refusal is not None:
                return await self._access.refuse(inbound, refusal)
        except Exception:
            log.exception("could not check who may talk here")
            return Failed(user_message=SOMETHING_WRONG, retryable=True, error_class="StoreError")
        try:
            setup = await self._planner.plan(inbound)
        except TurnRefused as exc:
            return Failed(user_message=str(exc), retryable=False, error_class="TurnRefused")
        except Exception:
            log.exception("could not resolve the prompt version")
            return Failed(user_message=SETUP_FAILED, retryable=True, error_class="StoreError")
        files = self._read_files(setup)
        message = _user_message(setup, files.text)
        try:
            stored = await self._store_user_message(setup, message, files.record())
        except Exception:
            log.exception("could not store the user's message")
            return Failed(user_message=STORE_FAILED, retryable=True, error_class="StoreError")
        if stored is None:
            return Ignored(reason="duplicate delivery")
        message_id, history = stored
        owed = inbound.reply_place is not None
        return Accepted(
            setup=setup,
            message_id=message_id,
            message_tokens=message.token_count,
            history=history,
            turn_id=message_id if owed else None,
            files=files,
        )

    def _read_files(self, setup: TurnSetup) -> PreparedMessage:
        """The message with its files read for the model that answers (see attachments.py)."""
        inbound = setup.inbound
        return prepare(
            inbound.text,
            inbound.attachments,
            sees_images=self._model.sees_images(setup.model),
            counter=setup.counter,
            budget=self._context.budget(setup.speaker),
            limits=self._config.attachments,
        )

    async def resume(self, orphan: OrphanedTurn) -> AsyncGenerator[Event, None]:
        """Answer a turn a stopped process cut short: its message is stored already."""
        inbound = _inbound_of(orphan)
        try:
            # what the stopped process asked can no longer run: a click on it is too late
            await self._store.approvals.expire_open(orphan.message_id)
            setup = await self._planner.plan(inbound)
            history = await self._store.read_history(
                setup.conversation_id, token_limit=setup.version.memory.history_tokens
            )
        except Exception as exc:
            log.exception("could not resume a turn")
            text = str(exc) if isinstance(exc, TurnRefused) else SETUP_FAILED
            yield Failed(user_message=text, retryable=True, error_class=type(exc).__name__)
            return
        accepted = Accepted(
            setup=setup,
            message_id=orphan.message_id,
            message_tokens=orphan.token_count,
            history=history,
            turn_id=orphan.message_id,
        )
        async with aclosing(self.answer(accepted)) as events:
            async for event in events:
                yield event

    async def answer(self, accepted: Accepted) -> AsyncGenerator[Event, None]:
        """Everything after the message is safe: the model's answer, persisted however the
        turn ends. An owed turn stays owed until its surface has shown the end (see
        `OwedAnswers.settle`): a crash before that leaves it for a restart to finish."""
        yield Thinking(turn_id=accepted.turn_id)
        async with aclosing(self._answer(accepted)) as events:
            async for event in events:
                yield event

    async def _over_budget(self, accepted: Accepted) -> Failed | None:
        """A plain answer, and no model call, when a budget that applies here is spent. Checked
        here rather than in `accept`: after the platform's ack (the sum is one query, but not
        a free one), with the message stored, and for a resumed turn too; and a turn that
        ends here is settled like any other that failed. A check that cannot be made lets
        the turn go on (logged): a database hiccup must not silence the assistant."""
        try:
            refusal = await self.budgets.refusal(accepted.setup.inbound.ref)
        except Exception:
            log.exception("could not check the budgets; answering anyway")
            return None
        if refusal is None:
            return None
        return Failed(user_message=refusal, retryable=False, error_class=BUDGET_EXCEEDED)

    async def _answer(self, opened: Accepted) -> AsyncGenerator[Event, None]:
        setup, message_id = opened.setup, opened.message_id
        inbound = setup.inbound
        watch = self._watch(opened)
        ledger = Ledger(on_add=watch.call)
        tools = ToolContext(
            ref=inbound.ref,
            account=ledger.add,
            message_id=message_id,
            requester=inbound.actor if inbound.can_ask else None,
            watch=watch,
        )
        shown = _Shown(started=setup.started)
        ended: Completed | Failed | None = None
        told = False  # the instruments heard the end: before the surface shows it, so a
        # dashboard never lags an answer a user has seen

        def tell(end: Completed | Failed | None) -> None:
            nonlocal told
            if not told:
                told = True
                watch.end(_ended(end, shown, ledger))

        try:
            ended = await self._over_budget(opened)
            if ended is not None:  # a plain answer, no model call: counted as refused
                tell(ended)
                yield ended
                return
            async with aclosing(self._converse(opened, ledger, tools)) as events:
                async for event in events:
                    shown.see(event)
                    yield event
            sources = cited(shown.text, tools.sources)
            ended = await self._finish(setup, message_id, shown, ledger, sources)
            tell(ended)
            yield ended
        except Exception as exc:
            ended = await self._fail(setup, message_id, shown, ledger, exc)
            tell(ended)
            yield ended
        except (GeneratorExit, asyncio.CancelledError):
            if ended is None:
                unfinished = self._record_unfinished(setup, message_id, shown, ledger)
                await asyncio.shield(unfinished)
            raise
        finally:
            tell(ended)  # abandoned: the consumer went away before an end

    def _watch(self, opened: Accepted) -> TurnWatch:
        setup = opened.setup
        started = TurnStarted(
            started_ns=time.time_ns() - int((time.perf_counter() - setup.started) * 1e9),
            surface=setup.inbound.ref.platform,
            conversation=setup.inbound.ref,
            prompt_version=setup.version.label,
            model=setup.model,
            message_id=opened.message_id,
            text=setup.inbound.text,
        )
        return self._watching(started)

    def _watching(self, started: TurnStarted) -> TurnWatch:
        """The instruments' watch on a turn; none when they cannot start one (logged)."""
        try:
            return Guarded(self._observer.turn(started))
        except Exception:
            log.exception("an instrument failed to start watching a turn")
            return UNWATCHED

    async def _store_user_message(
        self, setup: TurnSetup, message: NewMessage, attachments: str | None
    ) -> tuple[int, History] | None:
        inbound, policy = setup.inbound, setup.version.memory
        pending = None
        if inbound.reply_place is not None:
            pending = PendingReply(
                surface=inbound.ref.platform, place=inbound.reply_place, owner=self.owed.worker_id
            )
        return await self._store.begin_turn(
            setup.conversation_id,
            message,
            prompt_version_id=setup.prompt_version_id,
            token_limit=policy.history_tokens,
            claim=inbound.dedupe_keys,
            keep=DEDUPE_WINDOW,
            pending=pending,
            attachments=attachments,
        )

    async def _converse(
        self, opened: Accepted, ledger: Ledger, tools: ToolContext
    ) -> AsyncGenerator[Event, None]:
        """Answer from the cache, or call the model (with tools) and check its contract. What
        the model could not see of the message's files is said first (not to a version whose
        answer is a JSON contract)."""
        setup = opened.setup
        notice = opened.files.notice() if setup.version.response_schema is None else ""
        if notice:
            yield TextDelta(text=notice, aside=True)
        messages = await self._context_for(opened, opened.files, ledger)
        use_cache = setup.version.cache and setup.inbound.use_cache and not opened.files.images
        cache_key = _cache_key(setup, messages) if use_cache else None
        if cache_key is not None:
            cached = await self._from_cache(setup, cache_key, ledger)
            if cached is not None:
                yield TextDelta(text=cached)
                return
        answer: Answer | None = None
        seen = self._seen_answer(opened, messages, ledger, tools)
        async with aclosing(seen) as items:
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

    async def _seen_answer(
        self, opened: Accepted, messages: list[ChatMessage], ledger: Ledger, tools: ToolContext
    ) -> AsyncGenerator[Event | Answer, None]:
        """The model's answer; when its server refuses the message's images before anything
        was shown, once more without them, the model told it could not see them (and the
        record of what it saw corrected). The model client remembers the refusal, so later
        turns send that model no images."""
        setup, files = opened.setup, opened.files
        while True:
            shown = files

            def rebuild(files: PreparedMessage = shown) -> Awaitable[list[ChatMessage]]:
                return self._context_for(opened, files, ledger)

            said = False
            fitted = self._rounds.fitted_answer(setup.speaker, messages, ledger, rebuild, tools)
            try:
                async with aclosing(fitted) as items:
                    async for item in items:
                        said = said or not isinstance(item, Answer)
                        yield item
                return
            except LlmImagesRefused:
                if said or not files.images:
                    raise
            files = files.refused()
            await self._store.set_message_attachments(opened.message_id, files.record())
            notice = files.notice(said=shown.notice())
            if notice and setup.version.response_schema is None:
                yield TextDelta(text=notice, aside=True)
            messages[:] = await self._context_for(opened, files, ledger)

    def _context_for(
        self, opened: Accepted, files: PreparedMessage, ledger: Ledger
    ) -> Awaitable[list[ChatMessage]]:
        """The turn's context, its user message showing `files` (this turn's images)."""

        async def build() -> list[ChatMessage]:
            messages = await self._context.build(
                opened.setup.speaker,
                opened.history,
                message_tokens=opened.message_tokens + files.image_tokens,
                ledger=ledger,
                extra_tokens=files.image_tokens,
            )
            return files.show(messages)

        return build()

    async def _from_cache(self, setup: TurnSetup, key: str, ledger: Ledger) -> str | None:
        cached = await self._store.prompts.cached_reply(key, max_age=CACHE_TTL)
        if cached is not None:
            elapsed = (time.perf_counter() - setup.started) * 1000
            ledger.add(accounting.cache_hit_call(model=setup.model, elapsed_ms=elapsed))
        return cached

    async def _finish(
        self,
        setup: TurnSetup,
        message_id: int,
        shown: _Shown,
        ledger: Ledger,
        sources: tuple[Source, ...],
    ) -> Completed:
        calls = ledger.calls
        reply_id = await self._store.finish_turn(
            setup.conversation_id,
            prompt_version_id=setup.prompt_version_id,
            reply=_reply(setup, shown.text, status="ok"),
            calls=calls,
            user_message_id=message_id,
            sources=sources,
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
            sources=sources,
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
            usage=accounting.turn_usage(ledger.calls),
            contract_error=str(exc) if isinstance(exc, contracts.ContractViolation) else None,
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
class Accepted:
    """A turn whose message is stored: what answering it needs. `turn_id` is set when a
    restart would come back to it (the surface gave a place to answer)."""

    setup: TurnSetup
    message_id: int
    message_tokens: int
    history: History
    turn_id: int | None
    # the message's files as read for the model (a resumed turn has only the stored text:
    # its images were that turn's alone)
    files: PreparedMessage = NO_FILES


# turns ended by a rule (access, budget), counted apart from failures
REFUSALS = frozenset({"AccessDenied", "RateLimited", "BudgetExceeded"})


def _ended(ended: Completed | Failed | None, shown: _Shown, ledger: Ledger) -> TurnEnded:
    """How a turn ended, for its instruments: answered, failed, or left (its consumer went
    away before an end was yielded)."""
    total_ms = (time.perf_counter() - shown.started) * 1000
    if isinstance(ended, Completed):
        return TurnEnded(
            outcome="completed",
            error_class=None,
            usage=ended.usage,
            ttft_ms=ended.ttft_ms,
            total_ms=ended.total_ms,
            text=ended.text,
        )
    if ended is None:
        outcome = "abandoned"
    elif ended.error_class in REFUSALS:
        outcome = "refused"  # the operator's rule, not a fault: no error to alert on
    else:
        outcome = "failed"
    return TurnEnded(
        outcome=outcome,
        error_class=ended.error_class if ended is not None else "Abandoned",
        usage=accounting.turn_usage(ledger.calls),
        ttft_ms=shown.ttft_ms,
        total_ms=total_ms,
        text=shown.text,
    )


def _inbound_of(orphan: OrphanedTurn) -> Inbound:
    platform, _, user_id = orphan.author_id.partition(":")
    return Inbound(
        ref=ConversationRef(
            platform=orphan.platform,
            workspace=orphan.workspace,
            channel=orphan.channel,
            thread=orphan.thread,
        ),
        actor=Actor(platform=platform, user_id=user_id, display_name=orphan.author_name),
        text=orphan.text,
        reply_place=orphan.place,
    )


_CITATION = re.compile(r"\[(\d{1,3})\]")


def cited(text: str, found: Sequence[Source]) -> tuple[Source, ...]:
    """The sources an answer cites by number ([1], [2] …); all it was given when it cites
    none by number, since it may still have drawn on them, and showing none would hide
    where the answer came from."""
    numbers = {int(n) for n in _CITATION.findall(text)}
    chosen = [source for source in found if source.number in numbers]
    return tuple(chosen or found)


def _user_message(setup: TurnSetup, text: str) -> NewMessage:
    """The user's message as stored: `text` is theirs, with their files inlined or named."""
    inbound = setup.inbound
    return NewMessage(
        role="user",
        author_id=inbound.actor.qualified_id[:128],
        author_name=clean_name(inbound.actor.display_name),
        text=text,
        token_count=setup.counter.count_message(text),
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
