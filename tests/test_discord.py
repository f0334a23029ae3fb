"""The Discord adapter against a fake Discord: the real discord.py client connects to a loopback
gateway and REST API; the real engine and database answer."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import discord
import pytest

from assistant.admin.commands import AdminCommands
from assistant.admin.grammar import NO_WORKSPACE_HERE
from assistant.testing import Fail, Hang, Reply
from bots.discord_app import DiscordAdapter, DiscordSetupError, point_at
from bots.discord_commands import UNREADABLE_COMMAND
from bots.streaming import RESUMING
from tests.conftest import DISCORD_ADMIN, settle_discord, write_prompt
from tests.fakes.discord_api import (
    BOT_PERMISSIONS,
    BOT_ROLE_ID,
    CHANNEL_ID,
    GUILD_ID,
    OWNER_ID,
    THREAD_ID,
    TOKEN,
    FakeDiscord,
    FakeMessage,
)

ADMIN = DISCORD_ADMIN
UNKNOWN_ANSWER = "That answer is no longer known, so the vote was not recorded."
ELSEWHERE = "Votes are taken only where the answer was given, so this one was not recorded."


@pytest.fixture
def start_bot(start_discord_bot: Callable[..., Any]) -> Callable[..., Any]:
    return start_discord_bot


@pytest.fixture
def bot(discord_bot: DiscordAdapter) -> DiscordAdapter:
    return discord_bot


settle = settle_discord


def ephemeral(response: dict[str, Any]) -> bool:
    flags = response.get("flags", (response.get("data") or {}).get("flags"))
    return bool(int(flags or 0) & 64)


def answers(fake: FakeDiscord, channel_id: str = CHANNEL_ID) -> list[FakeMessage]:
    return [m for m in fake.shown(channel_id) if m.interaction_id is None]


async def test_a_mention_gets_one_reply_with_feedback_buttons(bot, discord_fake, fake_llm):
    fake_llm.script(Reply(text="The VPN uses port 1194.", chunk_chars=4))
    asked = await discord_fake.send_message("which VPN port?", mention_bot=True)
    await settle(bot, discord_fake)

    [answer] = answers(discord_fake)
    assert answer.content == "The VPN uses port 1194."
    assert answer.message_reference is not None
    assert answer.message_reference["message_id"] == asked["id"]
    assert [b["emoji"]["name"] for b in answer.buttons()] == ["👍", "👎"]
    assert CHANNEL_ID in discord_fake.typing
    assert fake_llm.requests[-1]["messages"][-1] == {"role": "user", "content": "which VPN port?"}


async def test_talk_not_for_the_assistant_is_left_alone(bot, discord_fake, fake_llm):
    await discord_fake.send_message("lunch anyone?")
    await discord_fake.send_message("beep", mention_bot=True, author_id="9009", bot_author=True)
    await settle(bot, discord_fake)
    assert fake_llm.requests == []
    assert answers(discord_fake) == []


async def test_a_direct_message_needs_no_mention(bot, discord_fake, fake_llm):
    fake_llm.script(Reply(text="Hello in private."), Reply(text="Still here."))
    first = await discord_fake.send_message("hi", guild=False)
    await settle(bot, discord_fake)
    await discord_fake.send_message("again", guild=False)
    await settle(bot, discord_fake)

    shown = [m.content for m in answers(discord_fake, first["channel_id"])]
    assert shown == ["Hello in private.", "Still here."]
    history = [m["content"] for m in fake_llm.requests[-1]["messages"][1:]]
    assert history == ["hi", "Hello in private.", "again"]


async def test_a_thread_follow_up_needs_no_mention_and_remembers(bot, discord_fake, fake_llm):
    fake_llm.script(Reply(text="Blue."), Reply(text="You asked for a colour."))
    await discord_fake.send_message("pick a colour", mention_bot=True, channel_id=THREAD_ID)
    await settle(bot, discord_fake)
    await discord_fake.send_message("what did I ask?", channel_id=THREAD_ID)
    await settle(bot, discord_fake)

    assert [m.content for m in answers(discord_fake, THREAD_ID)] == [
        "Blue.",
        "You asked for a colour.",
    ]
    history = [m["content"] for m in fake_llm.requests[-1]["messages"][1:]]
    assert history == ["pick a colour", "Blue.", "what did I ask?"]


async def test_a_reply_to_an_answer_continues_that_conversation(bot, discord_fake, fake_llm):
    fake_llm.script(Reply(text="Port 1194."), Reply(text="For staging, 1195."))
    await discord_fake.send_message("which port?", mention_bot=True)
    await settle(bot, discord_fake)
    [first] = answers(discord_fake)
    await discord_fake.send_message("and staging?", reference_id=first.id)  # no mention
    await settle(bot, discord_fake)

    assert [m.content for m in answers(discord_fake)] == ["Port 1194.", "For staging, 1195."]
    history = [m["content"] for m in fake_llm.requests[-1]["messages"][1:]]
    assert history == ["which port?", "Port 1194.", "and staging?"]


async def test_people_in_a_thread_are_told_apart(bot, discord_fake, fake_llm):
    discord_fake.users["3003"] = "bob"
    fake_llm.script(Reply(text="Noted."), Reply(text="Both noted."))
    await discord_fake.send_message("I like tea", mention_bot=True, channel_id=THREAD_ID)
    await settle(bot, discord_fake)
    await discord_fake.send_message("I like coffee", author_id="3003", channel_id=THREAD_ID)
    await settle(bot, discord_fake)

    users = [m["content"] for m in fake_llm.requests[-1]["messages"] if m["role"] == "user"]
    assert [u.casefold() for u in users] == ["[alice] i like tea", "[bob] i like coffee"]


async def test_a_message_replayed_after_a_resume_or_a_restart_gets_no_second_reply(
    start_bot, discord_fake, fake_llm
):
    bot = await start_bot()
    fake_llm.script(Reply(text="Once."))
    asked = await discord_fake.send_message("hi", mention_bot=True)
    await settle(bot, discord_fake)

    await discord_fake.drop_connection(resumable=True, replay_seen=1)  # replays MESSAGE_CREATE
    await discord_fake.wait_until(lambda: discord_fake.resumed >= 1)
    await settle(bot, discord_fake)
    await bot.close()

    restarted = await start_bot()  # a new process on the same database gets it once more
    await discord_fake.dispatch("MESSAGE_CREATE", asked)
    await settle(restarted, discord_fake)

    assert [m.content for m in answers(discord_fake)] == ["Once."]
    assert len(fake_llm.requests) == 1


def _long_answer_with_code() -> str:
    prose = "\n\n".join(f"Step {i}: check the settings of part {i} again." for i in range(50))
    code = "\n".join(f"    total = total + {i}  # line {i}" for i in range(80))
    return f"{prose}\n\n```python\n{code}\n```\n\nThat is all."


async def test_a_long_answer_with_code_is_split_with_fences_balanced(bot, discord_fake, fake_llm):
    answer = _long_answer_with_code()
    assert len(answer) >= 5000
    fake_llm.script(Reply(text=answer, chunk_chars=300))
    await discord_fake.send_message("explain", mention_bot=True)
    await settle(bot, discord_fake)

    shown = answers(discord_fake)
    assert len(shown) >= 3
    assert all(len(m.content) <= 2000 for m in shown)
    for message in shown:
        fences = [line for line in message.content.splitlines() if line.startswith("```")]
        assert len(fences) % 2 == 0
    reopened = [m for m in shown if m.content.startswith("```python")]
    assert reopened, "the code block continues in the next message, still as python"
    words = [w for m in shown for w in m.content.split() if not w.startswith("```")]
    assert words == [w for w in answer.split() if not w.startswith("```")]
    assert shown[-1].buttons() and not any(m.buttons() for m in shown[:-1])


async def test_an_llm_failure_posts_a_short_error(bot, discord_fake, fake_llm):
    fake_llm.script(Fail(status=503), Fail(status=503), Fail(status=503))
    await discord_fake.send_message("hello?", mention_bot=True)
    await settle(bot, discord_fake)

    [shown] = answers(discord_fake)
    assert shown.content.startswith("⚠️ ")
    assert "unavailable" in shown.content
    assert not shown.buttons()


async def test_a_429_on_an_edit_is_waited_out(bot, discord_fake, fake_llm):
    discord_fake.fail_next("PATCH", "/channels/*/messages/*", status=429, retry_after=0.3)
    fake_llm.script(Reply(text="Streaming slowly " * 20, chunk_chars=20, chunk_delay=0.02))
    await discord_fake.send_message("go", mention_bot=True)
    await settle(bot, discord_fake)

    statuses = [c.status for c in discord_fake.calls_to("PATCH", "/channels/*/messages/*")]
    assert 429 in statuses and statuses[-1] == 200
    [shown] = answers(discord_fake)
    assert shown.content.strip() == ("Streaming slowly " * 20).strip()


async def test_edits_are_spaced_per_channel_across_answers(start_bot, discord_fake, fake_llm):
    bot = await start_bot(edit_interval=0.2)
    fake_llm.script(
        Reply(text="alpha " * 40, chunk_chars=6, chunk_delay=0.02),
        Reply(text="beta " * 40, chunk_chars=5, chunk_delay=0.02),
    )
    await discord_fake.send_message("one", mention_bot=True)
    await discord_fake.send_message("two", mention_bot=True)
    await settle(bot, discord_fake)

    assert len(answers(discord_fake)) == 2
    path = f"/channels/{CHANNEL_ID}/messages"
    streaming = [  # the final edit of each (with its buttons) is not held back
        c.at
        for c in discord_fake.calls
        if c.path.startswith(path) and not (c.json_body or {}).get("components")
    ]
    gaps = [b - a for a, b in itertools.pairwise(streaming)]
    assert gaps and min(gaps) >= 0.15, "two answers in one channel share one write a second"


async def test_admins_switch_the_version_and_others_are_refused(
    prompts_dir: Path, start_bot, discord_fake, fake_llm
):
    write_prompt(prompts_dir, version=2, system="Version two speaking.")
    write_prompt(prompts_dir, version=1, system="Version one speaking.")
    bot = await start_bot()
    assert "assistant" in [c["name"] for c in discord_fake.commands[GUILD_ID]]

    options = {"name": "assistant", "version": 1, "force": True}
    refused = await discord_fake.interact(
        discord_fake.slash_command(user_id=OWNER_ID, sub="use", options=options)
    )
    await settle(bot, discord_fake)
    said = discord_fake.responses_for(refused)
    assert "Only admins" in said[-1]["content"]
    assert all(ephemeral(r) for r in said), "only the one who asked sees the answer"

    fake_llm.script(Reply(text="v2"), Reply(text="v1"))
    await discord_fake.send_message("who?", mention_bot=True)
    await settle(bot, discord_fake)
    assert fake_llm.requests[-1]["messages"][0]["content"] == "Version two speaking."

    accepted = await discord_fake.interact(
        discord_fake.slash_command(user_id=ADMIN, sub="use", options=options)
    )
    await settle(bot, discord_fake)
    done = discord_fake.responses_for(accepted)
    assert "assistant" in done[-1]["content"] and "Only admins" not in done[-1]["content"]
    assert all(ephemeral(r) for r in done)
    await discord_fake.send_message("who now?", mention_bot=True)
    await settle(bot, discord_fake)
    assert fake_llm.requests[-1]["messages"][0]["content"] == "Version one speaking."


async def test_prompt_names_and_versions_autocomplete(prompts_dir: Path, start_bot, discord_fake):
    write_prompt(prompts_dir, version=2)
    bot = await start_bot()
    names = await discord_fake.interact(
        discord_fake.autocomplete(sub="use", options={"name": "ass"}, focused="name")
    )
    versions = await discord_fake.interact(
        discord_fake.autocomplete(
            sub="use", options={"name": "assistant", "version": ""}, focused="version"
        )
    )
    await settle(bot, discord_fake)
    [named] = discord_fake.responses_for(names)
    [versioned] = discord_fake.responses_for(versions)
    assert [c["value"] for c in named["data"]["choices"]] == ["assistant"]
    assert [c["value"] for c in versioned["data"]["choices"]] == [2, 1]


async def test_a_feedback_click_is_stored_also_after_a_restart(
    start_bot, discord_fake, fake_llm, store
):
    bot = await start_bot()
    fake_llm.script(Reply(text="Rate me."))
    await discord_fake.send_message("hi", mention_bot=True)
    await settle(bot, discord_fake)
    [answer] = answers(discord_fake)
    up, down = answer.buttons()
    await bot.close()

    restarted = await start_bot()
    click = discord_fake.button_click(
        user_id="3003", custom_id=up["custom_id"], message_id=answer.id
    )
    await discord_fake.interact(click)
    await settle(restarted, discord_fake)
    change = discord_fake.button_click(
        user_id="3003", custom_id=down["custom_id"], message_id=answer.id
    )
    await discord_fake.interact(change)
    await settle(restarted, discord_fake)

    message_id = int(up["custom_id"].rsplit(":", 1)[1])
    [vote] = await store.votes.of(message_id)
    assert (vote.user_id, vote.vote) == ("discord:3003", -1)
    assert discord_fake.responses_for(change)[-1]["content"] == "Thanks, your 👎 is recorded."


async def test_a_vote_on_an_answer_no_longer_known_says_so(bot, discord_fake, fake_llm):
    fake_llm.script(Reply(text="Rate me."))
    await discord_fake.send_message("hi", mention_bot=True)
    await settle(bot, discord_fake)
    [answer] = answers(discord_fake)
    up, _ = answer.buttons()
    up["custom_id"] = "feedback:1:999999"  # as if posted by an installation whose data is gone

    click = discord_fake.button_click(
        user_id="3003", custom_id=up["custom_id"], message_id=answer.id
    )
    await discord_fake.interact(click)
    await settle(bot, discord_fake)
    said = discord_fake.responses_for(click)[-1]
    assert said["content"] == UNKNOWN_ANSWER and ephemeral(said)


async def test_a_missing_message_content_intent_is_one_clear_line(make_assistant, store, fake_llm):
    async with FakeDiscord(message_content_intent=False) as fake:
        fake.point_discord_here()
        assistant = await make_assistant()
        commands = AdminCommands(prompts=store.prompts, versions=assistant.versions, admins=[])
        adapter = DiscordAdapter(
            assistant=assistant, commands=commands, token=TOKEN, guild_ready_timeout=0.05
        )
        try:
            with pytest.raises(DiscordSetupError, match="Message Content intent"):
                await adapter.start()
        finally:
            await adapter.close()
            fake.restore()


async def test_it_works_as_an_auto_sharded_client(make_assistant, store, fake_llm):
    async with FakeDiscord(shards=2) as fake:
        fake.point_discord_here()
        assistant = await make_assistant()
        commands = AdminCommands(prompts=store.prompts, versions=assistant.versions, admins=[])
        adapter = DiscordAdapter(
            assistant=assistant,
            commands=commands,
            token=TOKEN,
            sharded=True,
            edit_interval=0.01,
            guild_ready_timeout=0.05,
        )
        try:
            await adapter.start()
            fake_llm.script(Reply(text="From a shard."))
            await fake.send_message("hi", mention_bot=True)
            await settle(adapter, fake)
            assert [m.content for m in answers(fake)] == ["From a shard."]
            assert fake.identifies == 2
        finally:
            await adapter.close()
            fake.restore()


async def test_typing_shows_before_the_first_words(bot, discord_fake, fake_llm):
    fake_llm.script(Reply(text="Thought about it.", first_delay=0.3))
    await discord_fake.send_message("think", mention_bot=True)
    await settle(bot, discord_fake)

    paths = [(c.method, c.path) for c in discord_fake.calls]
    typing = paths.index(("POST", f"/channels/{CHANNEL_ID}/typing"))
    first_post = paths.index(("POST", f"/channels/{CHANNEL_ID}/messages"))
    assert typing < first_post


async def test_its_own_echoed_answers_start_nothing_and_unread_events_are_not_asked_for(
    bot, discord_fake, fake_llm
):
    """Discord sends the bot its own messages and edits back; and only the events the bot
    reads are asked for (no typing, reactions, presences, voice ...), so none is parsed for
    nothing."""
    discord_fake.echo = True
    fake_llm.script(Reply(text="Said once, edited a few times.", chunk_chars=4, chunk_delay=0.02))
    await discord_fake.send_message("say something", mention_bot=True)
    await settle(bot, discord_fake)

    assert [m.content for m in answers(discord_fake)] == ["Said once, edited a few times."]
    assert len(fake_llm.requests) == 1
    sent = [event for _, event, _ in discord_fake.dispatch_log()]
    assert sent.count("MESSAGE_CREATE") == 2 and "MESSAGE_UPDATE" in sent
    assert "TYPING_START" not in sent
    intents = discord.Intents._from_value(discord_fake.identify_payloads[-1]["intents"])
    read = {"guilds", "guild_messages", "dm_messages", "message_content"}
    assert {name for name, on in intents if on} == read


async def test_a_question_deleted_before_the_answer_still_gets_it(bot, discord_fake, fake_llm):
    fake_llm.script(Reply(text="Here anyway.", first_delay=0.3))
    asked = await discord_fake.send_message("quick one", mention_bot=True)
    await discord_fake.wait_until(lambda: CHANNEL_ID in discord_fake.typing)
    await discord_fake.delete_user_message(asked["id"])
    await settle(bot, discord_fake)

    assert [m.content for m in answers(discord_fake)] == ["Here anyway."]


@pytest.mark.parametrize("how", ["its role", "everyone and it"])
async def test_a_mention_through_its_role_or_beside_everyone_is_answered(
    bot, discord_fake, fake_llm, how
):
    fake_llm.script(Reply(text="Heard you."))
    if how == "its role":
        payload = discord_fake.message_create(
            f"<@&{BOT_ROLE_ID}> status?", mention_roles=[BOT_ROLE_ID]
        )
    else:
        payload = discord_fake.message_create("@everyone status?", mention_bot=True)
        payload["mention_everyone"] = True
    await discord_fake.dispatch("MESSAGE_CREATE", payload)
    await settle(bot, discord_fake)

    assert [m.content for m in answers(discord_fake)] == ["Heard you."]
    assert "status?" in fake_llm.requests[-1]["messages"][-1]["content"]
    assert BOT_ROLE_ID not in fake_llm.requests[-1]["messages"][-1]["content"]


async def test_an_attachment_alone_is_described_to_the_model(bot, discord_fake, fake_llm):
    fake_llm.script(Reply(text="I cannot see images."))
    attachment = {"id": "77", "filename": "a.png", "size": 10, "url": "https://x/a.png"}
    attachment |= {"proxy_url": "https://x/a.png"}
    payload = discord_fake.message_create("", mention_bot=True, attachments=[attachment])
    await discord_fake.dispatch("MESSAGE_CREATE", payload)
    await settle(bot, discord_fake)

    assert "attachment" in fake_llm.requests[-1]["messages"][-1]["content"]


async def test_a_channel_it_may_not_write_in_is_one_log_line_not_a_flood(
    bot, discord_fake, fake_llm, caplog
):
    discord_fake.fail_next("POST", "/channels/*/messages", status=403, times=1000)
    fake_llm.script(Reply(text="word " * 200, chunk_chars=10, chunk_delay=0.005))
    await discord_fake.send_message("hi", mention_bot=True)
    await settle(bot, discord_fake)

    posts = discord_fake.calls_to("POST", "/channels/*/messages")
    assert len(posts) <= 3  # the first preview, then only the final answer's attempt
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage().split(" (")[0] for r in errors] == [
        f"Discord: no permission to answer in channel {CHANNEL_ID}"
    ]
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("bots"))


async def test_a_shutdown_that_outlasts_its_grace_tells_the_user(start_bot, discord_fake, fake_llm):
    bot = await start_bot(shutdown_grace=0.3)
    fake_llm.script(Hang(text="Half an ans"))
    await discord_fake.send_message("hi", mention_bot=True)
    await discord_fake.wait_until(lambda: answers(discord_fake))
    await bot.close()

    [shown] = answers(discord_fake)
    assert shown.content.startswith("Half an ans")
    assert RESUMING in shown.content  # the turn stays owed: the next process answers it


async def test_prompt_show_keeps_its_code_block_whole(prompts_dir, start_bot, discord_fake):
    bot = await start_bot()
    asked = await discord_fake.interact(
        discord_fake.slash_command(sub="show", options={"name": "assistant"})
    )
    await settle(bot, discord_fake)
    [*_, shown] = discord_fake.responses_for(asked)
    fences = [line for line in shown["content"].splitlines() if line.startswith("```")]
    assert len(fences) == 2 and "You are a test assistant" in shown["content"]


async def test_a_prompt_named_workspace_is_shown_in_a_direct_message(
    prompts_dir, start_bot, discord_fake
):
    write_prompt(prompts_dir, name="workspace", system="The workspace helper.")
    bot = await start_bot()
    asked = await discord_fake.interact(
        discord_fake.slash_command(sub="show", options={"name": "workspace"}, guild=False)
    )
    await settle(bot, discord_fake)
    [*_, shown] = discord_fake.responses_for(asked)
    assert "workspace@1" in shown["content"] and "The workspace helper." in shown["content"]
    assert NO_WORKSPACE_HERE not in shown["content"] and ephemeral(shown)


async def test_a_workspace_scope_from_a_direct_message_is_refused(bot, discord_fake, store):
    options = {"name": "assistant", "version": 1, "scope": "workspace"}
    refused = await discord_fake.interact(
        discord_fake.slash_command(user_id=ADMIN, sub="use", options=options, guild=False)
    )
    await settle(bot, discord_fake)
    said = discord_fake.responses_for(refused)[-1]
    assert said["content"] == NO_WORKSPACE_HERE and ephemeral(said)
    assert await store.prompts.bindings() == []

    options["scope"] = "channel"  # what the refusal suggests works
    accepted = await discord_fake.interact(
        discord_fake.slash_command(user_id=ADMIN, sub="use", options=options, guild=False)
    )
    await settle(bot, discord_fake)
    assert "now answers in channel discord/" in discord_fake.responses_for(accepted)[-1]["content"]
    [(scope, _)] = await store.prompts.bindings()
    assert (scope.kind, scope.workspace) == ("channel", "")


async def test_an_ab_split_is_read_by_the_grammar(prompts_dir, start_bot, discord_fake, store):
    write_prompt(prompts_dir, version=2)
    bot = await start_bot()
    malformed = {"name": "assistant", "split": "2=90"}
    well_formed = {"name": "assistant", "split": "1=10 2=90", "scope": "global"}
    refused = await discord_fake.interact(
        discord_fake.slash_command(user_id=ADMIN, sub="ab", options=malformed)
    )
    accepted = await discord_fake.interact(
        discord_fake.slash_command(user_id=ADMIN, sub="ab", options=well_formed)
    )
    await settle(bot, discord_fake)

    [said] = discord_fake.responses_for(refused)  # at once: nothing to wait for
    assert "a split needs at least two versions" in said["data"]["content"] and ephemeral(said)
    assert "global now splits assistant" in discord_fake.responses_for(accepted)[-1]["content"]
    [(scope, binding)] = await store.prompts.bindings()
    assert (scope.kind, binding.split) == ("global", ((1, 10), (2, 90)))


async def test_a_wrong_token_is_one_clear_line(make_assistant, store):
    async with FakeDiscord(token="the-right-token") as fake:
        assistant = await make_assistant()
        commands = AdminCommands(prompts=store.prompts, versions=assistant.versions, admins=[])
        adapter = DiscordAdapter(assistant=assistant, commands=commands, token="wrong")
        try:
            with pytest.raises(DiscordSetupError, match="DISCORD_TOKEN: Discord refused the token"):
                await adapter.start()
        finally:
            await adapter.close()
            fake.restore()


async def test_an_unreachable_api_is_blamed_on_the_setting_that_points_there(make_assistant, store):
    async with FakeDiscord() as fake:
        point_at("http://127.0.0.1:9/api/v10", None)  # DISCORD_API_URL, with nothing there
        assistant = await make_assistant()
        commands = AdminCommands(prompts=store.prompts, versions=assistant.versions, admins=[])
        adapter = DiscordAdapter(assistant=assistant, commands=commands, token="any-token")
        try:
            with pytest.raises(
                DiscordSetupError,
                match=r"^DISCORD_API_URL: could not log in at http://127\.0\.0\.1:9/api/v10 ",
            ):
                await adapter.start()
        finally:
            await adapter.close()
            fake.restore()


async def test_a_missing_permission_is_named_to_the_operator(make_assistant, store, caplog):
    without_send = BOT_PERMISSIONS & ~discord.Permissions(send_messages=True).value
    async with FakeDiscord(bot_permissions=without_send):  # invited without Send Messages
        assistant = await make_assistant()
        commands = AdminCommands(prompts=store.prompts, versions=assistant.versions, admins=[])
        adapter = DiscordAdapter(
            assistant=assistant, commands=commands, token=TOKEN, guild_ready_timeout=0.05
        )
        try:
            await adapter.start()
        finally:
            await adapter.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("the bot lacks Send Messages;" in w for w in warnings)


async def test_report_and_eval_run_reach_the_admin_grammar(bot, discord_fake):
    report = await discord_fake.interact(
        discord_fake.slash_command(group=None, sub="report", options={"period": "7d"})
    )
    evals = await discord_fake.interact(
        discord_fake.slash_command(group="eval", sub="run", options={"name": "assistant"})
    )
    await settle(bot, discord_fake)
    assert "Reports are not available here." in discord_fake.responses_for(report)[-1]["content"]
    refused = discord_fake.responses_for(evals)[-1]
    assert "Only admins" in refused["content"] and ephemeral(refused)


# ---- hostile input (issue 11): odd interactions and votes from elsewhere


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.exc_info]


async def rated_answer(bot: DiscordAdapter, fake: FakeDiscord, fake_llm: Any, **where: Any):
    fake_llm.script(Reply(text="Rate me."))
    await fake.send_message("hi", mention_bot=True, **where)
    await settle(bot, fake)
    [answer] = answers(fake, where.get("channel_id", CHANNEL_ID))
    return answer


async def test_a_vote_from_another_channel_is_refused(bot, discord_fake, fake_llm, store):
    answer = await rated_answer(bot, discord_fake, fake_llm)
    up, _ = answer.buttons()
    elsewhere = discord_fake.button_click(  # the button copied into a thread it is not of
        user_id="3003", custom_id=up["custom_id"], message_id=answer.id, channel_id=THREAD_ID
    )
    await discord_fake.interact(elsewhere)
    await settle(bot, discord_fake)

    said = discord_fake.responses_for(elsewhere)[-1]
    assert said["content"] == ELSEWHERE and ephemeral(said)
    assert await store.votes.of(int(up["custom_id"].rsplit(":", 1)[1])) == []


async def test_a_vote_in_the_answers_thread_counts(bot, discord_fake, fake_llm, store):
    answer = await rated_answer(bot, discord_fake, fake_llm, channel_id=THREAD_ID)
    up, _ = answer.buttons()
    click = discord_fake.button_click(
        user_id="3003", custom_id=up["custom_id"], message_id=answer.id
    )
    await discord_fake.interact(click)
    await settle(bot, discord_fake)

    assert discord_fake.responses_for(click)[-1]["content"] == "Thanks, your 👍 is recorded."
    [vote] = await store.votes.of(int(up["custom_id"].rsplit(":", 1)[1]))
    assert vote.user_id == "discord:3003"


async def test_a_button_id_past_any_answer_says_so_without_a_traceback(
    bot, discord_fake, fake_llm, caplog
):
    answer = await rated_answer(bot, discord_fake, fake_llm)
    up, _ = answer.buttons()
    up["custom_id"] = "feedback:1:" + "9" * 30  # past any database's integers
    click = discord_fake.button_click(
        user_id="3003", custom_id=up["custom_id"], message_id=answer.id
    )
    await discord_fake.interact(click)
    await settle(bot, discord_fake)

    assert discord_fake.responses_for(click)[-1]["content"] == UNKNOWN_ANSWER
    assert tracebacks(caplog) == []


@pytest.mark.parametrize("missing", [("member",), ("channel", "channel_id")])
async def test_an_interaction_missing_who_or_where_is_dropped_quietly(
    bot, discord_fake, fake_llm, caplog, missing
):
    command = discord_fake.slash_command(user_id=ADMIN, group=None, sub="report")
    for field in missing:
        del command[field]
    await discord_fake.interact(command)
    await settle(bot, discord_fake)

    assert discord_fake.responses_for(command) == []
    assert tracebacks(caplog) == []
    answer = await rated_answer(bot, discord_fake, fake_llm)  # and it still answers
    assert answer.content == "Rate me."


async def test_an_option_of_the_wrong_type_is_refused_quietly(bot, discord_fake, caplog):
    options = {"name": "assistant", "version": "one"}  # Discord would send an integer
    command = await discord_fake.interact(
        discord_fake.slash_command(user_id=ADMIN, sub="use", options=options)
    )
    await settle(bot, discord_fake)

    said = discord_fake.responses_for(command)[-1]
    assert said["data"]["content"] == UNREADABLE_COMMAND and ephemeral(said)
    assert tracebacks(caplog) == []


async def test_a_command_it_does_not_know_is_refused_quietly(bot, discord_fake, caplog):
    command = await discord_fake.interact(
        discord_fake.slash_command(user_id=ADMIN, sub="frobnicate")
    )
    await settle(bot, discord_fake)

    said = discord_fake.responses_for(command)[-1]
    assert said["data"]["content"] == UNREADABLE_COMMAND and ephemeral(said)
    assert tracebacks(caplog) == []
