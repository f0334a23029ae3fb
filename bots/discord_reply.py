"""One answer shown in Discord: a typing indicator, then a message edited as the text grows,
continued in further messages past 2,000 characters with code fences closed and reopened.

Edits while streaming go through a gate shared by every answer in the channel: Discord limits
writes per channel, not per message, so two answers streaming side by side take turns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from contextlib import suppress

import discord

from assistant.turns import ApprovalAsked, ApprovalDecided, Source
from bots.chat_actions import approval_outcome, approval_request
from bots.render import close_fences, open_fence, source_lines, split_message
from bots.streaming import ChatToolNotes, failure_text

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000
TYPING_EVERY_SECONDS = 8.0  # Discord shows "typing" for 10 s after each trigger
ALLOWED_MENTIONS = discord.AllowedMentions(everyone=False, roles=False, users=False)
# What an answer takes in a server: seeing the channel, typing and writing there (in a thread,
# Send Messages in Threads stands for Send Messages), and Read Message History, without which
# Discord refuses a reply to the question (every part of an answer replies to it)
ANSWER_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    read_message_history=True,
)
# What a report takes besides: its figures are an embed, its chart an attached file
REPORT_PERMISSIONS = discord.Permissions(embed_links=True, attach_files=True)
_NAMES = {  # where Discord's settings name a permission otherwise than discord.py does
    "read_messages": "View Channels",  # discord.py's name for view_channel
    "send_messages_in_threads": "Send Messages in Threads",
}


class ChannelGate:
    """About one write per `interval` per channel, shared by every answer in it."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._next: dict[int, float] = {}

    async def wait(self, channel_id: int) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if len(self._next) > 10_000:  # forget channels whose turn is long past
            self._next = {k: t for k, t in self._next.items() if t > now}
        at = max(now, self._next.get(channel_id, 0.0))
        self._next[channel_id] = at + self._interval
        if at > now:
            await asyncio.sleep(at - now)


class DiscordReply(ChatToolNotes):
    """A `ReplySurface` for one answer in a Discord channel, thread or DM."""

    def __init__(
        self,
        channel: discord.abc.Messageable,
        *,
        channel_id: int,
        reply_to: discord.Message | discord.PartialMessage | None,
        gate: ChannelGate,
        feedback_view: Callable[[int], discord.ui.View],
        approval_view: Callable[[int], discord.ui.View] | None = None,
    ) -> None:
        super().__init__()
        self._channel = channel
        self._channel_id = channel_id
        # a reply, but not one that fails when the question is deleted meanwhile
        self._reply_to = (
            reply_to.to_reference(fail_if_not_exists=False) if reply_to is not None else None
        )
        self._gate = gate
        self._feedback_view = feedback_view
        self._approval_view = approval_view
        self._asks: dict[int, discord.Message] = {}  # approval id -> the message asking it
        self._messages: list[discord.Message] = []
        self._shown: list[str] = []
        self._typing: asyncio.Task[None] | None = None
        self._muted = False  # the channel refused us: stop trying until the final answer

    async def begin(self) -> None:
        self._typing = asyncio.create_task(self._keep_typing())

    async def progress(self, text: str) -> None:
        """A preview Discord refuses is skipped (the next one, or the final answer, retries);
        a channel that forbids us is not tried again, so 403s never pile up."""
        if self._muted:
            return
        try:
            await self._render(split_message(close_fences(text), MESSAGE_LIMIT), gated=True)
        except discord.Forbidden:
            self._muted = True
        except discord.HTTPException as exc:
            log.info("Discord refused a preview (%s %s)", exc.status, exc.text)

    async def ask_approval(self, asked: ApprovalAsked) -> None:
        """The ask, pinging only the requester, with Approve and Decline."""
        if self._approval_view is None:
            log.warning("Discord: %s waits for an approval this surface cannot ask", asked.tool)
            return
        requester = int(asked.requester.user_id)
        try:
            self._asks[asked.approval_id] = await self._channel.send(
                approval_request(asked, f"<@{requester}>", limit=MESSAGE_LIMIT),
                reference=self._reply_to,  # type: ignore[arg-type]
                mention_author=False,
                allowed_mentions=discord.AllowedMentions.none().merge(
                    discord.AllowedMentions(users=[discord.Object(id=requester)])
                ),
                view=self._approval_view(asked.approval_id),
            )
        except discord.HTTPException as exc:
            log.warning(
                "Discord refused a tool's request for approval (%s %s)", exc.status, exc.text
            )

    async def approval_decided(self, decided: ApprovalDecided) -> None:
        asked = self._asks.pop(decided.approval_id, None)
        who = decided.decided_by.partition(":")[2] if decided.decided_by else None
        text = approval_outcome(decided, f"<@{who}>" if who else None)
        try:
            if asked is None:
                await self._channel.send(text, allowed_mentions=ALLOWED_MENTIONS)
            else:
                await asked.edit(content=text, view=None, allowed_mentions=ALLOWED_MENTIONS)
        except discord.HTTPException as exc:
            log.warning("Discord refused to show a tool's approval (%s %s)", exc.status, exc.text)

    async def complete(self, text: str, message_id: int, sources: Sequence[Source] = ()) -> None:
        pieces = with_footnotes(self.with_tool_notes(text), sources)
        await self._finish(pieces, self._feedback_view(message_id))

    async def fail(self, message: str, partial: str) -> None:
        await self._finish(split_message(failure_text(message, partial), MESSAGE_LIMIT), None)

    async def close(self) -> None:
        """Stop the typing indicator, however the turn ended."""
        await self._stop_typing()

    def shown_id(self) -> str | None:
        return str(self._messages[0].id) if self._messages else None

    async def _finish(self, pieces: list[str], view: discord.ui.View | None) -> None:
        """Show the final messages; never raises (it is the user's last word on the turn)."""
        try:
            await self._render(pieces, gated=False, view=view)
        except discord.Forbidden as exc:
            log.error(
                "Discord: no permission to answer in channel %s (%s); %s",
                self._channel_id,
                exc.text or exc.status,
                permission_advice(self._channel, ANSWER_PERMISSIONS),
            )
        except Exception:
            log.exception("Discord refused the final answer; posting it as new messages")
            await self._post_anew(pieces)
        finally:
            await self._stop_typing()

    async def _post_anew(self, pieces: list[str]) -> None:
        """The last resort: the whole answer as plain new messages."""
        for piece in pieces:
            try:
                await self._channel.send(piece, allowed_mentions=ALLOWED_MENTIONS)
            except Exception:
                log.exception("Discord refused every way of showing an answer")
                return

    async def _keep_typing(self) -> None:
        with suppress(discord.HTTPException):
            while not self._messages:
                await self._channel.typing()
                await asyncio.sleep(TYPING_EVERY_SECONDS)

    async def _stop_typing(self) -> None:
        if self._typing is not None:
            self._typing.cancel()
            with suppress(asyncio.CancelledError):
                await self._typing

    async def _render(
        self, pieces: list[str], *, gated: bool, view: discord.ui.View | None = None
    ) -> None:
        """Edit the messages whose text changed and post the rest; the view goes on the last."""
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            wanted = view if last else None
            if index < len(self._messages):
                if self._shown[index] != piece or wanted is not None:
                    if gated:
                        await self._gate.wait(self._channel_id)
                    await self._edit(index, piece, wanted)
            else:
                if gated:
                    await self._gate.wait(self._channel_id)
                await self._post(piece, wanted)
        if not gated:  # the final text: parts it no longer needs go
            await self._drop_after(len(pieces))

    async def _post(self, text: str, view: discord.ui.View | None) -> None:
        self._messages.append(await self._send(text, view))
        self._shown.append(text)

    async def _send(self, text: str, view: discord.ui.View | None) -> discord.Message:
        # every part replies to the user's message: a reply to any part continues the talk
        if view is None:
            return await self._channel.send(
                text,
                reference=self._reply_to,  # type: ignore[arg-type]
                mention_author=False,
                allowed_mentions=ALLOWED_MENTIONS,
            )
        return await self._channel.send(
            text,
            reference=self._reply_to,  # type: ignore[arg-type]
            mention_author=False,
            allowed_mentions=ALLOWED_MENTIONS,
            view=view,
        )

    async def _edit(self, index: int, text: str, view: discord.ui.View | None) -> None:
        try:
            self._messages[index] = await self._messages[index].edit(
                content=text, view=view, allowed_mentions=ALLOWED_MENTIONS
            )
        except discord.NotFound:  # deleted meanwhile: post the text anew
            log.warning("a part of an answer was deleted while it was shown; posting it again")
            self._messages[index] = await self._send(text, view)
        self._shown[index] = text

    async def _drop_after(self, count: int) -> None:
        while len(self._messages) > count:
            message = self._messages.pop()
            self._shown.pop()
            with suppress(discord.HTTPException):
                await message.delete()


def with_footnotes(text: str, sources: Sequence[Source]) -> list[str]:
    """The answer's messages, its sources as footnotes at the end of the last: "[1] Title >
    Section — <link>" (the brackets keep Discord from unfurling every link into an embed).
    Footnotes that do not fit the last message go in one more, never inside a code block."""
    pieces = split_message(close_fences(text), MESSAGE_LIMIT)
    if not sources:
        return pieces
    notes = "\n".join(source_lines(sources, label=discord.utils.escape_markdown, link=_no_embed))
    last = pieces[-1] if pieces else ""
    if last and open_fence(last) is None and len(last) + 2 + len(notes) <= MESSAGE_LIMIT:
        return [*pieces[:-1], f"{last}\n\n{notes}"]
    return [*pieces, *split_message(notes, MESSAGE_LIMIT)]


def _no_embed(link: str) -> str:
    """A link Discord shows without an embed: <url>, with what would end the brackets early
    percent-encoded."""
    return "<" + link.replace(" ", "%20").replace(">", "%3E").replace("<", "%3C") + ">"


async def close_cut_answer(channel: discord.PartialMessageable, message_id: int, text: str) -> None:
    """Mark what a stopped process left of an answer with `text`; what Discord refuses (the
    message was deleted meanwhile) is logged."""
    try:
        await channel.get_partial_message(message_id).edit(
            content=text, allowed_mentions=ALLOWED_MENTIONS
        )
    except discord.HTTPException as exc:
        log.warning("could not mark the cut answer %s (%s)", message_id, exc.text or exc.status)


def permission_names(permissions: discord.Permissions) -> list[str]:
    """The permissions set, named as Discord's settings name them ("Attach Files")."""
    return [_NAMES.get(name, name.replace("_", " ").title()) for name, on in permissions if on]


def needed_in(channel: object, needed: discord.Permissions) -> discord.Permissions:
    """`needed` as it applies in `channel`: in a thread, Send Messages in Threads instead of
    Send Messages; elsewhere only Send Messages."""
    in_thread = isinstance(channel, discord.Thread)
    applies = discord.Permissions(needed.value)
    applies.send_messages = needed.send_messages and not in_thread
    applies.send_messages_in_threads = needed.send_messages_in_threads and in_thread
    return applies


def lacking(channel: object, needed: discord.Permissions) -> discord.Permissions | None:
    """What of `needed` the bot lacks in `channel`, from the server as the client has it
    (roles and the channel's overwrites); None where it cannot tell (a DM, an uncached
    channel)."""
    if not isinstance(channel, discord.abc.GuildChannel | discord.Thread):
        return None
    me = channel.guild.me
    if me is None:
        return None
    applies = needed_in(channel, needed)
    return discord.Permissions(applies.value & ~channel.permissions_for(me).value)


def permission_advice(channel: object, needed: discord.Permissions) -> str:
    """What the operator grants, in one clause: the permissions the bot lacks in `channel`
    when the client can tell, else all that `needed` asks for there."""
    missing = lacking(channel, needed)
    names = permission_names(missing if missing else needed_in(channel, needed))
    listed = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
    state = "lacks" if missing else "needs"
    return (
        f"the bot {state} {listed} there; grant {'them' if len(names) > 1 else 'it'} to its "
        "role (Server Settings, Roles) or in the channel, or re-invite it with the invite URL "
        "the log shows at start"
    )
