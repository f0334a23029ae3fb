"""The Slack adapter: Slack events in, engine turns out, rendered back into threads.

Only translation lives here. Every event is acked at once (Bolt answers the HTTP request
before listeners run) and each turn runs on a task of its own, so a slow model never makes
Slack redeliver. Redeliveries and the double delivery of a mention (`app_mention` and
`message`) are dropped by the engine through the dedupe keys, which the store keeps.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp, AsyncRespond
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from assistant.admin.commands import COMMAND_FAILED, AdminCommands
from assistant.admin.grammar import CommandContext
from assistant.engine import Assistant
from assistant.reporting.notices import Notice
from assistant.turns import Actor, ConversationRef, Failed, Ignored, Inbound
from bots.chat_actions import QuietWarnings, record_approval, record_vote, run_admin
from bots.render import from_mrkdwn, to_mrkdwn
from bots.slack_assistant import SlackAgent
from bots.slack_files import SlackFiles
from bots.slack_http import (
    Served,
    SlackEndpoint,
    action_channel,
    action_problem,
    command_problem,
    event_problem,
    replay_keys,
)
from bots.slack_notices import slack_blocks
from bots.slack_reply import (
    APPROVAL_ACTIONS,
    FEEDBACK_DOWN,
    FEEDBACK_UP,
    Place,
    SlackReply,
    close_cut_answer,
    cut_answers,
    missing_scope,
    scope_advice,
    slack_error,
)
from bots.slack_setup import check_app_token, check_bot_token
from bots.turn_runner import Turn, TurnRunner

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
SHUTDOWN_GRACE_SECONDS = 30.0
COMMAND_MEMORY = timedelta(minutes=15)  # past Slack's 5-minute window, with room for clocks
READ_SECONDS = 2.0  # reading an event (names) before it is stored and acked; Slack waits 3 s
_HANDLED_SUBTYPES = {None, "file_share", "thread_broadcast"}  # edits, deletions, joins: not asks
_USER_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")


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
        self.client = AsyncWebClient(
            token=bot_token,
            base_url=api_url,
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(max_retry_count=2),
                AsyncRateLimitErrorRetryHandler(max_retry_count=5),  # waits out Retry-After
            ],
        )
        self._bot_token = bot_token
        self._identity: asyncio.Future[Any] | None = None  # this bot's auth.test, once
        # Bolt's client for the requests it reads: no token of its own, so that `authorize`
        # is the one source of it (Bolt warns when given both)
        self._bolt_client = AsyncWebClient(base_url=api_url)

        async def authorize() -> AuthorizeResult:  # Bolt passes a function its named arguments
            return await self._authorize()

        self.app = AsyncApp(
            client=self._bolt_client,
            authorize=authorize,
            signing_secret=signing_secret,
            # HTTP: the endpoint (bots/slack_http.py) checks every signature on the raw bytes
            # before Bolt sees a request; Bolt's own check would log a failing request's whole
            # body (message text) at INFO. Socket Mode needs none: the connection is the proof.
            request_verification_enabled=False,
            # the listener stores the message before Slack hears back (`_on_message`)
            process_before_response=True,
        )
        self.app.event("app_mention")(self._on_message)
        self.app.event("message")(self._on_message)
        self.app.command("/assistant")(self._on_command)
        self.app.action(re.compile(f"^({FEEDBACK_UP}|{FEEDBACK_DOWN})$"))(self._on_feedback)
        self._agent = SlackAgent(assistant, self.client)  # assistant threads, App Home
        self._agent.register(self.app)
        self.app.action(re.compile(f"^({'|'.join(APPROVAL_ACTIONS)})$"))(self._on_approval)
        self._turns = TurnRunner(assistant, surface="slack", interval=update_interval)
        self._warnings = QuietWarnings(log)
        self._signing_secret = signing_secret
        # a name is a nicety: its lookups are tried once, never waiting out a 429
        self._names = SlackNames(
            AsyncWebClient(token=bot_token, base_url=api_url, retry_handlers=[])
        )
        self._files = SlackFiles(self.client, token=bot_token, limits=assistant.attachment_limits)
        self._bot_user: str | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None
        self._served = Served()  # which worker took its share, said as it stops

    # ---- serving

    def web_app(self) -> web.Application:
        """Slack's endpoint, checking every request's signature before anything reads it."""
        if not self._signing_secret:  # without it anyone could post events
            raise ValueError("HTTP mode needs the signing secret (SLACK_SIGNING_SECRET)")
        endpoint = SlackEndpoint(
            signing_secret=self._signing_secret,
            dispatch=self.app.async_dispatch,
            warnings=self._warnings,
        )
        return endpoint.web_app(EVENTS_PATH)

    async def serve_http(
        self,
        *,
        port: int = 0,
        host: str = "0.0.0.0",  # noqa: S104
        sock: socket.socket | None = None,
        routes: Sequence[web.RouteDef] = (),
    ) -> int:
        """Take Slack's events over HTTP, on `port` or on `sock` (a worker's share of the port
        its supervisor bound, `bots/workers.py`); returns the port (useful when `port` is 0).
        The port is taken first (a local problem, said without waiting on the network), then
        the bot token is checked: a wrong one stops the start in one line (SlackSetupError).
        `routes` are served beside the events (`/metrics`, `/healthz`, `/readyz`)."""
        app = self.web_app()
        app.add_routes(routes)
        app.middlewares.append(self._served.middleware)
        self._share_connections()
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        if sock is None:
            await web.TCPSite(self._runner, host, port).start()
        else:
            await web.SockSite(self._runner, sock).start()
        await self.check_bot_token()
        bound = int(self._runner.addresses[0][1])
        log.info("Slack events accepted on http://%s:%d%s", host, bound, EVENTS_PATH)
        return bound

    async def connect_socket_mode(self, app_token: str) -> None:
        """Connect, or raise SlackSetupError in one line. slack-sdk's own client retries a
        failed connection forever, a traceback each time; so the first connection is asked
        for once here, and only a working token and URL are handed to it."""
        self._share_connections()
        await check_app_token(self.client, app_token)
        await self.check_bot_token()
        self._socket = AsyncSocketModeHandler(self.app, app_token)
        await self._socket.connect_async()  # type: ignore[no-untyped-call]
        log.info("Slack connected in Socket Mode")

    async def connected(self) -> bool:
        """Socket Mode: its connection is up; HTTP mode: the bot token was accepted at start
        and the endpoint still serves (there is no connection to lose)."""
        if self._socket is not None:
            socket_mode = self._socket.client  # the Socket Mode connection, not the Web API
            return bool(await socket_mode.is_connected())
        return self._runner is not None and self._bot_user is not None

    async def check_bot_token(self) -> None:
        """Raise SlackSetupError in one line unless SLACK_BOT_TOKEN works."""
        self._bot_user = await check_bot_token(self.client)

    def _share_connections(self) -> None:
        """One connection pool for every Web API call; without it slack-sdk opens a session,
        and a connection, per call (at 200 conversations that is most of the CPU)."""
        if self.client.session is None:  # the client's own timeout applies only to its sessions
            self.client.session = ClientSession(timeout=ClientTimeout(total=self.client.timeout))
        self._names.share(self.client.session)
        self._bolt_client.session = self.client.session

    async def _authorize(self) -> AuthorizeResult:
        """Who the bot is, from one auth.test for the process. Bolt's own single-workspace
        check asks Slack again for every event that arrives before its first answer: at a
        busy start, a hundred calls of a rate-limited method."""
        if self._identity is None:
            self._identity = asyncio.ensure_future(self.client.auth_test())
        try:
            response = await asyncio.shield(self._identity)  # one waiter gone stops no other
        except Exception:
            self._identity = None  # the next event asks again
            raise
        return AuthorizeResult.from_auth_test_response(
            bot_token=self._bot_token, auth_test_response=response
        )

    async def close(self) -> None:
        """Stop taking events, then let the answers under way finish (for a while)."""
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]
        if self._runner is not None:
            runner, self._runner = self._runner, None  # not ready any more (`connected`)
            await runner.cleanup()
            log.info("served %d Slack requests", self._served.requests)
        await self._turns.drain(grace=self._shutdown_grace)
        await self._agent.close()
        await self._names.close()
        if self.client.session is not None:
            await self.client.session.close()

    async def idle(self) -> None:
        """Wait until every turn under way has been answered (tests and benchmarks)."""
        await self._turns.idle()
        await self._agent.idle()

    # ---- messages

    async def _on_message(
        self, event: dict[str, Any], body: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        """Bolt has acked already; everything else happens on the turn's own task. An event
        we cannot read is dropped with one line (Socket Mode's never met the HTTP guard)."""
        problem = event_problem(event)
        if problem is not None:
            self._warnings.warn("an unreadable Slack event was dropped", problem)
            return
        bot_user = context.bot_user_id or ""
        team = str(context.team_id or body.get("team_id") or event.get("team") or "")
        reading = self._to_turn(event, body, bot_user=bot_user, team=team)
        try:
            async with asyncio.timeout(READ_SECONDS):
                turn = await reading
        except TimeoutError:  # Slack is slow to answer a lookup: ack now, go on after
            self._turns.start(self._to_turn(event, body, bot_user=bot_user, team=team))
            return
        # never under the timeout: a store transaction cut short may still commit its claim
        turn = await self._accepted(turn) if turn is not None else None
        if turn is not None:
            self._turns.start_turn(turn)

    async def _accepted(self, turn: Turn) -> Turn | None:
        """Store the message before Slack is acked: once acked, Slack never sends it again,
        so a crash after this point still leaves the question, and the answer owed, stored."""
        assert turn.inbound is not None
        accepted = await self._assistant.accept(turn.inbound)
        if isinstance(accepted, Ignored):
            return None
        if isinstance(accepted, Failed) and not accepted.retryable:  # refused: say why, once
            self._turns.start(_refused(turn, accepted))
            return None
        if isinstance(accepted, Failed):  # try once more on its own task, saying what failed
            return turn
        return Turn(surface=turn.surface, accepted=accepted)

    async def _to_turn(
        self, event: Mapping[str, Any], body: Mapping[str, Any], *, bot_user: str, team: str
    ) -> Turn | None:
        """The turn an event asks for, or None when it asks for none. `team` is the workspace
        the app is installed in: in a Slack Connect channel, event["team"] is the author's.
        The event passed `event_problem`: its fields have the types read here."""
        user = event.get("user")
        if event.get("subtype") not in _HANDLED_SUBTYPES or event.get("bot_id") or not user:
            return None
        if user == bot_user or event.get("edited"):  # an edit is not a new question
            return None
        channel, ts = str(event["channel"]), str(event["ts"])
        thread_ts = event.get("thread_ts")
        raw = str(event.get("text") or "")
        mention = f"<@{bot_user}>"
        mentioned = event.get("type") == "app_mention" or (bool(bot_user) and mention in raw)
        if event.get("channel_type") == "im":
            ref = ConversationRef(
                platform="slack", workspace=team, channel=channel, thread=thread_ts or ""
            )
            place = Place(
                channel=channel, thread_ts=thread_ts, team_id=team, user_id=user, question_ts=ts
            )
        else:
            ref = ConversationRef(
                platform="slack", workspace=team, channel=channel, thread=thread_ts or ts
            )
            place = Place(
                channel=channel,
                thread_ts=thread_ts or ts,
                team_id=team,
                user_id=user,
                question_ts=ts,
            )
            if not mentioned and not (thread_ts and await self._assistant.knows(ref)):
                return None
        keys = [f"slack:msg:{team}:{channel}:{ts}"]
        if body.get("event_id"):
            keys.insert(0, f"slack:event:{body['event_id']}")
        question = raw.replace(mention, "") if bot_user else raw
        names = await self._names.names([user, *_USER_MENTION.findall(question)])
        inbound = Inbound(
            ref=ref,
            actor=Actor(platform="slack", user_id=user, display_name=names[user]),
            text=from_mrkdwn(question, names=names).strip(),  # the people it mentions named
            platform_message_id=ts,
            dedupe_keys=tuple(keys),
            reply_place=place.to_json(),
            direct=event.get("channel_type") == "im",
        )
        if event.get("files") and not self._assistant.listed_out(inbound):
            files = await self._files.fetch(event.get("files"))  # bots/slack_files.py
            inbound = replace(inbound, attachments=files)
        return await self._agent.turn(inbound, place, direct=event.get("channel_type") == "im")

    # ---- answers a stopped process owed (see bots/recovery.py)

    surface = "slack"

    @property
    def runner(self) -> TurnRunner:
        return self._turns

    def reply_for(self, place: str) -> SlackReply:
        return SlackReply(self.client, Place.from_json(place))

    async def close_cut_answer(self, place: str, shown: str | None, text: str) -> bool:
        """Close what the cut answer left unfinished; False when there was nothing (the
        answer at `shown` is complete: only noting that was cut short). When where it showed
        was never noted (a kill right after the stream started), look for it."""
        where = Place.from_json(place)
        try:
            unfinished = await cut_answers(self.client, where, await self._me())
        except Exception as exc:
            log.warning("could not look for a cut answer (%s)", slack_error(exc))
            unfinished = [shown] if shown else []
        if shown is not None and shown not in unfinished:
            return False
        for ts in unfinished:
            await close_cut_answer(self.client, where, ts, text)
        return bool(unfinished)

    async def _me(self) -> str:
        """The bot's own user id (auth.test, asked once)."""
        if self._bot_user is None:
            self._bot_user = str((await self.client.auth_test()).get("user_id") or "")
        return self._bot_user

    # ---- notices (reports and alerts)

    async def post_notice(self, channel: str, notice: Notice) -> None:
        """A report as blocks with its chart as a file; an alert as a message. A scope the app
        lacks is one line naming it (see `_unless_refused`); without files:write the report
        still comes, without its chart."""
        blocks = slack_blocks(notice.report) if notice.report is not None else None
        posted = await _unless_refused(
            f"{notice.title!r}",
            channel,
            self.client.chat_postMessage(
                channel=channel,
                text=notice.title if blocks else to_mrkdwn(notice.text),
                blocks=blocks,
                unfurl_links=False,
            ),
        )
        if posted and notice.image_png is not None:
            await _unless_refused(
                f"the chart of {notice.title!r}",
                channel,
                self.client.files_upload_v2(
                    channel=channel,
                    file=notice.image_png,
                    filename=notice.image_name,
                    title=notice.title,
                ),
            )

    # ---- admin commands and feedback

    async def _on_command(
        self, ack: Any, command: dict[str, Any], respond: AsyncRespond, request: AsyncBoltRequest
    ) -> None:
        """Run `/assistant ...`, once. A replay (the same signed request again, or the same
        trigger_id) is acked and then stays silent: Slack never resends a slash command, so a
        replay comes from someone else, and the asker already had their one answer at the
        response_url; a flood of replays must not become a flood of messages to them."""
        await ack()
        problem = command_problem(command)
        if problem is not None:
            self._warnings.warn("an unreadable Slack command was dropped", problem)
            return
        signature = request.headers.get("x-slack-signature", [""])[0]
        try:
            keys = replay_keys(command, signature)
            fresh = not keys or await self._assistant.claim_event(keys, keep=COMMAND_MEMORY)
        except Exception:
            log.exception("could not check a slash command for replays, so it was not run")
            await respond(text=to_mrkdwn(COMMAND_FAILED), response_type="ephemeral")
            return
        if not fresh:
            self._warnings.warn("a replayed Slack command was ignored", "seen before")
            return
        result = await run_admin(self._commands, command.get("text") or "", _context(command))
        await respond(text=to_mrkdwn(result.text), response_type="ephemeral")

    async def _on_feedback(self, ack: Any, body: dict[str, Any], respond: AsyncRespond) -> None:
        """A 👍/👎 click, counted only when clicked in the answer's own channel."""
        await ack()
        problem = action_problem(body)
        if problem is not None:
            self._warnings.warn("an unreadable Slack action was dropped", problem)
            return
        action = body["actions"][0]
        vote = 1 if action["action_id"] == FEEDBACK_UP else -1
        text = await record_vote(
            self._assistant,
            str(action.get("value") or ""),
            Actor(platform="slack", user_id=body["user"]["id"]),
            vote=vote,
            clicked_in=action_channel(body),
        )
        await respond(text=text, response_type="ephemeral", replace_original=False)

    async def _on_approval(self, ack: Any, body: dict[str, Any], respond: AsyncRespond) -> None:
        """Approve or Decline on a tool's ask: it counts only from the user asked; the ask's
        message is updated by the turn waiting on it, and the clicker hears privately."""
        await ack()
        problem = action_problem(body)
        if problem is not None:
            self._warnings.warn("an unreadable Slack action was dropped", problem)
            return
        action = body["actions"][0]
        text = await record_approval(
            self._assistant,
            str(action.get("value") or ""),
            Actor(platform="slack", user_id=body["user"]["id"]),
            approve=APPROVAL_ACTIONS[action["action_id"]],
        )
        await respond(text=text, response_type="ephemeral", replace_original=False)


async def _unless_refused(what: str, channel: str, call: Awaitable[Any]) -> bool:
    """Make one call of a notice; a refusal only the operator can fix (a scope the app lacks,
    a channel it was not invited to) is one line saying what to do, not a traceback, and
    False. Anything else is raised, for the scheduler to log."""
    try:
        await call
    except SlackApiError as exc:
        advice = _operator_advice(exc)
        if advice is None:
            raise
        log.error("Slack: %s was not posted in %s: %s", what, channel, advice)
        return False
    return True


async def _refused(turn: Turn, refusal: Failed) -> None:
    """Show why the engine refused a message (who may talk here, a rate limit): asking again
    would change nothing, and the refusal is said once (see `assistant.access`)."""
    try:
        await turn.surface.fail(refusal.user_message, "")
    finally:
        await turn.surface.close()


def _operator_advice(exc: SlackApiError) -> str | None:
    """What the operator must do about a refusal, or None when it is not theirs to fix."""
    scope = missing_scope(exc)
    if scope is not None:
        return scope_advice(scope)
    if exc.response.get("error") == "not_in_channel":
        return "the app is not in that channel; invite it there (/invite @assistant)"
    return None


def _context(command: Mapping[str, Any]) -> CommandContext:
    """Who runs a slash command, and where (its fields passed `command_problem`)."""
    return CommandContext(
        actor=Actor(platform="slack", user_id=command["user_id"]),
        surface="slack",
        ref=ConversationRef(
            platform="slack",
            workspace=command.get("team_id") or "",
            channel=command.get("channel_id") or "",
        ),
    )


class SlackNames:
    """People's display names by user id, so people in a shared thread are told apart.

    A name is a nicety, so its cost is bounded: at most `per_message` people are looked up for
    one message (the rest keep their ids), concurrently, each id by one `users.info` call at a
    time however many messages want it, tried once within `timeout` (never waiting out a
    429: while Slack asks us to wait, ids are shown). Names are remembered in a bounded
    least-recently-used cache; failures are remembered briefly too, so a flood of messages
    naming the same strangers does not become a flood of calls."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        per_message: int = 10,
        size: int = 5000,
        ttl: float = 3600.0,
        miss_ttl: float = 60.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._per_message = per_message
        self._size = size
        self._ttl, self._miss_ttl, self._timeout = ttl, miss_ttl, timeout
        self._clock = clock
        self._known: OrderedDict[str, tuple[str | None, float]] = OrderedDict()
        self._pending: dict[str, asyncio.Task[str | None]] = {}
        self._paused_until = 0.0

    def share(self, session: ClientSession) -> None:
        """Use the adapter's connection pool (a session per call costs a connection each)."""
        self._client.session = session

    async def names(self, users: Iterable[str]) -> dict[str, str]:
        """A name for every id in `users`: looked up for the first `per_message` distinct
        ones, the id itself for the rest and for whoever has no name."""
        wanted = list(dict.fromkeys(users))
        looked_up = wanted[: self._per_message]
        found = await asyncio.gather(*(self._name(user) for user in looked_up))
        named = {user: name for user, name in zip(looked_up, found, strict=True) if name}
        return {user: named.get(user, user) for user in wanted}

    async def close(self) -> None:
        """Stop the lookups under way (shutdown: every turn has finished by now)."""
        for task in list(self._pending.values()):
            task.cancel()
        await asyncio.gather(*self._pending.values(), return_exceptions=True)

    async def _name(self, user: str) -> str | None:
        remembered = self._known.get(user)
        if remembered is not None and remembered[1] > self._clock():
            self._known.move_to_end(user)
            return remembered[0]
        task = self._pending.get(user)
        if task is None:  # the first to ask looks it up; the others wait for that call
            task = asyncio.create_task(self._look_up(user))
            self._pending[user] = task
            task.add_done_callback(lambda _: self._pending.pop(user, None))
        return await asyncio.shield(task)  # one waiter cancelled must not cancel the others

    async def _look_up(self, user: str) -> str | None:
        name: str | None = None
        if self._clock() >= self._paused_until:
            try:
                async with asyncio.timeout(self._timeout):
                    response = await self._client.users_info(user=user)
                name = _display_name(response.get("user"))
            except Exception as exc:  # any failure: the id is shown instead
                self._pause_if_asked(exc)
                log.info("no name for %s (%s); using the id", user, slack_error(exc))
        self._remember(user, name)
        return name

    def _pause_if_asked(self, exc: Exception) -> None:
        """Slack's 429 says how long to wait: no lookups until then (at most a minute)."""
        if isinstance(exc, SlackApiError) and exc.response.status_code == 429:
            wait = str(exc.response.headers.get("Retry-After", "1"))
            seconds = min(int(wait), 60) if wait.isascii() and wait.isdigit() else 1
            self._paused_until = self._clock() + seconds

    def _remember(self, user: str, name: str | None) -> None:
        lasting = self._ttl if name else self._miss_ttl
        self._known[user] = (name, self._clock() + lasting)
        self._known.move_to_end(user)
        while len(self._known) > self._size:
            self._known.popitem(last=False)


def _display_name(info: object) -> str | None:
    """The name Slack shows for a user, from users.info's `user`."""
    if not isinstance(info, dict):
        return None
    profile = info.get("profile")
    shown = profile.get("display_name") if isinstance(profile, dict) else None
    name = shown or info.get("real_name") or info.get("name")
    return name if isinstance(name, str) and name else None
