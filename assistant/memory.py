"""What of a conversation the model sees: the newest turns that fit, older ones summarized.

The functions here are pure: they take messages newest-first (with their stored token counts) and
decide; the engine does the reading, the summary call and the writing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from assistant.llm import ChatMessage
from assistant.store.repository import HistoryEntry

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
