"""One answer shown in Slack: streamed where Slack can stream, posted and edited otherwise.

The full text is always kept here, so whatever Slack refuses mid-way (a stream that stopped
accepting text, an edit that failed, a call that timed out) the answer is shown again whole by
another route, and an answer longer than one message continues in further messages instead of
losing its tail. No Slack error escapes `complete` or `fail`: they are the user's last word.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from assistant.turns import ApprovalAsked, ApprovalDecided, Source
from bots.chat_actions import APPROVE, DECLINE, approval_outcome, approval_request
from bots.render import (
    close_fences,
    escape_mrkdwn,
    mrkdwn_sources,
    open_fence,
    split_message,
    to_mrkdwn,
)
from bots.streaming import ChatToolNotes, failure_text

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 3000  # a section block's text limit; the final message carries blocks
STREAM_LIMIT = 12000  # what one streamed message holds; the rest continues below it
THINKING = "_Thinking…_"
FEEDBACK_UP = "feedback_up"
FEEDBACK_DOWN = "feedback_down"
APPROVAL_ACTIONS = {f"approval_{APPROVE}": True, f"approval_{DECLINE}": False}
SOURCES_BLOCK = "sources"
# Slack's limit on a context block's elements (docs.slack.dev, "Context block"): more sources
# take further context blocks
CONTEXT_ELEMENTS = 10
TEXT_OBJECT_LIMIT = 3000  # what one mrkdwn text object holds
_GONE = {"message_not_found", "cant_update_message", "edit_window_closed"}
Blocks = list[dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class Place:
    """Where the answer goes: `thread_ts` None means top level (a direct message)."""

    channel: str
    thread_ts: str | None
    team_id: str
    user_id: str
    question_ts: str | None = None  # the user's message: what a cut answer came after

    def to_json(self) -> str:
        """Stored with the user's message, so a restart can answer here."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Place:
        fields = json.loads(text)
        return cls(
            channel=str(fields["channel"]),
            thread_ts=str(fields["thread_ts"]) if fields.get("thread_ts") else None,
            team_id=str(fields["team_id"]),
            user_id=str(fields["user_id"]),
            question_ts=str(fields["question_ts"]) if fields.get("question_ts") else None,
        )


def feedback_block(message_id: int) -> dict[str, Any]:
    def button(action_id: str, label: str) -> dict[str, Any]:
        return {
            "type": "button",
            "action_id": action_id,
            "text": {"type": "plain_text", "text": label, "emoji": True},
            "value": str(message_id),
        }

    return {
        "type": "actions",
        "block_id": "feedback",
        "elements": [button(FEEDBACK_UP, "👍"), button(FEEDBACK_DOWN, "👎")],
    }


def approval_blocks(asked: ApprovalAsked) -> tuple[str, Blocks]:
    """The ask as a message: what would run (the section `_send` puts first), then Approve
    and Decline carrying its id."""
    requester = f"<@{asked.requester.user_id}>"
    text = approval_request(asked, requester, limit=TEXT_OBJECT_LIMIT, escape=escape_mrkdwn)

    def button(approve: bool) -> dict[str, Any]:
        return {
            "type": "button",
            "action_id": f"approval_{APPROVE if approve else DECLINE}",
            "text": {"type": "plain_text", "text": "Approve" if approve else "Decline"},
            "style": "primary" if approve else "danger",
            "value": str(asked.approval_id),
        }

    return text, [
        {"type": "actions", "block_id": "approval", "elements": [button(True), button(False)]}
    ]


def source_blocks(sources: Sequence[Source]) -> Blocks:
    """An answer's sources as context blocks (Slack's small grey line under a message), ten
    to a block. A line too long for one text object drops its link, never the source."""
    elements = []
    for source, line in zip(sources, mrkdwn_sources(sources), strict=True):
        if len(line) > TEXT_OBJECT_LIMIT:
            [line] = mrkdwn_sources([replace(source, link=None)])
        elements.append({"type": "mrkdwn", "text": line})
    starts = range(0, len(elements), CONTEXT_ELEMENTS)
    return [
        {
            "type": "context",
            "block_id": SOURCES_BLOCK if index == 0 else f"{SOURCES_BLOCK}_{index + 1}",
            "elements": elements[start : start + CONTEXT_ELEMENTS],
        }
        for index, start in enumerate(starts)
    ]


class SlackReply(ChatToolNotes):
    """A `ReplySurface` for one answer in Slack."""

    def __init__(self, client: AsyncWebClient, place: Place) -> None:
        super().__init__()
        self._client = client
        self._place = place
        self._stream_ts: str | None = None
        self._streamed = ""  # the answer's text already in the streamed message
        self._messages: list[str] = []  # ts of the posted-and-edited messages, in order
        # (while streaming: those holding what did not fit in the streamed message)
        self._shown: list[str] = []  # what each of them shows
        self._refusal: str | None = None  # a scope Slack said is missing: what to do about it
        self._asks: dict[int, str] = {}  # approval id -> ts of the message asking it

    async def begin(self) -> None:
        if self._place.thread_ts is not None:
            try:
                response = await self._client.chat_startStream(
                    channel=self._place.channel,
                    thread_ts=self._place.thread_ts,
                    recipient_team_id=self._place.team_id,
                    recipient_user_id=self._place.user_id,
                )
                self._stream_ts = str(response["ts"])
                return
            except Exception as exc:
                if self._refused_for_good(exc):
                    return
                log.info("Slack did not start a stream (%s); posting instead", slack_error(exc))
        await self._post(THINKING)

    async def ask_approval(self, asked: ApprovalAsked) -> None:
        text, blocks = approval_blocks(asked)
        try:
            self._asks[asked.approval_id] = await self._send(text, blocks)
        except Exception as exc:
            log.warning("Slack refused a tool's request for approval (%s)", slack_error(exc))

    async def approval_decided(self, decided: ApprovalDecided) -> None:
        ts = self._asks.pop(decided.approval_id, None)
        who = decided.decided_by.partition(":")[2] if decided.decided_by else None
        text = approval_outcome(decided, f"<@{who}>" if who else None)
        try:
            if ts is None:
                await self._send(text)
            else:  # the text alone, in place of the ask and its buttons
                blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
                await self._client.chat_update(
                    channel=self._place.channel, ts=ts, text=text, blocks=blocks
                )
        except Exception as exc:
            log.warning("Slack refused to show a tool's approval (%s)", slack_error(exc))

    async def progress(self, text: str) -> None:
        if self._refusal is not None:  # nothing can show until the operator adds the scope
            return
        if self._stream_ts is None:
            await self._render(text, final=False)
            return
        await self._append(text)
        if self._stream_ts is not None and len(text) > len(self._streamed):
            await self._render(self._overflow(text), final=False)

    async def complete(self, text: str, message_id: int, sources: Sequence[Source] = ()) -> None:
        """The sources go above the feedback buttons, on the answer's last message: the blocks
        travel together by every route the final text takes."""
        blocks = [*source_blocks(sources), feedback_block(message_id)]
        await self._finish(self.with_tool_notes(text), blocks, sources=sources)

    async def fail(self, message: str, partial: str) -> None:
        await self._finish(failure_text(message, partial), [])

    async def close(self) -> None:
        return None  # nothing to let go of: `complete` or `fail` ends the stream

    def shown_id(self) -> str | None:
        if self._stream_ts is not None:
            return self._stream_ts
        return self._messages[0] if self._messages else None

    async def _finish(self, text: str, blocks: Blocks, *, sources: Sequence[Source] = ()) -> None:
        """Show the final text; a missing scope is one line saying which, not a flood."""
        try:
            if self._refusal is None:
                await self._show_final(text, blocks)
        except Exception as exc:
            if not self._refused_for_good(exc):
                log.exception("Slack refused the final answer; posting it as new messages")
                await self._post_anew(text, sources)
        if self._refusal is not None:
            where = self._place.channel
            log.error("Slack: an answer in %s was not shown: %s", where, self._refusal)

    async def _show_final(self, text: str, blocks: Blocks) -> None:
        if self._stream_ts is not None and not text.startswith(self._streamed):
            await self._abandon_stream()  # the final text is not what was streamed
        if self._stream_ts is not None and await self._stop_stream(text, blocks):
            return
        await self._render(text, final=True, blocks=blocks)

    def _refused_for_good(self, exc: BaseException) -> bool:
        """Whether Slack refused for want of a scope: no call for this answer can succeed until
        the operator adds it, so none is tried again, and `_finish` says so once."""
        scope = missing_scope(exc)
        if scope is not None and self._refusal is None:
            self._refusal = scope_advice(scope)
        return scope is not None

    async def _append(self, text: str) -> None:
        """Add what is new to the streamed message, up to what one message holds."""
        assert self._stream_ts is not None
        if not text.startswith(self._streamed):
            return  # only the final text can differ; _finish shows it whole
        addition = _fit(text[len(self._streamed) :], STREAM_LIMIT - len(self._streamed))
        if not addition:
            return
        try:
            await self._client.chat_appendStream(
                channel=self._place.channel, ts=self._stream_ts, markdown_text=addition
            )
        except Exception as exc:
            log.warning("the Slack stream died (%s); editing the message instead", slack_error(exc))
            await self._abandon_stream()
            await self._render(text, final=False)
            return
        self._streamed += addition

    async def _stop_stream(self, text: str, blocks: Blocks) -> bool:
        """Finish the streamed message; what did not fit continues in further messages."""
        await self._append(text)
        if self._stream_ts is None:  # the stream died while appending
            return False
        overflow = len(text) > len(self._streamed)
        fence = open_fence(self._streamed)
        try:
            await self._client.chat_stopStream(
                channel=self._place.channel,
                ts=self._stream_ts,
                markdown_text=f"\n{fence[1]}" if fence else None,
                blocks=None if overflow else blocks or None,
            )
        except Exception as exc:
            log.warning("Slack did not stop the stream (%s); editing the message", slack_error(exc))
            await self._abandon_stream(stopped=False)
            return False
        if overflow:
            await self._render(self._overflow(text), final=True, blocks=blocks)
        return True

    def _overflow(self, text: str) -> str:
        """What follows the streamed message, its open code block reopened."""
        rest = text[len(self._streamed) :]
        fence = open_fence(self._streamed)
        return rest if fence is None else f"{fence[0]}\n{rest.lstrip(chr(10))}"

    async def _abandon_stream(self, *, stopped: bool = True) -> None:
        """From now on the streamed message is edited like any other, from the start. It is
        stopped first (if it still streams, Slack may refuse edits to it)."""
        assert self._stream_ts is not None
        ts, self._stream_ts = self._stream_ts, None
        if stopped:
            try:
                await self._client.chat_stopStream(channel=self._place.channel, ts=ts)
            except Exception as exc:
                log.info("stopping the abandoned stream failed (%s)", slack_error(exc))
        self._messages.insert(0, ts)
        self._shown.insert(0, self._streamed)
        self._streamed = ""

    async def _render(self, text: str, *, final: bool, blocks: Blocks | None = None) -> None:
        """Show `text` across the posted messages: edit those that changed, post the rest. A
        preview that Slack refuses is skipped (the next one tries again); the final text is
        posted anew where an edit cannot land."""
        source = text if final else close_fences(text)
        pieces = split_message(to_mrkdwn(source), MESSAGE_LIMIT) or [THINKING]
        for index, piece in enumerate(pieces):
            extra = blocks if final and index == len(pieces) - 1 and blocks else None
            if index >= len(self._messages):
                if not await self._post(piece, extra) and final and self._refusal is None:
                    raise RuntimeError("Slack refused to post part of the final answer")
            elif self._shown[index] != piece or extra:
                await self._edit(index, piece, extra, final=final)
        if final:
            await self._drop_after(len(pieces))

    async def _post(self, text: str, blocks: Blocks | None = None) -> bool:
        try:
            ts = await self._send(text, blocks)
        except Exception as exc:
            if not self._refused_for_good(exc):
                log.warning("Slack refused a message (%s)", slack_error(exc))
            return False
        self._messages.append(ts)
        self._shown.append(text)
        return True

    async def _send(self, text: str, blocks: Blocks | None = None) -> str:
        response = await self._client.chat_postMessage(
            channel=self._place.channel,
            thread_ts=self._place.thread_ts,
            text=text,
            blocks=_with_text(text, blocks),
            unfurl_links=False,
        )
        return str(response["ts"])

    async def _edit(self, index: int, text: str, blocks: Blocks | None, *, final: bool) -> None:
        try:
            await self._client.chat_update(
                channel=self._place.channel,
                ts=self._messages[index],
                text=text,
                blocks=_with_text(text, blocks) or [],
            )
            self._shown[index] = text
            return
        except Exception as exc:
            error = slack_error(exc)
            if not final and error not in _GONE:
                log.info("Slack refused an edit (%s); the next one will try again", error)
                return
            log.warning("Slack refused an edit (%s); posting the text anew", error)
        stale = self._messages[index]
        self._messages[index], self._shown[index] = await self._send(text, blocks), text
        await self._delete(stale)

    async def _drop_after(self, count: int) -> None:
        """Delete messages the final answer no longer needs (it came out shorter than shown)."""
        while len(self._messages) > count:
            self._shown.pop()
            await self._delete(self._messages.pop())

    async def _delete(self, ts: str) -> None:
        try:
            await self._client.chat_delete(channel=self._place.channel, ts=ts)
        except Exception as exc:
            log.warning("could not delete a stale part of an answer (%s)", slack_error(exc))

    async def _post_anew(self, text: str, sources: Sequence[Source] = ()) -> None:
        """The last resort: the whole answer as plain new messages, its sources as lines of
        text under it (blocks may be what Slack refused)."""
        shown = to_mrkdwn(close_fences(text))
        if sources:
            shown += "\n\n" + "\n".join(mrkdwn_sources(sources))
        for piece in split_message(shown, MESSAGE_LIMIT):
            if not await self._post(piece):
                log.error("Slack refused every way of showing an answer in %s", self._place.channel)
                return


async def cut_answers(client: AsyncWebClient, place: Place, bot_user: str) -> list[str]:
    """The bot's unfinished messages after the question (no feedback buttons yet): what a
    process killed between showing an answer and noting where may have left open."""
    if place.question_ts is None:
        return []
    if place.thread_ts is not None:
        listed = await client.conversations_replies(channel=place.channel, ts=place.thread_ts)
    else:
        listed = await client.conversations_history(channel=place.channel, oldest=place.question_ts)
    return [
        str(m["ts"])
        for m in listed.get("messages") or []
        if m.get("user") == bot_user
        and float(m.get("ts", 0)) > float(place.question_ts)
        and not any(b.get("block_id") == "feedback" for b in m.get("blocks") or [])
    ]


async def close_cut_answer(client: AsyncWebClient, place: Place, ts: str, text: str) -> None:
    """End what a stopped process left of an answer: a stream still open is stopped, a
    message is replaced, with `text` saying what happened. What Slack refuses is logged."""
    try:
        await client.chat_stopStream(channel=place.channel, ts=ts, markdown_text=text)
        return
    except Exception as exc:
        log.info("the cut answer's stream is closed already (%s)", slack_error(exc))
    try:
        await client.chat_update(channel=place.channel, ts=ts, text=text, blocks=[])
    except Exception as exc:
        log.warning("could not mark the cut answer %s (%s)", ts, slack_error(exc))


def _with_text(text: str, blocks: Blocks | None) -> Blocks | None:
    """Blocks replace a message's text on screen, so the text goes first as a section."""
    if not blocks:
        return None
    return [{"type": "section", "text": {"type": "mrkdwn", "text": text}}, *blocks]


def _fit(addition: str, room: int) -> str:
    """As much of `addition` as fits in `room`, ending at a line or word break when it is cut."""
    if len(addition) <= room:
        return addition
    if room <= 0:
        return ""
    head = addition[:room]
    cut = max(head.rfind("\n"), head.rfind(" "))
    return head[: cut + 1] if cut > room // 2 else head


def slack_error(exc: BaseException) -> str:
    """Slack's short error code ("ratelimited", "channel_not_found"), or the exception's name
    for a network failure; for a log line. A missing scope says which one to add."""
    if not isinstance(exc, SlackApiError):
        return type(exc).__name__
    data = getattr(exc.response, "data", None)
    if isinstance(data, dict) and data.get("error"):
        needed = missing_scope(exc)
        return f"missing_scope: {scope_advice(needed)}" if needed else str(data["error"])
    return f"HTTP {getattr(exc.response, 'status_code', '?')}"


def missing_scope(exc: BaseException) -> str | None:
    """The scope Slack said a call needs, when it refused the call for want of it."""
    if not isinstance(exc, SlackApiError):
        return None
    data = getattr(exc.response, "data", None)
    if not isinstance(data, dict) or data.get("error") != "missing_scope":
        return None
    return str(data.get("needed") or "") or "a scope Slack did not name"


def scope_advice(scope: str) -> str:
    """What the operator does about a missing scope, in one clause."""
    return (
        f"the Slack app lacks the {scope} scope; add it under OAuth & Permissions (manifest.yaml "
        "lists every scope the assistant uses) and reinstall the app"
    )
