"""The fake Discord is faithful enough for the real discord.py 2.7 client: it connects,
gets its guild, receives messages and interactions, replies, resumes, waits out 429s, and
fails on a missing privileged intent as it would on Discord."""

from __future__ import annotations

import asyncio
import io
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

with warnings.catch_warnings():  # discord.py imports audioop, deprecated since Python 3.11
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord
    from discord import app_commands

from tests.fakes.discord_api import (
    APP_ID,
    BOT_ID,
    CHANNEL_ID,
    GUILD_ID,
    THREAD_ID,
    TOKEN,
    FakeDiscord,
    no_identify_delay,
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


def intents() -> discord.Intents:
    chosen = discord.Intents.default()
    chosen.message_content = True
    return chosen


class Bot(discord.Client):
    def __init__(self, *, chosen: discord.Intents | None = None) -> None:
        super().__init__(intents=chosen or intents(), guild_ready_timeout=0.05)
        self.seen: list[discord.Message] = []
        self.tree = app_commands.CommandTree(self)

    async def on_message(self, message: discord.Message) -> None:
        self.seen.append(message)


@asynccontextmanager
async def running(client: discord.Client) -> AsyncIterator[asyncio.Task[None]]:
    """The client connected and ready; closed (and its task awaited) afterwards."""
    task = asyncio.create_task(client.start(TOKEN))
    await asyncio.sleep(0)  # start() has run up to its first await: login set `_ready` up
    ready = asyncio.create_task(client.wait_until_ready())
    try:
        done, _ = await asyncio.wait({task, ready}, timeout=10, return_when="FIRST_COMPLETED")
        if task in done:
            task.result()  # raises what start() raised
        assert ready in done, "the client did not become ready"
        yield task
    finally:
        ready.cancel()
        await client.close()
        await asyncio.wait_for(task, 10)


@pytest.mark.parametrize("compression", [True, False], ids=["zlib-stream", "plain"])
async def test_the_client_gets_ready_and_sees_the_guild(compression: bool) -> None:
    async with FakeDiscord(transport_compression=compression) as fake:
        client = Bot()
        async with running(client):
            assert client.user is not None and client.user.id == int(BOT_ID)
            assert client.application_id == int(APP_ID)
            guild = client.get_guild(int(GUILD_ID))
            assert guild is not None and guild.me is not None
            channel = guild.get_channel(int(CHANNEL_ID))
            assert isinstance(channel, discord.TextChannel)
            assert channel.permissions_for(guild.me).send_messages
            assert channel.permissions_for(guild.me).send_messages_in_threads
            thread = guild.get_thread(int(THREAD_ID))
            assert thread is not None and thread.parent_id == channel.id
        assert fake.identifies == 1
        assert fake.identify_payloads[0]["intents"] & (1 << 15)
        assert [c.path for c in fake.calls[:2]] == ["/users/@me", "/oauth2/applications/@me"]
        assert fake.gateway_queries[0] == {"v": "10", "encoding": "json", "compress": "zlib-stream"}
    assert discord.http.Route.BASE == "https://discord.com/api/v10"  # left as it was found
    assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == "wss://gateway.discord.gg/"


async def test_a_message_reaches_on_message_and_the_reply_lands(fake: FakeDiscord) -> None:
    client = Bot()
    async with running(client):
        sent = await fake.send_message("hello bot", mention_bot=True)
        await fake.wait_until(lambda: client.seen)
        incoming = client.seen[0]
        assert incoming.id == int(sent["id"])
        assert incoming.content == f"<@{BOT_ID}> hello bot"
        assert client.user in incoming.mentions
        assert isinstance(incoming.author, discord.Member)

        async with incoming.channel.typing():
            reply = await incoming.reply("hi alice")
        assert fake.typing == [CHANNEL_ID]
        shown = fake.messages[str(reply.id)]
        assert shown.content == "hi alice" and shown.channel_id == CHANNEL_ID
        assert shown.message_reference is not None
        assert shown.message_reference["message_id"] == sent["id"]
        assert reply.reference is not None and reply.reference.message_id == incoming.id

        edited = await reply.edit(content="hi alice!")
        assert edited.content == "hi alice!"
        assert shown.edits == 1 and shown.content == "hi alice!"
        await edited.delete()
        assert shown.deleted
        with pytest.raises(discord.NotFound):
            await edited.edit(content="gone")


async def test_a_resume_replays_what_was_lost_and_what_it_is_told_to(fake: FakeDiscord) -> None:
    client = Bot()
    async with running(client):
        first = await fake.send_message("one")
        await fake.wait_until(lambda: len(client.seen) == 1)
        lost = fake.message_create("two")
        await fake.dispatch("MESSAGE_CREATE", lost, deliver=False)  # lost in flight
        resumed = asyncio.Event()
        client.event(resumed_handler(resumed))

        await fake.drop_connection(resumable=True, replay_seen=1)
        await asyncio.wait_for(resumed.wait(), 10)
        await fake.wait_until(lambda: len(client.seen) == 3)
        assert fake.resumes == 1 and fake.identifies == 1
        # the already-seen message comes again (a duplicate), then the lost one
        assert [m.id for m in client.seen] == [int(first["id"]), int(first["id"]), int(lost["id"])]

        await fake.send_message("three")  # the session carries on
        await fake.wait_until(lambda: len(client.seen) == 4)


async def test_a_session_that_cannot_resume_identifies_again(fake: FakeDiscord) -> None:
    client = Bot()
    no_identify_delay(client)
    async with running(client):
        await fake.drop_connection(resumable=False)
        await fake.wait_ready(2)
        assert fake.resumes == 1 and fake.identifies == 2
        await fake.send_message("after")
        await fake.wait_until(lambda: client.seen)


def resumed_handler(event: asyncio.Event) -> Any:
    async def on_resumed() -> None:
        event.set()

    return on_resumed


async def test_a_slash_command_reaches_the_tree_and_answers_ephemerally(
    fake: FakeDiscord,
) -> None:
    client = Bot()
    assistant = app_commands.Group(name="assistant", description="The team assistant")
    prompt = app_commands.Group(name="prompt", description="Prompts", parent=assistant)
    used: list[str] = []

    @prompt.command(name="use", description="Use a prompt")
    async def use(interaction: discord.Interaction, name: str, version: int | None = None) -> None:
        used.append(f"{name}@{version}")
        await interaction.response.send_message(f"using {name}", ephemeral=True)

    guild = discord.Object(id=int(GUILD_ID))
    client.tree.add_command(assistant, guild=guild)
    async with running(client):
        synced = await client.tree.sync(guild=guild)
        assert [c.name for c in synced] == ["assistant"]
        stored = fake.commands[GUILD_ID][0]
        assert stored["options"][0]["name"] == "prompt"
        assert stored["options"][0]["options"][0]["name"] == "use"

        payload = await fake.interact(
            fake.slash_command(sub="use", options={"name": "concise", "version": 2})
        )
        await fake.wait_until(lambda: fake.responses_for(payload))
        assert used == ["concise@2"]
        (callback,) = fake.responses_for(payload)
        assert callback["kind"] == "callback" and callback["type"] == 4
        assert callback["data"]["flags"] == 64 and callback["data"]["content"] == "using concise"
        (shown,) = fake.shown()
        assert shown.ephemeral and shown.interaction_id == payload["id"]


async def test_defer_then_follow_up_and_a_button_click(fake: FakeDiscord) -> None:
    client = Bot()
    clicks: list[str] = []

    class Feedback(discord.ui.View):
        @discord.ui.button(label="Helpful", custom_id="fb:up")
        async def up(
            self, interaction: discord.Interaction, button: discord.ui.Button[Any]
        ) -> None:
            clicks.append(button.custom_id or "")
            await interaction.response.send_message("thanks", ephemeral=True)

    @client.tree.command(name="ask", description="Ask")
    async def ask(interaction: discord.Interaction, question: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await interaction.followup.send(f"answer to {question}", ephemeral=True)
        await interaction.followup.send("rate it", view=Feedback(timeout=None))

    async with running(client):
        await client.tree.sync()
        payload = await fake.interact(
            fake.slash_command(command="ask", group=None, sub=None, options={"question": "x"})
        )
        await fake.wait_until(lambda: len(fake.responses_for(payload)) == 3)
        kinds = [r["kind"] for r in fake.responses_for(payload)]
        assert kinds == ["callback", "followup", "followup"]
        thinking, rated = fake.shown()
        assert thinking.content == "answer to x" and thinking.ephemeral and not thinking.loading
        assert rated.buttons()[0]["custom_id"] == "fb:up"

        click = await fake.interact(fake.button_click(custom_id="fb:up", message_id=rated.id))
        await fake.wait_until(lambda: fake.responses_for(click))
        assert clicks == ["fb:up"]


async def test_a_rate_limited_edit_is_waited_out(fake: FakeDiscord) -> None:
    client = Bot()
    async with running(client):
        channel = client.get_channel(int(CHANNEL_ID))
        assert isinstance(channel, discord.TextChannel)
        message = await channel.send("draft")
        fake.fail_next("PATCH", "/channels/*/messages/*", retry_after=0.3)
        started = time.monotonic()
        await message.edit(content="final")
        assert time.monotonic() - started >= 0.3
        assert fake.messages[str(message.id)].content == "final"
        assert fake.messages[str(message.id)].edits == 1
        patches = fake.calls_to("PATCH", "/channels/*/messages/*")
        assert [c.status for c in patches] == [429, 200]

        fake.fail_next("POST", "/channels/*/messages", status=403)
        with pytest.raises(discord.Forbidden) as raised:
            await channel.send("nope")
        assert raised.value.code == 50013


async def test_a_missing_message_content_intent_fails_the_client() -> None:
    async with FakeDiscord(message_content_intent=False) as fake:
        client = Bot()
        try:
            with pytest.raises(discord.PrivilegedIntentsRequired):
                await asyncio.wait_for(client.start(TOKEN), 10)
        finally:
            await client.close()
        assert fake.close_codes == [4014]


async def test_an_auto_sharded_client_asks_for_the_gateway_and_identifies_each_shard() -> None:
    async with FakeDiscord(shards=2) as fake:
        client = discord.AutoShardedClient(intents=intents(), guild_ready_timeout=0.05)
        no_identify_delay(client)
        async with running(client):
            assert fake.calls_to("GET", "/gateway/bot")
            assert sorted(p["shard"][0] for p in fake.identify_payloads) == [0, 1]
            guild = client.get_guild(int(GUILD_ID))
            assert guild is not None and guild.shard_id == (int(GUILD_ID) >> 22) % 2
            seen: list[discord.Message] = []
            client.event(collect(seen))
            await fake.send_message("sharded")
            await fake.wait_until(lambda: seen)


def collect(seen: list[discord.Message]) -> Any:
    async def on_message(message: discord.Message) -> None:
        seen.append(message)

    return on_message


async def test_autocomplete_and_a_late_answer() -> None:
    async with FakeDiscord() as fake:
        client = Bot()
        failures: list[BaseException] = []

        async def names(interaction: discord.Interaction, current: str) -> list[Any]:
            return [app_commands.Choice(name=n, value=n) for n in ("concise", "chatty") if
                    n.startswith(current)]  # fmt: skip

        @client.tree.command(name="slow", description="Answers too late")
        @app_commands.autocomplete(name=names)
        async def slow(interaction: discord.Interaction, name: str) -> None:
            await asyncio.sleep(0.3)
            try:
                await interaction.response.send_message("late")
            except discord.HTTPException as exc:
                failures.append(exc)

        async with running(client):
            await client.tree.sync()
            typed = await fake.interact(
                fake.autocomplete(
                    command="slow", group=None, sub=None, options={"name": "co"}, focused="name"
                )
            )
            await fake.wait_until(lambda: fake.responses_for(typed))
            (choices,) = fake.responses_for(typed)
            assert choices["type"] == 8
            assert choices["data"]["choices"] == [{"name": "concise", "value": "concise"}]

            fake.interaction_deadline = 0.1  # Discord's is 3 s
            await fake.interact(
                fake.slash_command(command="slow", group=None, sub=None, options={"name": "x"})
            )
            await fake.wait_until(lambda: failures)
            assert isinstance(failures[0], discord.NotFound) and failures[0].code == 10062


async def test_intents_decide_what_the_client_gets_and_replies_to_deleted_messages_fail(
    fake: FakeDiscord,
) -> None:
    client = Bot(chosen=discord.Intents.default())  # no message_content
    async with running(client):
        await fake.send_message("secret")
        await fake.send_message("for you", mention_bot=True)
        await fake.wait_until(lambda: len(client.seen) == 2)
        assert [m.content for m in client.seen] == ["", f"<@{BOT_ID}> for you"]

        await fake.delete_user_message(str(client.seen[1].id))
        with pytest.raises(discord.HTTPException) as raised:
            await client.seen[1].reply("too late")
        assert raised.value.code == 50035
        gone = client.seen[1].to_reference(fail_if_not_exists=False)
        sent = await client.seen[1].channel.send("still here", reference=gone)
        assert sent.reference is None  # sent as a plain message


async def test_permissions_come_from_the_invite_and_each_route_needs_its_own() -> None:
    """As Discord answers a bot invited without some permissions: 403 Missing Permissions
    (50013), Missing Access (50001) without View Channel; an embed without Embed Links is
    dropped, or refused when it is all the message holds."""
    invited = discord.Permissions(view_channel=True, send_messages=True)
    async with FakeDiscord(bot_permissions=invited.value) as fake:
        client = Bot()
        async with running(client):
            channel = client.get_channel(int(CHANNEL_ID))
            assert isinstance(channel, discord.TextChannel)
            sent = await channel.send("plain text is fine")
            with pytest.raises(discord.Forbidden) as no_history:
                await sent.reply("a reply needs Read Message History")
            with pytest.raises(discord.Forbidden) as no_files:
                await channel.send(file=discord.File(io.BytesIO(b"png"), filename="a.png"))
            with pytest.raises(discord.Forbidden) as embed_only:
                await channel.send(embed=discord.Embed(title="figures"))
            with_text = await channel.send("text", embed=discord.Embed(title="figures"))
            thread = client.get_channel(int(THREAD_ID))
            assert isinstance(thread, discord.Thread)
            with pytest.raises(discord.Forbidden):
                await thread.send("a thread needs Send Messages in Threads")

            fake.bot_permissions = 0  # taken away: not even View Channel
            with pytest.raises(discord.Forbidden) as no_access:
                await client.fetch_channel(int(CHANNEL_ID))
    assert no_history.value.code == no_files.value.code == embed_only.value.code == 50013
    assert no_access.value.code == 50001
    assert with_text.embeds == [] and fake.messages[str(with_text.id)].content == "text"
    assert {"read_message_history", "attach_files", "embed_links"} <= fake.required
