"""A fake Slack on loopback: the Web API the real AsyncWebClient talks to, and a sender of
signed events, slash commands and button clicks to the real Bolt endpoint.

It keeps messages as Slack would show them (posted, edited, streamed, deleted), records every
call, and can be told to fail a method the way Slack does (an error, or a 429 with
Retry-After).

It checks tokens and scopes as Slack does: a bot token is granted the scopes `manifest.yaml`
asks for unless told otherwise (so the manifest itself is under test), each method needs the
scope Slack's reference gives it, and a call without it is answered `missing_scope` with the
scope `needed`. A token it was told to refuse, or one that is no Slack token, is `invalid_auth`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import itertools
import json
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import yaml
from aiohttp import web

SIGNING_SECRET = "test-signing-secret"
TEAM = "T0TEAM"
BOT_USER = "U0BOT"
MANIFEST = Path(__file__).resolve().parents[2] / "manifest.yaml"

# The bot-token scope of each Web API method the fake serves, as Slack's method reference
# (docs.slack.dev/reference/methods/<method>, "Scopes: Bot token") gives it; None: no scope.
METHOD_SCOPES: dict[str, str | None] = {
    "auth.test": None,
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.delete": "chat:write",
    "chat.startStream": "chat:write",
    "chat.appendStream": "chat:write",
    "chat.stopStream": "chat:write",
    "users.info": "users:read",
    "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write",
    "conversations.replies": "*:history",  # the one for the kind of conversation, below
    "conversations.history": "*:history",
    # loading states: chat:write since Slack's 2026-03-05 change (assistant:write is still
    # accepted for now, and will not be)
    "assistant.threads.setStatus": "chat:write",
    "assistant.threads.setSuggestedPrompts": "assistant:write",
    "assistant.threads.setTitle": "assistant:write",
    "views.publish": None,
    "files.info": "files:read",
}
# what Slack serves a download that the token may not make (no files:read, a bad token): its
# sign-in page, with HTTP 200
SIGN_IN_PAGE = "<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in</body></html>"
# conversations.* need the history scope of the conversation's kind, told by its id here
# (a mpim's id starts with G too; the fake knows no private C channels)
HISTORY_SCOPES = {"C": "channels:history", "G": "groups:history", "D": "im:history"}
# methods only an app-level token (xapp-) may call, and its scope
APP_TOKEN_SCOPES = {"apps.connections.open": "connections:write"}
# the scope a subscription to each bot event needs (docs.slack.dev/reference/events/<event>)
EVENT_SCOPES: dict[str, str | None] = {
    "app_mention": "app_mentions:read",
    "message.channels": "channels:history",
    "message.groups": "groups:history",
    "message.im": "im:history",
    "message.mpim": "mpim:history",
    "assistant_thread_started": "assistant:write",
    "assistant_thread_context_changed": "assistant:write",
    "app_home_opened": None,
}


def manifest_scopes(path: Path = MANIFEST) -> frozenset[str]:
    """The bot scopes `manifest.yaml` asks for: what an installed app's token is granted."""
    manifest = yaml.safe_load(path.read_text(encoding="utf-8"))
    return frozenset(manifest["oauth_config"]["scopes"]["bot"])


def home_tab_enabled(path: Path = MANIFEST) -> bool:
    """Whether `manifest.yaml` turns the App Home tab on: views.publish of a home view needs it."""
    manifest = yaml.safe_load(path.read_text(encoding="utf-8"))
    return bool(manifest["features"].get("app_home", {}).get("home_tab_enabled"))


def needed_scope(method: str, params: dict[str, Any]) -> str | None:
    """The scope a bot token needs for this call, as Slack decides it."""
    scope = METHOD_SCOPES.get(method)
    if scope != "*:history":
        return scope
    return HISTORY_SCOPES.get(str(params.get("channel") or "C")[:1], "channels:history")


@dataclass
class SlackMessage:
    channel: str
    ts: str
    text: str
    thread_ts: str | None = None
    blocks: list[dict[str, Any]] = field(default_factory=list)
    streaming: bool = False
    deleted: bool = False
    edits: int = 0
    metadata: dict[str, Any] | None = None  # chat.postMessage's `metadata`, as Slack keeps it

    def buttons(self) -> list[dict[str, Any]]:
        return [
            element
            for block in self.blocks
            if block.get("type") == "actions"
            for element in block.get("elements", [])
        ]


@dataclass(frozen=True)
class Call:
    method: str
    params: dict[str, Any]
    at: float  # time.time() when it arrived, for benchmarks across processes


@dataclass(frozen=True)
class Fault:
    error: str = "internal_error"
    status: int = 200
    retry_after: int | None = None


@dataclass(frozen=True)
class Sent:
    """A signed request as it went to the app."""

    url: str
    body: bytes
    headers: dict[str, str]


def signed_headers(
    body: bytes, secret: str = SIGNING_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    """Slack's signature headers for `body`: v0=HMAC-SHA256(secret, "v0:{timestamp}:{body}")."""
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=" + digest.hexdigest()}


class FakeSlack:
    def __init__(
        self, *, names: dict[str, str] | None = None, scopes: Iterable[str] | None = None
    ) -> None:
        """`scopes`: what every bot token is granted (default: the manifest's)."""
        self.default_scopes = frozenset(scopes) if scopes is not None else manifest_scopes()
        self.granted: dict[str, frozenset[str]] = {}  # tokens given their own scopes
        self.refused_tokens: set[str] = set()  # revoked, or never valid: invalid_auth
        self.calls: list[Call] = []
        self.messages: dict[str, SlackMessage] = {}
        self.responses: list[dict[str, Any]] = []  # what was posted to response_urls
        self.files: dict[str, dict[str, Any]] = {}  # uploads: id -> {bytes, name, channel, ...}
        self.shared: dict[str, dict[str, Any]] = {}  # users' files: id -> {bytes, mimetype, ...}
        self.downloads: list[str] = []  # the ids of shared files the app downloaded
        self.names = names or {}
        self.streams_die_after: int | None = None  # appends, after which streams stop
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._delays: dict[str, float] = {}
        self._clock = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._changed: asyncio.Condition | None = None
        self._socket_ws: web.WebSocketResponse | None = None
        self.socket_acks: list[dict[str, Any]] = []  # envelope acks received in Socket Mode
        self.sent: list[Sent] = []  # every signed request sent to the app, for replays
        # the agent surface: each assistant thread's status, title and suggested prompts by
        # (channel, thread_ts), and each user's published App Home view
        self.statuses: dict[tuple[str, str], str] = {}
        self.titles: dict[tuple[str, str], str] = {}
        self.suggested: dict[tuple[str, str | None], dict[str, Any]] = {}
        self.home_views: dict[str, dict[str, Any]] = {}
        self.base = ""

    async def start(self) -> FakeSlack:
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_post("/respond/{id}", self._respond)
        app.router.add_get("/_fake/calls", self._recorded)
        app.router.add_get("/socket", self._socket)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files-pri/{file_id}/{name}", self._download)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}"
        self._http = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        if self._socket_ws is not None:
            await self._socket_ws.close()
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"{self.base}/api/"

    # ---- scripting and reading back

    def fail(self, method: str, fault: Fault, *, times: int = 1) -> None:
        self._faults[method].extend([fault] * times)

    def grant(self, token: str, scopes: Iterable[str]) -> None:
        """Install the app with these scopes for this token (an app whose manifest differs)."""
        self.granted[token] = frozenset(scopes)

    def refuse_token(self, token: str) -> None:
        """Slack answers this token `invalid_auth` (revoked, or from another workspace)."""
        self.refused_tokens.add(token)

    def slow_down(self, method: str, seconds: float) -> None:
        """Answer every call of `method` only after `seconds` (a busy Slack)."""
        self._delays[method] = seconds

    def calls_to(self, method: str) -> list[dict[str, Any]]:
        return [call.params for call in self.calls if call.method == method]

    def thread(self, channel: str, thread_ts: str | None) -> list[SlackMessage]:
        """What the bot shows in a thread (or at the top level for None), oldest first."""
        return [
            m
            for m in self.messages.values()
            if m.channel == channel and m.thread_ts == thread_ts and not m.deleted
        ]

    def shown_text(self, channel: str, thread_ts: str | None) -> str:
        return "\n".join(m.text for m in self.thread(channel, thread_ts))

    # ---- the Web API

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _params(request)
        self.calls.append(Call(method, params, time.time()))
        if method in self._delays:
            await asyncio.sleep(self._delays[method])
        refused = self._refusal(method, _token(request, params), params)
        if refused is not None:
            return refused
        if self._faults[method]:
            fault = self._faults[method].popleft()
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
            body = {"ok": False, "error": fault.error}
            return web.json_response(body, status=fault.status, headers=headers)
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        result = handler(params)
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()
        return web.json_response(result)

    def _refusal(
        self, method: str, token: str | None, params: dict[str, Any]
    ) -> web.Response | None:
        """Slack's answer to a token that may not make this call (HTTP 200, ok false), or None."""
        if not token:
            return web.json_response({"ok": False, "error": "not_authed"})
        if token in self.refused_tokens or not token.startswith(("xoxb-", "xapp-")):
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if token.startswith("xapp-") != (method in APP_TOKEN_SCOPES):
            return web.json_response({"ok": False, "error": "not_allowed_token_type"})
        granted = self._scopes_of(token)
        needed = APP_TOKEN_SCOPES.get(method) or needed_scope(method, params)
        if needed is None or needed in granted:
            return None
        provided = ",".join(sorted(granted))
        body = {"ok": False, "error": "missing_scope", "needed": needed, "provided": provided}
        headers = {"x-oauth-scopes": provided, "x-accepted-oauth-scopes": needed}
        return web.json_response(body, headers=headers)

    def _scopes_of(self, token: str) -> frozenset[str]:
        if token in self.granted:
            return self.granted[token]
        if token.startswith("xapp-"):
            return frozenset({"connections:write"})  # an app-level token's one scope
        return self.default_scopes

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait (20 s at most) until `predicate` holds, checking after every Web API call."""
        assert self._changed is not None
        async with asyncio.timeout(20), self._changed:
            await self._changed.wait_for(predicate)

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "team_id": TEAM, "user_id": BOT_USER, "bot_id": "B0BOT", "team": "T"}

    def _files_getUploadURLExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        file_id = f"F{next(self._clock):06d}"
        self.files[file_id] = {"name": params.get("filename"), "bytes": b"", "channel": None}
        return {"ok": True, "upload_url": f"{self.base}/upload/{file_id}", "file_id": file_id}

    async def _upload(self, request: web.Request) -> web.Response:
        self.files[request.match_info["file_id"]]["bytes"] = await request.read()
        return web.Response(text="OK - 200")

    def _files_completeUploadExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        files = params.get("files")
        shared = json.loads(files) if isinstance(files, str) else files or []
        for item in shared:
            self.files[item["id"]].update(channel=params.get("channel_id"), title=item.get("title"))
        return {"ok": True, "files": [{"id": item["id"]} for item in shared]}

    # ---- files users share in messages

    def share_file(
        self,
        name: str,
        data: bytes,
        mimetype: str,
        *,
        size: int | None = None,
        served_as: str | None = None,
        connect: bool = False,
    ) -> dict[str, Any]:
        """A user's file, as a message event's `files` lists it; its download is served to a
        bot token with files:read. `size` is what the event claims (default: the true one),
        `served_as` the download's Content-Type (default: `mimetype`); `connect` lists it as
        a Slack Connect channel does: only its id, with file_access check_file_info."""
        file_id = f"F{next(self._clock):06d}"
        url = f"{self.base}/files-pri/{file_id}/{name}"
        record = {
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": name.rsplit(".", 1)[-1],
            "size": len(data) if size is None else size,
            "mode": "hosted",
            "url_private": url,
            "url_private_download": f"{url}?download=1",
        }
        self.shared[file_id] = {"bytes": data, "served_as": served_as or mimetype, **record}
        if connect:
            return {"id": file_id, "mode": "file_access", "file_access": "check_file_info"}
        return record

    def _files_info(self, params: dict[str, Any]) -> dict[str, Any]:
        found = self.shared.get(str(params.get("file") or ""))
        if found is None:
            return {"ok": False, "error": "file_not_found"}
        record = {k: v for k, v in found.items() if k not in ("bytes", "served_as")}
        return {"ok": True, "file": record}

    async def _download(self, request: web.Request) -> web.Response:
        """A url_private download: the bytes for a bot token with files:read; Slack's sign-in
        page (HTTP 200, text/html) for any other request, as Slack answers it."""
        token = _token(request, {})
        found = self.shared.get(request.match_info["file_id"])
        allowed = (
            token is not None
            and token.startswith("xoxb-")
            and token not in self.refused_tokens
            and "files:read" in self._scopes_of(token)
        )
        if found is None or not allowed:
            return web.Response(text=SIGN_IN_PAGE, content_type="text/html")
        self.downloads.append(found["id"])
        media, _, charset = str(found["served_as"]).partition("; charset=")
        return web.Response(body=found["bytes"], content_type=media, charset=charset or None)

    def _apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": self.base.replace("http://", "ws://") + "/socket"}

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        """Socket Mode: hello, then envelopes pushed by `push_event`; acks are recorded."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._socket_ws = ws
        await ws.send_str(json.dumps({"type": "hello", "num_connections": 1}))
        async for frame in ws:
            self.socket_acks.append(json.loads(frame.data))
            assert self._changed is not None
            async with self._changed:
                self._changed.notify_all()
        return ws

    async def push_event(self, event: dict[str, Any], *, event_id: str) -> None:
        """Deliver an event over the Socket Mode connection, as Slack does without HTTP."""
        await self.wait_until(lambda: self._socket_ws is not None)
        assert self._socket_ws is not None
        envelope = {
            "envelope_id": f"env-{event_id}",
            "type": "events_api",
            "accepts_response_payload": False,
            "payload": self._event_body(event, event_id),
        }
        await self._socket_ws.send_str(json.dumps(envelope))

    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = params["user"]
        profile = {"display_name": self.names.get(user, "")}
        return {"ok": True, "user": {"id": user, "name": user.lower(), "profile": profile}}

    def _new_ts(self) -> str:
        return f"1800000000.{next(self._clock):06d}"

    def _refused(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """Slack's limits on what a message may hold."""
        blocks = _blocks(params)
        if not params.get("text") and not blocks:
            return {"ok": False, "error": "no_text"}
        for block in blocks:
            if len((block.get("text") or {}).get("text", "")) > 3000:
                return {"ok": False, "error": "invalid_blocks"}
        if len(params.get("markdown_text") or "") > 12000:
            return {"ok": False, "error": "msg_too_long"}
        return None

    def _conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        """The bot's messages in a thread (the fake keeps no one else's), as Slack lists them."""
        found = self.thread(params["channel"], params["ts"])
        metadata = str(params.get("include_all_metadata")).lower() in ("1", "true")
        listed = [_listed(m, metadata=metadata) for m in found]
        return {"ok": True, "messages": listed, "has_more": False}

    def _conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        oldest = float(params.get("oldest") or 0)
        found = [m for m in self.thread(params["channel"], None) if float(m.ts) > oldest]
        return {"ok": True, "messages": [_listed(m) for m in found], "has_more": False}

    def _chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        if refused := self._refused(params):
            return refused
        message = SlackMessage(
            channel=params["channel"],
            ts=self._new_ts(),
            text=params.get("text", ""),
            thread_ts=params.get("thread_ts"),
            blocks=_blocks(params),
            metadata=_json_field(params, "metadata"),
        )
        self.messages[message.ts] = message
        self._replied(message)
        return {"ok": True, "channel": message.channel, "ts": message.ts}

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self.messages.get(params["ts"])
        if message is None or message.deleted:
            return {"ok": False, "error": "message_not_found"}
        if message.streaming:
            return {"ok": False, "error": "cant_update_message"}
        if refused := self._refused(params):
            return refused
        message.text = params.get("text", message.text)
        message.blocks = _blocks(params)
        message.streaming = False
        message.edits += 1
        if params.get("metadata"):
            message.metadata = _json_field(params, "metadata")
        return {"ok": True, "channel": message.channel, "ts": message.ts}

    def _chat_delete(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self.messages.get(params["ts"])
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        message.deleted = True
        return {"ok": True}

    def _chat_startStream(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("thread_ts"):
            return {"ok": False, "error": "invalid_arguments"}
        in_channel = not str(params["channel"]).startswith("D")
        if in_channel and not (params.get("recipient_team_id") and params.get("recipient_user_id")):
            return {"ok": False, "error": "invalid_arguments"}
        message = SlackMessage(
            channel=params["channel"],
            ts=self._new_ts(),
            text=params.get("markdown_text", ""),
            thread_ts=params["thread_ts"],
            streaming=True,
        )
        self.messages[message.ts] = message
        self._replied(message)
        return {"ok": True, "channel": message.channel, "ts": message.ts}

    def _chat_appendStream(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.streams_die_after is not None and len(self.calls_to("chat.appendStream")) > (
            self.streams_die_after
        ):
            self.kill_streams()
        message = self.messages.get(params["ts"])
        if message is None or not message.streaming:
            return {"ok": False, "error": "message_not_in_streaming_state"}
        if refused := self._refused({"text": "x", **params}):
            return refused
        message.text += params.get("markdown_text", "")
        return {"ok": True, "channel": message.channel, "ts": message.ts}

    def _chat_stopStream(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self.messages.get(params["ts"])
        if message is None or not message.streaming:
            return {"ok": False, "error": "message_not_in_streaming_state"}
        message.text += params.get("markdown_text", "")
        message.blocks = _blocks(params)
        message.streaming = False
        return {"ok": True, "channel": message.channel, "ts": message.ts}

    # ---- the agent surface (assistant threads, App Home)

    def _replied(self, message: SlackMessage) -> None:
        """A reply in a thread clears its loading status, as Slack's does."""
        if message.thread_ts is not None:
            self.statuses.pop((message.channel, message.thread_ts), None)

    def _assistant_threads_setStatus(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("channel_id") or not params.get("thread_ts") or "status" not in params:
            return {"ok": False, "error": "invalid_arguments"}
        where = (str(params["channel_id"]), str(params["thread_ts"]))
        if params["status"]:
            self.statuses[where] = str(params["status"])
        else:  # an empty status clears it
            self.statuses.pop(where, None)
        return {"ok": True}

    def _assistant_threads_setSuggestedPrompts(self, params: dict[str, Any]) -> dict[str, Any]:
        prompts = params.get("prompts")
        if not params.get("channel_id") or not isinstance(prompts, list) or len(prompts) > 4:
            return {"ok": False, "error": "invalid_arguments"}
        if any(not p.get("title") or not p.get("message") for p in prompts):
            return {"ok": False, "error": "invalid_arguments"}
        where = (str(params["channel_id"]), params.get("thread_ts"))
        self.suggested[where] = {"title": params.get("title"), "prompts": prompts}
        return {"ok": True}

    def _assistant_threads_setTitle(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("channel_id") or not params.get("thread_ts") or not params.get("title"):
            return {"ok": False, "error": "invalid_arguments"}
        self.titles[(str(params["channel_id"]), str(params["thread_ts"]))] = str(params["title"])
        return {"ok": True}

    def _views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        view = _json_field(params, "view")
        if not params.get("user_id") or not view or not isinstance(view.get("blocks"), list):
            return {"ok": False, "error": "invalid_arguments"}
        if view.get("type") == "home" and not home_tab_enabled():
            return {"ok": False, "error": "not_enabled"}
        if len(view["blocks"]) > 100:
            return {"ok": False, "error": "invalid_arguments"}
        self.home_views[str(params["user_id"])] = view
        return {"ok": True, "view": {"id": "V0HOME", **view}}

    def kill_streams(self) -> None:
        """Every open stream stops taking text, as Slack's do after a few minutes."""
        for message in self.messages.values():
            message.streaming = False

    async def _recorded(self, _request: web.Request) -> web.Response:
        calls = [{"method": c.method, "params": c.params, "at": c.at} for c in self.calls]
        return web.json_response({"calls": calls})

    async def _respond(self, request: web.Request) -> web.Response:
        self.responses.append(await request.json())
        return web.Response(text="ok")

    # ---- what Slack sends the app

    async def post_signed(
        self,
        url: str,
        body: str | bytes,
        *,
        content_type: str,
        secret: str = SIGNING_SECRET,
        timestamp: int | None = None,
        retry_num: int | None = None,
    ) -> int:
        raw = body.encode() if isinstance(body, str) else body
        headers = {"Content-Type": content_type, **signed_headers(raw, secret, timestamp)}
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        self.sent.append(Sent(url=url, body=raw, headers=headers))
        status, _ = await self.post(url, raw, headers)
        return status

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """POST exactly these bytes and headers (a replay, or hostile input); status and text."""
        assert self._http is not None
        data = io.BytesIO(body) if len(body) > 1024 * 1024 else body  # aiohttp warns otherwise
        async with self._http.post(url, data=data, headers=headers) as response:
            return response.status, await response.text(errors="replace")

    async def replay(self, sent: Sent) -> int:
        """Send a request again, byte for byte: the same body, timestamp and signature."""
        status, _ = await self.post(sent.url, sent.body, sent.headers)
        return status

    def _event_body(self, event: dict[str, Any], event_id: str) -> dict[str, Any]:
        return {
            "token": "unused",
            "team_id": TEAM,
            "api_app_id": "A0APP",
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}],
            "event": {"team": TEAM, **event},
        }

    async def send_event(
        self, url: str, event: dict[str, Any], *, event_id: str, **options: Any
    ) -> int:
        body = self._event_body(event, event_id)
        return await self.post_signed(
            url, json.dumps(body), content_type="application/json", **options
        )

    async def send_command(
        self, url: str, text: str, *, user: str, channel: str, trigger_id: str | None = None
    ) -> int:
        """A slash command; each has its own trigger_id, as Slack gives it, unless told."""
        form = {
            "command": "/assistant",
            "text": text,
            "team_id": TEAM,
            "channel_id": channel,
            "user_id": user,
            "response_url": f"{self.base}/respond/{next(self._clock)}",
            "trigger_id": trigger_id or f"{next(self._clock)}.1.abc",
        }
        return await self.post_signed(
            url, urlencode(form), content_type="application/x-www-form-urlencoded"
        )

    async def click(
        self,
        url: str,
        button: dict[str, Any],
        *,
        user: str,
        message: SlackMessage,
        channel: str | None = None,
    ) -> int:
        """A button click on `message`; `channel` puts the message somewhere else (a button
        copied into another conversation)."""
        where = channel or message.channel
        payload = {
            "type": "block_actions",
            "team": {"id": TEAM},
            "user": {"id": user},
            "channel": {"id": where},
            "container": {"type": "message", "message_ts": message.ts, "channel_id": where},
            "message": {"ts": message.ts, "text": message.text},
            "response_url": f"{self.base}/respond/{next(self._clock)}",
            "trigger_id": f"{next(self._clock)}.1.abc",
            "actions": [
                {
                    "type": "button",
                    "action_id": button["action_id"],
                    "block_id": "feedback",
                    "value": button["value"],
                    "action_ts": str(time.time()),
                }
            ],
        }
        form = urlencode({"payload": json.dumps(payload)})
        return await self.post_signed(url, form, content_type="application/x-www-form-urlencoded")


async def _params(request: web.Request) -> dict[str, Any]:
    """Arguments as slack-sdk sends them: a query string, a form, or JSON."""
    params: dict[str, Any] = dict(request.query)
    if request.method == "POST" and request.content_type == "application/json":
        params.update(await request.json())
    elif request.method == "POST":
        params.update(await request.post())
    return params


def _token(request: web.Request, params: dict[str, Any]) -> str | None:
    """The token as slack-sdk sends it (a Bearer header), or as a `token` argument."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header.removeprefix("Bearer ").strip()
    token = params.get("token")
    return str(token) if token else None


def _blocks(params: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = params.get("blocks") or []
    return json.loads(blocks) if isinstance(blocks, str) else list(blocks)


def _listed(message: SlackMessage, *, metadata: bool = False) -> dict[str, Any]:
    listed = {
        "type": "message",
        "ts": message.ts,
        "text": message.text,
        "user": BOT_USER,
        "bot_id": "B0BOT",
        "thread_ts": message.thread_ts,
        "blocks": message.blocks,
    }
    if metadata and message.metadata is not None:  # asked for with include_all_metadata
        listed["metadata"] = message.metadata
    return listed


def _json_field(params: dict[str, Any], name: str) -> dict[str, Any] | None:
    """An object argument, sent as JSON or as a JSON-encoded form field."""
    value = params.get(name)
    if isinstance(value, str) and value:
        value = json.loads(value)
    return value if isinstance(value, dict) else None
