"""A fake Discord on loopback: the REST API and the gateway websocket that the real
`discord.Client` / `discord.AutoShardedClient` (discord.py 2.7) connect to.

    async with FakeDiscord() as fake:          # starts, and points discord.py here
        client = MyClient(intents=..., guild_ready_timeout=0.05)
        task = asyncio.create_task(client.start("token"))
        await fake.wait_ready()
        await fake.send_message("hello")       # MESSAGE_CREATE down the gateway
        await fake.wait_until(lambda: fake.messages)

It keeps what the bot shows (messages posted, edited, deleted; interaction responses and
follow-ups), records every REST call and gateway frame, can fail REST routes the way Discord
does (429 with the headers discord.py reads, or 403/404/... with Discord error bodies), and
drops or invalidates gateway sessions so RESUME (with replay) and re-IDENTIFY can be tested.

What Discord itself enforces and this fake enforces too: privileged intents (close 4014),
the MESSAGE_CONTENT intent (content blanked in guild messages that do not mention the bot),
GUILD_MESSAGES / DIRECT_MESSAGES intents (events not sent), the 3 s deadline for the first
interaction response (10062 Unknown interaction), a second initial response (40060), webhook
follow-ups only with the application id and a known token, editing another user's message
(50005), unknown channels (10003) and messages (10008), empty messages (50006).

And the bot's permissions in the server: they are those of its own role, which Discord makes
from the invite's permissions integer (default: the code's `PERMISSIONS`, so the invite itself
is under test), plus @everyone's (default: none, a server that locks @everyone down). Each
REST route in a server channel needs its permissions, as Discord's reference gives them; a
missing one is answered 403 `Missing Permissions` (50013), or `Missing Access` (50001) without
View Channel. An embed without Embed Links is dropped from a message that holds anything
else, and refused (50013) when it is all the message holds. `required` records every
permission the bot's calls needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import math
import re
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import yarl
from aiohttp import BodyPartReader, WSMsgType, web

with warnings.catch_warnings():  # discord.py imports audioop, deprecated since Python 3.11
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord
    import discord.gateway
    import discord.http

from bots.discord_app import PERMISSIONS as INVITE_PERMISSIONS

BOT_ID = "1300000000000000001"
APP_ID = "1300000000000000500"  # deliberately not BOT_ID: webhooks need the application id
GUILD_ID = "1300000000000000100"
CHANNEL_ID = "1300000000000000200"
THREAD_ID = "1300000000000000300"
DM_CHANNEL_ID = "1300000000000000400"
BOT_ROLE_ID = "1300000000000000600"
OWNER_ID = "1001"
TOKEN = "fake-bot-token"

API_PREFIX = "/api/v10"
GATEWAY_PATH = "/gateway-ws/"
DISCORD_EPOCH_MS = 1420070400000

MESSAGE_CONTENT = 1 << 15
GUILD_MEMBERS = 1 << 1
GUILD_PRESENCES = 1 << 8
GUILD_MESSAGES = 1 << 9
DIRECT_MESSAGES = 1 << 12
GUILD_MESSAGE_TYPING = 1 << 11
DIRECT_MESSAGE_TYPING = 1 << 14

EPHEMERAL = 1 << 6
LOADING = 1 << 7

# what a server's @everyone role commonly grants (Discord's default for a new server, in part)
EVERYONE_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    read_message_history=True,
    add_reactions=True,
    embed_links=True,
    attach_files=True,
    use_application_commands=True,
    create_public_threads=True,
).value
BOT_PERMISSIONS = INVITE_PERMISSIONS.value  # the bot's role: what its invite asks for
THREAD_TYPES = (10, 11, 12)
DM_TYPES = (1, 3)
ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024

_ERRORS: dict[int, tuple[int, str]] = {
    400: (50035, "Invalid Form Body"),
    401: (0, "401: Unauthorized"),
    403: (50013, "Missing Permissions"),
    404: (10008, "Unknown Message"),
    405: (0, "405: Method Not Allowed"),
    500: (0, "500: Internal Server Error"),
    502: (0, "502: Bad Gateway"),
    503: (0, "503: Service Unavailable"),
}


@dataclass
class Call:
    method: str
    path: str  # after /api/v10, decoded: "/webhooks/1/tok/messages/@original"
    json_body: Any
    at: float = field(default_factory=time.time)
    status: int = 0  # filled in once answered
    query: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeMessage:
    """A message the bot made (channel message, interaction response, follow-up)."""

    id: str
    channel_id: str
    content: str
    components: list[dict[str, Any]] = field(default_factory=list)
    embeds: list[dict[str, Any]] = field(default_factory=list)
    edits: int = 0
    deleted: bool = False
    message_reference: dict[str, Any] | None = None
    flags: int = 0
    attachments: list[dict[str, Any]] = field(default_factory=list)
    interaction_id: str | None = None  # set for interaction responses and follow-ups
    webhook: bool = False  # posted through the interaction webhook (follow-ups)
    created_at: float = field(default_factory=time.time)
    edited_at: float | None = None
    history: list[str] = field(default_factory=list)  # earlier contents, oldest first

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & LOADING)

    def buttons(self) -> list[dict[str, Any]]:
        """Every button/select in the components, flattened (action rows, containers...)."""
        found: list[dict[str, Any]] = []

        def walk(items: list[dict[str, Any]]) -> None:
            for item in items:
                if item.get("type") in (2, 3, 5, 6, 7, 8):
                    found.append(item)
                walk(item.get("components", []))
                accessory = item.get("accessory")
                if isinstance(accessory, dict):
                    walk([accessory])

        walk(self.components)
        return found


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    retry_after: float
    times: int
    code: int | None
    message: str | None
    is_global: bool


@dataclass(eq=False)
class _Conn:
    ws: web.WebSocketResponse
    compressor: Any  # zlib compressobj for compress=zlib-stream, else None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    session: _Session | None = None
    closed_by_server: bool = False
    query: dict[str, str] = field(default_factory=dict)


@dataclass(eq=False)
class _Session:
    id: str
    shard: list[int] | None
    intents: int
    seq: int = 0
    log: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    conn: _Conn | None = None
    invalid: bool = False
    replay_seen: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def shard_id(self) -> int:
        return self.shard[0] if self.shard else 0


@dataclass
class _Interaction:
    id: str
    token: str
    type: int
    channel_id: str
    guild: bool
    message_id: str | None = None  # the message whose component was used
    dispatched_at: float | None = None
    acked: int | None = None  # the callback type it was answered with
    original_id: str | None = None
    followups: list[str] = field(default_factory=list)


@dataclass
class _Req:
    method: str
    path: str
    params: dict[str, str]
    body: Any
    files: list[dict[str, Any]]
    query: dict[str, str]


def _glob(pattern: str) -> re.Pattern[str]:
    """'*' matches one path segment, '**' any number of them."""
    parts = re.split(r"(\*\*|\*)", pattern)
    regex = "".join(
        ".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part) for part in parts
    )
    return re.compile(regex + r"/?\Z")


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


ACK_SECONDS = 3.0  # how long Discord waits for an interaction's first response


class FakeDiscord:
    def __init__(
        self,
        *,
        message_content_intent: bool = True,
        members_intent: bool = True,
        presences_intent: bool = True,
        shards: int = 1,
        token: str | None = None,
        transport_compression: bool = True,
        heartbeat_interval_ms: int = 45000,
        interaction_deadline: float | None = 3.0,
        bot_permissions: int = BOT_PERMISSIONS,
        everyone_permissions: int = 0,
        echo: bool = False,
    ) -> None:
        self.message_content_intent = message_content_intent
        self.members_intent = members_intent
        self.member_roles: dict[str, list[str]] = {}  # a user's roles in the server
        self.presences_intent = presences_intent
        self.shards = shards
        # echo=True: the bot's own messages, edits, deletions and typing come back down the
        # gateway as Discord sends them (MESSAGE_CREATE/UPDATE/DELETE, TYPING_START)
        self.echo = echo
        self._echoes: list[tuple[str, dict[str, Any]]] = []
        self.token = token  # None: any token is accepted
        self.transport_compression = transport_compression
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.interaction_deadline = interaction_deadline
        self.bot_permissions = bot_permissions  # the bot's role, made from the invite
        self.everyone_permissions = everyone_permissions
        self.required: set[str] = set()  # every permission the bot's REST calls needed

        self.calls: list[Call] = []
        self.messages: dict[str, FakeMessage] = {}
        self.user_messages: dict[str, dict[str, Any]] = {}  # MESSAGE_CREATE payloads built here
        self.deleted_user_messages: set[str] = set()
        self.interaction_responses: list[dict[str, Any]] = []
        self._interactions_sent: dict[str, float] = {}  # id -> when it was dispatched
        self.commands: dict[str | None, list[dict[str, Any]]] = {}
        self.typing: list[str] = []
        self.uploads: dict[str, bytes] = {}  # attachment id -> the bytes the bot uploaded
        # users' attachments: id -> (bytes, Content-Type served); and the ids downloaded
        self.user_files: dict[str, tuple[bytes, str]] = {}
        self.downloads: list[str] = []
        self.reactions: list[tuple[str, str, str, str]] = []  # (op, channel, message, emoji)
        self.threads: dict[str, dict[str, Any]] = {}  # threads the bot created
        self.text_channels: dict[str, dict[str, Any]] = {}  # more, from add_text_channel
        self.users: dict[str, str] = {OWNER_ID: "alice"}
        self.dm_channels: dict[str, str] = {OWNER_ID: DM_CHANNEL_ID}
        self.identifies = 0
        self.resumes = 0  # RESUME frames received
        self.resumed = 0  # RESUMED dispatches sent (successful resumes)
        self.readies = 0
        self.heartbeats = 0
        self.connections = 0  # websocket connections accepted
        self.identify_payloads: list[dict[str, Any]] = []
        self.gateway_queries: list[dict[str, str]] = []  # ?v=10&encoding=json&compress=...
        self.presence_updates: list[dict[str, Any]] = []
        self.frames: list[tuple[str, dict[str, Any]]] = []  # ("in" | "out", frame)
        self.close_codes: list[int] = []  # codes this fake closed sockets with
        self.sessions: dict[str, _Session] = {}

        self._faults: list[_Fault] = []
        self._interactions: dict[str, _Interaction] = {}
        self._conns: set[_Conn] = set()
        self._routes = self._route_table()
        self._ids = itertools.count(1)
        self._last_snowflake = 0
        self._runner: web.AppRunner | None = None
        self._changed: asyncio.Condition | None = None
        self._saved: tuple[str, yarl.URL] | None = None
        self.base = ""

    # ---- lifecycle

    async def start(self) -> FakeDiscord:
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_get(GATEWAY_PATH, self._gateway)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        app.router.add_get("/attachments/{id}/{filename}", self._cdn)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self.restore()
        for conn in list(self._conns):
            conn.closed_by_server = True
            await conn.ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        self.point_discord_here()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def rest_base(self) -> str:
        return self.base + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return self.base.replace("http://", "ws://") + GATEWAY_PATH

    def point_discord_here(self) -> None:
        """Aim discord.py (REST, interaction callbacks, webhooks, gateway) at this fake."""
        if self._saved is None:
            self._saved = (
                discord.http.Route.BASE,
                discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
            )
        discord.http.Route.BASE = self.rest_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)

    def restore(self) -> None:
        if self._saved is not None:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved
            self._saved = None

    # ---- waiting

    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[], Any], *, within: float = 20.0) -> None:
        """Wait until `predicate()` is truthy: checked on every REST call and gateway frame,
        and every 20 ms besides (so it may look at the client's state too)."""
        assert self._changed is not None, "start() first"
        async with asyncio.timeout(within):
            while not predicate():
                async with self._changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), 0.02)

    async def wait_ready(self, count: int = 1) -> None:
        """Until READY and the GUILD_CREATEs went out `count` times (one per IDENTIFY)."""
        await self.wait_until(lambda: self.readies >= count)

    # ---- scripting faults

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        *,
        status: int = 429,
        retry_after: float = 0.3,
        times: int = 1,
        code: int | None = None,
        message: str | None = None,
        is_global: bool = False,
    ) -> None:
        """The next `times` REST calls matching fail. `path_pattern` is relative to /api/v10,
        '*' is one path segment, '**' several: "/channels/*/messages/*". `method` may be "*"."""
        self._faults.append(
            _Fault(
                method.upper(),
                _glob(path_pattern),
                status,
                retry_after,
                times,
                code,
                message,
                is_global,
            )
        )

    def _fault_for(self, method: str, path: str) -> web.Response | None:
        for fault in self._faults:
            if fault.times <= 0 or fault.method not in ("*", method):
                continue
            if not fault.pattern.match(path):
                continue
            fault.times -= 1
            if fault.status == 429:
                return self._rate_limited(path, fault)
            code, text = _ERRORS.get(fault.status, (0, f"{fault.status}: Error"))
            body = {
                "code": fault.code if fault.code is not None else code,
                "message": fault.message or text,
            }
            return _json(body, status=fault.status)
        return None

    def _rate_limited(self, path: str, fault: _Fault) -> web.Response:
        after = fault.retry_after
        headers = {
            "Retry-After": str(max(1, math.ceil(after))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + after:.3f}",
            "X-RateLimit-Reset-After": f"{after:.3f}",
            "X-RateLimit-Bucket": _bucket(path),
            "X-RateLimit-Scope": "global" if fault.is_global else "user",
        }
        if fault.is_global:
            headers["X-RateLimit-Global"] = "true"
        body: dict[str, Any] = {"message": "You are being rate limited.", "retry_after": after}
        body["global"] = fault.is_global
        return _json(body, status=429, headers=headers)

    # ---- ids, users, channels, guild

    def snowflake(self) -> str:
        value = max((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22, self._last_snowflake + 1)
        self._last_snowflake = value
        return str(value)

    def user(self, user_id: str, name: str | None = None, *, bot: bool = False) -> dict[str, Any]:
        if user_id == BOT_ID:
            return self.bot_user()
        if name is not None:
            self.users[user_id] = name
        username = name or self.users.get(user_id, f"user{user_id}")
        data: dict[str, Any] = {
            "id": user_id,
            "username": username,
            "global_name": username.title(),
            "discriminator": "0",
            "avatar": None,
            "public_flags": 0,
        }
        if bot:
            data["bot"] = True
        return data

    def bot_user(self) -> dict[str, Any]:
        return {
            "id": BOT_ID,
            "username": "assistant",
            "global_name": None,
            "discriminator": "0",
            "avatar": None,
            "bot": True,
            "public_flags": 0,
            "flags": 0,
            "verified": True,
            "mfa_enabled": False,
            "email": None,
            "locale": "en-US",
        }

    def member(
        self, user_id: str, *, with_user: bool = True, permissions: int | None = None
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "roles": [BOT_ROLE_ID] if user_id == BOT_ID else self.member_roles.get(user_id, []),
            "nick": None,
            "avatar": None,
            "joined_at": _iso(time.time() - 86400),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self.user(user_id)
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data

    def text_channel(self) -> dict[str, Any]:
        return {
            "id": CHANNEL_ID,
            "type": 0,
            "guild_id": GUILD_ID,
            "name": "general",
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
            "default_auto_archive_duration": 1440,
            "flags": 0,
        }

    def add_text_channel(self, name: str | None = None) -> str:
        """Another text channel in the server (in GUILD_CREATE when added before the bot
        connects); returns its id."""
        channel = {**self.text_channel(), "id": self.snowflake()}
        channel["name"] = name or f"channel-{len(self.text_channels) + 2}"
        channel["position"] = len(self.text_channels) + 1
        self.text_channels[channel["id"]] = channel
        return str(channel["id"])

    def thread_channel(
        self, thread_id: str = THREAD_ID, *, name: str = "a thread", owner_id: str = OWNER_ID
    ) -> dict[str, Any]:
        now = _iso(time.time())
        return {
            "id": thread_id,
            "type": 11,
            "guild_id": GUILD_ID,
            "parent_id": CHANNEL_ID,
            "owner_id": owner_id,
            "name": name,
            "last_message_id": None,
            "message_count": 0,
            "member_count": 1,
            "total_message_sent": 0,
            "rate_limit_per_user": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": now,
                "locked": False,
                "create_timestamp": now,
            },
        }

    def dm_channel_for(self, user_id: str) -> str:
        if user_id not in self.dm_channels:
            self.dm_channels[user_id] = self.snowflake()
        return self.dm_channels[user_id]

    def dm_channel(self, channel_id: str) -> dict[str, Any]:
        user_id = next((u for u, c in self.dm_channels.items() if c == channel_id), OWNER_ID)
        return {
            "id": channel_id,
            "type": 1,
            "last_message_id": None,
            "flags": 0,
            "recipients": [self.user(user_id)],
        }

    def channel(self, channel_id: str) -> dict[str, Any] | None:
        if channel_id == CHANNEL_ID:
            return self.text_channel()
        if channel_id == THREAD_ID:
            return self.thread_channel()
        if channel_id in self.threads:
            return self.threads[channel_id]
        if channel_id in self.text_channels:
            return self.text_channels[channel_id]
        if channel_id in self.dm_channels.values():
            return self.dm_channel(channel_id)
        return None

    def is_guild_channel(self, channel_id: str) -> bool:
        channel = self.channel(channel_id)
        return channel is not None and channel["type"] != 1

    def roles(self) -> list[dict[str, Any]]:
        base = {
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "mentionable": False,
            "flags": 0,
        }
        everyone = {
            **base,
            "id": GUILD_ID,
            "name": "@everyone",
            "permissions": str(self.everyone_permissions),
            "position": 0,
            "managed": False,
        }
        bot = {
            **base,
            "id": BOT_ROLE_ID,
            "name": "assistant",
            "permissions": str(self.bot_permissions),
            "position": 1,
            "managed": True,
            "tags": {"bot_id": BOT_ID},
        }
        return [everyone, bot]

    def guild(self) -> dict[str, Any]:
        members = [self.member(BOT_ID)] + [self.member(uid) for uid in self.users]
        return {
            "id": GUILD_ID,
            "name": "Test Guild",
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": OWNER_ID,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "application_id": None,
            "max_members": 500000,
            "max_video_channel_users": 25,
            "features": [],
            "roles": self.roles(),
            "emojis": [],
            "stickers": [],
            "joined_at": _iso(time.time() - 86400),
            "large": False,
            "unavailable": False,
            "lazy": True,
            "member_count": len(members),
            "members": members,
            "channels": [self.text_channel(), *self.text_channels.values()],
            "threads": [self.thread_channel(), *self.threads.values()],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    def application(self) -> dict[str, Any]:
        flags = (1 << 19) if self.message_content_intent else 0  # GATEWAY_MESSAGE_CONTENT_LIMITED
        if self.members_intent:
            flags |= 1 << 15  # GATEWAY_GUILD_MEMBERS_LIMITED
        if self.presences_intent:
            flags |= 1 << 13  # GATEWAY_PRESENCE_LIMITED
        return {
            "id": APP_ID,
            "name": "assistant",
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "bot_public": False,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "flags": flags,
            "owner": self.user(OWNER_ID),
            "team": None,
            "bot": self.bot_user(),
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "tags": [],
            "approximate_guild_count": 1,
            "integration_types_config": {"0": {}},
        }

    @property
    def bot_guild_permissions(self) -> int:
        """What the bot may do in the server: its role's permissions and @everyone's."""
        return self.bot_permissions | self.everyone_permissions

    def _writing(self, channel_id: str) -> str:
        """Writing in a thread takes Send Messages in Threads instead of Send Messages."""
        in_thread = (self.channel(channel_id) or {}).get("type") in THREAD_TYPES
        return "send_messages_in_threads" if in_thread else "send_messages"

    def _refused(self, channel_id: str, *needed: str) -> web.Response | None:
        """Discord's answer when the bot lacks one of `needed` in a server channel: 403
        Missing Access (50001) without View Channel, else Missing Permissions (50013); None
        when it may (DMs take no permissions). Recorded in `required` either way."""
        channel = self.channel(channel_id)
        if channel is None or channel["type"] in DM_TYPES:
            return None
        self.required.update(needed)
        granted = discord.Permissions(self.bot_guild_permissions)
        if granted.administrator:
            return None
        if "view_channel" in needed and not granted.view_channel:
            return _error(403, 50001, "Missing Access")
        if all(getattr(granted, name) for name in needed):
            return None
        return _error(403, 50013, "Missing Permissions")

    def _embeds_refused(self, channel_id: str, body: dict[str, Any], files: list[Any]) -> bool:
        """Without Embed Links Discord drops embeds from a message; True when the embeds
        were all it held, which Discord refuses (403) instead."""
        if not body.get("embeds") or self._refused(channel_id, "embed_links") is None:
            return False
        body["embeds"] = []
        return not _has_content(body, files)

    def _shard_of(self, guild_id: str, count: int) -> int:
        return (int(guild_id) >> 22) % max(count, 1)

    # ---- what the bot made

    def message_payload(self, message: FakeMessage, *, nested: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": message.id,
            "channel_id": message.channel_id,
            "type": 0,
            "content": message.content,
            "author": self.bot_user(),
            "timestamp": _iso(message.created_at),
            "edited_timestamp": _iso(message.edited_at) if message.edited_at else None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": message.attachments,
            "embeds": message.embeds,
            "pinned": False,
            "flags": message.flags,
            "components": message.components,
        }
        if message.interaction_id is not None:
            data["application_id"] = APP_ID
            interaction = next(
                (i for i in self._interactions.values() if i.id == message.interaction_id), None
            )
            if interaction is not None and interaction.type == 2:
                data["type"] = 20  # CHAT_INPUT_COMMAND
        if message.webhook:
            data["webhook_id"] = APP_ID
        if message.message_reference is not None:
            data["type"] = 19  # REPLY
            data["message_reference"] = message.message_reference
            if nested:
                referenced = self.find_message(str(message.message_reference.get("message_id")))
                if referenced is not None:
                    data["referenced_message"] = referenced
        return data

    def _gone(self, message_id: str) -> bool:
        if message_id in self.deleted_user_messages:
            return True
        return message_id in self.messages and self.messages[message_id].deleted

    def find_message(self, message_id: str) -> dict[str, Any] | None:
        if message_id in self.messages:
            found = self.messages[message_id]
            return None if found.deleted else self.message_payload(found, nested=False)
        return self.user_messages.get(message_id)

    def shown(self, channel_id: str = CHANNEL_ID) -> list[FakeMessage]:
        """What the bot shows in a channel (not deleted), oldest first."""
        return [m for m in self.messages.values() if m.channel_id == channel_id and not m.deleted]

    def calls_to(self, method: str, path_pattern: str) -> list[Call]:
        pattern = _glob(path_pattern)
        return [c for c in self.calls if c.method == method.upper() and pattern.match(c.path)]

    def responses_for(self, interaction: dict[str, Any] | str) -> list[dict[str, Any]]:
        """Callbacks, follow-ups and @original edits of one interaction (payload or id)."""
        iid = interaction if isinstance(interaction, str) else interaction["id"]
        return [r for r in self.interaction_responses if r["interaction_id"] == iid]

    # ---- payloads the bot receives

    def attachment(
        self, filename: str, data: bytes, content_type: str | None, *, size: int | None = None
    ) -> dict[str, Any]:
        """A user's attachment as MESSAGE_CREATE carries it, its bytes served at `url` (the
        CDN needs no token). `size` is what Discord claims (default: the true one)."""
        attachment_id = self.snowflake()
        self.user_files[attachment_id] = (data, content_type or "application/octet-stream")
        url = f"{self.base}/attachments/{attachment_id}/{filename}"
        made: dict[str, Any] = {
            "id": attachment_id,
            "filename": filename,
            "size": len(data) if size is None else size,
            "url": url,
            "proxy_url": url,
        }
        if content_type is not None:
            made["content_type"] = content_type
        return made

    async def _cdn(self, request: web.Request) -> web.Response:
        """An attachment's bytes: a user's, or one the bot uploaded."""
        attachment_id = request.match_info["id"]
        if attachment_id in self.user_files:
            data, content_type = self.user_files[attachment_id]
            self.downloads.append(attachment_id)
            media, _, charset = content_type.partition("; charset=")
            return web.Response(body=data, content_type=media, charset=charset or None)
        if attachment_id in self.uploads:
            return web.Response(body=self.uploads[attachment_id])
        return web.Response(status=404, text="Not Found")

    def message_create(
        self,
        content: str,
        *,
        author_id: str = OWNER_ID,
        author_name: str | None = None,
        channel_id: str | None = None,
        guild: bool = True,
        mention_bot: bool = False,
        bot_author: bool = False,
        message_id: str | None = None,
        reference_id: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """A MESSAGE_CREATE payload. `channel_id` defaults to CHANNEL_ID in the guild and to
        the author's DM channel otherwise. Remembered so replies can resolve it."""
        if author_name is not None:
            self.users[author_id] = author_name
        if channel_id is None:
            channel_id = CHANNEL_ID if guild else self.dm_channel_for(author_id)
        mention = f"<@{BOT_ID}>"
        if mention_bot and mention not in content and f"<@!{BOT_ID}>" not in content:
            content = f"{mention} {content}"
        author = self.user(author_id, author_name, bot=bot_author)
        data: dict[str, Any] = {
            "id": message_id or self.snowflake(),
            "channel_id": channel_id,
            "type": 0,
            "content": content,
            "author": author,
            "timestamp": _iso(time.time()),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "flags": 0,
            "components": [],
            "nonce": str(next(self._ids)),
        }
        if mention in content or f"<@!{BOT_ID}>" in content:
            bot = self.bot_user()
            if guild:
                bot["member"] = self.member(BOT_ID, with_user=False)
            data["mentions"] = [bot]
        if guild:
            data["guild_id"] = GUILD_ID
            data["member"] = self.member(author_id, with_user=False)
        if reference_id is not None:
            data["type"] = 19
            data["message_reference"] = {
                "type": 0,
                "message_id": reference_id,
                "channel_id": channel_id,
                **({"guild_id": GUILD_ID} if guild else {}),
            }
            referenced = self.find_message(reference_id)
            if referenced is not None:
                data["referenced_message"] = referenced
        data.update(extra)
        self.user_messages[data["id"]] = data
        return data

    def _interaction(
        self,
        type_: int,
        data: dict[str, Any],
        *,
        user_id: str,
        channel_id: str | None,
        guild: bool,
        message: FakeMessage | None = None,
    ) -> dict[str, Any]:
        interaction_id = self.snowflake()
        token = f"itoken-{interaction_id}-{next(self._ids)}"
        if channel_id is None:
            channel_id = CHANNEL_ID if guild else self.dm_channel_for(user_id)
        channel = self.channel(channel_id) or {"id": channel_id, "type": 0}
        payload: dict[str, Any] = {
            "id": interaction_id,
            "application_id": APP_ID,
            "type": type_,
            "data": data,
            "token": token,
            "version": 1,
            "locale": "en-US",
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
            "app_permissions": str(self.bot_guild_permissions),
            "channel_id": channel_id,
        }
        if guild:
            member_permissions = self.everyone_permissions
            if user_id == OWNER_ID:
                member_permissions = discord.Permissions.all().value
            payload.update(
                guild_id=GUILD_ID,
                guild={"id": GUILD_ID, "locale": "en-US", "features": []},
                guild_locale="en-US",
                member=self.member(user_id, permissions=member_permissions),
                channel={**channel, "permissions": str(member_permissions)},
                authorizing_integration_owners={"0": GUILD_ID},
                context=0,
            )
        else:
            payload.update(
                user=self.user(user_id),
                channel=channel,
                authorizing_integration_owners={"0": "0"},
                context=1,
            )
        if message is not None:
            payload["message"] = self.message_payload(message)
        self._interactions[token] = _Interaction(
            id=interaction_id,
            token=token,
            type=type_,
            channel_id=channel_id,
            guild=guild,
            message_id=message.id if message is not None else None,
        )
        return payload

    def _command_data(
        self,
        command: str,
        group: str | None,
        sub: str | None,
        options: dict[str, Any],
        focused: str | None,
        guild: bool,
    ) -> dict[str, Any]:
        values: list[dict[str, Any]] = []
        for name, value in options.items():
            option_type = (
                5
                if isinstance(value, bool)
                else 4
                if isinstance(value, int)
                else 10
                if isinstance(value, float)
                else 3
            )
            option: dict[str, Any] = {"name": name, "type": option_type, "value": value}
            if name == focused:
                option["focused"] = True
            values.append(option)
        nested: list[dict[str, Any]] = values
        if sub is not None:
            nested = [{"name": sub, "type": 1, "options": values}]
            if group is not None:
                nested = [{"name": group, "type": 2, "options": nested}]
        data: dict[str, Any] = {"name": command, "type": 1, "options": nested}
        synced_in = GUILD_ID if guild and self._command(GUILD_ID, command) else None
        registered = self._command(synced_in, command)
        data["id"] = registered["id"] if registered else self.snowflake()
        if synced_in is not None:
            data["guild_id"] = synced_in
        return data

    def _command(self, guild_id: str | None, name: str) -> dict[str, Any] | None:
        return next((c for c in self.commands.get(guild_id, []) if c["name"] == name), None)

    def slash_command(
        self,
        *,
        user_id: str = OWNER_ID,
        group: str | None = "prompt",
        sub: str | None,
        options: dict[str, Any] | None = None,
        channel_id: str | None = None,
        command: str = "assistant",
        guild: bool = True,
    ) -> dict[str, Any]:
        """INTERACTION_CREATE (type 2) for `/command group sub opt=value...`; group=None for a
        top-level subcommand, sub=None too for a plain command. Options are typed from the
        Python value (str 3, int 4, bool 5, float 10)."""
        data = self._command_data(command, group, sub, options or {}, None, guild)
        return self._interaction(2, data, user_id=user_id, channel_id=channel_id, guild=guild)

    def autocomplete(
        self,
        *,
        user_id: str = OWNER_ID,
        group: str | None = "prompt",
        sub: str | None,
        options: dict[str, Any],
        focused: str,
        channel_id: str | None = None,
        command: str = "assistant",
        guild: bool = True,
    ) -> dict[str, Any]:
        """INTERACTION_CREATE (type 4): `options[focused]` is what the user has typed so far."""
        if focused not in options:
            raise ValueError(f"focused option {focused!r} is not among the options")
        data = self._command_data(command, group, sub, options, focused, guild)
        return self._interaction(4, data, user_id=user_id, channel_id=channel_id, guild=guild)

    def button_click(
        self,
        *,
        user_id: str = OWNER_ID,
        custom_id: str,
        message_id: str,
        channel_id: str | None = None,
        component_type: int = 2,
        values: list[str] | None = None,
    ) -> dict[str, Any]:
        """INTERACTION_CREATE (type 3) for a component on a message the bot sent."""
        if message_id not in self.messages:
            raise ValueError(f"the bot sent no message {message_id}")
        message = self.messages[message_id]
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = values
        return self._interaction(
            3,
            data,
            user_id=user_id,
            channel_id=channel_id or message.channel_id,
            guild=self.is_guild_channel(message.channel_id),
            message=message,
        )

    # ---- the gateway

    async def send_message(self, content: str, **options: Any) -> dict[str, Any]:
        """Build a MESSAGE_CREATE (see `message_create`) and dispatch it."""
        data = self.message_create(content, **options)
        await self.dispatch("MESSAGE_CREATE", data)
        return data

    async def delete_user_message(self, message_id: str) -> None:
        """The user deletes their message: MESSAGE_DELETE, and replies to it now fail."""
        data = self.user_messages.pop(message_id)
        self.deleted_user_messages.add(message_id)
        event = {"id": message_id, "channel_id": data["channel_id"]}
        if "guild_id" in data:
            event["guild_id"] = data["guild_id"]
        await self.dispatch("MESSAGE_DELETE", event)

    async def interact(self, payload: dict[str, Any]) -> dict[str, Any]:
        self._interactions_sent[payload["id"]] = time.monotonic()
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    def awaiting_answer(self) -> bool:
        """Whether an interaction still has no response within Discord's 3 s to answer one:
        its handler runs on a task of its own, which no turn tracks (under load it can take
        longer than a quiet spell of REST calls)."""
        answered = {r["interaction_id"] for r in self.interaction_responses}
        now = time.monotonic()
        return any(
            iid not in answered and now - sent < ACK_SECONDS
            for iid, sent in self._interactions_sent.items()
        )

    def _live_session(self, shard_id: int | None, data: dict[str, Any]) -> _Session:
        live = [s for s in self.sessions.values() if not s.invalid]
        if not live:
            raise RuntimeError("no gateway session: start the client and await fake.wait_ready()")
        if shard_id is None:
            count = max((s.shard[1] for s in live if s.shard), default=1)
            guild_id = data.get("guild_id")
            shard_id = self._shard_of(guild_id, count) if guild_id and count > 1 else 0
        matching = [s for s in live if s.shard_id == shard_id]
        if not matching:
            raise RuntimeError(f"no gateway session for shard {shard_id}")
        return matching[-1]

    def _filter(self, session: _Session, event: str, data: dict[str, Any]) -> dict[str, Any] | None:
        """What Discord would send this session, given its intents."""
        if event == "TYPING_START":
            wanted = GUILD_MESSAGE_TYPING if "guild_id" in data else DIRECT_MESSAGE_TYPING
            return data if session.intents & wanted else None
        if event not in ("MESSAGE_CREATE", "MESSAGE_UPDATE"):
            return data
        in_guild = "guild_id" in data
        if not session.intents & (GUILD_MESSAGES if in_guild else DIRECT_MESSAGES):
            return None
        author = data.get("author") or {}
        mentioned = any(m.get("id") == BOT_ID for m in data.get("mentions", []))
        by_bot = author.get("id") == BOT_ID
        if in_guild and not session.intents & MESSAGE_CONTENT and not mentioned and not by_bot:
            blank = {"content": "", "embeds": [], "attachments": [], "components": []}
            return {**data, **blank}
        return data

    async def dispatch(
        self,
        event: str,
        data: dict[str, Any],
        *,
        shard_id: int | None = None,
        deliver: bool = True,
    ) -> int | None:
        """Send a DISPATCH (op 0) with the session's next sequence number; it is logged for
        RESUME replay. deliver=False logs it without sending (lost in flight: the client gets
        it on RESUME). Returns the seq, or None when the session's intents filter it out."""
        session = self._live_session(shard_id, data)
        async with session.lock:
            filtered = self._filter(session, event, data)
            if filtered is None:
                return None
            session.seq += 1
            seq = session.seq
            session.log.append((seq, event, filtered))
            if event == "INTERACTION_CREATE" and data.get("token") in self._interactions:
                self._interactions[data["token"]].dispatched_at = time.monotonic()
            if deliver and session.conn is not None:
                frame = {"op": 0, "s": seq, "t": event, "d": filtered}
                await self._send(session.conn, frame)
        return seq

    async def flood(self, event: str, items: list[dict[str, Any]]) -> list[float]:
        """Dispatch `items` back to back, as a burst of traffic arrives (one session, no
        other frame between them); returns the wall-clock time each was sent."""
        session = self._live_session(None, items[0] if items else {})
        sent: list[float] = []
        async with session.lock:
            for data in items:
                filtered = self._filter(session, event, data)
                sent.append(time.time())
                if filtered is None:
                    continue
                session.seq += 1
                session.log.append((session.seq, event, filtered))
                if session.conn is not None:
                    frame = {"op": 0, "s": session.seq, "t": event, "d": filtered}
                    await self._send(session.conn, frame)
        return sent

    def dispatch_log(self, shard_id: int = 0) -> list[tuple[int, str, dict[str, Any]]]:
        """(seq, event, data) of the latest session on a shard."""
        sessions = [s for s in self.sessions.values() if s.shard_id == shard_id]
        return list(sessions[-1].log) if sessions else []

    async def drop_connection(
        self,
        *,
        resumable: bool = True,
        code: int | None = None,
        replay_seen: int = 0,
        shard_id: int | None = None,
    ) -> None:
        """Close the gateway socket(s) as Discord does. resumable: code 4000, the client
        RESUMEs and gets every dispatch after its seq, then RESUMED. Not resumable: code 4009,
        the session is gone, the client's RESUME gets INVALID_SESSION and it IDENTIFYs again
        (discord.py waits 5 s first unless `no_identify_delay(client)`). replay_seen=N also
        replays the last N dispatches the client had already seen (duplicate delivery)."""
        for session in list(self.sessions.values()):
            if session.conn is None or (shard_id is not None and session.shard_id != shard_id):
                continue
            conn = session.conn
            session.conn = None
            session.replay_seen = replay_seen
            if not resumable:
                session.invalid = True
            close_code = code if code is not None else (4000 if resumable else 4009)
            await self._close(conn, close_code)

    async def request_reconnect(self, *, shard_id: int | None = None) -> None:
        """Send op 7 RECONNECT: the client closes the socket and RESUMEs."""
        for session in list(self.sessions.values()):
            if session.conn is not None and shard_id in (None, session.shard_id):
                await self._send(session.conn, {"op": 7, "d": None, "s": None, "t": None})

    async def invalidate_session(self, *, shard_id: int | None = None) -> None:
        """Send op 9 INVALID_SESSION (d=false): the client must IDENTIFY anew."""
        for session in list(self.sessions.values()):
            if session.conn is not None and shard_id in (None, session.shard_id):
                session.invalid = True
                await self._send(session.conn, {"op": 9, "d": False, "s": None, "t": None})

    async def _close(self, conn: _Conn, code: int) -> None:
        conn.closed_by_server = True
        self.close_codes.append(code)
        await conn.ws.close(code=code, message=b"fake discord")

    async def _send(self, conn: _Conn, frame: dict[str, Any]) -> None:
        text = json.dumps(frame, separators=(",", ":"))
        async with conn.lock:
            if conn.ws.closed:
                return
            try:
                if conn.compressor is not None:
                    data = conn.compressor.compress(text.encode())
                    data += conn.compressor.flush(zlib.Z_SYNC_FLUSH)
                    await conn.ws.send_bytes(data)
                else:
                    await conn.ws.send_str(text)
            except ConnectionError:
                return
        self.frames.append(("out", frame))
        await self._notify()

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        query = dict(request.query)
        self.gateway_queries.append(query)
        zlib_stream = self.transport_compression and query.get("compress") == "zlib-stream"
        conn = _Conn(ws, zlib.compressobj() if zlib_stream else None, query=query)
        self._conns.add(conn)
        self.connections += 1
        hello = {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["fake-gateway"]}
        await self._send(conn, {"op": 10, "d": hello, "s": None, "t": None})
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    frame = json.loads(msg.data)
                    self.frames.append(("in", frame))
                    await self._on_frame(conn, frame)
                    await self._notify()
        finally:
            self._conns.discard(conn)
            session = conn.session
            if session is not None and session.conn is conn:
                session.conn = None
                # a client closing with 1000/1001 ends its session, as on Discord
                if not conn.closed_by_server and ws.close_code in (1000, 1001):
                    session.invalid = True
            await self._notify()
        return ws

    async def _on_frame(self, conn: _Conn, frame: dict[str, Any]) -> None:
        op, data = frame.get("op"), frame.get("d")
        if op == 1:
            self.heartbeats += 1
            await self._send(conn, {"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            await self._identify(conn, data or {})
        elif op == 3:
            self.presence_updates.append(data or {})
        elif op == 6:
            await self._resume(conn, data or {})
        elif op == 8:
            await self._members_chunk(conn, data or {})

    async def _identify(self, conn: _Conn, data: dict[str, Any]) -> None:
        self.identifies += 1
        self.identify_payloads.append(data)
        if self.token is not None and data.get("token") != self.token:
            await self._close(conn, 4004)  # Authentication failed
            return
        intents = int(data.get("intents", 0))
        allowed = (
            (MESSAGE_CONTENT if self.message_content_intent else 0)
            | (GUILD_MEMBERS if self.members_intent else 0)
            | (GUILD_PRESENCES if self.presences_intent else 0)
        )
        privileged = MESSAGE_CONTENT | GUILD_MEMBERS | GUILD_PRESENCES
        if intents & privileged & ~allowed:
            await self._close(conn, 4014)  # Disallowed intent(s)
            return
        shard = data.get("shard")
        if shard is not None and not (0 <= shard[0] < shard[1]):
            await self._close(conn, 4010)  # Invalid shard
            return
        session = _Session(id=hashlib.sha1(self.snowflake().encode()).hexdigest(), shard=shard,
                           intents=intents)  # fmt: skip
        self.sessions[session.id] = session
        async with session.lock:
            session.conn = conn
            conn.session = session
            count = shard[1] if shard else 1
            shard_id = shard[0] if shard else 0
            on_shard = self._shard_of(GUILD_ID, count) == shard_id
            ready: dict[str, Any] = {
                "v": 10,
                "user": self.bot_user(),
                "user_settings": {},
                "guilds": [{"id": GUILD_ID, "unavailable": True}] if on_shard else [],
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "guild_join_requests": [],
                "geo_ordered_rtc_regions": ["fake"],
                "session_id": session.id,
                "session_type": "normal",
                "resume_gateway_url": self.gateway_url,
                "application": {"id": APP_ID, "flags": self.application()["flags"]},
                "auth": {},
                "_trace": ["fake-gateway"],
            }
            if shard is not None:
                ready["shard"] = shard
            session.seq += 1  # READY is not replayed on RESUME
            await self._send(conn, {"op": 0, "s": session.seq, "t": "READY", "d": ready})
            if on_shard:
                session.seq += 1
                guild = self.guild()
                session.log.append((session.seq, "GUILD_CREATE", guild))
                frame = {"op": 0, "s": session.seq, "t": "GUILD_CREATE", "d": guild}
                await self._send(conn, frame)
        self.readies += 1

    async def _resume(self, conn: _Conn, data: dict[str, Any]) -> None:
        self.resumes += 1
        session = self.sessions.get(str(data.get("session_id")))
        token_ok = self.token is None or data.get("token") == self.token
        if session is None or session.invalid or not token_ok:
            await self._send(conn, {"op": 9, "d": False, "s": None, "t": None})
            return
        async with session.lock:
            if session.conn is not None and session.conn is not conn:
                old = session.conn
                session.conn = None
                await self._close(old, 4000)
            client_seq = int(data.get("seq") or 0)
            seen = [entry for entry in session.log if entry[0] <= client_seq]
            replay = seen[-session.replay_seen :] if session.replay_seen else []
            replay += [entry for entry in session.log if entry[0] > client_seq]
            session.replay_seen = 0
            session.conn = conn
            conn.session = session
            for seq, event, payload in replay:
                await self._send(conn, {"op": 0, "s": seq, "t": event, "d": payload})
            session.seq += 1
            resumed = {"_trace": ["fake-gateway"]}
            await self._send(conn, {"op": 0, "s": session.seq, "t": "RESUMED", "d": resumed})
        self.resumed += 1

    async def _members_chunk(self, conn: _Conn, data: dict[str, Any]) -> None:
        members = self.guild()["members"]
        wanted = data.get("user_ids")
        if wanted:
            ids = {str(u) for u in (wanted if isinstance(wanted, list) else [wanted])}
            members = [m for m in members if m["user"]["id"] in ids]
        elif data.get("query"):
            members = [m for m in members if m["user"]["username"].startswith(data["query"])]
        chunk: dict[str, Any] = {
            "guild_id": str(data.get("guild_id", GUILD_ID)),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        session = conn.session
        if session is None:
            return
        async with session.lock:
            session.seq += 1
            frame = {"op": 0, "s": session.seq, "t": "GUILD_MEMBERS_CHUNK", "d": chunk}
            session.log.append((session.seq, "GUILD_MEMBERS_CHUNK", chunk))
            await self._send(conn, frame)

    # ---- the REST API

    async def _rest(self, request: web.Request) -> web.Response:
        path = request.path[len(API_PREFIX) :] or "/"
        body, files = await _read_body(request)
        call = Call(request.method, path, body, query=dict(request.query))
        self.calls.append(call)
        response = self._fault_for(request.method, path)
        if response is None:
            response = self._answer(request, path, body, files)
        call.status = response.status
        response.headers.setdefault("Via", "1.1 google")  # discord.py needs it to honour 429s
        echoes, self._echoes = self._echoes, []
        for event, data in echoes if self.echo else ():
            with contextlib.suppress(RuntimeError):  # no session to send it to
                await self.dispatch(event, data)
        await self._notify()
        return response

    def _echo(self, event: str, message: FakeMessage) -> None:
        """What Discord sends every client after the bot wrote in a channel (see `echo`)."""
        data = self.message_payload(message)
        if event == "MESSAGE_DELETE":
            data = {"id": message.id, "channel_id": message.channel_id}
        if self.is_guild_channel(message.channel_id):
            data["guild_id"] = GUILD_ID
            if event != "MESSAGE_DELETE":
                data["member"] = self.member(BOT_ID, with_user=False)
        self._echoes.append((event, data))

    def _answer(
        self, request: web.Request, path: str, body: Any, files: list[dict[str, Any]]
    ) -> web.Response:
        for method, pattern, handler, needs_auth in self._routes:
            if method != request.method:
                continue
            matched = pattern.fullmatch(path)
            if matched is None:
                continue
            authorized = request.headers.get("Authorization") == f"Bot {self.token}"
            if needs_auth and self.token is not None and not authorized:
                return _error(401, 0, "401: Unauthorized")
            req = _Req(request.method, path, matched.groupdict(), body, files, dict(request.query))
            response = handler(req)
            if 200 <= response.status < 300:
                for name, value in _ratelimit_headers(method, pattern.pattern).items():
                    response.headers.setdefault(name, value)
            return response
        return _error(404, 0, "404: Not Found")

    def _route_table(
        self,
    ) -> list[tuple[str, re.Pattern[str], Callable[[_Req], web.Response], bool]]:
        s = r"(?P<{}>[^/]+)"
        channel, message = s.format("channel"), s.format("message")
        app, token, guild = s.format("app"), s.format("token"), s.format("guild")
        table: list[tuple[str, str, Callable[[_Req], web.Response], bool]] = [
            ("GET", "/users/@me", lambda r: _json(self.bot_user()), True),
            ("GET", "/oauth2/applications/@me", lambda r: _json(self.application()), True),
            ("GET", "/applications/@me", lambda r: _json(self.application()), True),
            ("GET", "/gateway", lambda r: _json({"url": self.gateway_url}), False),
            ("GET", "/gateway/bot", self._gateway_bot, True),
            ("GET", "/users/" + s.format("user"), self._get_user, True),
            ("POST", "/users/@me/channels", self._open_dm, True),
            ("GET", f"/channels/{channel}", self._get_channel, True),
            ("POST", f"/channels/{channel}/typing", self._typing, True),
            ("POST", f"/channels/{channel}/messages", self._create_message, True),
            ("GET", f"/channels/{channel}/messages/{message}", self._get_message, True),
            ("PATCH", f"/channels/{channel}/messages/{message}", self._edit_message, True),
            ("DELETE", f"/channels/{channel}/messages/{message}", self._delete_message, True),
            (
                "PUT",
                f"/channels/{channel}/messages/{message}/reactions/(?P<emoji>[^/]+)/@me",
                self._react,
                True,
            ),
            (
                "DELETE",
                f"/channels/{channel}/messages/{message}/reactions/(?P<emoji>[^/]+)/@me",
                self._react,
                True,
            ),
            ("POST", f"/channels/{channel}/messages/{message}/threads", self._thread, True),
            ("POST", f"/channels/{channel}/threads", self._thread, True),
            ("PUT", f"/channels/{channel}/thread-members/@me", lambda r: _empty(), True),
            ("GET", f"/guilds/{guild}/members/" + s.format("user"), self._get_member, True),
            ("GET", f"/applications/{app}/commands", self._get_commands, True),
            ("PUT", f"/applications/{app}/commands", self._put_commands, True),
            ("GET", f"/applications/{app}/guilds/{guild}/commands", self._get_commands, True),
            ("PUT", f"/applications/{app}/guilds/{guild}/commands", self._put_commands, True),
            ("POST", f"/interactions/{s.format('iid')}/{token}/callback", self._callback, False),
            ("POST", f"/webhooks/{app}/{token}", self._followup, False),
            ("GET", f"/webhooks/{app}/{token}/messages/{message}", self._webhook_get, False),
            ("PATCH", f"/webhooks/{app}/{token}/messages/{message}", self._webhook_edit, False),
            ("DELETE", f"/webhooks/{app}/{token}/messages/{message}", self._webhook_del, False),
        ]
        return [(m, re.compile(p), h, auth) for m, p, h, auth in table]

    def _gateway_bot(self, req: _Req) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1}
        body = {"url": self.gateway_url, "shards": self.shards, "session_start_limit": limit}
        return _json(body)

    def _get_user(self, req: _Req) -> web.Response:
        user_id = req.params["user"]
        if user_id != BOT_ID and user_id not in self.users:
            return _error(404, 10013, "Unknown User")
        return _json(self.user(user_id))

    def _get_member(self, req: _Req) -> web.Response:
        user_id = req.params["user"]
        if req.params["guild"] != GUILD_ID:
            return _error(404, 10004, "Unknown Guild")
        if user_id != BOT_ID and user_id not in self.users:
            return _error(404, 10007, "Unknown Member")
        return _json(self.member(user_id))

    def _open_dm(self, req: _Req) -> web.Response:
        recipient = str((req.body or {}).get("recipient_id", ""))
        if not recipient or (recipient not in self.users and recipient != BOT_ID):
            return _error(400, 50007, "Cannot send messages to this user")
        return _json(self.dm_channel(self.dm_channel_for(recipient)))

    def _get_channel(self, req: _Req) -> web.Response:
        channel = self.channel(req.params["channel"])
        if channel is None:
            return _error(404, 10003, "Unknown Channel")
        return self._refused(channel["id"], "view_channel") or _json(channel)

    def _typing(self, req: _Req) -> web.Response:
        channel_id = req.params["channel"]
        if self.channel(channel_id) is None:
            return _error(404, 10003, "Unknown Channel")
        refused = self._refused(channel_id, "view_channel", self._writing(channel_id))
        if refused is not None:
            return refused
        self.typing.append(channel_id)
        typing: dict[str, Any] = {"channel_id": channel_id, "user_id": BOT_ID}
        typing["timestamp"] = int(time.time())
        if self.is_guild_channel(channel_id):
            typing |= {"guild_id": GUILD_ID, "member": self.member(BOT_ID)}
        self._echoes.append(("TYPING_START", typing))
        return _empty()

    def _new_message(
        self,
        channel_id: str,
        body: dict[str, Any],
        files: list[dict[str, Any]],
        **fields: Any,
    ) -> FakeMessage:
        message = FakeMessage(
            id=self.snowflake(),
            channel_id=channel_id,
            content=str(body.get("content") or ""),
            components=list(body.get("components") or []),
            embeds=list(body.get("embeds") or []),
            flags=int(body.get("flags") or 0),
            attachments=self._attachments(body, files),
            **fields,
        )
        self.messages[message.id] = message
        return message

    def _attachments(
        self, body: dict[str, Any], files: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        described = {str(a.get("id")): a for a in body.get("attachments") or []}
        made = []
        for index, upload in enumerate(files):
            attachment_id = self.snowflake()
            self.uploads[attachment_id] = upload.get("data", b"")
            url = f"{self.base}/attachments/{attachment_id}/{upload['filename']}"
            made.append(
                {
                    "id": attachment_id,
                    "filename": upload["filename"],
                    "size": upload["size"],
                    "url": url,
                    "proxy_url": url,
                    "content_type": upload.get("content_type"),
                    "description": described.get(str(index), {}).get("description"),
                }
            )
        return made

    def _create_message(self, req: _Req) -> web.Response:
        channel_id = req.params["channel"]
        if self.channel(channel_id) is None:
            return _error(404, 10003, "Unknown Channel")
        body = req.body if isinstance(req.body, dict) else {}
        if not _has_content(body, req.files):
            return _error(400, 50006, "Cannot send an empty message")
        refused = self._refused(channel_id, *self._message_needs(channel_id, body, req.files))
        if refused is not None:
            return refused
        if self._embeds_refused(channel_id, body, req.files):
            return _error(403, 50013, "Missing Permissions")
        reference = body.get("message_reference")
        if reference is not None:  # discord.py sends ints; Discord answers with strings
            reference = {
                key: str(value) if key.endswith("_id") and value is not None else value
                for key, value in reference.items()
            }
            reference.setdefault("type", 0)
            reference.setdefault("channel_id", channel_id)
            fail = reference.pop("fail_if_not_exists", True)
            if self._gone(str(reference.get("message_id"))):
                if fail:
                    return _invalid_reference()
                reference = None  # Discord sends it as a plain message
        message = self._new_message(channel_id, body, req.files, message_reference=reference)
        self._echo("MESSAGE_CREATE", message)
        return _json(self.message_payload(message))

    def _message_needs(
        self, channel_id: str, body: dict[str, Any], files: list[dict[str, Any]]
    ) -> list[str]:
        """Create Message: View Channel and writing; Read Message History for a reply
        (message_reference); Attach Files for files."""
        needed = ["view_channel", self._writing(channel_id)]
        if body.get("message_reference"):
            needed.append("read_message_history")
        if files:
            needed.append("attach_files")
        return needed

    def _get_message(self, req: _Req) -> web.Response:
        found = self.find_message(req.params["message"])
        if found is None or found["channel_id"] != req.params["channel"]:
            return _error(404, 10008, "Unknown Message")
        refused = self._refused(req.params["channel"], "view_channel", "read_message_history")
        return refused or _json(found)

    def _edit(
        self, message: FakeMessage, body: dict[str, Any], files: list[dict[str, Any]]
    ) -> None:
        message.history.append(message.content)
        if "content" in body:
            message.content = str(body["content"] or "")
        if "components" in body:
            message.components = list(body["components"] or [])
        if "embeds" in body:
            message.embeds = list(body["embeds"] or [])
        if "flags" in body and body["flags"] is not None:
            message.flags = (message.flags & EPHEMERAL) | int(body["flags"])
        if "attachments" in body or files:
            kept_ids = {str(a.get("id")) for a in body.get("attachments") or []}
            kept = [a for a in message.attachments if a["id"] in kept_ids]
            message.attachments = kept + self._attachments(body, files)
        message.flags &= ~LOADING
        message.edits += 1
        message.edited_at = time.time()

    def _edit_message(self, req: _Req) -> web.Response:
        message_id, channel_id = req.params["message"], req.params["channel"]
        if message_id in self.user_messages:
            return _error(403, 50005, "Cannot edit a message authored by another user")
        message = self.messages.get(message_id)
        if message is None or message.deleted or message.channel_id != channel_id:
            return _error(404, 10008, "Unknown Message")
        body = req.body if isinstance(req.body, dict) else {}
        needed = ["view_channel", *(["attach_files"] if req.files else [])]
        refused = self._refused(channel_id, *needed)
        if refused is not None:
            return refused
        if self._embeds_refused(channel_id, body, req.files) and not message.content:
            return _error(403, 50013, "Missing Permissions")
        self._edit(message, body, req.files)
        self._echo("MESSAGE_UPDATE", message)
        return _json(self.message_payload(message))

    def _delete_message(self, req: _Req) -> web.Response:
        """The bot's own message takes only View Channel; someone else's, Manage Messages too."""
        message_id = req.params["message"]
        others = message_id in self.user_messages
        needed = ["view_channel", *(["manage_messages"] if others else [])]
        refused = self._refused(req.params["channel"], *needed)
        if refused is not None:
            return refused
        if others:
            del self.user_messages[message_id]
            self.deleted_user_messages.add(message_id)
            return _empty()
        message = self.messages.get(message_id)
        if message is None or message.deleted or message.channel_id != req.params["channel"]:
            return _error(404, 10008, "Unknown Message")
        message.deleted = True
        return _empty()

    def _react(self, req: _Req) -> web.Response:
        if self.find_message(req.params["message"]) is None:
            return _error(404, 10008, "Unknown Message")
        needed = ["view_channel", "read_message_history"]
        needed += ["add_reactions"] if req.method == "PUT" else []
        refused = self._refused(req.params["channel"], *needed)
        if refused is not None:
            return refused
        op = "add" if req.method == "PUT" else "remove"
        emoji = req.params["emoji"]
        self.reactions.append((op, req.params["channel"], req.params["message"], emoji))
        return _empty()

    def _thread(self, req: _Req) -> web.Response:
        if req.params["channel"] != CHANNEL_ID:
            return _error(400, 50024, "Cannot execute action on this channel type")
        refused = self._refused(CHANNEL_ID, "view_channel", "create_public_threads")
        if refused is not None:
            return refused
        body = req.body if isinstance(req.body, dict) else {}
        thread_id = req.params.get("message") or self.snowflake()  # Discord reuses the id
        if thread_id in self.threads or thread_id == THREAD_ID:
            return _error(400, 160004, "A thread has already been created for this message")
        thread = self.thread_channel(thread_id, name=str(body.get("name", "")), owner_id=BOT_ID)
        thread["member"] = {
            "id": thread_id,
            "user_id": BOT_ID,
            "join_timestamp": _iso(time.time()),
            "flags": 0,
        }
        self.threads[thread_id] = thread
        return _json(thread, status=201)

    def _get_commands(self, req: _Req) -> web.Response:
        if req.params["app"] != APP_ID:
            return _error(403, 50001, "Missing Access")
        return _json(self.commands.get(req.params.get("guild"), []))

    def _put_commands(self, req: _Req) -> web.Response:
        if req.params["app"] != APP_ID:
            return _error(403, 50001, "Missing Access")
        guild_id = req.params.get("guild")
        if guild_id is not None and guild_id != GUILD_ID:
            return _error(403, 50001, "Missing Access")
        if not isinstance(req.body, list):
            return _error(400, 50035, "Invalid Form Body")
        stored = []
        for command in req.body:
            previous = self._command(guild_id, command["name"])
            item = {
                "type": 1,
                "default_member_permissions": None,
                "nsfw": False,
                **command,
                "id": previous["id"] if previous else self.snowflake(),
                "application_id": APP_ID,
                "version": self.snowflake(),
            }
            item.setdefault("description", "")
            if guild_id is not None:
                item["guild_id"] = guild_id
            stored.append(item)
        self.commands[guild_id] = stored
        return _json(stored)

    # ---- interactions and their webhook

    def _record(self, kind: str, interaction: _Interaction, body: Any, **more: Any) -> None:
        """The body's own keys (type, data, content, flags...) plus kind ("callback",
        "followup", "edit_original", "edit_followup", "delete_original", "delete_followup"),
        interaction_id, token, body (the body as sent) and message_id where there is one."""
        record = dict(body) if isinstance(body, dict) else {}
        record.update(
            kind=kind, interaction_id=interaction.id, token=interaction.token, body=body, **more
        )
        self.interaction_responses.append(record)

    def _callback(self, req: _Req) -> web.Response:
        interaction = self._interactions.get(req.params["token"])
        if interaction is None or interaction.id != req.params["iid"]:
            return _error(404, 10062, "Unknown interaction")
        deadline = self.interaction_deadline
        started = interaction.dispatched_at
        if deadline is not None and started is not None and time.monotonic() - started > deadline:
            return _error(404, 10062, "Unknown interaction")
        if interaction.acked is not None:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        body = req.body if isinstance(req.body, dict) else {}
        kind = int(body.get("type", 0))
        data = body.get("data") or {}
        allowed = {2: (4, 5, 9), 3: (4, 5, 6, 7, 9), 4: (8,), 5: (4, 5, 6, 7)}
        if kind not in allowed.get(interaction.type, ()):
            return _error(400, 50035, "Invalid Form Body")
        if kind == 4 and not _has_content(data, req.files):
            return _error(400, 50006, "Cannot send an empty message")
        self._record("callback", interaction, body)
        interaction.acked = kind
        message: FakeMessage | None = None
        if kind in (4, 5):
            flags = int(data.get("flags") or 0) | (LOADING if kind == 5 else 0)
            fields = {"flags": flags} if kind == 5 else {}
            message = self._new_message(
                interaction.channel_id,
                {**data, **fields},
                req.files,
                interaction_id=interaction.id,
            )
            interaction.original_id = message.id
        elif kind in (6, 7) and interaction.message_id is not None:
            message = self.messages.get(interaction.message_id)
            interaction.original_id = interaction.message_id
            if kind == 7 and message is not None:
                self._edit(message, data, req.files)
        if not _truthy(req.query.get("with_response")):
            return _empty()
        resource: dict[str, Any] = {"type": kind}
        if kind in (4, 7) and message is not None:
            resource["message"] = self.message_payload(message)
        callback = {
            "id": interaction.id,
            "type": interaction.type,
            "response_message_id": interaction.original_id,
            "response_message_loading": kind == 5,
            "response_message_ephemeral": bool(message is not None and message.ephemeral),
        }
        return _json({"interaction": callback, "resource": resource})

    def _webhook_interaction(self, req: _Req) -> _Interaction | web.Response:
        if req.params["app"] != APP_ID:
            return _error(404, 10015, "Unknown Webhook")
        interaction = self._interactions.get(req.params["token"])
        if interaction is None:
            return _error(401, 50027, "Invalid Webhook Token")
        if interaction.acked is None:
            return _error(404, 10015, "Unknown Webhook")
        return interaction

    def _webhook_message(self, req: _Req, interaction: _Interaction) -> FakeMessage | None:
        message_id = req.params["message"]
        if message_id == "@original":
            if interaction.original_id is None:
                return None
            message_id = interaction.original_id
        elif message_id not in interaction.followups and message_id != interaction.original_id:
            return None
        message = self.messages.get(message_id)
        return None if message is None or message.deleted else message

    def _followup(self, req: _Req) -> web.Response:
        interaction = self._webhook_interaction(req)
        if isinstance(interaction, web.Response):
            return interaction
        body = req.body if isinstance(req.body, dict) else {}
        if not _has_content(body, req.files):
            return _error(400, 50006, "Cannot send an empty message")
        original = self.messages.get(interaction.original_id or "")
        if original is not None and original.loading and interaction.acked == 5:
            # the first follow-up after a deferred ("thinking") response fills that message
            self._edit(original, body, req.files)
            original.edits -= 1  # filling the placeholder is not an edit the user sees
            message = original
            self._record("followup", interaction, body, message_id=message.id, filled=True)
        else:
            message = self._new_message(
                interaction.channel_id,
                body,
                req.files,
                interaction_id=interaction.id,
                webhook=True,
            )
            interaction.followups.append(message.id)
            self._record("followup", interaction, body, message_id=message.id, filled=False)
        if not _truthy(req.query.get("wait")):
            return _empty()
        return _json(self.message_payload(message))

    def _webhook_target(self, req: _Req) -> tuple[_Interaction, FakeMessage] | web.Response:
        """The interaction and message a webhook route names, or Discord's error."""
        interaction = self._webhook_interaction(req)
        if isinstance(interaction, web.Response):
            return interaction
        message = self._webhook_message(req, interaction)
        if message is None:
            return _error(404, 10008, "Unknown Message")
        return interaction, message

    def _webhook_get(self, req: _Req) -> web.Response:
        target = self._webhook_target(req)
        if isinstance(target, web.Response):
            return target
        return _json(self.message_payload(target[1]))

    def _webhook_edit(self, req: _Req) -> web.Response:
        target = self._webhook_target(req)
        if isinstance(target, web.Response):
            return target
        interaction, message = target
        body = req.body if isinstance(req.body, dict) else {}
        self._edit(message, body, req.files)
        kind = "edit_original" if req.params["message"] == "@original" else "edit_followup"
        self._record(kind, interaction, body, message_id=message.id)
        return _json(self.message_payload(message))

    def _webhook_del(self, req: _Req) -> web.Response:
        target = self._webhook_target(req)
        if isinstance(target, web.Response):
            return target
        interaction, message = target
        message.deleted = True
        kind = "delete_original" if req.params["message"] == "@original" else "delete_followup"
        self._record(kind, interaction, {}, message_id=message.id)
        return _empty()


def no_identify_delay(client: discord.Client) -> None:
    """discord.py sleeps 5 s before every IDENTIFY but the first (another shard, or a new
    session after INVALID_SESSION); tests do not need to wait."""

    async def hook(shard_id: int | None, *, initial: bool = False) -> None:
        return None

    client.before_identify_hook = hook  # type: ignore[method-assign]


def _json(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # body= (not text=): with text= aiohttp appends "; charset=utf-8" and discord.py, which
    # compares the header to "application/json" exactly, would not parse the JSON
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _empty() -> web.Response:
    return web.Response(status=204)


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"code": code, "message": message}, status=status)


def _invalid_reference() -> web.Response:
    error = {"code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "message": "Unknown message"}
    body = {
        "code": 50035,
        "message": "Invalid Form Body",
        "errors": {"message_reference": {"_errors": [error]}},
    }
    return _json(body, status=400)


def _has_content(body: dict[str, Any], files: list[dict[str, Any]]) -> bool:
    keys = ("content", "embeds", "components", "sticker_ids", "poll")
    return bool(files) or any(body.get(key) for key in keys)


def _bucket(path: str) -> str:
    return hashlib.md5(path.encode(), usedforsecurity=False).hexdigest()


def _ratelimit_headers(method: str, route: str) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": "50",
        "X-RateLimit-Remaining": "49",
        "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
        "X-RateLimit-Reset-After": "1.000",
        "X-RateLimit-Bucket": _bucket(method + " " + route),
    }


async def _read_body(request: web.Request) -> tuple[Any, list[dict[str, Any]]]:
    """JSON, or multipart (payload_json + files[n]) as discord.py sends attachments."""
    if request.content_type.startswith("multipart/"):
        body: Any = None
        files: list[dict[str, Any]] = []
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                continue
            data = await part.read()
            if part.name == "payload_json":
                body = json.loads(data)
                continue
            files.append(
                {
                    "name": part.name,
                    "filename": part.filename or "file",
                    "size": len(data),
                    "content_type": part.headers.get("Content-Type"),
                    "data": bytes(data),
                }
            )
        return body, files
    raw = await request.read()
    if not raw:
        return None, []
    try:
        return json.loads(raw), []
    except ValueError:
        return raw.decode(errors="replace"), []
