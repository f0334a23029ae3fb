"""The Slack adapter against a fake Slack: signed requests POSTed to the real Bolt endpoint, the
real AsyncWebClient answering to a loopback Web API, the real engine and database."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from assistant.admin.commands import AdminCommands
from assistant.store import Store
from assistant.store.tables import utcnow
from assistant.testing import CallTools, Cut, Fail, Hang, Reply
from assistant.turns import ConversationRef
from bots.slack_app import SlackAdapter, SlackNames
from bots.slack_setup import SlackSetupError
from bots.streaming import EMPTY_ANSWER, RESUMING
from tests.conftest import SlackBot, write_prompt
from tests.fakes.slack_api import BOT_USER, SIGNING_SECRET, TEAM, FakeSlack, Fault
from tests.test_cli import REPO
from tests.test_cli import assistant as run_assistant

CHANNEL = "C0GENERAL"
DM = "D0ALICE"
TS = "1700000000.000100"
UNKNOWN_ANSWER = "That answer is no longer known, so the vote was not recorded."
THREAD = ConversationRef(platform="slack", workspace=TEAM, channel=CHANNEL, thread=TS)


@pytest.fixture
def start_bot(start_slack_bot: Callable[..., Any]) -> Callable[..., Any]:
    return start_slack_bot


@pytest.fixture
def bot(slack_bot: SlackBot) -> SlackBot:
    return slack_bot


def mention(text: str, *, ts: str = TS, user: str = "U1", thread_ts: str | None = None) -> dict:
    event = {
        "type": "app_mention",
        "user": user,
        "text": f"<@{BOT_USER}> {text}",
        "ts": ts,
        "channel": CHANNEL,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def message(text: str, *, ts: str, channel: str = CHANNEL, **fields: Any) -> dict:
    channel_type = "im" if channel.startswith("D") else "channel"
    return {
        "type": "message",
        "user": "U1",
        "text": text,
        "ts": ts,
        "channel": channel,
        "channel_type": channel_type,
        **fields,
    }


async def test_a_mention_is_answered_in_its_thread_with_feedback_buttons(bot, slack, fake_llm):
    fake_llm.script(Reply(text="Hello Alice, the VPN is fine.", chunk_chars=4))
    assert await slack.send_event(bot.url, mention("is the VPN up?"), event_id="Ev1") == 200
    await bot.settle(slack)

    [answer] = slack.thread(CHANNEL, TS)
    assert answer.text == "Hello Alice, the VPN is fine."
    assert [b["action_id"] for b in answer.buttons()] == ["feedback_up", "feedback_down"]
    assert fake_llm.requests[-1]["messages"][-1] == {"role": "user", "content": "is the VPN up?"}
    assert "Alice" in fake_llm.requests[-1]["messages"][0]["content"]  # users.info gave the name
    assert slack.calls_to("chat.startStream")[0]["recipient_user_id"] == "U1"


async def test_a_direct_message_needs_no_mention_and_is_answered_in_place(bot, slack, fake_llm):
    fake_llm.script(Reply(text="Sure thing."), Reply(text="Still here."))
    await slack.send_event(
        bot.url, message("help me", ts="1700000001.000001", channel=DM), event_id="E1"
    )
    await bot.settle(slack)
    await slack.send_event(
        bot.url, message("again", ts="1700000002.000001", channel=DM), event_id="E2"
    )
    await bot.settle(slack)

    assert [m.text for m in slack.thread(DM, None)] == ["Sure thing.", "Still here."]
    history = [m["content"] for m in fake_llm.requests[-1]["messages"][1:]]
    assert history == ["help me", "Sure thing.", "again"]  # one DM, one conversation


async def test_a_follow_up_in_the_thread_needs_no_mention_and_remembers(bot, slack, fake_llm):
    fake_llm.script(Reply(text="Blue is the answer."), Reply(text="You asked about colours."))
    await slack.send_event(bot.url, mention("pick a colour"), event_id="E1")
    await bot.settle(slack)
    follow_up = message("what did I ask?", ts="1700000000.000200", thread_ts=TS)
    await slack.send_event(bot.url, follow_up, event_id="E2")
    await bot.settle(slack)

    texts = [m.text for m in slack.thread(CHANNEL, TS)]
    assert texts == ["Blue is the answer.", "You asked about colours."]
    contents = [m["content"] for m in fake_llm.requests[-1]["messages"][1:]]
    assert contents == ["pick a colour", "Blue is the answer.", "what did I ask?"]


async def test_talk_it_is_not_part_of_is_left_alone(bot, slack, fake_llm):
    await slack.send_event(bot.url, message("lunch?", ts="1700000003.000001"), event_id="E1")
    in_other_thread = message("yes", ts="1700000003.000002", thread_ts="1700000003.000001")
    await slack.send_event(bot.url, in_other_thread, event_id="E2")
    edit = message("x", ts="1700000003.000003", subtype="message_changed")
    await slack.send_event(bot.url, edit, event_id="E3")
    from_a_bot = message("beep", ts="1700000003.000004", channel=DM, bot_id="B9")
    await slack.send_event(bot.url, from_a_bot, event_id="E4")
    await bot.settle(slack)

    assert fake_llm.requests == []
    assert slack.calls_to("chat.postMessage") == slack.calls_to("chat.startStream") == []


async def test_people_in_a_shared_thread_are_told_apart(bot, slack, fake_llm):
    fake_llm.script(Reply(text="Noted."), Reply(text="Both noted."))
    await slack.send_event(bot.url, mention("I like tea", user="U1"), event_id="E1")
    await bot.settle(slack)
    bob = mention("I like coffee", user="U2", ts="1700000000.000300", thread_ts=TS)
    await slack.send_event(bot.url, bob, event_id="E2")
    await bot.settle(slack)

    users = [m["content"] for m in fake_llm.requests[-1]["messages"] if m["role"] == "user"]
    assert users == ["[Alice] I like tea", "[Bob] I like coffee"]


async def test_a_redelivered_event_gets_no_second_reply_even_after_a_restart(
    start_bot, slack, fake_llm
):
    first = await start_bot()
    fake_llm.script(Reply(text="Once."))
    await slack.send_event(first.url, mention("hi"), event_id="EvSame")
    await first.settle(slack)
    await slack.send_event(first.url, mention("hi"), event_id="EvSame", retry_num=1)
    await first.settle(slack)
    await first.adapter.close()

    restarted = await start_bot()  # a new process on the same database
    await slack.send_event(restarted.url, mention("hi"), event_id="EvSame", retry_num=2)
    await restarted.settle(slack)

    assert [m.text for m in slack.thread(CHANNEL, TS)] == ["Once."]
    assert len(fake_llm.requests) == 1


async def test_a_mention_delivered_as_app_mention_and_message_is_answered_once(
    bot, slack, fake_llm
):
    fake_llm.script(Reply(text="Just once."))
    as_message = message(f"<@{BOT_USER}> hi", ts=TS)
    await asyncio.gather(
        slack.send_event(bot.url, mention("hi"), event_id="EvMention"),
        slack.send_event(bot.url, as_message, event_id="EvMessage"),
    )
    await bot.settle(slack)

    assert [m.text for m in slack.thread(CHANNEL, TS)] == ["Just once."]
    assert len(fake_llm.requests) == 1


@pytest.mark.parametrize("forgery", ["wrong secret", "stale timestamp"])
async def test_a_forged_or_stale_request_is_refused_and_does_nothing(
    bot, slack, fake_llm, store, forgery
):
    options: dict[str, Any] = (
        {"secret": "not-the-secret"}
        if forgery == "wrong secret"
        else {"timestamp": int(time.time()) - 600}
    )
    status = await slack.send_event(bot.url, mention("hi"), event_id="EvForged", **options)
    await bot.settle(slack)

    assert status == 401
    assert fake_llm.requests == []
    assert not slack.calls_to("chat.postMessage") and not slack.calls_to("chat.startStream")
    assert await store.find_conversation(THREAD) is None


async def test_admins_switch_the_prompt_version_and_others_are_refused(
    prompts_dir: Path, start_bot, slack, fake_llm
):
    write_prompt(prompts_dir, version=2, system="Version two speaking.")
    write_prompt(prompts_dir, version=1, system="Version one speaking.")
    bot = await start_bot()
    await slack.send_command(bot.url, "prompt use assistant 1 --force", user="U1", channel=CHANNEL)
    await bot.settle(slack)
    refused = slack.responses[-1]
    assert refused["response_type"] == "ephemeral"
    assert "Only admins" in refused["text"]

    fake_llm.script(Reply(text="v2"), Reply(text="v1"))
    await slack.send_event(bot.url, mention("who?"), event_id="E1")
    await bot.settle(slack)
    assert fake_llm.requests[-1]["messages"][0]["content"] == "Version two speaking."

    await slack.send_command(
        bot.url, "prompt use assistant 1 --force", user="UADMIN", channel=CHANNEL
    )
    await bot.settle(slack)
    assert slack.responses[-1]["response_type"] == "ephemeral"
    assert "Only admins" not in slack.responses[-1]["text"]
    await slack.send_event(bot.url, mention("who now?", ts="1700000009.000001"), event_id="E2")
    await bot.settle(slack)
    assert fake_llm.requests[-1]["messages"][0]["content"] == "Version one speaking."


async def test_a_malformed_admin_command_shows_the_usage(bot, slack):
    await slack.send_command(bot.url, "prompt frobnicate", user="UADMIN", channel=CHANNEL)
    await bot.settle(slack)
    assert "Usage:" in slack.responses[-1]["text"]
    assert slack.responses[-1]["response_type"] == "ephemeral"


def _long_answer(paragraphs: int = 110) -> str:
    words = [
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "consectetur",
        "adipiscing",
        "elit",
        "sed",
        "do",
        "eiusmod",
    ]
    lines = [
        " ".join(words[(i + j) % len(words)] for j in range(14)) + f" {i}."
        for i in range(paragraphs)
    ]
    return "\n\n".join(lines)


@pytest.mark.parametrize("paragraphs", [110, 280])
async def test_a_long_answer_arrives_whole_when_streamed(bot, slack, fake_llm, paragraphs):
    answer = _long_answer(paragraphs)  # 10,000 characters; and past what one stream holds
    assert len(answer) >= 10_000
    fake_llm.script(Reply(text=answer, chunk_chars=200))
    await slack.send_event(bot.url, mention("tell me everything"), event_id="E1")
    await bot.settle(slack)

    shown = slack.thread(CHANNEL, TS)
    assert "\n".join(m.text for m in shown).split() == answer.split()
    if len(answer) > 12_000:  # the rest continues below the streamed message
        assert len(shown) > 2 and all(len(m.text) <= 3000 for m in shown[1:])
    else:
        assert len(shown) == 1
    assert not shown[0].streaming
    assert shown[-1].buttons() and not any(m.buttons() for m in shown[:-1])


async def test_a_ten_thousand_character_answer_is_split_when_slack_cannot_stream(
    bot, slack, fake_llm
):
    slack.fail("chat.startStream", Fault(error="not_allowed_token_type"))
    answer = _long_answer()
    fake_llm.script(Reply(text=answer, chunk_chars=200))
    await slack.send_event(bot.url, mention("tell me everything"), event_id="E1")
    await bot.settle(slack)

    shown = slack.thread(CHANNEL, TS)
    assert len(shown) >= 4
    assert all(len(m.text) <= 3000 for m in shown)
    assert "\n".join(m.text for m in shown).split() == answer.split()
    assert [m.buttons() != [] for m in shown] == [False] * (len(shown) - 1) + [True]


async def test_a_stream_that_dies_mid_way_falls_back_and_the_text_arrives_whole(
    bot, slack, fake_llm
):
    answer = _long_answer(30)
    fake_llm.script(Reply(text=answer, chunk_chars=100, chunk_delay=0.01))
    slack.streams_die_after = 2
    await slack.send_event(bot.url, mention("go on"), event_id="E1")
    await bot.settle(slack)

    assert len(slack.calls_to("chat.appendStream")) == 3  # the third found the stream dead
    assert slack.calls_to("chat.update")
    assert slack.shown_text(CHANNEL, TS).split() == answer.split()
    assert slack.thread(CHANNEL, TS)[-1].buttons()


async def test_an_llm_failure_ends_with_a_message_in_the_thread(bot, slack, fake_llm):
    fake_llm.script(Fail(status=500), Fail(status=500), Fail(status=500))
    await slack.send_event(bot.url, mention("hello?"), event_id="E1")
    await bot.settle(slack)

    [shown] = slack.thread(CHANNEL, TS)
    assert shown.text.startswith("⚠️ ")
    assert "unavailable" in shown.text
    assert not shown.streaming
    assert not shown.buttons()


async def test_a_stream_cut_mid_answer_keeps_the_partial_text_and_says_so(bot, slack, fake_llm):
    fake_llm.script(Cut(text="The first half of"))
    await slack.send_event(bot.url, mention("hello?"), event_id="E1")
    await bot.settle(slack)

    [shown] = slack.thread(CHANNEL, TS)
    assert shown.text.startswith("The first half of")
    assert "⚠️" in shown.text


async def test_a_feedback_click_is_stored_and_can_be_changed(bot, slack, fake_llm, store):
    fake_llm.script(Reply(text="Rate me."))
    await slack.send_event(bot.url, mention("hi"), event_id="E1")
    await bot.settle(slack)
    [answer] = slack.thread(CHANNEL, TS)
    up, down = answer.buttons()

    assert await slack.click(bot.url, up, user="U2", message=answer) == 200
    await bot.settle(slack)
    assert await slack.click(bot.url, down, user="U2", message=answer) == 200
    await bot.settle(slack)

    [vote] = await store.votes.of(int(up["value"]))
    assert (vote.user_id, vote.vote) == ("slack:U2", -1)
    assert vote.prompt_version_id is not None
    assert slack.responses[-1]["text"] == "Thanks, your 👎 is recorded."
    assert slack.responses[-1]["response_type"] == "ephemeral"


async def test_a_vote_on_an_answer_no_longer_known_says_so(bot, slack, fake_llm):
    fake_llm.script(Reply(text="Rate me."))
    await slack.send_event(bot.url, mention("hi"), event_id="E1")
    await bot.settle(slack)
    [answer] = slack.thread(CHANNEL, TS)
    up, _ = answer.buttons()

    assert await slack.click(bot.url, {**up, "value": "999999"}, user="U2", message=answer) == 200
    await bot.settle(slack)
    assert slack.responses[-1]["text"] == UNKNOWN_ANSWER


async def test_a_slack_429_is_waited_out(bot, slack, fake_llm):
    slack.fail("chat.startStream", Fault(error="ratelimited", status=429, retry_after=1))
    fake_llm.script(Reply(text="After the wait."))
    await slack.send_event(bot.url, mention("hi"), event_id="E1")
    await bot.settle(slack)

    assert [m.text for m in slack.thread(CHANNEL, TS)] == ["After the wait."]
    assert len(slack.calls_to("chat.startStream")) == 2


async def test_a_user_message_is_stored_even_when_the_model_fails(bot, slack, fake_llm, store):
    fake_llm.script(Fail(status=401, message="bad key"))
    await slack.send_event(bot.url, mention("remember me"), event_id="E1")
    await bot.settle(slack)
    conversation = await store.find_conversation(THREAD)
    assert conversation is not None and conversation.id is not None
    [stored] = [m for m in await store.messages(conversation.id) if m.role == "user"]
    assert stored.text == "remember me"
    assert stored.author_id == "slack:U1"


async def test_a_failed_edit_in_a_dm_leaves_no_stale_placeholder(bot, slack, fake_llm):
    slack.fail("chat.update", Fault(error="internal_error"), times=3)
    fake_llm.script(Reply(text="Here you go.", chunk_chars=3, chunk_delay=0.01))
    await slack.send_event(
        bot.url, message("help", ts="1700000005.000001", channel=DM), event_id="E1"
    )
    await bot.settle(slack)

    [shown] = slack.thread(DM, None)
    assert shown.text == "Here you go."
    assert shown.buttons()


async def test_a_stream_slack_will_not_stop_is_replaced_by_the_whole_answer(bot, slack, fake_llm):
    slack.fail("chat.stopStream", Fault(error="internal_error"))
    fake_llm.script(Reply(text="The whole answer."))
    await slack.send_event(bot.url, mention("hi"), event_id="E1")
    await bot.settle(slack)

    [shown] = slack.thread(CHANNEL, TS)
    assert shown.text == "The whole answer."
    assert shown.buttons() and not shown.streaming


async def test_an_empty_answer_says_so_instead_of_thinking_forever(bot, slack, fake_llm):
    fake_llm.script(Reply(text=""), Reply(text=""))
    await slack.send_event(
        bot.url, message("hm", ts="1700000006.000001", channel=DM), event_id="E1"
    )
    await slack.send_event(bot.url, mention("hm"), event_id="E2")
    await bot.settle(slack)

    assert [m.text for m in slack.thread(DM, None)] == [EMPTY_ANSWER]
    [in_thread] = slack.thread(CHANNEL, TS)
    assert in_thread.text == EMPTY_ANSWER and not in_thread.streaming


async def test_a_tool_failure_is_named_under_the_answer(bot, slack, fake_llm):
    fake_llm.script(
        CallTools(calls=(("calculator", {"expression": "1/0"}),)),
        Reply(text="I could not compute that."),
    )
    await slack.send_event(bot.url, mention("what is 1/0?"), event_id="E1")
    await bot.settle(slack)

    [shown] = slack.thread(CHANNEL, TS)
    assert shown.text.startswith("I could not compute that.")
    assert "calculator failed" in shown.text


async def test_a_follow_up_from_another_organisation_in_a_shared_channel_is_answered(
    bot, slack, fake_llm
):
    fake_llm.script(Reply(text="First."), Reply(text="Second."))
    await slack.send_event(bot.url, mention("hello"), event_id="E1")
    await bot.settle(slack)
    partner = message("and me?", ts="1700000000.000500", thread_ts=TS, team="T0PARTNER")
    await slack.send_event(bot.url, partner, event_id="E2")
    await bot.settle(slack)

    assert [m.text for m in slack.thread(CHANNEL, TS)] == ["First.", "Second."]


async def test_an_edited_message_is_not_a_new_question(bot, slack, fake_llm):
    edited = mention("hi again") | {"edited": {"user": "U1", "ts": "1700000001.000000"}}
    await slack.send_event(bot.url, edited, event_id="E1")
    await bot.settle(slack)
    assert fake_llm.requests == []


async def test_the_model_reads_what_the_user_meant(bot, slack, fake_llm):
    fake_llm.script(Reply(text="ok"))
    text = "is a &lt; b &amp;&amp; <@U2> right? see <https://x.io|the docs>"
    await slack.send_event(bot.url, mention(text), event_id="E1")
    await bot.settle(slack)

    said = fake_llm.requests[-1]["messages"][-1]["content"]
    assert said == "is a < b && @Bob right? see the docs (https://x.io)"


async def test_a_429_on_an_edit_is_waited_out(bot, slack, fake_llm):
    slack.fail("chat.update", Fault(error="ratelimited", status=429, retry_after=1))
    fake_llm.script(Reply(text="Patience pays."))
    await slack.send_event(
        bot.url, message("go", ts="1700000007.000001", channel=DM), event_id="E1"
    )
    await bot.settle(slack)

    assert [m.text for m in slack.thread(DM, None)] == ["Patience pays."]
    assert len(slack.calls_to("chat.update")) >= 2


async def test_a_shutdown_that_outlasts_its_grace_tells_the_user(
    make_assistant, store, slack, fake_llm
):
    adapter = await slack_adapter(
        make_assistant,
        store,
        slack,
        signing_secret=SIGNING_SECRET,
        update_interval=0.01,
        shutdown_grace=0.3,
    )
    port = await adapter.serve_http(port=0, host="127.0.0.1")
    fake_llm.script(Hang(text="Half an ans"))
    await slack.send_event(f"http://127.0.0.1:{port}/slack/events", mention("hi"), event_id="E1")
    await slack.wait_until(lambda: bool(slack.calls_to("chat.appendStream")))
    await adapter.close()

    [shown] = slack.thread(CHANNEL, TS)
    assert shown.text.startswith("Half an ans")
    assert RESUMING in shown.text and not shown.streaming
    # and it is still owed, with where it shows, for the next process to finish
    [owed] = await store.open_turns.orphaned("slack", silent_since=utcnow())
    assert owed.text == "hi" and owed.shown == shown.ts


async def test_socket_mode_answers_without_a_public_address(make_assistant, store, slack, fake_llm):
    adapter = await slack_adapter(
        make_assistant, store, slack, signing_secret=None, update_interval=0.01
    )
    fake_llm.script(Reply(text="Over the socket."))
    try:
        await adapter.connect_socket_mode("xapp-1-test")
        await slack.push_event(mention("hi"), event_id="EvSocket")
        await slack.wait_until(lambda: any(m.buttons() for m in slack.messages.values()))
        assert [m.text for m in slack.thread(CHANNEL, TS)] == ["Over the socket."]
        assert slack.socket_acks[0]["envelope_id"] == "env-EvSocket"
    finally:
        await adapter.close()


async def test_an_unreadable_socket_mode_event_is_dropped_with_one_line(
    make_assistant, store, slack, fake_llm, caplog
):
    """Socket Mode payloads never meet the HTTP guard: the handler checks them itself."""
    adapter = await slack_adapter(
        make_assistant, store, slack, signing_secret=None, update_interval=0.01
    )
    fake_llm.script(Reply(text="Still answering."))
    try:
        await adapter.connect_socket_mode("xapp-1-test")
        odd = mention("hi") | {"ts": 1700000000, "channel": ["C0GENERAL"]}
        await slack.push_event(odd, event_id="EvOdd")
        await slack.push_event(mention("hi"), event_id="EvFine")
        await slack.wait_until(lambda: any(m.buttons() for m in slack.messages.values()))
        await adapter.idle()
    finally:
        await adapter.close()

    assert [m.text for m in slack.thread(CHANNEL, TS)] == ["Still answering."]
    assert len(fake_llm.requests) == 1
    assert any("channel or ts" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.exc_info]


async def test_names_are_remembered_a_bounded_number_and_failures_briefly(slack):
    now = [0.0]
    client = AsyncWebClient(token="xoxb-test-token", base_url=slack.api_url, retry_handlers=[])
    names = SlackNames(client, size=2, miss_ttl=60, clock=lambda: now[0])
    slack.fail("users.info", Fault(error="internal_error"))

    assert await names.names(["U1"]) == {"U1": "U1"}  # the lookup failed: the id
    assert await names.names(["U1"]) == {"U1": "U1"}  # and that is remembered
    assert len(slack.calls_to("users.info")) == 1
    now[0] = 61
    assert await names.names(["U1"]) == {"U1": "Alice"}  # a minute on, asked again
    assert await names.names(["U2"]) == {"U2": "Bob"}
    await names.names(["U3"])  # the least recently used, U1, makes room
    await names.names(["U2", "U1"])
    assert [call["user"] for call in slack.calls_to("users.info")] == ["U1", "U1", "U2", "U3", "U1"]
    await names.close()


async def test_http_mode_refuses_to_start_without_a_signing_secret(make_assistant, store, slack):
    adapter = await slack_adapter(make_assistant, store, slack, signing_secret=None)
    with pytest.raises(ValueError, match="SLACK_SIGNING_SECRET"):
        await adapter.serve_http(port=0, host="127.0.0.1")


REVOKED = "xoxb-revoked-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_bot_token_slack_refuses_stops_the_start_in_one_line(
    make_assistant, store, slack, mode
):
    slack.refuse_token(REVOKED)
    adapter = await slack_adapter(
        make_assistant,
        store,
        slack,
        bot_token=REVOKED,
        signing_secret=SIGNING_SECRET if mode == "http" else None,
    )
    starting = (
        adapter.serve_http(port=0, host="127.0.0.1")
        if mode == "http"
        else adapter.connect_socket_mode("xapp-1-test")
    )
    try:
        with pytest.raises(SlackSetupError) as refused:
            await starting
    finally:
        await adapter.close()
    said = str(refused.value)
    assert said.startswith("SLACK_BOT_TOKEN: Slack refused it (invalid_auth); copy the Bot User")
    assert REVOKED not in said and "\n" not in said
    assert len(slack.calls_to("auth.test")) == 1  # asked once, not retried


async def test_run_with_a_refused_bot_token_exits_with_one_line(slack, tmp_path):
    """As an operator meets it: `assistant run` in HTTP mode, a token Slack refuses."""
    slack.refuse_token(REVOKED)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SLACK_"))}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path}/run.db",
        PROMPTS_DIR=str(REPO / "prompts"),
        SLACK_BOT_TOKEN=REVOKED,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.api_url,
        SLACK_PORT=str(free_port()),
    )
    result = await asyncio.to_thread(run_assistant, "run", "--fake", env=env, cwd=tmp_path)
    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: SLACK_BOT_TOKEN: Slack refused it (invalid_auth);")
    assert "Traceback" not in result.stderr and REVOKED not in result.stderr + result.stdout


async def slack_adapter(
    make_assistant: Callable[..., Any], store: Store, slack: FakeSlack, **options: Any
) -> SlackAdapter:
    """An adapter not yet serving, for tests of how it starts and stops."""
    assistant = await make_assistant()
    return SlackAdapter(
        assistant=assistant,
        commands=AdminCommands(prompts=store.prompts, versions=assistant.versions, admins=[]),
        api_url=slack.api_url,
        **{"bot_token": "xoxb-test-token", **options},
    )
