"""Slack's agent surface: the assistant threads of its split view, loading states while an
answer is worked out, thread titles, and the App Home tab.

Slack documents these for agent apps (docs.slack.dev, "Developing agents"): a user opens a
thread from the top bar (`assistant_thread_started`), may look at another channel while it
stays open (`assistant_thread_context_changed`), and writes in it (`message.im`, answered by
the adapter's message handler like any DM thread, so exactly once). What one event leaves for
the next is kept in Slack itself, as metadata on the greeting (Bolt's default store does the
same), so every replica reads the same thread context.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from assistant.engine import Assistant
from assistant.prompts.files import PromptVersion
from assistant.reporting.wording import count, usd
from assistant.store.report_store import CallTotals
from assistant.turns import ApprovalAsked, ConversationRef, Inbound, Source
from bots.render import to_mrkdwn
from bots.slack_reply import Place, SlackReply, missing_scope, scope_advice, slack_error
from bots.turn_runner import Turn

log = logging.getLogger(__name__)

THINKING_STATUS = "is thinking…"
# what the status says while a tool runs (Slack shows it after the app's name)
TOOL_STATUSES = {
    "search_knowledge": "is searching the team's documents…",
    "calculator": "is calculating…",
    "current_time": "is checking the time…",
}
DEFAULT_GREETING = (
    "Hi! I'm the team's assistant. Ask me anything here; I keep the thread's context, so "
    "follow-up questions need no repeating."
)
SUGGESTED_PROMPTS_TITLE = "Try asking"
# Bolt's own event type for a thread's context, so tools built on Bolt read ours too
CONTEXT_EVENT = "assistant_thread_context"
CONTEXT_FIELDS = ("channel_id", "team_id", "enterprise_id")
TITLE_CHARS = 60
SLACK_CALL_SECONDS = 5.0  # a loading state or a title is a nicety: never worth a long wait
_SPACE = re.compile(r"\s+")


class Niceties:
    """Calls that only make the surface nicer (loading states, titles, suggested prompts):
    tried once within a few seconds, never waiting out a 429, and a failure of each kind is
    logged once per process; none can hold up or break an answer."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._main = client
        self._client = AsyncWebClient(
            token=client.token, base_url=client.base_url, retry_handlers=[]
        )
        self._reported: set[tuple[str, str]] = set()

    async def call(self, what: str, call: Callable[[AsyncWebClient], Awaitable[Any]]) -> bool:
        """Whether Slack took it; `what` names the call in the one line a failure gets."""
        self._client.session = self._main.session  # the adapter's pool, once it has one
        try:
            async with asyncio.timeout(SLACK_CALL_SECONDS):
                await call(self._client)
        except Exception as exc:
            self._report(what, exc)
            return False
        return True

    def _report(self, what: str, exc: Exception) -> None:
        error = slack_error(exc)
        if (what, error) in self._reported:
            return
        self._reported.add((what, error))
        scope = missing_scope(exc)
        if scope is not None and scope != "chat:write":  # an answer names chat:write itself
            log.warning("Slack: no %s: %s", what, scope_advice(scope))
        else:
            log.info("Slack refused %s (%s); said once, the answers go on", what, error)


def tool_status(name: str) -> str:
    """The loading state while tool `name` runs."""
    return TOOL_STATUSES.get(name, f"is using {name}…")


def thread_title(text: str) -> str:
    """A thread's title from the question that opened it: its first line, at most
    TITLE_CHARS characters, cut at a word."""
    line = _SPACE.sub(" ", text.strip().split("\n", 1)[0]).strip()
    if len(line) <= TITLE_CHARS:
        return line
    head = line[: TITLE_CHARS - 1]
    cut = head.rfind(" ")
    return (head[:cut] if cut > TITLE_CHARS // 2 else head).rstrip(" ,.;:") + "…"


class AgentReply(SlackReply):
    """An answer in a thread, with Slack's loading states: "is thinking…" from the start, a
    phrase per tool while one runs, cleared once the answer shows. The answer's message starts
    with its first text, since a message in the thread would end the loading state at once."""

    def __init__(
        self,
        client: AsyncWebClient,
        place: Place,
        niceties: Niceties,
        *,
        title: str | None = None,
    ) -> None:
        super().__init__(client, place)
        assert place.thread_ts is not None
        self._thread_ts = place.thread_ts
        self._niceties = niceties
        self._title = title
        self._asked = False  # the turn began: its message is owed
        self._started = False  # the message that shows the answer exists
        self._status = ""  # what the loading state says now ("" none)
        self._status_off = False  # Slack refused one: not for this thread

    async def begin(self) -> None:
        self._asked = True
        await asyncio.gather(self._set_status(THINKING_STATUS), self._set_title())

    async def _set_title(self) -> None:
        title = self._title
        if title:
            await self._niceties.call(
                "thread title",
                lambda client: client.assistant_threads_setTitle(
                    channel_id=self._place.channel, thread_ts=self._thread_ts, title=title
                ),
            )

    async def tool_started(self, name: str, arguments: str) -> None:
        await super().tool_started(name, arguments)
        await self._set_status(tool_status(name))

    async def ask_approval(self, asked: ApprovalAsked) -> None:
        await super().ask_approval(asked)
        self._status = ""  # the ask is a message in the thread: Slack cleared the status

    async def progress(self, text: str) -> None:
        await self._start()
        await super().progress(text)
        await self._set_status("")

    async def complete(self, text: str, message_id: int, sources: Sequence[Source] = ()) -> None:
        await self._start()
        await super().complete(text, message_id, sources)
        await self._set_status("")

    async def fail(self, message: str, partial: str) -> None:
        await self._start()
        await super().fail(message, partial)
        await self._set_status("")

    async def close(self) -> None:
        await self._set_status("")  # a turn cut short clears it too
        await super().close()

    async def _start(self) -> None:
        if self._asked and not self._started:
            self._started = True
            await super().begin()

    async def _set_status(self, status: str) -> None:
        """Show `status` ("" clears it: Slack's way), unless it shows already."""
        if status == self._status or self._status_off:
            return
        self._status = status
        self._status_off = not await self._niceties.call(
            "loading state",
            lambda client: client.assistant_threads_setStatus(
                channel_id=self._place.channel, thread_ts=self._thread_ts, status=status
            ),
        )


class SlackAgent:
    """Slack's agent surface for one adapter: register its events, and make each thread's
    reply surface."""

    def __init__(
        self,
        assistant: Assistant,
        client: AsyncWebClient,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._assistant = assistant
        self._client = client
        self._niceties = Niceties(client)
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    def register(self, app: AsyncApp) -> None:
        app.event("assistant_thread_started")(self._on_thread_started)
        app.event("assistant_thread_context_changed")(self._on_context_changed)
        app.event("app_home_opened")(self._on_home_opened)

    async def idle(self) -> None:
        """Until every greeting, context and home view under way is done (tests)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- answers

    async def turn(self, inbound: Inbound, place: Place, *, direct: bool) -> Turn:
        """The turn for a message the adapter will answer: in a thread, with loading states;
        in a DM thread (an assistant thread), also with the channel the user is viewing and,
        for the thread's first question, a title."""
        if place.thread_ts is None:
            return Turn(inbound=inbound, surface=SlackReply(self._client, place))
        title = None
        if direct:
            viewing, earlier = await asyncio.gather(
                self._viewing(place.channel, place.thread_ts),
                self._assistant.history_length(inbound.ref),
            )
            if not earlier:
                title = thread_title(inbound.text)
            if viewing:
                inbound = replace(inbound, text=f"{inbound.text}\n\n[viewing #{viewing}]")
        reply = AgentReply(self._client, place, self._niceties, title=title)
        return Turn(inbound=inbound, surface=reply)

    async def _viewing(self, channel: str, thread_ts: str) -> str | None:
        """The channel the user is viewing beside the thread (a DM is no channel to name)."""
        kept = await self._kept_context(channel, thread_ts)
        viewed = (kept[1] if kept else {}).get("channel_id", "")
        return viewed if viewed[:1] in ("C", "G") else None

    # ---- assistant threads

    async def _on_thread_started(
        self, event: dict[str, Any], body: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        thread = _assistant_thread(event)
        if thread is None:
            log.info("an assistant_thread_started event without its thread was dropped")
            return
        team = str(context.team_id or body.get("team_id") or "")
        greeting = self._greet(thread, team, str(body.get("event_id") or ""))
        self._spawn(greeting, "a new assistant thread got no greeting")

    async def _greet(self, thread: Mapping[str, Any], team: str, event_id: str) -> None:
        """The greeting and suggested prompts of the version that will answer there; the
        thread's context rides on the greeting, where the next event finds it."""
        if event_id and not await self._assistant.claim_event(
            [f"slack:event:{event_id}"], keep=timedelta(hours=1)
        ):
            return  # Slack redelivered it: greeted already
        channel, thread_ts = thread["channel_id"], thread["thread_ts"]
        ref = ConversationRef(platform="slack", workspace=team, channel=channel, thread=thread_ts)
        version = await self._assistant.version_for(ref)
        await self._client.chat_postMessage(
            channel=channel,
            thread_ts=thread_ts,
            text=to_mrkdwn(version.greeting or DEFAULT_GREETING),
            metadata=_context_metadata(thread.get("context")),
            unfurl_links=False,
        )
        if version.suggested_prompts:
            prompts = [{"title": p.title, "message": p.message} for p in version.suggested_prompts]
            await self._niceties.call(
                "suggested prompts",
                lambda client: client.assistant_threads_setSuggestedPrompts(
                    channel_id=channel,
                    thread_ts=thread_ts,
                    prompts=prompts,
                    title=SUGGESTED_PROMPTS_TITLE,
                ),
            )

    async def _on_context_changed(self, event: dict[str, Any]) -> None:
        thread = _assistant_thread(event)
        if thread is not None:
            self._spawn(self._keep_context(thread), "an assistant thread's context was not kept")

    async def _keep_context(self, thread: Mapping[str, Any]) -> None:
        """Keep the channel the user now views on the thread's greeting."""
        channel, thread_ts = thread["channel_id"], thread["thread_ts"]
        kept = await self._kept_context(channel, thread_ts)
        if kept is None:
            log.info("no greeting in assistant thread %s to keep its context on", thread_ts)
            return
        greeting, _ = kept
        await self._client.chat_update(
            channel=channel,
            ts=str(greeting["ts"]),
            text=str(greeting.get("text") or ""),
            metadata=_context_metadata(thread.get("context")),
        )

    async def _kept_context(
        self, channel: str, thread_ts: str
    ) -> tuple[Mapping[str, Any], dict[str, str]] | None:
        """The bot's greeting in the thread and the context kept on it, or None (no greeting,
        or Slack would not say: the thread goes on without it)."""
        try:
            listed = await self._client.conversations_replies(
                channel=channel, ts=thread_ts, include_all_metadata=True, limit=5
            )
        except Exception as exc:
            log.info("could not read assistant thread %s (%s)", thread_ts, slack_error(exc))
            return None
        for message in listed.get("messages") or []:
            metadata = message.get("metadata") or {}
            if message.get("bot_id") and metadata.get("event_type") == CONTEXT_EVENT:
                return message, _context_of(metadata.get("event_payload"))
        return None

    # ---- App Home

    async def _on_home_opened(
        self, event: dict[str, Any], body: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        user = event.get("user")
        if event.get("tab") != "home" or not isinstance(user, str) or not user:
            return  # the Messages tab: DMs are answered as they come
        team = str(context.team_id or body.get("team_id") or "")
        dm = event.get("channel") if isinstance(event.get("channel"), str) else None
        home = self._publish_home(user, team, dm, context.bot_user_id or "")
        self._spawn(home, "the App Home tab was not published")

    async def _publish_home(self, user: str, team: str, dm: str | None, bot_user: str) -> None:
        version = None
        if dm:
            ref = ConversationRef(platform="slack", workspace=team, channel=dm)
            version = await self._assistant.version_for(ref)
        today = self._clock().replace(hour=0, minute=0, second=0, microsecond=0)
        calls = await self._assistant.calls_between(today, today + timedelta(days=1))
        view = {"type": "home", "blocks": home_blocks(version, spent_today(calls), bot_user)}
        await self._client.views_publish(user_id=user, view=view)

    # ----

    def _spawn(self, work: Coroutine[Any, Any, None], failed: str) -> None:
        """Run `work` on its own task (Bolt acks as soon as the listener returns); `failed`
        is the line a failure gets."""
        task = asyncio.create_task(_logged(work, failed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _logged(work: Coroutine[Any, Any, None], failed: str) -> None:
    try:
        await work
    except Exception as exc:
        log.warning("Slack: %s (%s)", failed, slack_error(exc))


def _assistant_thread(event: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The event's `assistant_thread`, when it names the thread as Slack does."""
    thread = event.get("assistant_thread")
    if not isinstance(thread, dict):
        return None
    if not all(isinstance(thread.get(key), str) for key in ("channel_id", "thread_ts")):
        return None
    return thread


def _context_of(payload: object) -> dict[str, str]:
    """A thread context's known fields, as text (anything else Slack sent is left out)."""
    if not isinstance(payload, dict):
        return {}
    return {key: payload[key] for key in CONTEXT_FIELDS if isinstance(payload.get(key), str)}


def _context_metadata(context: object) -> dict[str, Any]:
    return {"event_type": CONTEXT_EVENT, "event_payload": _context_of(context)}


def spent_today(calls: Sequence[CallTotals]) -> str:
    """Production spend as the daily report counts it; a call to a model with no price is
    said to be uncounted, never priced at $0."""
    production = [row for row in calls if row.traffic == "production"]
    total = sum(row.calls for row in production)
    cost = sum(row.cost_usd for row in production)
    unpriced = sum(row.unpriced for row in production)
    if not total:
        return "$0.00 (no model calls yet today)"
    spent = f"{usd(cost)} over {count(total, 'model call')}"
    if not unpriced:
        return spent
    models = ", ".join(sorted({row.model for row in production if row.unpriced}))
    if unpriced == total:
        return (
            f"unknown: {count(total, 'model call')}, to models with no price ({models}); "
            "add them to the price table (PRICING_FILE)"
        )
    uncounted = count(unpriced, "call")
    return f"at least {spent}: {uncounted} to models with no price ({models}) not counted"


def home_blocks(version: PromptVersion | None, spent: str, bot_user: str) -> list[dict[str, Any]]:
    """The App Home tab: which prompt version answers the user, today's cost, and how to use
    the assistant."""
    answering = (
        f"`{version.label}`" + (f": {version.description}" if version.description else "")
        if version is not None
        else "the default prompt (shown once you have sent the assistant a message)"
    )
    mention = f"<@{bot_user}>" if bot_user else "the assistant"
    usage = "\n".join(
        [
            f"• *In a channel:* mention {mention}; it answers in the thread, and follow-ups "
            "there need no mention.",
            "• *In private:* send it a direct message, or open it from the top bar beside any "
            "channel (it knows which channel you are viewing).",
            "• *Commands:* `/assistant prompt list`, `/assistant report 24h`; admins switch "
            "prompt versions with `/assistant prompt use NAME VERSION`.",
            "• 👍/👎 under an answer tell the team which versions work.",
        ]
    )
    return [
        {"type": "header", "text": {"type": "plain_text", "text": "Team Assistant"}},
        _section(f"*Answering your direct messages:* {answering}"),
        _section(f"*Spent today (UTC):* {spent}"),
        {"type": "divider"},
        _section(f"*How to use it*\n{usage}"),
    ]


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}
