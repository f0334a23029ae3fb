"""The Slack adapter: Slack events in, engine turns out, rendered back into threads.

Only translation lives here. Every event is acked at once (Bolt answers the HTTP request
before listeners run) and each turn runs on a task of its own, so a slow model never makes
Slack redeliver. Redeliveries and the double delivery of a mention (`app_mention` and
`message`) are dropped by the engine through the dedupe keys, which the store keeps.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp, AsyncRespond
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from assistant.admin.commands import AdminCommands
from assistant.admin.grammar import CommandContext
from assistant.engine import Assistant
from assistant.reporting.notices import Notice
from assistant.turns import Actor, ConversationRef, Inbound
from bots.chat_actions import feedback_acknowledgement, record_vote, run_admin
from bots.render import from_mrkdwn, to_mrkdwn
from bots.slack_notices import slack_blocks
from bots.slack_reply import FEEDBACK_DOWN, FEEDBACK_UP, Place, SlackReply, slack_error
from bots.turn_runner import Turn, TurnRunner

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
SHUTDOWN_GRACE_SECONDS = 30.0
_NAME_CACHE_SIZE = 5000
_HANDLED_SUBTYPES = {None, "file_share", "thread_broadcast"}  # edits, deletions, joins: not asks


class SlackAdapter:
    """A Bolt app wired to the engine; serve it over HTTP or Socket Mode."""

    def __init__(
        self,
        *,
        assistant: Assistant,
        commands: AdminCommands,
        bot_token: str,
        signing_secret: str | None,
        api_url: str = "https://slack.com/api/",
        update_interval: float = 1.0,
        shutdown_grace: float = SHUTDOWN_GRACE_SECONDS,
    ) -> None:
        self._assistant = assistant
        self._commands = commands
        self._shutdown_grace = shutdown_grace
        self._verifies_requests = bool(signing_secret)
        self.client = AsyncWebClient(
            token=bot_token,
            base_url=api_url,
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(max_retry_count=2),
                AsyncRateLimitErrorRetryHandler(max_retry_count=5),  # waits out Retry-After
            ],
        )
        self.app = AsyncApp(
            client=self.client,
            signing_secret=signing_secret,
            # Socket Mode needs no signature: the connection itself is authenticated
            request_verification_enabled=bool(signing_secret),
            process_before_response=False,
        )
        self.app.event("app_mention")(self._on_message)
        self.app.event("message")(self._on_message)
        self.app.command("/assistant")(self._on_command)
        self.app.action(re.compile(f"^({FEEDBACK_UP}|{FEEDBACK_DOWN})$"))(self._on_feedback)
        self._turns = TurnRunner(assistant, surface="slack", interval=update_interval)
        self._names: dict[str, str] = {}
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None

    # ---- serving

    def web_app(self) -> web.Application:
        return self.app.web_app(path=EVENTS_PATH)

    async def serve_http(self, *, port: int, host: str = "0.0.0.0") -> int:  # noqa: S104
        """Take Slack's events over HTTP; returns the port (useful when `port` is 0)."""
        if not self._verifies_requests:  # without it anyone could post events
            raise ValueError("HTTP mode needs the signing secret (SLACK_SIGNING_SECRET)")
        self._share_connections()
        self._runner = web.AppRunner(self.web_app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound = int(self._runner.addresses[0][1])
        log.info("Slack events accepted on http://%s:%d%s", host, bound, EVENTS_PATH)
        return bound

    async def connect_socket_mode(self, app_token: str) -> None:
        self._share_connections()
        self._socket = AsyncSocketModeHandler(self.app, app_token)
        await self._socket.connect_async()  # type: ignore[no-untyped-call]
        log.info("Slack connected in Socket Mode")

    def _share_connections(self) -> None:
        """One connection pool for every Web API call; without it slack-sdk opens a session,
        and a connection, per call (at 200 conversations that is most of the CPU)."""
        if self.client.session is None:  # the client's own timeout applies only to its sessions
            self.client.session = ClientSession(timeout=ClientTimeout(total=self.client.timeout))

    async def close(self) -> None:
        """Stop taking events, then let the answers under way finish (for a while)."""
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]
        if self._runner is not None:
            await self._runner.cleanup()
        await self._turns.drain(grace=self._shutdown_grace)
        if self.client.session is not None:
            await self.client.session.close()

    async def idle(self) -> None:
        """Wait until every turn under way has been answered (tests and benchmarks)."""
        await self._turns.idle()

    # ---- messages

    async def _on_message(
        self, event: dict[str, Any], body: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        """Bolt has acked already; everything else happens on the turn's own task."""
        bot_user = context.bot_user_id or ""
        team = str(context.team_id or body.get("team_id") or event.get("team") or "")
        self._turns.start(self._to_turn(event, body, bot_user=bot_user, team=team))

    async def _to_turn(
        self, event: Mapping[str, Any], body: Mapping[str, Any], *, bot_user: str, team: str
    ) -> Turn | None:
        """The turn an event asks for, or None when it asks for none. `team` is the workspace
        the app is installed in: in a Slack Connect channel, event["team"] is the author's."""
        user = event.get("user")
        if event.get("subtype") not in _HANDLED_SUBTYPES or event.get("bot_id") or not user:
            return None
        if user == bot_user or event.get("edited"):  # an edit is not a new question
            return None
        channel, ts = str(event["channel"]), str(event["ts"])
        thread_ts = event.get("thread_ts")
        raw = str(event.get("text", ""))
        mention = f"<@{bot_user}>"
        mentioned = event.get("type") == "app_mention" or (bool(bot_user) and mention in raw)
        if event.get("channel_type") == "im":
            ref = ConversationRef(
                platform="slack", workspace=team, channel=channel, thread=thread_ts or ""
            )
            place = Place(channel=channel, thread_ts=thread_ts, team_id=team, user_id=user)
        else:
            ref = ConversationRef(
                platform="slack", workspace=team, channel=channel, thread=thread_ts or ts
            )
            place = Place(channel=channel, thread_ts=thread_ts or ts, team_id=team, user_id=user)
            if not mentioned and not (thread_ts and await self._assistant.knows(ref)):
                return None
        keys = [f"slack:msg:{team}:{channel}:{ts}"]
        if body.get("event_id"):
            keys.insert(0, f"slack:event:{body['event_id']}")
        inbound = Inbound(
            ref=ref,
            actor=Actor(platform="slack", user_id=user, display_name=await self._name(user)),
            text=await self._plain(raw.replace(mention, "") if bot_user else raw),
            platform_message_id=ts,
            dedupe_keys=tuple(keys),
        )
        return Turn(inbound=inbound, surface=SlackReply(self.client, place))

    async def _plain(self, text: str) -> str:
        """The message as the user meant it, with the people it mentions named."""
        mentioned = set(re.findall(r"<@([A-Z0-9]+)(?:\|[^>]*)?>", text))
        names = {user: await self._name(user) for user in mentioned}
        return from_mrkdwn(text, names=names).strip()

    async def _name(self, user: str) -> str:
        """The user's display name, so people in a shared thread are told apart."""
        if user not in self._names:
            try:
                response = await self.client.users_info(user=user)
                info = response.get("user") or {}
                profile = info.get("profile") or {}
                name = profile.get("display_name") or info.get("real_name") or info.get("name")
            except Exception as exc:
                log.info("no name for %s (%s); using the id", user, slack_error(exc))
                name = None
            if len(self._names) >= _NAME_CACHE_SIZE:
                self._names.clear()
            self._names[user] = str(name or user)
        return self._names[user]

    # ---- notices (reports and alerts)

    async def post_notice(self, channel: str, notice: Notice) -> None:
        """A report as blocks with its chart as a file; an alert as a message."""
        blocks = slack_blocks(notice.report) if notice.report is not None else None
        await self.client.chat_postMessage(
            channel=channel,
            text=notice.title if blocks else to_mrkdwn(notice.text),
            blocks=blocks,
            unfurl_links=False,
        )
        if notice.image_png is not None:
            await self.client.files_upload_v2(
                channel=channel,
                file=notice.image_png,
                filename=notice.image_name,
                title=notice.title,
            )

    # ---- admin commands and feedback

    async def _on_command(self, ack: Any, command: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        context = CommandContext(
            actor=Actor(platform="slack", user_id=command["user_id"]),
            surface="slack",
            ref=ConversationRef(
                platform="slack",
                workspace=command.get("team_id", ""),
                channel=command.get("channel_id", ""),
            ),
        )
        result = await run_admin(self._commands, command.get("text", ""), context)
        await respond(text=to_mrkdwn(result.text), response_type="ephemeral")

    async def _on_feedback(
        self, ack: Any, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond
    ) -> None:
        await ack()
        vote = 1 if action["action_id"] == FEEDBACK_UP else -1
        actor = Actor(platform="slack", user_id=body["user"]["id"])
        answer_id = str(action.get("value", ""))
        text = (
            await record_vote(self._assistant, int(answer_id), actor, vote=vote)
            if answer_id.isdecimal()
            else feedback_acknowledgement(vote, "unknown answer")
        )
        await respond(text=text, response_type="ephemeral", replace_original=False)
