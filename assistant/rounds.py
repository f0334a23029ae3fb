"""The model's side of a turn: call it, run the tools it asks for, repeat until it answers in
text, and hold the answer to the version's output contract (one repair call at most).

Every call's record goes into the turn's ledger as the call ends, its flags (cut off by the
provider, contract broken) set when the record is made.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace

from assistant import accounting, contracts
from assistant.accounting import Ledger
from assistant.approvals import Approvals, Request, refusal
from assistant.llm import (
    ChatMessage,
    ChatModel,
    ChatRequest,
    Completion,
    LlmContextOverflow,
    LlmEmptyStream,
    LlmError,
    LlmRateLimited,
    LlmTimeout,
    LlmUnavailable,
    ToolCallRequest,
)
from assistant.memory import ContextBuilder, Speaker, fit
from assistant.pricing import PriceTable
from assistant.records import CallRecord
from assistant.store.approval_store import APPROVED, UNASKED
from assistant.tools import ToolContext, ToolRegistry, ToolResult
from assistant.turns import (
    ApprovalAsked,
    ApprovalDecided,
    Event,
    TextDelta,
    ToolFinished,
    ToolStarted,
)

log = logging.getLogger(__name__)

# What a fallback model may answer instead of the primary: the primary is down, busy, silent,
# or cannot hold the context (a fallback may have a larger one).
STAND_IN_FOR = (LlmUnavailable, LlmRateLimited, LlmTimeout, LlmEmptyStream, LlmContextOverflow)

REPAIR = "repair"  # the purpose of the call that asks a reply breaking its schema again

CUT_OFF_NOTES = {
    "length": "\n\n[The answer was cut off: it reached the length limit.]",
    "content_filter": "\n\n[The answer was stopped by the provider's content filter.]",
}


@dataclass(frozen=True, kw_only=True)
class RoundEnd:
    """One model call, ended: its completion and the note shown when it was cut off."""

    completion: Completion
    note: str
    check: contracts.ContractCheck | None  # a final answer of a version with a schema
    model: str  # the model asked (the version's own, or the fallback that answered)


@dataclass(frozen=True, kw_only=True)
class Answer:
    """What the model rounds of a turn produced: the last round, and whether tools ran (an
    answer built on tool results is not safe to cache)."""

    final: RoundEnd
    text: str
    used_tools: bool


class ModelRounds:
    """Runs the model rounds of one turn at a time; holds only what every turn shares."""

    def __init__(
        self,
        *,
        model: ChatModel,
        tools: ToolRegistry,
        prices: PriceTable,
        context: ContextBuilder,
        tool_timeout: float,
        max_rounds: int,
        approvals: Approvals | None = None,
    ) -> None:
        self._model = model
        self._tools = tools
        self._approvals = approvals
        self._prices = prices
        self._context = context
        self._tool_timeout = tool_timeout
        self._max_rounds = max_rounds

    async def fitted_answer(
        self,
        speaker: Speaker,
        messages: list[ChatMessage],
        ledger: Ledger,
        rebuild: Callable[[], Awaitable[list[ChatMessage]]],
        context: ToolContext,
    ) -> AsyncGenerator[Event | Answer, None]:
        """`answer`; when the model's server refuses the context as too long (or, as llama.cpp
        does, answers with nothing) before anything was shown, once more with the context
        rebuilt to what it holds (`messages` is replaced in place, so the caller's contract
        repair sees what was sent). The user's own message is never cut: when it alone does
        not fit, `rebuild` raises `MessageTooLong`, and the message is kept out of later turns."""
        for retry in (False, True):
            said = False
            try:
                async with aclosing(self.answer(speaker, messages, ledger, context)) as items:
                    async for item in items:
                        said = said or not isinstance(item, Answer)
                        yield item
                return
            except (LlmContextOverflow, LlmEmptyStream) as refusal:
                # learnt even when the turn cannot be tried again (a later round's tool
                # results overflowed): the next turn's context and tool results keep within it
                self._context.shrink(speaker, messages, refusal)
                if said or retry:
                    raise
            messages[:] = await rebuild()

    async def answer(
        self,
        speaker: Speaker,
        messages: list[ChatMessage],
        ledger: Ledger,
        context: ToolContext,
    ) -> AsyncGenerator[Event | Answer, None]:
        """Call the model, run the tools it asks for, and repeat until it answers in text;
        ends with the `Answer`."""
        streams = speaker.version.response_schema is None  # a JSON contract is shown validated
        text, used_tools = "", False
        end: RoundEnd | None = None
        models = Models(speaker)
        for round_number in range(self._max_rounds + 1):
            last_round = round_number == self._max_rounds
            request = ChatRequest(
                model=models.current,
                messages=messages,
                tools=[] if last_round else self._tools.definitions(speaker.version.tools),
                tool_choice=_tool_choice(speaker, round_number),
                params=speaker.version.params.request_fields(),
            )
            end = None
            separate = bool(text) and not text.endswith("\n")
            async with aclosing(self._call(speaker, request, ledger, models)) as items:
                async for item in items:
                    if isinstance(item, RoundEnd):
                        end = item
                    elif streams:
                        if separate:  # a later round's text starts on its own paragraph
                            separate = False
                            text += "\n\n"
                            yield TextDelta(text="\n\n")
                        text += item.text
                        yield item
            assert end is not None
            if end.note and streams:
                text += end.note
                yield TextDelta(text=end.note)
            if not end.completion.tool_calls:
                yield Answer(final=end, text=text, used_tools=used_tools)
                return
            used_tools = True
            async with aclosing(
                self._run_tools(speaker, end.completion, messages, context)
            ) as events:
                async for event in events:
                    yield event
        assert end is not None  # the last round offered no tools, yet the model asked for some
        yield Answer(final=end, text=text, used_tools=used_tools)

    async def _call(
        self, speaker: Speaker, request: ChatRequest, ledger: Ledger, models: Models
    ) -> AsyncGenerator[TextDelta | RoundEnd, None]:
        """One round, answered by the turn's current model, or by the next of the version's
        fallbacks when it fails before saying anything. The turn keeps whichever answered."""
        while True:
            said = False
            try:
                async with aclosing(self._round(speaker, request, ledger)) as items:
                    async for item in items:
                        said = True
                        yield item
                return
            except STAND_IN_FOR as exc:
                if said or not models.fall_back():
                    raise
                if isinstance(exc, LlmContextOverflow) and request.model == speaker.model:
                    # this turn the fallback holds it; later turns fit the version's own model
                    self._context.shrink(speaker, request.messages, exc)
                log.warning(
                    "model %s failed (%s: %s); %s answers instead",
                    request.model,
                    type(exc).__name__,
                    exc,
                    models.current,
                )
                request = replace(request, model=models.current)

    async def _round(
        self, speaker: Speaker, request: ChatRequest, ledger: Ledger, *, purpose: str = "reply"
    ) -> AsyncGenerator[TextDelta | RoundEnd, None]:
        """One model call: its text as it streams, then its end. The call's record, its flags
        set (cut off, contract broken), goes into the ledger however the call ends."""
        streamed: list[str] = []
        started = time.perf_counter()
        stood_in = speaker.model if request.model != speaker.model else None

        def account(record: CallRecord) -> None:
            ledger.add(replace(record, fallback_for=stood_in))

        try:
            async with aclosing(self._model.stream(request)) as stream:
                async for item in stream:
                    if isinstance(item, Completion):
                        check = _contract_check(speaker, item)
                        account(self._completed(speaker, request, item, check, purpose))
                        note = _cut_off_note(item)
                        yield RoundEnd(completion=item, note=note, check=check, model=request.model)
                    else:
                        streamed.append(item)
                        yield TextDelta(text=item)
        except LlmError as exc:
            account(accounting.failed_call(purpose=purpose, model=request.model, error=exc))
            raise
        except (GeneratorExit, asyncio.CancelledError):
            elapsed_ms = (time.perf_counter() - started) * 1000
            account(
                accounting.abandoned_call(
                    purpose=purpose,
                    request=request,
                    text="".join(streamed),
                    elapsed_ms=elapsed_ms,
                    prices=self._prices,
                    counter=speaker.counter,
                )
            )
            raise

    def _completed(
        self,
        speaker: Speaker,
        request: ChatRequest,
        completion: Completion,
        check: contracts.ContractCheck | None,
        purpose: str,
    ) -> CallRecord:
        """The record of a call that completed; being cut off by the provider, or breaking
        the version's contract, is said on the record itself."""
        reason = completion.finish_reason
        if reason in CUT_OFF_NOTES:
            log.warning("model reply stopped early: finish_reason=%s", reason)
        return accounting.completed_call(
            purpose=purpose,
            request=request,
            completion=completion,
            prices=self._prices,
            counter=speaker.counter,
            error_class=f"finish_reason:{reason}" if reason in CUT_OFF_NOTES else None,
            contract_error=check.error if check is not None and not check.ok else None,
        )

    async def _run_tools(
        self,
        speaker: Speaker,
        completion: Completion,
        messages: list[ChatMessage],
        context: ToolContext,
    ) -> AsyncGenerator[Event, None]:
        """Run the calls the model asked for, in parallel; a call that acts on the user's
        behalf runs only once they approve it, and otherwise the model reads why it did not."""
        calls = completion.tool_calls
        messages.append(ChatMessage(role="assistant", content=completion.text, tool_calls=calls))
        for call in calls:
            yield ToolStarted(call_id=call.id, name=call.name, arguments=call.arguments)
        asking = [call for call in calls if self._needs_consent(speaker, call.name)]
        free = [call for call in calls if call not in asking]
        running = asyncio.ensure_future(self._run(speaker, free, context))  # asks nobody
        refused: dict[str, ToolResult] = {}
        try:
            async with aclosing(self._consent(asking, context, refused)) as asks:
                async for event in asks:
                    yield event
            approved = [call for call in asking if call.id not in refused]
            ran = [*await running, *await self._run(speaker, approved, context)]
        finally:
            if not running.done():  # the turn stopped while asking
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
        by_call = {**refused, **{result.call_id: result for result in ran}}
        results = [by_call[call.id] for call in calls]
        room = self._context.budget(speaker) - self._context.request_tokens(speaker, messages)
        share = max(room // len(results), 0)
        for result in results:
            if not result.ok:
                log.info("tool %s failed: %s", result.name, result.content)
            yield ToolFinished(call_id=result.call_id, name=result.name, ok=result.ok)
            content = fit(result.content, share, speaker.counter)
            messages.append(ChatMessage(role="tool", content=content, tool_call_id=result.call_id))

    async def _run(
        self, speaker: Speaker, calls: Sequence[ToolCallRequest], context: ToolContext
    ) -> list[ToolResult]:
        if not calls:
            return []
        return await self._tools.run_all(
            [(c.id, c.name, c.arguments) for c in calls],
            allowed=speaker.version.tools,
            time_limit=self._tool_timeout,
            context=context,
        )

    async def _consent(
        self,
        asking: Sequence[ToolCallRequest],
        context: ToolContext,
        refused: dict[str, ToolResult],
    ) -> AsyncGenerator[ApprovalAsked | ApprovalDecided, None]:
        """Ask the requester about every call in `asking`, all at once, and yield each
        decision as it comes; the calls not approved go into `refused` with what the model
        is told. A turn that stops meanwhile closes its asks."""
        if not asking:
            return
        approvals = self._approvals
        timeout = approvals.timeout if approvals is not None else 0.0
        if approvals is None or context.message_id is None:
            for call in asking:
                nobody = ApprovalDecided(
                    approval_id=0, call_id=call.id, tool=call.name, decision=UNASKED
                )
                refused[call.id] = _refused(call, refusal(nobody, timeout=timeout))
            return

        async def decision(
            call: ToolCallRequest, asked: ApprovalAsked
        ) -> tuple[ToolCallRequest, ApprovalDecided]:
            return call, await approvals.wait(asked)

        waiting: list[asyncio.Task[tuple[ToolCallRequest, ApprovalDecided]]] = []
        open_asks: set[int] = set()
        try:
            for call in asking:
                request = Request(
                    message_id=context.message_id,
                    call_id=call.id,
                    tool=call.name,
                    arguments=call.arguments,
                )
                asked = await approvals.ask(request, context.requester)
                if isinstance(asked, ApprovalDecided):
                    refused[call.id] = _refused(call, refusal(asked, timeout=timeout))
                else:
                    open_asks.add(asked.approval_id)
                    waiting.append(asyncio.create_task(decision(call, asked)))
                yield asked
            for next_done in asyncio.as_completed(waiting):
                call, decided = await next_done
                open_asks.discard(decided.approval_id)
                yield decided
                if decided.decision != APPROVED:
                    refused[call.id] = _refused(call, refusal(decided, timeout=timeout))
        finally:  # the turn stopped while asking: a late click is told it came too late
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
            for approval_id in open_asks:
                await asyncio.shield(approvals.close(approval_id))

    def _needs_consent(self, speaker: Speaker, name: str) -> bool:
        tool = self._tools.get(name)
        return tool is not None and tool.confirm and name in speaker.version.tools

    async def settle_contract(
        self,
        speaker: Speaker,
        messages: Sequence[ChatMessage],
        final: RoundEnd,
        ledger: Ledger,
    ) -> str:
        """The answer's validated text; on a violation, one repair call that quotes the error,
        then ContractViolation if the repair breaks it too."""
        schema = speaker.version.response_schema
        check = final.check
        assert schema is not None and check is not None
        if check.ok:
            return check.text
        repair = ChatRequest(
            model=final.model,  # the model that answered: a fallback, if the primary failed
            messages=[
                *messages,
                ChatMessage(role="assistant", content=final.completion.text),
                ChatMessage(role="user", content=contracts.repair_instruction(check.error, schema)),
            ],
            params=speaker.version.params.request_fields(),
        )
        repaired: RoundEnd | None = None
        async with aclosing(self._round(speaker, repair, ledger, purpose=REPAIR)) as items:
            async for item in items:
                if isinstance(item, RoundEnd):
                    repaired = item
        assert repaired is not None and repaired.check is not None
        if not repaired.check.ok:
            raise contracts.ContractViolation(repaired.check.error)
        return repaired.check.text


class Models:
    """The models a turn may ask, in order: the version's own, then its fallbacks."""

    def __init__(self, speaker: Speaker) -> None:
        self._names = (speaker.model, *speaker.fallbacks)
        self._at = 0

    @property
    def current(self) -> str:
        return self._names[self._at]

    def fall_back(self) -> bool:
        """Move to the next model; False when none is left."""
        if self._at + 1 >= len(self._names):
            return False
        self._at += 1
        return True


def _refused(call: ToolCallRequest, text: str) -> ToolResult:
    return ToolResult(call_id=call.id, name=call.name, ok=False, content=text)


def _tool_choice(speaker: Speaker, round_number: int) -> str:
    """The version's choice on the first round; after tools ran, the model decides (a forced
    call on every round would never let it answer)."""
    choice = speaker.version.tool_choice
    return choice if round_number == 0 or choice == "none" else "auto"


def _contract_check(speaker: Speaker, completion: Completion) -> contracts.ContractCheck | None:
    """A final answer (no tools asked for) of a version with a schema is checked."""
    schema = speaker.version.response_schema
    if schema is None or completion.tool_calls:
        return None
    return contracts.check_reply(completion.text, schema)


def _cut_off_note(completion: Completion) -> str:
    """A reply the provider stopped early is flagged to the user."""
    return CUT_OFF_NOTES.get(completion.finish_reason, "")
