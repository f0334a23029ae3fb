"""The Discord adapter: gateway messages in, engine turns out, rendered back into channels.

Only translation lives here. A mention starts a conversation; replies to the assistant continue
it (a reply chain is one conversation), as does anything said in a thread it is part of; a DM
is one running conversation. Each message id is claimed in the store before it is answered, so
a MESSAGE_CREATE replayed after a gateway RESUME, or seen by a second process, is not
answered twice.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import replace
from typing import Any

import aiohttp
import discord
import yarl

from assistant.admin.commands import AdminCommands
from assistant.config import ConfigError
from assistant.engine import Assistant
from assistant.reporting.notices import Notice
from assistant.turns import Actor, ConversationRef, Inbound
from bots.chat_actions import APPROVE, DECLINE, QuietWarnings, record_approval, record_vote
from bots.discord_commands import AssistantCommands, GuardedTree
from bots.discord_files import DiscordFiles
from bots.discord_notices import discord_embed
from bots.discord_reply import (
    ALLOWED_MENTIONS,
    ANSWER_PERMISSIONS,
    MESSAGE_LIMIT,
    REPORT_PERMISSIONS,
    ChannelGate,
    DiscordReply,
    close_cut_answer,
    permission_advice,
    permission_names,
)
from bots.render import split_message
from bots.turn_runner import Turn, TurnRunner

log = logging.getLogger(__name__)

# The invite asks for exactly what the code uses (tests/test_permissions.py checks it against
# what the fake Discord required of every REST call); its integer is quoted in README.md
PERMISSIONS = ANSWER_PERMISSIONS | REPORT_PERMISSIONS
SCOPES = ("bot", "applications.commands")
SHUTDOWN_GRACE_SECONDS = 30.0
READY_TIMEOUT_SECONDS = 60.0
_ANSWERED_TYPES = (discord.MessageType.default, discord.MessageType.reply)


class DiscordSetupError(ConfigError):
    """Discord refused the bot's set-up; the message names what to change, in one line."""


_DISCORD_API = discord.http.Route.BASE  # Discord's own, before any DISCORD_API_URL


# What the adapter reads, and nothing more: every other intent (typing, reactions, voice,
# presences, emojis, invites, ...) is a stream of gateway events parsed for no use, our own
# typing indicators and reactions among them
INTENTS = discord.Intents(guilds=True, guild_messages=True, dm_messages=True, message_content=True)


def point_at(api_url: str | None, gateway_url: str | None) -> None:
    """Talk to another Discord (DISCORD_API_URL, DISCORD_GATEWAY_URL): a proxy, or a test."""
    if api_url:
        discord.http.Route.BASE = api_url.rstrip("/")
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


def invite_url(application_id: int) -> str:
    """The invite with exactly the permissions the assistant needs."""
    return discord.utils.oauth_url(application_id, permissions=PERMISSIONS, scopes=SCOPES)


class DiscordAdapter:
    """A discord.py client wired to the engine; `start` connects, `close` stops gracefully."""

    def __init__(
        self,
        *,
        assistant: Assistant,
        commands: AdminCommands,
        token: str,
        guild_id: int | None = None,
        sharded: bool = False,
        edit_interval: float = 1.0,
        shutdown_grace: float = SHUTDOWN_GRACE_SECONDS,
        **client_options: Any,
    ) -> None:
        self._assistant = assistant
        self._token = token
        self._guild_id = guild_id
        self._gate = ChannelGate(edit_interval)
        client_class = discord.AutoShardedClient if sharded else discord.Client
        # every shard identifies in turn, about 5 s each: a big sharded bot takes minutes
        self._ready_timeout = READY_TIMEOUT_SECONDS * (10 if sharded else 1)
        # no message cache: nothing here looks a message up again, and each edit event
        # (one per streaming edit of ours) would search it
        client_options.setdefault("max_messages", None)
        self.client = client_class(
            intents=INTENTS, allowed_mentions=ALLOWED_MENTIONS, **client_options
        )
        self._warnings = QuietWarnings(log)
        self.tree = GuardedTree(self.client, warnings=self._warnings)
        self.tree.add_command(AssistantCommands(commands, warnings=self._warnings))
        self.client.setup_hook = self._setup_hook  # type: ignore[method-assign]
        self.client.event(self.on_message)
        self.client.event(self.on_guild_join)
        self._feedback_class, self._feedback = _feedback_button(assistant, self._warnings)
        self._approval_class, self._approval = _approval_button(assistant, self._warnings)
        self._shutdown_grace = shutdown_grace
        self._turns = TurnRunner(assistant, surface="discord", interval=edit_interval)
        self._files = DiscordFiles(assistant.attachment_limits)  # bots/discord_files.py
        self._connection: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    # ---- lifecycle

    async def start(self) -> None:
        """Log in and connect; raises DiscordSetupError naming the fix for a refused set-up."""
        self.client.event(self.on_ready)
        try:
            await self.client.login(self._token)
        except discord.LoginFailure:
            raise DiscordSetupError(
                "DISCORD_TOKEN: Discord refused the token; copy it again from the Developer "
                "Portal (your application, Bot, Reset Token)"
            ) from None
        except (discord.HTTPException, aiohttp.ClientError) as exc:
            where = discord.http.Route.BASE
            # blame the setting only when it was set: otherwise it is this machine's network
            blamed = "DISCORD_API_URL" if where != _DISCORD_API else "Discord"
            raise DiscordSetupError(
                f"{blamed}: could not log in at {where} ({type(exc).__name__}: {exc}); "
                "check that this machine can reach it"
            ) from None
        if self.client.application_id is not None:
            log.info("Discord: invite the bot with %s", invite_url(self.client.application_id))
        self._connection = asyncio.create_task(self.client.connect(reconnect=True))
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait(
            {self._connection, ready},
            timeout=self._ready_timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        ready.cancel()
        if self._connection in done:
            self.raise_if_failed()
        if not done:
            raise DiscordSetupError("Discord: not ready in time; is the gateway reachable?")

    def raise_if_failed(self) -> None:
        """Turn a finished gateway connection into the operator's one line."""
        if self._connection is None or not self._connection.done():
            return
        exc = self._connection.exception()
        if isinstance(exc, discord.PrivilegedIntentsRequired):
            raise DiscordSetupError(
                "DISCORD_TOKEN: the bot needs the Message Content intent: Developer Portal, your "
                "application, Bot, Privileged Gateway Intents, turn on Message Content Intent"
            ) from None
        if exc is not None:
            raise DiscordSetupError(f"Discord: the gateway connection failed: {exc}") from None

    @property
    def connection(self) -> asyncio.Task[None] | None:
        return self._connection

    async def connected(self) -> bool:
        """The gateway is up: ready, not closed, and its websocket (each shard's) open."""
        client = self.client
        if not client.is_ready() or client.is_closed():
            return False
        if isinstance(client, discord.AutoShardedClient):
            return all(not shard.is_closed() for shard in client.shards.values())
        return client.ws is not None and client.ws.open

    async def close(self) -> None:
        """Let the answers under way finish (for a while; those past it say they were
        interrupted), then disconnect."""
        await self._turns.drain(grace=self._shutdown_grace)
        await self._files.close()
        await self.client.close()
        if self._connection is not None:
            self._connection.cancel()
            with suppress(Exception, asyncio.CancelledError):
                await self._connection

    async def idle(self) -> None:
        """Wait until every turn under way has been answered (tests)."""
        await self._turns.idle()

    async def _setup_hook(self) -> None:
        self.client.add_dynamic_items(self._feedback_class, self._approval_class)
        guild = discord.Object(id=self._guild_id) if self._guild_id else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        try:
            await self.tree.sync(guild=guild)
        except discord.HTTPException as exc:
            log.error(
                "Discord: could not register /assistant (%s); re-invite the bot with the "
                "applications.commands scope",
                exc.text or exc.status,
            )

    async def on_ready(self) -> None:
        log.info("Discord: connected as %s", self.client.user)
        for guild in self.client.guilds:
            self._check_permissions(guild)
        self._ready.set()

    async def on_guild_join(self, guild: discord.Guild) -> None:
        self._check_permissions(guild)

    def _check_permissions(self, guild: discord.Guild) -> None:
        me = guild.me
        if me is None:
            return
        missing = discord.Permissions(PERMISSIONS.value & ~me.guild_permissions.value)
        if missing:
            log.warning(
                "Discord: in server %r the bot lacks %s; re-invite it with the invite URL above",
                guild.name,
                ", ".join(permission_names(missing)),
            )

    # ---- messages

    async def _roles(self, author: discord.User | discord.Member) -> tuple[str, ...]:
        """The author's role ids (@everyone's is the server's id). In a DM Discord sends a
        user, not a member: when access rules name roles, the user's roles in the servers
        the assistant shares with them are looked up, so a role blocked in the server is
        blocked in DMs too."""
        if isinstance(author, discord.Member):
            return tuple(str(role.id) for role in author.roles)
        if not self._assistant.access.names_roles("discord"):
            return ()
        roles: list[str] = []
        for guild in self.client.guilds[:SERVERS_ASKED_FOR_ROLES]:
            try:
                member = guild.get_member(author.id) or await guild.fetch_member(author.id)
            except discord.NotFound:
                continue
            except discord.HTTPException as exc:
                log.warning("Discord: could not read a DM author's roles (%s)", exc.status)
                continue
            roles += [str(role.id) for role in member.roles]
        return tuple(roles)

    async def on_message(self, message: discord.Message) -> None:
        """Everything happens on the turn's own task, which shutdown waits for; a bot's
        message (our own answers among them) needs none."""
        if not message.author.bot:
            self._turns.start(self._to_turn(message))

    async def _to_turn(self, message: discord.Message) -> Turn | None:
        me = self.client.user
        if me is None or message.author.bot or message.type not in _ANSWERED_TYPES:
            return None
        ref = await self._conversation(message, me)
        if ref is None:
            return None
        inbound = Inbound(
            ref=ref,
            actor=Actor(
                platform="discord",
                user_id=str(message.author.id),
                display_name=_speaker(message.author),
                roles=await self._roles(message.author),
            ),
            text=_question(message, me),
            platform_message_id=str(message.id),
            dedupe_keys=(f"discord:msg:{message.id}",),
            reply_place=json.dumps({"channel_id": message.channel.id, "message_id": message.id}),
            direct=message.guild is None,  # no server: a DM
        )
        if message.attachments and not self._assistant.listed_out(inbound):
            files = await self._files.fetch(message.attachments)
            inbound = replace(inbound, attachments=files)
        reply = DiscordReply(
            message.channel,
            channel_id=message.channel.id,
            reply_to=message,
            gate=self._gate,
            feedback_view=self._feedback_view,
            approval_view=self._approval_view,
        )
        return Turn(inbound=inbound, surface=reply)

    # ---- answers a stopped process owed (see bots/recovery.py)

    surface = "discord"

    @property
    def runner(self) -> TurnRunner:
        return self._turns

    def reply_for(self, place: str) -> DiscordReply:
        """An answer to the stored place: the user's message in its channel."""
        channel_id, message_id = _place(place)
        channel = self.client.get_partial_messageable(channel_id)
        return DiscordReply(
            channel,
            channel_id=channel_id,
            reply_to=channel.get_partial_message(message_id),
            gate=self._gate,
            feedback_view=self._feedback_view,
            approval_view=self._approval_view,
        )

    async def close_cut_answer(self, place: str, shown: str | None, text: str) -> bool:
        """Mark the cut answer; a Discord answer has no "finished" mark to tell it apart from
        a complete one, so one that was shown is always marked."""
        channel_id, _ = _place(place)
        if shown is None or not shown.isdigit():
            return False
        channel = self.client.get_partial_messageable(channel_id)
        await close_cut_answer(channel, int(shown), text)
        return True

    async def _conversation(
        self, message: discord.Message, me: discord.ClientUser
    ) -> ConversationRef | None:
        """Where the message belongs, or None when it is not for the assistant."""
        channel: Any = message.channel
        if isinstance(channel, discord.DMChannel):
            return ConversationRef(platform="discord", channel=str(channel.id))
        if isinstance(channel, discord.PartialMessageable) and message.guild is not None:
            try:  # e.g. a thread not cached
                channel = await self.client.fetch_channel(channel.id)
            except (discord.HTTPException, discord.InvalidData) as exc:  # gone, or not ours
                self._warnings.warn("a Discord message in an unknown channel was dropped", str(exc))
                return None
        guild = str(message.guild.id) if message.guild else ""
        mentioned = _mentions_me(message, me)
        if isinstance(channel, discord.Thread):
            ref = ConversationRef(
                platform="discord",
                workspace=guild,
                channel=str(channel.parent_id),
                thread=str(channel.id),
            )
            return ref if mentioned or await self._assistant.knows(ref) else None
        replied, earlier = _reply_to_assistant(message, me)
        if earlier is not None:
            found = await self._assistant.conversation_with_message("discord", earlier)
            if found is not None:
                return found
        if not mentioned and not replied:
            return None
        return ConversationRef(
            platform="discord", workspace=guild, channel=str(channel.id), thread=str(message.id)
        )

    def _approval_view(self, approval_id: int) -> discord.ui.View:
        view = discord.ui.View(timeout=None)
        view.add_item(self._approval(APPROVE, approval_id))
        view.add_item(self._approval(DECLINE, approval_id))
        return view

    def _feedback_view(self, message_id: int) -> discord.ui.View:
        view = discord.ui.View(timeout=None)
        view.add_item(self._feedback(1, message_id))
        view.add_item(self._feedback(-1, message_id))
        return view

    # ---- notices (reports and alerts)

    async def post_notice(self, channel_id: int, notice: Notice) -> None:
        """A report as an embed with its chart attached; an alert as a message. A permission
        the bot lacks there is one line naming it, not a traceback: only the operator can
        grant it."""
        channel: object = self.client.get_channel(channel_id)
        try:
            if channel is None:
                channel = await self.client.fetch_channel(channel_id)
            if not isinstance(channel, discord.abc.Messageable):
                raise ValueError(f"Discord channel {channel_id} takes no messages")
            await _send_notice(channel, notice)
        except discord.Forbidden as exc:
            log.error(
                "Discord: %r was not posted in channel %s (%s); %s",
                notice.title,
                channel_id,
                exc.text or exc.status,
                permission_advice(channel, _notice_permissions(notice)),
            )


async def _send_notice(channel: discord.abc.Messageable, notice: Notice) -> None:
    if notice.report is None:
        for piece in split_message(notice.text, MESSAGE_LIMIT):
            await channel.send(piece, allowed_mentions=ALLOWED_MENTIONS)
        return
    embed = discord.Embed.from_dict(discord_embed(notice.report))
    if notice.image_png is None:
        sent = await channel.send(embed=embed, allowed_mentions=ALLOWED_MENTIONS)
    else:
        embed.set_image(url=f"attachment://{notice.image_name}")
        image = discord.File(io.BytesIO(notice.image_png), filename=notice.image_name)
        sent = await channel.send(embed=embed, file=image, allowed_mentions=ALLOWED_MENTIONS)
    if not sent.embeds:  # Discord drops an embed it does not refuse outright
        log.error(
            "Discord: the figures of %r were dropped in channel %s; %s",
            notice.title,
            sent.channel.id,
            permission_advice(channel, discord.Permissions(embed_links=True)),
        )


def _notice_permissions(notice: Notice) -> discord.Permissions:
    """What posting `notice` takes: writing (in a channel or a thread: `needed_in` keeps the
    one that applies), plus Embed Links for a report's figures and Attach Files for its chart."""
    needed = discord.Permissions(view_channel=True, send_messages=True)
    needed.send_messages_in_threads = True
    needed.embed_links = notice.report is not None
    needed.attach_files = notice.report is not None and notice.image_png is not None
    return needed


def _place(place: str) -> tuple[int, int]:
    """The channel and the user's message a stored place names."""
    fields = json.loads(place)
    return int(fields["channel_id"]), int(fields["message_id"])


def _mentions_me(message: discord.Message, me: discord.ClientUser) -> bool:
    """Mentioned by name, or through its own role (Discord offers both in the @ list)."""
    if any(user.id == me.id for user in message.mentions):
        return True
    own_role = message.guild.self_role if message.guild is not None else None
    return own_role is not None and own_role in message.role_mentions


def _question(message: discord.Message, me: discord.ClientUser) -> str:
    """The text addressed to the assistant, without the mention; what it cannot read is said."""
    text = re.sub(rf"<@!?{me.id}>", "", message.content)
    own_role = message.guild.self_role if message.guild is not None else None
    if own_role is not None:
        text = text.replace(f"<@&{own_role.id}>", "")
    text = text.strip()
    if not text and message.stickers and not message.attachments:  # files: the engine names
        return "[The message held only an attachment or a sticker, which you cannot see.]"
    return text


def _speaker(user: discord.User | discord.Member) -> str:
    """The name people see, with the unique username when it differs (nicknames repeat)."""
    shown, unique = user.display_name, user.name
    return shown if shown.casefold() == unique.casefold() else f"{shown} ({unique})"


SERVERS_ASKED_FOR_ROLES = 5  # a DM's author is looked up in at most this many servers


def _reply_to_assistant(
    message: discord.Message, me: discord.ClientUser
) -> tuple[bool, str | None]:
    """Whether `message` replies to one of the assistant's answers, and the id of the user
    message that answer replied to (which names the conversation), when known."""
    reference = message.reference
    resolved = reference.resolved if reference is not None else None
    if not isinstance(resolved, discord.Message) or resolved.author.id != me.id:
        return False, None
    earlier = resolved.reference.message_id if resolved.reference is not None else None
    return True, str(earlier) if earlier is not None else None


def _feedback_button(
    assistant: Assistant, warnings: QuietWarnings
) -> tuple[type[discord.ui.DynamicItem[Any]], Callable[[int, int], discord.ui.Item[Any]]]:
    """The 👍/👎 button class bound to this engine, and a maker of buttons. The custom id
    carries the vote and the answer's id, so a click is understood after a restart (no view
    state to keep); the vote counts only when clicked where the answer was given."""

    class FeedbackButton(
        discord.ui.DynamicItem[discord.ui.Button[Any]],
        template=r"feedback:(?P<vote>-?1):(?P<message_id>[0-9]+)",
    ):
        def __init__(self, vote: int, message_id: int) -> None:
            super().__init__(
                discord.ui.Button(
                    style=discord.ButtonStyle.secondary,
                    emoji="👍" if vote > 0 else "👎",
                    custom_id=f"feedback:{vote}:{message_id}",
                )
            )
            self.vote = vote
            self.message_id = message_id

        @classmethod
        async def from_custom_id(
            cls,
            interaction: discord.Interaction,
            item: discord.ui.Item[Any],
            match: re.Match[str],
        ) -> FeedbackButton:
            return cls(int(match["vote"]), int(match["message_id"]))

        async def callback(self, interaction: discord.Interaction) -> None:
            where = str(interaction.channel_id) if interaction.channel_id else None

            async def vote(actor: Actor) -> str:
                answer = str(self.message_id)
                return await record_vote(assistant, answer, actor, vote=self.vote, clicked_in=where)

            await _answer_click(interaction, warnings, vote)

    return FeedbackButton, FeedbackButton


async def _answer_click(
    interaction: discord.Interaction,
    warnings: QuietWarnings,
    act: Callable[[Actor], Awaitable[str]],
) -> None:
    """A button's click, answered privately: deferred first (Discord wants an answer within
    3 s, and the store may be busy with turns), then what `act` made of the clicker's click."""
    user = interaction.user
    if not isinstance(user, discord.User | discord.Member):
        warnings.warn("an unreadable Discord click was dropped", "it names no user")
        return
    try:
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await act(Actor(platform="discord", user_id=str(user.id)))
        await interaction.followup.send(text, ephemeral=True)
    except discord.HTTPException as exc:  # the interaction expired, or was answered
        warnings.warn("a Discord click could not be answered", f"{exc.status} {exc.text}")


def _approval_button(
    assistant: Assistant, warnings: QuietWarnings
) -> tuple[type[discord.ui.DynamicItem[Any]], Callable[[str, int], discord.ui.Item[Any]]]:
    """Approve and Decline on a tool's ask, bound to this engine. The custom id carries the
    answer and the ask's id, so a click is understood on any replica and after a restart;
    only the user asked may decide (`Assistant.decide`), anyone else hears so privately."""

    class ApprovalButton(
        discord.ui.DynamicItem[discord.ui.Button[Any]],
        template=rf"approval:(?P<answer>{APPROVE}|{DECLINE}):(?P<approval_id>[0-9]+)",
    ):
        def __init__(self, answer: str, approval_id: int) -> None:
            approve = answer == APPROVE
            super().__init__(
                discord.ui.Button(
                    style=discord.ButtonStyle.success if approve else discord.ButtonStyle.danger,
                    label="Approve" if approve else "Decline",
                    custom_id=f"approval:{answer}:{approval_id}",
                )
            )
            self.answer = answer
            self.approval_id = approval_id

        @classmethod
        async def from_custom_id(
            cls,
            interaction: discord.Interaction,
            item: discord.ui.Item[Any],
            match: re.Match[str],
        ) -> ApprovalButton:
            return cls(match["answer"], int(match["approval_id"]))

        async def callback(self, interaction: discord.Interaction) -> None:
            async def decide(actor: Actor) -> str:
                approve = self.answer == APPROVE
                return await record_approval(
                    assistant, str(self.approval_id), actor, approve=approve
                )

            await _answer_click(interaction, warnings, decide)

    return ApprovalButton, ApprovalButton
