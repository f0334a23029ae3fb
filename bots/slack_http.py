"""Slack's HTTP endpoint, guarded, and what each handler needs of a payload.

Anyone on the network can POST to the endpoint, so the signature is checked on the raw bytes
before anything parses them: a stranger without the signing secret gets a 401 and costs one
HMAC, never a parser's exception (Bolt parses the body, and slack_sdk reads the timestamp as
a number, before either checks the signature). A signed body Bolt or our handlers could not
read gets a 400. Either way the log gets one quiet line per kind, never a traceback.

The payload checks below are also what the handlers use on their own, since Socket Mode
payloads never pass through this endpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bots.chat_actions import QuietWarnings

MAX_BODY_BYTES = 1024 * 1024  # Slack's payloads are a few kilobytes; blocks add a few more
MAX_AGE_SECONDS = 300  # Slack's own replay window for a request's timestamp
MAX_DEPTH = 64  # Block Kit nests about ten deep; deeper is an attack on recursive readers
TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
SIGNATURE_HEADER = "X-Slack-Signature"
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # ASCII digits only: int() would also take "٣"
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
# The types Slack gives the fields Bolt reads on its way to a listener (building the context,
# its middleware, matching listeners), wherever Bolt looks for them: at the top, and in the
# objects it searches below. Another type there raises inside Bolt, as a 500 and a traceback.
_SLACK_TYPES: dict[str, type | tuple[type, ...]] = {
    **dict.fromkeys(("team", "enterprise", "user", "channel"), (str, dict)),
    **dict.fromkeys(("authorizations", "actions", "response_urls"), list),
    **dict.fromkeys(("event", "message", "previous_message", "item"), dict),
    **dict.fromkeys(("assistant_thread", "view", "function_data", "container"), dict),
    **dict.fromkeys(("type", "subtype", "team_id", "enterprise_id", "user_id"), str),
    **dict.fromkeys(("channel_id", "thread_ts", "response_url", "trigger_id", "command"), str),
    **dict.fromkeys(("bot_id", "user_team", "bot_access_token", "callback_id"), str),
    "is_enterprise_install": (bool, str),
    "is_ext_shared_channel": bool,
}
_SEARCHED = ("event", "message", "previous_message", "item")  # where Bolt looks further down
_LISTS_OF_OBJECTS = ("authorizations", "actions", "response_urls")
_MESSAGE_EVENTS = frozenset({"message", "app_mention"})
_TAKEN_AS_IS = frozenset({"url_verification", "app_rate_limited"})  # Bolt answers these
_MESSAGE_TEXTS = ("user", "text", "thread_ts", "subtype", "channel_type", "bot_id", "team")
_COMMAND_TEXTS = ("text", "team_id", "channel_id", "trigger_id")

Dispatch = Callable[[AsyncBoltRequest], Awaitable[BoltResponse]]
LISTEN_BACKLOG = 1024  # connections the kernel queues for one worker while it is busy


def listening_socket(port: int, host: str = "0.0.0.0") -> socket.socket:  # noqa: S104
    """One worker's listening socket on Slack's port, bound with SO_REUSEPORT so that the
    supervisor of `assistant run --workers N` can bind one per worker and the kernel spreads
    the connections among them. OSError when the port is taken (by a socket without it)."""
    return socket.create_server((host, port), backlog=LISTEN_BACKLOG, reuse_port=True)


class Served:
    """How many Slack requests this process answered (logged at stop: which worker took its
    share); probes and scrapes of the same port are not Slack's."""

    def __init__(self, path: str = "/slack/events") -> None:
        self.requests = 0
        self._path = path

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path == self._path:
            self.requests += 1
        return await handler(request)


class Unreadable(ValueError):
    """A signed body that cannot be handled; the message says what is wrong with it."""


class SlackEndpoint:
    """The `/slack/events` POST handler in front of Bolt's dispatch."""

    def __init__(
        self,
        *,
        signing_secret: str,
        dispatch: Dispatch,
        warnings: QuietWarnings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = signing_secret.encode()
        self._dispatch = dispatch
        self._warnings = warnings
        self._clock = clock

    def web_app(self, path: str) -> web.Application:
        """An aiohttp app serving only `path`; aiohttp refuses bodies over the cap itself."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(path, self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        """Headers, then size, then signature, then shape: each refusal costs as little as
        possible, and nothing reads a body whose signature has not been checked."""
        stamp, signature, problem = signature_headers(request, now=self._clock())
        if problem is not None or stamp is None or signature is None:  # None: for mypy
            return self._refuse(401, "an unsigned Slack request", problem or "no signature")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(413, "an oversized Slack request", f"over {MAX_BODY_BYTES} bytes")
        if not signed(self._secret, stamp, signature, raw):
            return self._refuse(401, "an unsigned Slack request", "the signature does not match")
        try:
            bolt_request = bolt_request_for(raw, request)
        except Unreadable as exc:
            return self._refuse(400, "an unreadable Slack request", str(exc))
        return await to_aiohttp_response(await self._dispatch(bolt_request))

    def _refuse(self, status: int, kind: str, detail: str) -> web.Response:
        self._warnings.warn(kind, detail)
        return web.Response(status=status, text=f"Refused: {detail}.")


def signature_headers(
    request: web.Request, *, now: float
) -> tuple[str | None, str | None, str | None]:
    """The timestamp and signature headers, and why they cannot be right (or None). Each must
    come once: Slack sends one of each, and Bolt would read the last of repeated headers where
    this check reads the first, so what was checked would not be what runs."""
    stamps = request.headers.getall(TIMESTAMP_HEADER, [])
    signatures = request.headers.getall(SIGNATURE_HEADER, [])
    if len(stamps) > 1 or len(signatures) > 1:
        return None, None, f"{TIMESTAMP_HEADER} or {SIGNATURE_HEADER} given more than once"
    stamp = stamps[0] if stamps else None
    signature = signatures[0] if signatures else None
    return stamp, signature, header_problem(stamp, signature, now=now)


def header_problem(timestamp: str | None, signature: str | None, *, now: float) -> str | None:
    """Why the signature headers cannot be right, before the body is even read; or None."""
    if not timestamp or not signature:
        return f"no {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header"
    if not _TIMESTAMP.fullmatch(timestamp):
        return f"{TIMESTAMP_HEADER} is not a number of seconds"
    if abs(now - int(timestamp)) > MAX_AGE_SECONDS:
        return f"{TIMESTAMP_HEADER} is more than {MAX_AGE_SECONDS} s away (a replay, or a clock)"
    if not _SIGNATURE.fullmatch(signature):
        return f"{SIGNATURE_HEADER} is not v0= and 64 hex digits"
    return None


def signed(secret: bytes, timestamp: str, signature: str, body: bytes) -> bool:
    """Slack's v0 signature over the raw body, compared in constant time."""
    base = b"v0:" + timestamp.encode("ascii") + b":" + body
    expected = "v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def bolt_request_for(raw: bytes, request: web.Request) -> AsyncBoltRequest:
    """Bolt's request for a signed body; raises Unreadable when Bolt or a handler could not
    read it. Bolt's own parse is the one checked, so what is checked is what runs."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Unreadable("the body is not UTF-8") from None
    try:
        bolt_request = AsyncBoltRequest(
            body=text,
            query=request.query_string,
            headers=request.headers,  # type: ignore[arg-type]  # a mapping of str, as Bolt's
        )
    # what Bolt's parser and context builder raise on a body of the wrong shape
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
        raise Unreadable("the body is not a Slack payload (JSON or form)") from None
    payload: Any = bolt_request.body
    if not isinstance(payload, dict):
        raise Unreadable("the body is not a JSON object or a form")
    if too_deep(payload, MAX_DEPTH):
        raise Unreadable(f"the body nests deeper than {MAX_DEPTH} levels")
    problem = payload_problem(payload)
    if problem is not None:
        raise Unreadable(problem)
    return bolt_request


def too_deep(value: object, limit: int) -> bool:
    """Whether JSON-like `value` nests more than `limit` levels (read without recursion)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children: Iterable[object] = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        )
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def payload_problem(payload: Mapping[str, Any]) -> str | None:
    """What a handler would miss in a payload, or None when it can be handled (or is not
    ours: Bolt answers what no listener takes)."""
    problem = shape_problem(payload)
    if problem is not None:
        return problem
    kind = payload.get("type")
    if "command" in payload:
        return command_problem(payload)
    if kind == "event_callback":
        event = payload.get("event")
        return event_problem(event) if isinstance(event, dict) else "an event callback, no event"
    if kind == "block_actions":
        return action_problem(payload)
    if kind in _TAKEN_AS_IS or payload.get("ssl_check"):
        return None
    # no listener takes it, and Bolt's own reporting of what it does not take has crashed on
    # odd shapes (a traceback from a signed request): it never gets there
    return "a kind of request this app does not take"


def shape_problem(payload: Mapping[str, Any]) -> str | None:
    """Which field Bolt would read has a type Slack never sends there, or None. Recursive, but
    only as deep as the body, which `too_deep` has bounded."""
    for name, expected in _SLACK_TYPES.items():
        value = payload.get(name)
        if value is not None and not isinstance(value, expected):
            return f"{name} is not what Slack sends there"
    items = [item for name in _LISTS_OF_OBJECTS for item in payload.get(name) or []]
    if not all(isinstance(item, dict) for item in items):
        return f"one of {', '.join(_LISTS_OF_OBJECTS)} holds something other than objects"
    below = [payload[name] for name in _SEARCHED if payload.get(name)] + items
    return next(filter(None, map(shape_problem, below)), None)


def event_problem(event: Mapping[str, Any]) -> str | None:
    """Why a message event cannot be read (a missing `ts` or `channel`, a field of the wrong
    type); None for one that can, and for events we do not handle."""
    kind = event.get("type")
    if not isinstance(kind, str):
        return "an event without a type"
    if kind not in _MESSAGE_EVENTS:
        return None
    if not _texts(event, ("channel", "ts")):
        return f"a message event ({kind}) without channel or ts"
    if not _optional_texts(event, _MESSAGE_TEXTS):
        return f"a message event ({kind}) with a field that is not text"
    return None


def command_problem(command: Mapping[str, Any]) -> str | None:
    """Why a slash command cannot be run (who sent it, and where to answer, are needed)."""
    if not _texts(command, ("command", "user_id", "response_url")):
        return "a slash command without command, user_id or response_url"
    if not _optional_texts(command, _COMMAND_TEXTS):
        return "a slash command with a field that is not text"
    return None


def action_problem(payload: Mapping[str, Any]) -> str | None:
    """Why a button click cannot be handled (who clicked, which button, where to answer)."""
    user, actions = payload.get("user"), payload.get("actions")
    if not isinstance(user, dict) or not _texts(user, ("id",)):
        return "an action without user.id"
    if not isinstance(actions, list) or not actions:
        return "an action payload without actions"
    if not all(isinstance(a, dict) and _texts(a, ("action_id",)) for a in actions):
        return "an action without action_id"
    if not all(_optional_texts(a, ("value",)) for a in actions):
        return "an action whose value is not text"
    if not _texts(payload, ("response_url",)):
        return "an action without response_url"
    return None


def action_channel(payload: Mapping[str, Any]) -> str | None:
    """The channel of the message whose button was clicked, as Slack signed it."""
    for holder, key in (("channel", "id"), ("container", "channel_id")):
        place = payload.get(holder)
        if isinstance(place, dict) and isinstance(place.get(key), str) and place[key]:
            return str(place[key])
    return None


def replay_keys(command: Mapping[str, Any], signature: str | None) -> list[str]:
    """What makes a slash command this one: Slack's trigger_id, and the request's signature
    (which covers its timestamp and body), so neither a replayed request nor a redelivered
    Socket Mode envelope runs it twice."""
    keys = []
    trigger = command.get("trigger_id")
    if isinstance(trigger, str) and trigger:
        keys.append(f"slack:command:trigger:{trigger}")
    if signature:
        keys.append(f"slack:command:sig:{hashlib.sha256(signature.encode()).hexdigest()}")
    return keys


def _texts(fields: Mapping[str, Any], names: Sequence[str]) -> bool:
    return all(isinstance(fields.get(name), str) and fields[name] for name in names)


def _optional_texts(fields: Mapping[str, Any], names: Sequence[str]) -> bool:
    return all(fields.get(name) is None or isinstance(fields[name], str) for name in names)
