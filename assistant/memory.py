"""What of a conversation the model sees: the newest turns that fit, older ones summarized.

`ContextBuilder` builds a turn's context within its version's token budget and folds older
talk into the rolling summary (one extra model call, accounted in the turn's ledger). The
functions below it are pure: they take messages newest-first, with their stored token counts,
and decide.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from assistant import accounting
from assistant.accounting import Ledger
from assistant.llm import (
    ChatMessage,
    ChatModel,
    ChatRequest,
    LlmContextOverflow,
    LlmError,
    complete,
    wire_messages,
)
from assistant.pricing import PriceTable
from assistant.prompts.files import PromptVersion
from assistant.store import Store
from assistant.store.repository import ConversationState, History, HistoryEntry
from assistant.tokens import TokenCounter
from assistant.tools import ToolRegistry
from assistant.turns import Actor

log = logging.getLogger(__name__)

SUMMARY_WORDS = 200
FOLD_BACKOFF_SECONDS = 300.0  # after a failed summary call, answer without folding for a while
NAME_LIMIT = 64
TRUNCATED = " [truncated to fit the context]"

SUMMARY_INSTRUCTIONS = (
    "You maintain the running summary of a conversation between a team and its assistant. "
    "Merge the earlier summary with the new messages into one updated summary: keep facts, "
    "decisions, names, numbers, open questions and user preferences; drop small talk. "
    "Write plain prose, at most {words} words. Reply with the summary only."
)


@dataclass(frozen=True, kw_only=True)
class FoldPlan:
    """Older messages to fold into the summary, and the newer ones that stay verbatim."""

    fold: list[HistoryEntry]  # oldest first
    keep: list[HistoryEntry]  # newest first


def plan_fold(newest_first: Sequence[HistoryEntry], *, summarize_over: int) -> FoldPlan:
    """Fold once the unsummarized history passes `summarize_over`, keeping its newest half.

    Keeping half means a summary call happens once per `summarize_over / 2` tokens of talk,
    not on every turn.
    """
    total = sum(m.token_count for m in newest_first)
    if summarize_over <= 0 or total <= summarize_over or len(newest_first) < 2:
        return FoldPlan(fold=[], keep=list(newest_first))
    keep_limit = summarize_over // 2
    kept = 0
    split = 0
    for split, message in enumerate(newest_first):
        if split > 0 and kept + message.token_count > keep_limit:
            break
        kept += message.token_count
    else:
        split = len(newest_first)
    return FoldPlan(fold=list(reversed(newest_first[split:])), keep=list(newest_first[:split]))


def fit_window(newest_first: Sequence[HistoryEntry], *, budget: int) -> list[HistoryEntry]:
    """The newest messages whose tokens fit `budget`, oldest first; the newest one always."""
    window: list[HistoryEntry] = []
    used = 0
    for message in newest_first:
        cost = message.token_count
        if window and used + cost > budget:
            break
        window.append(message)
        used += cost
    window.reverse()
    return window


def summary_request(
    previous: str, messages: Sequence[HistoryEntry], *, words: int
) -> list[ChatMessage]:
    transcript = "\n".join(f"[{_speaker(m)}]: {m.text}" for m in messages)
    earlier = previous or "(none yet)"
    return [
        ChatMessage(role="system", content=SUMMARY_INSTRUCTIONS.format(words=words)),
        ChatMessage(
            role="user",
            content=f"Earlier summary:\n{earlier}\n\nNew messages:\n{transcript}",
        ),
    ]


def summary_message(summary: str) -> ChatMessage:
    return ChatMessage(role="system", content=f"Summary of the earlier conversation:\n{summary}")


def history_messages(window: Sequence[HistoryEntry]) -> list[ChatMessage]:
    """The window as chat messages; when several people talk in it (a shared thread), each
    user message is prefixed with its author so the model can tell them apart."""
    speakers = {m.author_name for m in window if m.role == "user"}
    if len(speakers) < 2:
        return [ChatMessage(role=m.role, content=m.text) for m in window]
    return [
        ChatMessage(
            role=m.role,
            content=f"[{m.author_name or 'someone'}] {m.text}" if m.role == "user" else m.text,
        )
        for m in window
    ]


def _speaker(message: HistoryEntry) -> str:
    if message.role == "assistant":
        return "assistant"
    return f"user {message.author_name}" if message.author_name else "user"


class MessageTooLong(Exception):
    """The user's message alone does not fit the version's context; the text says by how
    much, in words the user can act on."""


@dataclass(frozen=True, kw_only=True)
class Speaker:
    """Who a turn is for and how their words are counted: what context building needs of it."""

    version: PromptVersion
    actor: Actor
    model: str
    fallbacks: tuple[str, ...]  # the version's, in order; none when one model answers all
    counter: TokenCounter


class ContextBuilder:
    """Builds each turn's messages for the model. Keeps three caches: the fixed token cost of a
    version (examples and tool schemas, counted once), when folding last failed for a
    conversation (so an outage does not add a failing call to every turn), and how much a
    model turned out to hold (its server counts tokens its own way, and said no)."""

    def __init__(
        self,
        *,
        store: Store,
        model: ChatModel,
        tools: ToolRegistry,
        prices: PriceTable,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._model = model
        self._tools = tools
        self._prices = prices
        self._clock = clock
        self._static_tokens: dict[str, int] = {}
        self._fold_failed_at: dict[int, float] = {}
        self._held: dict[str, int] = {}

    def budget(self, speaker: Speaker) -> int:
        """Tokens a request may take: the version's `memory.context_tokens`, or less where
        the model's server refused that much."""
        return min(speaker.version.memory.context_tokens, self._held.get(speaker.model, 1 << 62))

    def shrink(self, speaker: Speaker, sent: Sequence[ChatMessage], refusal: LlmError) -> int:
        """Learn from a refused request (`sent`) how much this model holds, in our tokens, and
        keep later turns within it; returns the new budget.

        When the server gives its context and its count of the prompt, the room it leaves
        beside the answer's `max_tokens` is scaled from its tokens to ours (its tokenizer is
        not ours), with a tenth to spare; otherwise half of what was sent."""
        ours = self.request_tokens(speaker, sent)
        held = ours // 2
        if isinstance(refusal, LlmContextOverflow) and refusal.limit and refusal.prompt_tokens:
            room = refusal.limit - (speaker.version.params.max_tokens or 0)
            if room > 0:
                held = ours * room // refusal.prompt_tokens * 9 // 10
            else:
                log.error(
                    "%s asks for answers of up to %d tokens (params.max_tokens), but %s holds "
                    "%d in all: lower max_tokens",
                    speaker.version.label,
                    speaker.version.params.max_tokens,
                    speaker.model,
                    refusal.limit,
                )
        self._held[speaker.model] = min(held, self.budget(speaker))
        log.warning(
            "model %s refused %d tokens (by our count) as too long; sending at most %d from now on",
            speaker.model,
            ours,
            self._held[speaker.model],
        )
        return self._held[speaker.model]

    async def build(
        self,
        speaker: Speaker,
        history: History,
        *,
        message_tokens: int,
        ledger: Ledger,
        extra_tokens: int = 0,
    ) -> list[ChatMessage]:
        """Preamble, summary and the newest history, within the turn's token budget.
        `extra_tokens` are what the new message carries beyond its stored text (this turn's
        images, counted in `message_tokens` too): history leaves room for them."""
        budget = self.budget(speaker)
        preamble = self._preamble(speaker)
        fixed = self._fixed(speaker, preamble)
        if fixed + message_tokens > budget:
            raise MessageTooLong(
                f"Your message is too long for this assistant: it is about {message_tokens:,} "
                f"tokens and about {max(budget - fixed, 0):,} fit. Please shorten it or split it "
                "up; it will not be sent to the model again."
            )
        conversation = history.state
        fold = await self._fold_candidates(speaker, history)
        if fold:
            conversation = await self._fold(speaker, conversation, fold, ledger)
        summary_tokens = conversation.summary_tokens
        if fixed + summary_tokens + message_tokens > budget:  # the newest message matters more
            summary_tokens = 0
        unsummarized = [e for e in history.newest if e.id > conversation.summary_through_id]
        window = fit_window(unsummarized, budget=budget - fixed - summary_tokens - extra_tokens)
        if summary_tokens:
            preamble.append(summary_message(conversation.summary))
        return preamble + history_messages(window)

    def request_tokens(self, speaker: Speaker, messages: Sequence[ChatMessage]) -> int:
        """What a request with these messages and the version's tools costs in tokens."""
        tools = self._wire_tools(speaker.version)
        return speaker.counter.count_request(wire_messages(messages), tools)

    def _preamble(self, speaker: Speaker) -> list[ChatMessage]:
        version, actor = speaker.version, speaker.actor
        system = version.render_system(
            now=self._clock(),
            platform=actor.platform,
            user_name=clean_name(actor.display_name) or "a user",
        )
        messages = [ChatMessage(role="system", content=system)]
        for example in version.examples:
            messages.append(ChatMessage(role="user", content=example.user))
            messages.append(ChatMessage(role="assistant", content=example.assistant))
        return messages

    def _fixed(self, speaker: Speaker, preamble: list[ChatMessage]) -> int:
        """Tokens every request of this turn carries: system prompt (it varies by user and
        date, so counted each turn), examples and tool schemas (counted once per version)."""
        label = speaker.version.label
        if label not in self._static_tokens:
            examples = wire_messages(preamble[1:])
            tools = self._wire_tools(speaker.version)
            self._static_tokens[label] = speaker.counter.count_request(examples, tools)
        return self._static_tokens[label] + speaker.counter.count_message(preamble[0].content)

    def _wire_tools(self, version: PromptVersion) -> list[dict[str, Any]]:
        return [t.to_openai() for t in self._tools.definitions(version.tools)]

    async def _fold_candidates(self, speaker: Speaker, history: History) -> list[HistoryEntry]:
        """Older messages to fold now, oldest first and contiguous from the summary pointer,
        so no message is ever skipped."""
        state = history.state
        failed_at = self._fold_failed_at.get(state.id)
        if failed_at is not None and time.monotonic() - failed_at < FOLD_BACKOFF_SECONDS:
            return []
        limit = speaker.version.memory.summarize_over_tokens
        plan = plan_fold(history.newest, summarize_over=limit)
        if not plan.fold or history.complete:
            return plan.fold
        return await self._store.oldest_messages(
            state.id, after_id=state.summary_through_id, token_limit=limit
        )

    async def _fold(
        self,
        speaker: Speaker,
        conversation: ConversationState,
        fold: list[HistoryEntry],
        ledger: Ledger,
    ) -> ConversationState:
        """Summarize older turns with one extra call; if it fails, answer without it."""
        request = ChatRequest(
            model=speaker.model,
            messages=summary_request(conversation.summary, fold, words=SUMMARY_WORDS),
            params={"temperature": 0, "max_tokens": SUMMARY_WORDS * 2},
        )
        try:
            completion = await complete(self._model, request)
        except LlmError as exc:
            log.warning("summary folding failed, answering with the trimmed history: %s", exc)
            ledger.add(accounting.failed_call(purpose="summary", model=speaker.model, error=exc))
            self._fold_failed_at[conversation.id] = time.monotonic()
            return conversation
        self._fold_failed_at.pop(conversation.id, None)
        ledger.add(
            accounting.completed_call(
                purpose="summary",
                request=request,
                completion=completion,
                prices=self._prices,
                counter=speaker.counter,
            )
        )
        summary = completion.text.strip()
        folded = replace(
            conversation,
            summary=summary,
            summary_tokens=speaker.counter.count_message(summary),
            summary_through_id=fold[-1].id,
        )
        await self._store.save_summary(
            conversation.id,
            summary=folded.summary,
            tokens=folded.summary_tokens,
            through_id=folded.summary_through_id,
        )
        return folded


def clean_name(name: str) -> str:
    """A display name as it may appear in a prompt: one line, bounded."""
    return " ".join(name.split())[:NAME_LIMIT]


def fit(content: str, tokens: int, counter: TokenCounter) -> str:
    """`content` (a tool result) cut to `tokens`, the room left for it in the context."""
    if counter.count_message(content) <= tokens:
        return content
    room = tokens - counter.count_message(TRUNCATED)
    if room < 8:
        return "error: no room left in the context for this result"
    cut = content[: room * 4]
    while counter.count(cut) > room:
        cut = cut[: len(cut) * 9 // 10]
    return cut + TRUNCATED
