"""Who may talk to the assistant: allow and block lists, DMs, rate limits. Through the real
Slack app on the fake Slack and the real discord.py client on the fake Discord, each refused
person gets one polite answer, and nothing of their message reaches the model or the store."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from assistant.access import (
    NO_ACCESS,
    NO_DMS,
    NOT_IN_CHANNEL,
    AccessPolicy,
    RateLimit,
    decide,
    rate_refusal,
)
from assistant.config import ConfigError, Settings, load_settings
from assistant.records import NewMessage
from assistant.store import Store
from assistant.testing import FakeLlm, Reply
from assistant.turns import Actor, Completed, ConversationRef, Failed, Ignored, Inbound
from bots.discord_app import DiscordAdapter
from tests.conftest import SlackBot, collect, settle
from tests.fakes.discord_api import CHANNEL_ID, OWNER_ID, THREAD_ID, FakeDiscord
from tests.fakes.slack_api import BOT_USER, TEAM

CHANNEL = "C0GENERAL"
OTHER_CHANNEL = "C0RANDOM"
DM = "D0ALICE"
CONTRACTORS = "1300000000000000700"  # a Discord role
TOLD_AGAIN = re.compile(r"try again in about \d+ minutes")


# ---- the decisions alone


def _inbound(
    user: str = "U1",
    *,
    platform: str = "slack",
    channel: str = CHANNEL,
    roles: tuple[str, ...] = (),
    direct: bool = False,
) -> Inbound:
    return Inbound(
        ref=ConversationRef(platform=platform, workspace="T1", channel=channel, thread="1.0"),
        actor=Actor(platform=platform, user_id=user, roles=roles),
        text="hello",
        direct=direct,
    )


def test_no_rules_refuse_nobody() -> None:
    policy = AccessPolicy()
    assert policy.open
    assert decide(policy, _inbound(direct=True)) is None


def test_a_block_beats_an_allow_by_role() -> None:
    policy = AccessPolicy(
        allowed_roles=frozenset({"discord:10"}), blocked_users=frozenset({"discord:7"})
    )
    refused = decide(policy, _inbound("7", platform="discord", channel="5", roles=("10",)))
    assert refused is not None and refused.message == NO_ACCESS
    assert decide(policy, _inbound("8", platform="discord", channel="5", roles=("10",))) is None


def test_an_allow_list_admits_only_whom_it_names_on_its_own_platform() -> None:
    policy = AccessPolicy(allowed_users=frozenset({"slack:U1"}))
    assert decide(policy, _inbound("U1")) is None
    refused = decide(policy, _inbound("U2"))
    assert refused is not None and refused.reason == "user not allowed"
    # it names nobody on Discord, so it shuts nobody out there
    assert decide(policy, _inbound("9", platform="discord", channel="5")) is None


def test_a_blocked_role_refuses_its_members() -> None:
    policy = AccessPolicy(blocked_roles=frozenset({"discord:10"}))
    refused = decide(policy, _inbound("9", platform="discord", channel="5", roles=("3", "10")))
    assert refused is not None and refused.reason == "role blocked"


def test_admins_skip_person_rules_but_not_closed_places() -> None:
    policy = AccessPolicy(
        allowed_users=frozenset({"slack:U1"}),
        blocked_channels=frozenset({f"slack:{OTHER_CHANNEL}"}),
        allow_dms=False,
        admins=frozenset({"slack:UADMIN"}),
    )
    assert decide(policy, _inbound("UADMIN")) is None
    refused = decide(policy, _inbound("UADMIN", channel=OTHER_CHANNEL))
    assert refused is not None and refused.message == NOT_IN_CHANNEL
    refused = decide(policy, _inbound("UADMIN", channel=DM, direct=True))
    assert refused is not None and refused.message == NO_DMS


def test_channel_allow_lists_leave_direct_messages_to_allow_dms() -> None:
    policy = AccessPolicy(allowed_channels=frozenset({f"slack:{CHANNEL}"}))
    assert decide(policy, _inbound(channel=CHANNEL)) is None
    assert decide(policy, _inbound(channel=DM, direct=True)) is None
    refused = decide(policy, _inbound(channel=OTHER_CHANNEL))
    assert refused is not None and refused.reason == "channel not allowed"


def test_a_full_window_says_how_many_and_when_to_come_back() -> None:
    limit = RateLimit.parse("3/hour")
    now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    third_newest = now - timedelta(minutes=40)
    assert rate_refusal(limit, None, now, whose="slack:U1", channel=False) is None  # fewer
    refused = rate_refusal(limit, third_newest, now, whose="slack:U1", channel=False)
    assert refused is not None
    assert refused.message == (
        "You've sent 3 messages in the last hour, the limit here; try again in about 20 minutes."
    )
    daily = rate_refusal(
        RateLimit.parse("1/day"), now - timedelta(hours=3), now, whose="x", channel=True
    )
    assert daily is not None and "in the last 24 hours" in daily.message
    assert "about 21 hours" in daily.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20/hour", RateLimit(count=20, unit="hour")),
        (" 5 / Minutes ", RateLimit(count=5, unit="minute")),
    ],
)
def test_rate_limits_read_as_written(text: str, expected: RateLimit) -> None:
    assert RateLimit.parse(text) == expected


# ---- settings, checked at start


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("USER_RATE_LIMIT", "20 per hour", "like '20/hour'"),
        ("CHANNEL_RATE_LIMIT", "0/minute", "like '20/hour'"),
        ("CHANNEL_RATE_LIMIT", "5/fortnight", "like '20/hour'"),
        ("BLOCKED_USERS", "U0123", "'slack:…' or 'discord:…'"),
        ("ALLOWED_USERS", "discord:@bob", "not a Discord id"),
        ("ALLOWED_CHANNELS", "slack:general", "not a Slack id"),
        ("BLOCKED_ROLES", "slack:R1", "'discord:…'"),
    ],
)
def test_a_bad_setting_is_named_at_start(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert str(refused.value).startswith(f"{name}: ")
    assert words in str(refused.value)


def test_blocking_an_admin_is_refused_at_start(clean_env: None) -> None:
    with pytest.raises(ConfigError, match="slack:U1 in both ADMIN_USERS and BLOCKED_USERS"):
        load_settings(admin_users="slack:U1", blocked_users="slack:U2,slack:U1")


def test_the_settings_become_one_policy(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_ROLES", f"discord:{CONTRACTORS}")
    monkeypatch.setenv("BLOCKED_CHANNELS", "slack:C0RANDOM, discord:42")
    monkeypatch.setenv("ALLOW_DMS", "false")
    monkeypatch.setenv("USER_RATE_LIMIT", "20/hour")
    monkeypatch.setenv("ADMIN_USERS", "slack:UADMIN")
    policy = load_settings().access_policy()
    assert policy.allowed_roles == {f"discord:{CONTRACTORS}"}
    assert policy.blocked_channels == {"slack:C0RANDOM", "discord:42"}
    assert not policy.allow_dms
    assert policy.user_rate == RateLimit(count=20, unit="hour")
    assert policy.channel_rate is None
    assert policy.admins == {"slack:UADMIN"}


# ---- Slack


@pytest.fixture
def start_gated_slack(start_slack_bot: Callable[..., Any]) -> Callable[..., Any]:
    """A Slack adapter whose engine applies `policy`."""

    async def start(policy: AccessPolicy) -> SlackBot:
        return await start_slack_bot(access=policy)

    return start


def mention(text: str, *, ts: str, user: str = "U1", channel: str = CHANNEL) -> dict[str, Any]:
    return {
        "type": "app_mention",
        "user": user,
        "text": f"<@{BOT_USER}> {text}",
        "ts": ts,
        "channel": channel,
    }


def as_message(event: dict[str, Any]) -> dict[str, Any]:
    """The `message` event Slack sends for the same mention."""
    return {**event, "type": "message", "channel_type": "channel"}


async def nothing_stored(store: Store, channel: str, ts: str) -> bool:
    ref = ConversationRef(platform="slack", workspace=TEAM, channel=channel, thread=ts)
    return await store.find_conversation(ref) is None


async def test_a_blocked_user_is_told_once_and_an_allowed_one_answered(
    start_gated_slack, slack, fake_llm: FakeLlm, store
):
    bot = await start_gated_slack(AccessPolicy(blocked_users=frozenset({"slack:U2"})))
    fake_llm.script(Reply(text="Hello Alice."))
    blocked = mention("let me in", ts="1700000001.000100", user="U2")
    await slack.send_event(bot.url, blocked, event_id="E1")
    await slack.send_event(bot.url, as_message(blocked), event_id="E2")  # the double delivery
    await slack.send_event(bot.url, blocked, event_id="E1")  # a redelivery
    again = mention("please?", ts="1700000001.000200", user="U2")
    await slack.send_event(bot.url, again, event_id="E3")  # hammering: already told
    await slack.send_event(bot.url, mention("hi", ts="1700000002.000100"), event_id="E4")
    await bot.settle(slack)

    [refusal] = slack.thread(CHANNEL, "1700000001.000100")
    assert NO_ACCESS in refusal.text
    assert not refusal.buttons()
    assert slack.thread(CHANNEL, "1700000001.000200") == []
    [answer] = slack.thread(CHANNEL, "1700000002.000100")
    assert answer.text == "Hello Alice."
    assert [r["messages"][-1]["content"] for r in fake_llm.requests] == ["hi"]
    assert await nothing_stored(store, CHANNEL, "1700000001.000100")


async def test_a_blocked_channel_is_told_and_the_model_never_asked(
    start_gated_slack, slack, fake_llm: FakeLlm, store
):
    bot = await start_gated_slack(
        AccessPolicy(blocked_channels=frozenset({f"slack:{OTHER_CHANNEL}"}))
    )
    event = mention("anyone?", ts="1700000003.000100", channel=OTHER_CHANNEL)
    await slack.send_event(bot.url, event, event_id="E1")
    await bot.settle(slack)

    [refusal] = slack.thread(OTHER_CHANNEL, "1700000003.000100")
    assert NOT_IN_CHANNEL in refusal.text
    assert fake_llm.requests == []
    assert await nothing_stored(store, OTHER_CHANNEL, "1700000003.000100")


async def test_a_direct_message_is_refused_when_dms_are_off(
    start_gated_slack, slack, fake_llm: FakeLlm
):
    bot = await start_gated_slack(AccessPolicy(allow_dms=False))
    event = {
        "type": "message",
        "user": "U1",
        "text": "psst",
        "ts": "1700000004.000100",
        "channel": DM,
        "channel_type": "im",
    }
    await slack.send_event(bot.url, event, event_id="E1")
    await bot.settle(slack)

    [refusal] = slack.thread(DM, None)
    assert NO_DMS in refusal.text
    assert fake_llm.requests == []


async def test_a_rate_limited_user_hears_when_to_come_back_once(
    start_gated_slack, slack, fake_llm: FakeLlm
):
    bot = await start_gated_slack(AccessPolicy(user_rate=RateLimit.parse("2/hour")))
    fake_llm.script(Reply(text="One."), Reply(text="Two."))
    for n in range(1, 5):
        await slack.send_event(
            bot.url, mention(f"q{n}", ts=f"17000001{n}.000100"), event_id=f"E{n}"
        )
        await bot.settle(slack)

    shown = [slack.shown_text(CHANNEL, f"17000001{n}.000100") for n in range(1, 5)]
    assert shown[:2] == ["One.", "Two."]
    assert "You've sent 2 messages in the last hour, the limit here" in shown[2]
    assert TOLD_AGAIN.search(shown[2])
    assert shown[3] == ""  # still limited, already told: quiet
    assert len(fake_llm.requests) == 2


async def test_admins_are_never_rate_limited(start_gated_slack, slack, fake_llm: FakeLlm):
    policy = AccessPolicy(user_rate=RateLimit.parse("1/hour"), admins=frozenset({"slack:UADMIN"}))
    bot = await start_gated_slack(policy)
    fake_llm.script(Reply(text="One."), Reply(text="Two."))
    for n in (1, 2):
        event = mention(f"q{n}", ts=f"17000002{n}.000100", user="UADMIN")
        await slack.send_event(bot.url, event, event_id=f"E{n}")
        await bot.settle(slack)

    assert [slack.shown_text(CHANNEL, f"17000002{n}.000100") for n in (1, 2)] == ["One.", "Two."]


# ---- the store's counts, on each database


async def test_recent_messages_are_read_per_user_and_per_channel(db: Store) -> None:
    def place(channel: str, thread: str) -> ConversationRef:
        return ConversationRef(platform="slack", workspace=TEAM, channel=channel, thread=thread)

    said = [
        (place(CHANNEL, "1"), "user", "slack:U1"),
        (place(CHANNEL, "1"), "assistant", ""),  # answers never count
        (place(CHANNEL, "2"), "user", "slack:U2"),
        (place(OTHER_CHANNEL, "3"), "user", "slack:U1"),
    ]
    for ref, role, author in said:
        message = NewMessage(role=role, text="hi", token_count=1, author_id=author)
        conversation_id = await db.conversation_id(ref)
        await db.begin_turn(conversation_id, message, prompt_version_id=None, token_limit=100)
    since = datetime.now(UTC) - timedelta(minutes=5)

    newest = await db.nth_user_message("slack:U1", since=since, n=1)
    second = await db.nth_user_message("slack:U1", since=since, n=2)
    assert newest is not None and second is not None and newest >= second >= since
    assert await db.nth_user_message("slack:U1", since=since, n=3) is None  # only two
    here = place(CHANNEL, "9")
    assert await db.nth_channel_message(here, since=since, n=2) is not None  # answers not
    assert await db.nth_channel_message(here, since=since, n=3) is None  # counted
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert await db.nth_user_message("slack:U1", since=later, n=1) is None


# ---- two replicas, one store


async def test_a_rate_limit_holds_across_replicas_sharing_a_store(
    make_assistant, store, fake_llm: FakeLlm
):
    policy = AccessPolicy(channel_rate=RateLimit.parse("2/minute"))
    replicas = [await make_assistant(access=policy), await make_assistant(access=policy)]
    fake_llm.script(Reply(text="One."), Reply(text="Two."))

    ended = []
    for n, replica in enumerate([*replicas, replicas[0]]):
        # two people in one channel: the channel's limit counts them together
        asked = Inbound(
            ref=ConversationRef(platform="slack", workspace=TEAM, channel=CHANNEL, thread=f"{n}"),
            actor=Actor(platform="slack", user_id=f"U{n % 2}"),
            text=f"q{n}",
            dedupe_keys=(f"slack:msg:{n}",),
        )
        ended.append((await collect(replica.respond(asked)))[-1])

    assert [type(event) for event in ended] == [Completed, Completed, Failed]
    refused = ended[2]
    assert isinstance(refused, Failed) and refused.error_class == "RateLimited"
    assert refused.user_message.startswith("This channel has sent the assistant 2 messages")
    assert len(fake_llm.requests) == 2
    late = await store.find_conversation(
        ConversationRef(platform="slack", workspace=TEAM, channel=CHANNEL, thread="2")
    )
    assert late is None  # nothing of it stored: no message, no llm_calls row
    # the other replica, asked by the same limited channel, stays quiet: told already
    asked_again = Inbound(
        ref=ConversationRef(platform="slack", workspace=TEAM, channel=CHANNEL, thread="3"),
        actor=Actor(platform="slack", user_id="U1"),
        text="q3",
    )
    [quiet] = await collect(replicas[1].respond(asked_again))
    assert isinstance(quiet, Ignored)


async def test_the_terminal_and_evals_are_never_gated(make_assistant, fake_llm: FakeLlm):
    assistant = await make_assistant(
        access=AccessPolicy(allow_dms=False, blocked_users=frozenset())
    )
    fake_llm.script(Reply(text="Local."))
    asked = Inbound(
        ref=ConversationRef(platform="terminal", channel="me", thread="t"),
        actor=Actor(platform="terminal", user_id="me"),
        text="hi",
        direct=True,
    )
    assert isinstance((await collect(assistant.respond(asked)))[-1], Completed)


# ---- Discord


@pytest.fixture
def start_gated_discord(
    start_discord_bot: Callable[..., Any], discord_fake: FakeDiscord
) -> Callable[..., Any]:
    """The Discord adapter whose engine applies `policy`; the server has a contractors role."""
    plain_roles = discord_fake.roles
    contractors = {**plain_roles()[0], "id": CONTRACTORS, "name": "contractors", "position": 2}
    discord_fake.roles = lambda: [*plain_roles(), contractors]  # type: ignore[method-assign]

    async def start(policy: AccessPolicy) -> DiscordAdapter:
        return await start_discord_bot(engine={"access": policy})

    return start


def shown(fake: FakeDiscord, channel_id: str) -> list[str]:
    return [m.content for m in fake.shown(channel_id) if m.interaction_id is None]


async def test_a_blocked_discord_role_is_told_and_others_answered(
    start_gated_discord, discord_fake: FakeDiscord, fake_llm: FakeLlm
):
    bot = await start_gated_discord(
        AccessPolicy(blocked_roles=frozenset({f"discord:{CONTRACTORS}"}))
    )
    fake_llm.script(Reply(text="Welcome, staff."))
    member = {**discord_fake.member(OWNER_ID, with_user=False), "roles": [CONTRACTORS]}
    await discord_fake.send_message("let me in", mention_bot=True, member=member)
    await settle(bot, discord_fake)
    await discord_fake.send_message("and me?", mention_bot=True, author_id="1002")
    await settle(bot, discord_fake)

    [refusal, answer] = shown(discord_fake, CHANNEL_ID)
    assert NO_ACCESS in refusal
    assert answer == "Welcome, staff."
    assert [r["messages"][-1]["content"] for r in fake_llm.requests] == ["and me?"]


async def test_a_discord_thread_is_closed_with_its_channel(
    start_gated_discord, discord_fake: FakeDiscord, fake_llm: FakeLlm
):
    bot = await start_gated_discord(
        AccessPolicy(blocked_channels=frozenset({f"discord:{CHANNEL_ID}"}))
    )
    await discord_fake.send_message("in the thread", mention_bot=True, channel_id=THREAD_ID)
    await settle(bot, discord_fake)

    [refusal] = shown(discord_fake, THREAD_ID)
    assert NOT_IN_CHANNEL in refusal
    assert fake_llm.requests == []


async def test_a_discord_dm_is_refused_when_dms_are_off(
    start_gated_discord, discord_fake: FakeDiscord, fake_llm: FakeLlm
):
    bot = await start_gated_discord(AccessPolicy(allow_dms=False))
    asked = await discord_fake.send_message("psst", guild=False)
    await settle(bot, discord_fake)

    [refusal] = shown(discord_fake, asked["channel_id"])
    assert NO_DMS in refusal
    assert fake_llm.requests == []


async def test_a_role_blocked_in_the_server_is_blocked_in_dms_too(
    start_gated_discord, discord_fake: FakeDiscord, fake_llm: FakeLlm
):
    """A DM carries a user, not a member: their roles are read from the server."""
    bot = await start_gated_discord(
        AccessPolicy(blocked_roles=frozenset({f"discord:{CONTRACTORS}"}))
    )
    discord_fake.member_roles[OWNER_ID] = [CONTRACTORS]
    asked = await discord_fake.send_message("psst, answer me here", guild=False)
    await settle(bot, discord_fake)

    [refusal] = shown(discord_fake, asked["channel_id"])
    assert NO_ACCESS in refusal
    assert fake_llm.requests == []
