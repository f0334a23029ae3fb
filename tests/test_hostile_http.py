"""The hostile trial of issue 11, as tests: Slack's HTTP endpoint under malformed, unsigned,
forged, replayed and oversized requests (the real adapter on loopback, POSTed to as anyone on
the network could), and what a signed request can still make the adapter do.

What must hold for every request: no 5xx, no traceback in the log (client input is never our
fault), and the app still answering a real event afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from assistant.store.tables import LARGEST_ID
from assistant.testing import Reply
from bots.chat_actions import answer_id
from bots.slack_http import MAX_BODY_BYTES, MAX_DEPTH
from tests.conftest import SlackBot, write_prompt
from tests.fakes.slack_api import BOT_USER, TEAM, FakeSlack, Fault, signed_headers

CHANNEL = "C0GENERAL"
TS = "1700000000.000100"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
RESPOND_URL = "RESPOND_URL"
ELSEWHERE = "Votes are taken only where the answer was given, so this one was not recorded."

TOP_KEYS = (
    "type", "token", "team_id", "api_app_id", "event", "event_id", "event_time", "team",
    "authorizations", "enterprise", "enterprise_id", "is_enterprise_install", "user", "channel",
    "container", "message", "actions", "response_url", "response_urls", "trigger_id", "command",
    "text", "user_id", "channel_id", "view", "challenge", "is_ext_shared_channel", "item",
    "function_data", "function_execution_id", "bot_access_token", "thread_ts",
)  # fmt: skip
EVENT_KEYS = (
    "user", "text", "ts", "channel", "thread_ts", "subtype", "channel_type", "bot_id", "team",
    "edited", "user_team", "message", "previous_message", "event_ts", "files", "item",
)  # fmt: skip


@dataclass(frozen=True)
class Hostile:
    """A request as drawn: `how` it is signed is applied when it is sent, after RESPOND_URL
    in the body becomes the fake's response URL (Slack's are always real URLs)."""

    body: bytes
    content_type: str
    how: str
    odd_headers: tuple[str, str]

    def __repr__(self) -> str:  # bodies of a megabyte: shown by their start and length
        body = self.body[:200] + (b"..." if len(self.body) > 200 else b"")
        return f"Hostile({body!r} ({len(self.body)} bytes), {self.content_type!r}, {self.how!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how hypothesis shows it
        printer.text(repr(self))

    def sent(self, respond_url: str) -> tuple[bytes, dict[str, str]]:
        body = self.body.replace(RESPOND_URL.encode(), respond_url.encode())
        headers = {"Content-Type": self.content_type}
        if self.how == "signed":
            headers |= signed_headers(body)
        elif self.how == "wrong secret":
            headers |= signed_headers(body, secret="not-the-secret")
        elif self.how == "stale":
            headers |= signed_headers(body, timestamp=int(time.time()) - 301)
        elif self.how == "odd headers":
            stamp, signature = self.odd_headers
            headers |= {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature}
        return body, headers


def _digest(value: Any) -> str:
    """An event id per event drawn: the same event twice is one delivery, as from Slack."""
    return "Ev" + hashlib.sha256(json.dumps(value).encode()).hexdigest()[:16]


def event_callback(event: dict[str, Any], *, event_id: str = "EvHostile") -> dict[str, Any]:
    return {
        "type": "event_callback",
        "team_id": TEAM,
        "api_app_id": "A0APP",
        "event_id": event_id,
        "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}],
        "event": {"team": TEAM, **event},
    }


def mention(text: str, *, ts: str = TS, user: str = "U1") -> dict[str, Any]:
    return {
        "type": "app_mention",
        "user": user,
        "text": f"<@{BOT_USER}> {text}",
        "ts": ts,
        "channel": CHANNEL,
    }


# ---- the strategies: what anyone on the network can send

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["message", "app_mention", "event_callback", "block_actions", "U1", CHANNEL])
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(TOP_KEYS + EVENT_KEYS) | st.text(max_size=6), inner, max_size=4
        )
    ),
    max_leaves=12,
)
_events = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "app_mention"]) | _json},
    optional={key: _json for key in EVENT_KEYS},
)
_slack_shaped = st.fixed_dictionaries(
    {"type": st.sampled_from(["event_callback", "block_actions", "url_verification"]) | _json},
    optional={key: _events if key == "event" else _json for key in TOP_KEYS if key != "type"},
)
_texts = st.text(max_size=30) | st.sampled_from(["U1", "UADMIN", CHANNEL, "D0ALICE", TS, "im"])
_words = st.lists(
    st.sampled_from([f"<@{BOT_USER}>", "<@U1>", "<@U2|bob>", "<!here>", "&lt;", "<#C1|x>"])
    | st.text(max_size=10),
    max_size=8,
).map(" ".join)
_nearly_events = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["message", "app_mention"]),
        "channel": _texts.filter(bool),
        "ts": _texts.filter(bool),
        "user": _texts,
        "text": _words,
    },
    optional={
        "thread_ts": _texts,
        "channel_type": st.sampled_from(["im", "channel", "group"]) | _texts,
        "subtype": st.sampled_from(["file_share", "thread_broadcast", "message_changed"]),
        "edited": _json,
        "files": _json,
    },
).map(lambda e: event_callback(e, event_id=_digest(e)))
_nearly_commands = st.fixed_dictionaries(
    {
        "command": st.just("/assistant"),
        "text": st.sampled_from(
            ["prompt list", "prompt use assistant 1 --force", "prompt rollback assistant", "report"]
        )
        | _words,
        "user_id": st.sampled_from(["U1", "UADMIN"]) | _texts.filter(bool),
        "response_url": st.just(RESPOND_URL),
    },
    optional={"team_id": _texts, "channel_id": _texts, "trigger_id": _texts},
)
_nearly_clicks = st.fixed_dictionaries(
    {
        "type": st.just("block_actions"),
        "user": st.fixed_dictionaries({"id": _texts.filter(bool)}),
        "actions": st.lists(
            st.fixed_dictionaries(
                {"action_id": st.sampled_from(["feedback_up", "feedback_down"]) | _texts},
                optional={"value": _texts},
            ),
            min_size=1,
            max_size=2,
        ),
        "response_url": st.just(RESPOND_URL),
    },
    optional={"channel": st.fixed_dictionaries({"id": _texts}), "container": _json},
)
_nesting = st.integers(MAX_DEPTH, 5000)
_bodies = st.one_of(
    _json.map(lambda v: json.dumps(v).encode()),
    _slack_shaped.map(lambda v: json.dumps(v).encode()),
    _slack_shaped.map(lambda v: urlencode({"payload": json.dumps(v)}).encode()),
    st.dictionaries(st.sampled_from(TOP_KEYS) | st.text(max_size=6), st.text(max_size=20)).map(
        lambda form: urlencode(form).encode()
    ),
    _nearly_events.map(lambda v: json.dumps(v).encode()),
    _nearly_commands.map(lambda form: urlencode(form).encode()),
    _nearly_clicks.map(lambda v: urlencode({"payload": json.dumps(v)}).encode()),
    _nesting.map(lambda n: ("[" * n + "]" * n).encode()),
    _nesting.map(lambda n: ('{"event":' * n + "1" + "}" * n).encode()),
    st.binary(max_size=300),
    st.integers(MAX_BODY_BYTES - 64, MAX_BODY_BYTES + 64).map(lambda n: b"{" + b" " * n + b"}"),
    st.sampled_from([b"", b"{", b"[]", b"null", b"payload=%7B", b"\xff\xfe", b"1e999999"]),
)
_header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)


@st.composite
def hostile_requests(draw: st.DrawFn) -> Hostile:
    body = draw(_bodies)
    content_type = draw(st.sampled_from([JSON, FORM, "text/plain", f"{JSON}; charset=utf-8"]))
    how = draw(st.sampled_from(["signed", "signed", "unsigned", "wrong secret", "stale", "odd"]))
    now = str(int(time.time()))
    odd = (draw(_header_text | st.just(now)), draw(_header_text)) if how == "odd" else ("", "")
    return Hostile(body, content_type, "odd headers" if how == "odd" else how, odd)


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.exc_info]


async def assert_still_answers(bot: SlackBot, slack: FakeSlack, fake_llm: Any) -> None:
    ts = "1799999999.000001"
    fake_llm.script(Reply(text="Still here."))
    status = await slack.send_event(bot.url, mention("still there?", ts=ts), event_id="EvLast")
    await bot.settle(slack)
    assert status == 200
    assert [m.text for m in slack.thread(CHANNEL, ts)] == ["Still here."]


# ---- the fuzz suite


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")),  # the trial: FUZZ_EXAMPLES=10000
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(hostile=hostile_requests())
async def test_no_request_gets_a_5xx_or_logs_a_traceback(
    slack_bot: SlackBot, slack: FakeSlack, caplog: pytest.LogCaptureFixture, hostile: Hostile
) -> None:
    body, headers = hostile.sent(f"{slack.base}/respond/fuzz")
    status, _ = await slack.post(slack_bot.url, body, headers)
    event(f"{hostile.how}: {status}")  # shown by --hypothesis-show-statistics
    assert status < 500, (status, hostile)
    if hostile.how != "signed":  # refused unread; a body too big to check is refused as such
        assert status in ((401, 413) if len(body) > MAX_BODY_BYTES else (401,)), (status, hostile)
    await slack_bot.adapter.idle()  # what a signed request started has finished
    assert tracebacks(caplog) == []
    assert await still_verified(slack_bot, slack)


async def still_verified(bot: SlackBot, slack: FakeSlack) -> bool:
    """Whether the endpoint still answers Slack's own url_verification, after what came."""
    body = json.dumps({"type": "url_verification", "challenge": "still-there"}).encode()
    status, text = await slack.post(bot.url, body, {"Content-Type": JSON, **signed_headers(body)})
    return status == 200 and "still-there" in text


async def test_after_the_trial_a_real_event_is_still_answered(slack_bot, slack, fake_llm, caplog):
    bodies = [b"{", b"[" * 5000, json.dumps(event_callback({"type": "message"})).encode()]
    for body in bodies:
        for headers in (signed_headers(body), {}):
            status, _ = await slack.post(slack_bot.url, body, {"Content-Type": JSON, **headers})
            assert status in (400, 401)
    await assert_still_answers(slack_bot, slack, fake_llm)
    assert tracebacks(caplog) == []


# ---- the trial's examples, one by one


async def test_a_body_of_one_brace_is_refused_without_a_traceback(slack_bot, slack, caplog):
    unsigned, text = await slack.post(slack_bot.url, b"{", {"Content-Type": JSON})
    assert unsigned == 401 and "X-Slack-Request-Timestamp" in text  # says what is missing
    signed, text = await slack.post(
        slack_bot.url, b"{", {"Content-Type": JSON, **signed_headers(b"{")}
    )
    assert signed == 400 and "not a Slack payload" in text
    assert tracebacks(caplog) == []


async def test_deeply_nested_json_is_refused_without_a_traceback(slack_bot, slack, caplog):
    deep = ('{"event":' * 100_000 + "1" + "}" * 100_000).encode()  # 1 MB, past any recursion
    for headers in ({}, signed_headers(deep)):
        status, _ = await slack.post(slack_bot.url, deep, {"Content-Type": JSON, **headers})
        assert status == (400 if headers else 401)
    shallow_enough = json.dumps(event_callback({**mention("hi"), "x": [[[[[[1]]]]]]}))
    assert await slack.post_signed(slack_bot.url, shallow_enough, content_type=JSON) == 200
    assert tracebacks(caplog) == []


async def test_an_oversized_body_is_refused_before_it_is_read(slack_bot, slack, caplog):
    huge = b"{" + b" " * MAX_BODY_BYTES + b"}"
    status, _ = await slack.post(
        slack_bot.url, huge, {"Content-Type": JSON, **signed_headers(huge)}
    )
    assert status == 413
    assert tracebacks(caplog) == []


async def test_a_message_without_ts_is_dropped_with_one_warning(slack_bot, slack, fake_llm, caplog):
    no_ts = {key: value for key, value in mention("hi").items() if key != "ts"}
    for event_id in ("E1", "E2", "E3"):
        status = await slack.send_event(slack_bot.url, no_ts, event_id=event_id)
        assert status == 400
    await slack_bot.settle(slack)

    assert fake_llm.requests == []
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and "without channel or ts" in r.getMessage()
    ]
    assert len(warnings) == 1, "one line per kind, not one per request"
    assert tracebacks(caplog) == []


async def test_a_timestamp_that_is_not_a_number_is_refused(slack_bot, slack, caplog):
    body = json.dumps(event_callback(mention("hi"))).encode()
    headers = {**signed_headers(body), "X-Slack-Request-Timestamp": "abc", "Content-Type": JSON}
    status, text = await slack.post(slack_bot.url, body, headers)
    assert status == 401 and "not a number" in text
    assert tracebacks(caplog) == []


async def test_a_replayed_prompt_use_does_nothing_the_second_time(
    prompts_dir, start_slack_bot, slack, store, caplog
):
    write_prompt(prompts_dir, version=2)
    bot = await start_slack_bot()
    command = "prompt use assistant 1 --force"
    assert await slack.send_command(bot.url, command, user="UADMIN", channel=CHANNEL) == 200
    await bot.settle(slack)
    [answer] = slack.responses
    assert "Only admins" not in answer["text"]

    [sent] = slack.sent
    assert await slack.replay(sent) == 200  # byte for byte, within Slack's 5 minutes
    trigger = dict(pair.split("=", 1) for pair in sent.body.decode().split("&"))["trigger_id"]
    again = await slack.send_command(
        bot.url, command, user="UADMIN", channel=CHANNEL, trigger_id=trigger
    )
    assert again == 200
    await bot.settle(slack)

    assert slack.responses == [answer], "silent: the asker had their one answer"
    assert len(await store.prompts.history("assistant")) == 1
    assert tracebacks(caplog) == []


async def test_twelve_mentions_under_429s_cost_a_bounded_number_of_lookups(
    slack_bot, slack, fake_llm
):
    slack.fail("users.info", Fault(error="ratelimited", status=429, retry_after=30), times=100)
    fake_llm.script(Reply(text="Noted."), Reply(text="Noted again."))
    people = " ".join(f"<@U{n:03d}>" for n in range(12))
    started = time.monotonic()
    await slack.send_event(slack_bot.url, mention(f"ping {people}"), event_id="E1")
    await slack_bot.settle(slack)
    first_calls = len(slack.calls_to("users.info"))
    crowd = " ".join(f"<@U{n:04d}>" for n in range(3000))
    later = mention(f"and {crowd}", ts="1700000001.000001")
    await slack.send_event(slack_bot.url, later, event_id="E2")
    await slack_bot.settle(slack)

    assert first_calls <= 10, "ten people looked up per message, each tried once"
    assert len(slack.calls_to("users.info")) == first_calls, "Slack said wait: nobody else"
    assert time.monotonic() - started < 5  # was 90 s
    said = fake_llm.requests[0]["messages"][-1]["content"]
    assert "@U011" in said, "the people not looked up are shown by id"


async def test_three_thousand_mentions_are_ten_lookups_and_one_per_person(
    slack_bot, slack, fake_llm
):
    slack.slow_down("users.info", 0.3)  # both messages wait on the same lookups
    fake_llm.script(Reply(text="One."), Reply(text="Two."))
    crowd = " ".join(f"<@U{n:04d}>" for n in range(3000))
    await asyncio.gather(
        slack.send_event(slack_bot.url, mention(f"hi {crowd}"), event_id="E1"),
        slack.send_event(
            slack_bot.url, mention(f"yo {crowd}", ts="1700000001.000001"), event_id="E2"
        ),
    )
    await slack_bot.settle(slack)

    looked_up = [call["user"] for call in slack.calls_to("users.info")]
    assert len(looked_up) == len(set(looked_up)) == 10  # never two calls for one person
    assert len(slack.thread(CHANNEL, TS)) == 1


async def test_a_vote_from_another_channel_is_refused(slack_bot, slack, fake_llm, store):
    fake_llm.script(Reply(text="Rate me."))
    await slack.send_event(slack_bot.url, mention("hi"), event_id="E1")
    await slack_bot.settle(slack)
    [answer] = slack.thread(CHANNEL, TS)
    up, _ = answer.buttons()

    status = await slack.click(slack_bot.url, up, user="U9", message=answer, channel="C0OTHER")
    await slack_bot.settle(slack)
    assert status == 200
    assert slack.responses[-1]["text"] == ELSEWHERE
    assert await store.votes.of(int(up["value"])) == []

    await slack.click(slack_bot.url, up, user="U9", message=answer)  # where it was given
    await slack_bot.settle(slack)
    [vote] = await store.votes.of(int(up["value"]))
    assert vote.user_id == "slack:U9"


@pytest.mark.parametrize(
    "value", ["not-a-number", "٣", "99999999999999999999999", "3000000000", ""]
)
async def test_a_feedback_value_that_is_no_answer_id_says_so(
    slack_bot, slack, fake_llm, caplog, value
):
    fake_llm.script(Reply(text="Rate me."))
    await slack.send_event(slack_bot.url, mention("hi"), event_id="E1")
    await slack_bot.settle(slack)
    [answer] = slack.thread(CHANNEL, TS)
    up, _ = answer.buttons()

    assert (
        await slack.click(slack_bot.url, {**up, "value": value}, user="U2", message=answer) == 200
    )
    await slack_bot.settle(slack)
    assert slack.responses[-1]["text"].startswith("That answer is no longer known")
    assert tracebacks(caplog) == []


def test_an_answer_id_is_one_the_store_can_hold():
    """Past Postgres's INTEGER a lookup would fail (a logged error), not find nothing."""
    assert answer_id(str(LARGEST_ID)) == LARGEST_ID
    assert answer_id(str(LARGEST_ID + 1)) is None
    assert answer_id("0") is None and answer_id("007") == 7


# ---- message text never reaches the log (README: "message text is never logged")

SECRET_TEXT = "the vault code is 7391-SECRET-NOT-FOR-LOGS"


def refused_request(how: str) -> tuple[bytes, CIMultiDict[str]]:
    """A mention carrying SECRET_TEXT, signed `how`; each is refused with a 401."""
    body = json.dumps(event_callback(mention(SECRET_TEXT))).encode()
    good = signed_headers(body)
    headers = CIMultiDict({"Content-Type": JSON})
    if how == "wrong secret":
        headers.update(signed_headers(body, secret="not-the-secret"))
    elif how == "stale":
        headers.update(signed_headers(body, timestamp=int(time.time()) - 301))
    else:  # the right signature, then a wrong one: Bolt would read the last, this check the first
        wrong = signed_headers(body, secret="not-the-secret")["X-Slack-Signature"]
        headers.update(good)
        headers.add("X-Slack-Signature", wrong)
    return body, headers


@pytest.mark.parametrize("how", ["wrong secret", "stale", "a second signature"])
async def test_a_refused_request_leaves_its_text_out_of_the_log(slack_bot, slack, caplog, how):
    """Bolt's own signature check logs a failing request's whole body at INFO; every level
    is captured here, DEBUG too (`assistant run` shows INFO and up)."""
    caplog.set_level(logging.DEBUG)
    body, headers = refused_request(how)
    status, _ = await slack.post(slack_bot.url, body, headers)  # type: ignore[arg-type]
    await slack_bot.adapter.idle()

    assert status == 401
    assert caplog.records  # the refusal itself is logged, quietly
    assert not [r for r in caplog.records if SECRET_TEXT in r.getMessage()]
    assert SECRET_TEXT not in caplog.text


async def test_an_answered_message_leaves_its_text_out_of_the_log(
    slack_bot, slack, fake_llm, caplog
):
    caplog.set_level(logging.INFO)  # what `assistant run` shows
    fake_llm.script(Reply(text="Noted."))
    body = json.dumps(event_callback(mention(SECRET_TEXT)))
    assert await slack.post_signed(slack_bot.url, body, content_type=JSON) == 200
    await slack_bot.settle(slack)

    assert [m.text for m in slack.thread(CHANNEL, TS)] == ["Noted."]
    assert SECRET_TEXT not in caplog.text
