"""Slack's agent surface on the fake Slack: assistant threads (greeting, suggested prompts,
loading states, title, the channel the user is viewing) and the App Home tab, through signed
events POSTed to the real Bolt app, the real engine and database behind it."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from assistant.store import Store
from assistant.testing import CallTools, Reply
from assistant.turns import ConversationRef
from bots.slack_assistant import (
    CONTEXT_EVENT,
    DEFAULT_GREETING,
    THINKING_STATUS,
    thread_title,
    tool_status,
)
from tests.conftest import SlackBot, write_prompt
from tests.fakes.slack_api import MANIFEST, TEAM, FakeSlack, Fault

DM = "D0ALICE"
THREAD = "1700000100.000100"  # the assistant thread's root, which Slack makes
GENERAL, RANDOM = "C0GENERAL", "C0RANDOM"
BOTS = Path(__file__).resolve().parents[1] / "bots"
PROMPTS = [
    {"title": "Add numbers", "message": "What is 6 * 7?"},
    {"title": "Today", "message": "What day is it?"},
]


def assistant_thread(event_type: str, *, viewing: str) -> dict[str, Any]:
    """`assistant_thread_started` or `assistant_thread_context_changed`, as Slack sends them."""
    return {
        "type": event_type,
        "assistant_thread": {
            "user_id": "U1",
            "context": {"channel_id": viewing, "team_id": TEAM, "enterprise_id": "E0ORG"},
            "channel_id": DM,
            "thread_ts": THREAD,
        },
        "event_ts": "1700000100.000200",
    }


def in_thread(text: str, *, ts: str) -> dict[str, Any]:
    """The user's message in the assistant thread (a `message.im` event)."""
    return {
        "type": "message",
        "user": "U1",
        "text": text,
        "ts": ts,
        "thread_ts": THREAD,
        "channel": DM,
        "channel_type": "im",
    }


def home_opened(tab: str = "home") -> dict[str, Any]:
    return {"type": "app_home_opened", "user": "U1", "channel": DM, "tab": tab}


@pytest.fixture
def greeted_prompts(prompts_dir: Path) -> Path:
    """Version 2 of the test prompt greets and suggests; version 1 (the fixture's) does not."""
    write_prompt(
        prompts_dir,
        version=2,
        description="greets",
        greeting="Hello! Ask me **anything** about the team.",
        suggested_prompts=PROMPTS,
    )
    return prompts_dir


async def start_thread(bot: SlackBot, slack: FakeSlack, *, viewing: str = GENERAL) -> None:
    event = assistant_thread("assistant_thread_started", viewing=viewing)
    assert await slack.send_event(bot.url, event, event_id="EvStart") == 200
    await bot.settle(slack)


async def test_a_new_assistant_thread_is_greeted_by_the_version_that_answers_there(
    greeted_prompts, start_slack_bot, slack
):
    bot = await start_slack_bot()
    await start_thread(bot, slack)

    [greeting] = slack.thread(DM, THREAD)
    assert greeting.text == "Hello! Ask me *anything* about the team."  # as Slack marks it up
    assert slack.suggested[(DM, THREAD)]["prompts"] == PROMPTS
    assert greeting.metadata == {
        "event_type": CONTEXT_EVENT,
        "event_payload": {"channel_id": GENERAL, "team_id": TEAM, "enterprise_id": "E0ORG"},
    }


async def test_a_version_without_a_greeting_gets_the_default_and_no_prompts(slack_bot, slack):
    await start_thread(slack_bot, slack)

    assert [m.text for m in slack.thread(DM, THREAD)] == [DEFAULT_GREETING]
    assert slack.calls_to("assistant.threads.setSuggestedPrompts") == []


async def test_a_redelivered_thread_start_is_greeted_once(slack_bot, slack):
    event = assistant_thread("assistant_thread_started", viewing=GENERAL)
    await slack.send_event(slack_bot.url, event, event_id="EvSame")
    await slack_bot.settle(slack)
    await slack.send_event(slack_bot.url, event, event_id="EvSame", retry_num=1)
    await slack_bot.settle(slack)

    assert len(slack.thread(DM, THREAD)) == 1


async def test_a_question_in_the_thread_shows_loading_states_then_its_answer_and_a_title(
    greeted_prompts, start_slack_bot, slack, fake_llm
):
    bot = await start_slack_bot()
    await start_thread(bot, slack)
    fake_llm.script(
        CallTools(calls=(("calculator", {"expression": "6 * 7"}),)),
        Reply(text="6 * 7 is 42."),
    )
    question = in_thread("What is 6 * 7?\nI keep forgetting.", ts="1700000100.000300")
    await slack.send_event(bot.url, question, event_id="EvAsk")
    await bot.settle(slack)

    statuses = [c["status"] for c in slack.calls_to("assistant.threads.setStatus")]
    assert statuses == [THINKING_STATUS, "is calculating…", ""]  # "" clears it
    assert slack.statuses == {}
    _greeting, answer = slack.thread(DM, THREAD)
    assert answer.text == "6 * 7 is 42." and answer.buttons()  # answered once, in the thread
    assert len(fake_llm.requests) == 2  # the tool round and the answer
    assert slack.titles[(DM, THREAD)] == "What is 6 * 7?"
    said = fake_llm.requests[-1]["messages"]
    assert said[0]["content"].startswith("You are a test assistant")
    assert [m["content"] for m in said if m["role"] == "user"] == [
        f"What is 6 * 7?\nI keep forgetting.\n\n[viewing #{GENERAL}]"
    ]


async def test_only_the_first_question_names_the_thread(slack_bot, slack, fake_llm):
    await start_thread(slack_bot, slack)
    fake_llm.script(Reply(text="Hi."), Reply(text="Still here."))
    await slack.send_event(
        slack_bot.url, in_thread("hello there", ts="1700000100.1"), event_id="E1"
    )
    await slack_bot.settle(slack)
    await slack.send_event(slack_bot.url, in_thread("and again", ts="1700000100.2"), event_id="E2")
    await slack_bot.settle(slack)

    assert [c["title"] for c in slack.calls_to("assistant.threads.setTitle")] == ["hello there"]
    assert [m.text for m in slack.thread(DM, THREAD)][1:] == ["Hi.", "Still here."]


async def test_the_viewed_channel_is_kept_in_slack_where_every_replica_reads_it(
    start_slack_bot, slack, fake_llm
):
    first = await start_slack_bot()
    await start_thread(first, slack, viewing=GENERAL)
    moved = assistant_thread("assistant_thread_context_changed", viewing=RANDOM)
    await slack.send_event(first.url, moved, event_id="EvMoved")
    await first.settle(slack)

    [greeting] = slack.thread(DM, THREAD)
    assert greeting.metadata is not None
    assert greeting.metadata["event_payload"]["channel_id"] == RANDOM
    other = await start_slack_bot()  # another replica, on the same database and Slack
    fake_llm.script(Reply(text="Sure."))
    await slack.send_event(other.url, in_thread("what is here?", ts="1700000100.3"), event_id="E3")
    await other.settle(slack)
    assert (
        fake_llm.requests[-1]["messages"][-1]["content"] == f"what is here?\n\n[viewing #{RANDOM}]"
    )


async def test_a_refused_loading_state_never_breaks_the_answer(slack_bot, slack, fake_llm, caplog):
    slack.fail("assistant.threads.setStatus", Fault(error="invalid_thread_ts"))
    fake_llm.script(Reply(text="Answered anyway."))
    with caplog.at_level(logging.INFO, logger="bots.slack_assistant"):
        await slack.send_event(slack_bot.url, in_thread("hi", ts="1700000100.4"), event_id="E4")
        await slack_bot.settle(slack)

    assert [m.text for m in slack.thread(DM, THREAD)] == ["Answered anyway."]
    assert len(slack.calls_to("assistant.threads.setStatus")) == 1  # not tried again
    [line] = [r.getMessage() for r in caplog.records if "loading state" in r.getMessage()]
    assert "invalid_thread_ts" in line
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_mention_in_a_channel_thread_shows_loading_states_too(slack_bot, slack, fake_llm):
    fake_llm.script(Reply(text="Here."))
    mention = {
        "type": "app_mention",
        "user": "U1",
        "text": "<@U0BOT> hi",
        "ts": "1700000200.000100",
        "channel": GENERAL,
    }
    await slack.send_event(slack_bot.url, mention, event_id="EvMention")
    await slack_bot.settle(slack)

    statuses = slack.calls_to("assistant.threads.setStatus")
    assert [(c["channel_id"], c["status"]) for c in statuses] == [
        (GENERAL, THINKING_STATUS),
        (GENERAL, ""),
    ]
    assert slack.calls_to("assistant.threads.setTitle") == []  # a channel thread has its own
    assert [m.text for m in slack.thread(GENERAL, "1700000200.000100")] == ["Here."]


async def test_the_home_tab_shows_the_version_answering_and_todays_cost(
    greeted_prompts, start_slack_bot, slack, fake_llm, store: Store
):
    bot = await start_slack_bot()
    fake_llm.script(Reply(text="One."), Reply(text="Two."))
    dm = {"type": "message", "user": "U1", "channel": DM, "channel_type": "im"}
    await slack.send_event(bot.url, dm | {"text": "a", "ts": "1700000300.1"}, event_id="E1")
    await slack.send_event(bot.url, dm | {"text": "b", "ts": "1700000300.2"}, event_id="E2")
    await bot.settle(slack)
    await slack.send_event(bot.url, home_opened(), event_id="EvHome")
    await bot.settle(slack)

    conversation = await store.find_conversation(
        ConversationRef(platform="slack", workspace=TEAM, channel=DM)
    )
    assert conversation is not None and conversation.id is not None
    costs = [call.cost_usd for call in await store.llm_calls(conversation.id)]
    assert len(costs) == 2 and all(cost is not None and cost > 0 for cost in costs)
    home = home_text(slack)
    assert "`assistant@2`: greets" in home
    assert f"*Spent today (UTC):* ${sum(costs):.4f} over 2 model calls" in home
    assert "/assistant" in home and "<@U0BOT>" in home


async def test_the_home_tab_says_an_unpriced_models_cost_is_unknown(
    prompts_dir, start_slack_bot, slack, fake_llm
):
    write_prompt(prompts_dir, version=2, model="house-model-7b")
    bot = await start_slack_bot()
    fake_llm.script(Reply(text="One."))
    dm = {"type": "message", "user": "U1", "channel": DM, "channel_type": "im"}
    await slack.send_event(bot.url, dm | {"text": "a", "ts": "1700000300.1"}, event_id="E1")
    await bot.settle(slack)
    await slack.send_event(bot.url, home_opened(), event_id="EvHome")
    await bot.settle(slack)

    home = home_text(slack)
    assert "unknown: 1 model call, to models with no price (house-model-7b)" in home
    assert "$0.00" not in home


async def test_a_home_tab_before_any_call_shows_nothing_spent(slack_bot, slack):
    await slack.send_event(slack_bot.url, home_opened(), event_id="EvHome")
    await slack.send_event(slack_bot.url, home_opened("messages"), event_id="EvMessages")
    await slack_bot.settle(slack)

    assert "$0.00 (no model calls yet today)" in home_text(slack)
    assert "`assistant@1`" in home_text(slack)
    assert len(slack.calls_to("views.publish")) == 1  # the Messages tab publishes nothing


def home_text(slack: FakeSlack) -> str:
    view = slack.home_views["U1"]
    assert view["type"] == "home"
    return "\n".join(
        str(block.get("text", {}).get("text", "")) for block in view["blocks"] if "text" in block
    )


# ---- the manifest and the prompt files


def subscribed_events() -> set[str]:
    """The events the Slack code listens to, as the manifest names them (a `message` listener
    takes message.channels, .groups, .im and .mpim)."""
    found = {
        name
        for path in BOTS.glob("slack_*.py")
        for name in re.findall(r"\.event\(\"([a-z_]+)\"\)", path.read_text(encoding="utf-8"))
    }
    kinds = ("channels", "groups", "im", "mpim")
    return (found - {"message"}) | (
        {f"message.{k}" for k in kinds} if "message" in found else set()
    )


def test_every_event_the_code_listens_to_is_in_the_manifest_and_no_other():
    manifest = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"assistant_thread_started", "assistant_thread_context_changed"} <= subscribed_events()
    assert subscribed_events() == events
    assert "assistant:write" in manifest["oauth_config"]["scopes"]["bot"]
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    assert manifest["features"]["assistant_view"]["assistant_description"]
    assert len(manifest["features"]["assistant_view"]["suggested_prompts"]) <= 4


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"greeting": ""}, "field 'greeting': String should have at least 1 character"),
        (
            {"suggested_prompts": PROMPTS * 3},
            "field 'suggested_prompts': Tuple should have at most 4",
        ),
        (
            {"suggested_prompts": [{"title": "x"}]},
            "field 'suggested_prompts.0.message': Field required",
        ),
        ({"suggested_prompts": [{"title": "x", "mesage": "y"}]}, "did you mean 'message'?"),
    ],
)
def test_a_bad_greeting_or_prompt_list_is_refused_naming_file_and_field(
    tmp_path: Path, fields: dict[str, Any], said: str
):
    from assistant.prompts.files import PromptFileError, load_prompt_file

    path = write_prompt(tmp_path, **fields)
    with pytest.raises(PromptFileError) as refused:
        load_prompt_file(path)
    assert str(refused.value).startswith(f"{path}: ")
    assert said in str(refused.value)


@pytest.mark.parametrize(
    ("tool", "status"),
    [
        ("search_knowledge", "is searching the team's documents…"),
        ("calculator", "is calculating…"),
        ("tickets.create", "is using tickets.create…"),
    ],
)
def test_each_tool_has_its_loading_state(tool: str, status: str):
    assert tool_status(tool) == status


def test_a_long_first_question_makes_a_short_title():
    title = thread_title("How do I get access to the staging database when I am on call at night?")
    assert title == "How do I get access to the staging database when I am on…"
    assert len(title) <= 60
