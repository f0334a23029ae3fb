"""One contract, every adapter: the terminal chat, Slack (against the fake Slack) and Discord
(against the fake Discord) show the same answers the same way a user would judge them.

Each driver says a message as its platform would deliver it and returns the messages that show
the answer, as the user sees them.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, Protocol

import pytest
from rich.console import Console

from assistant.engine import Assistant
from assistant.testing import Cut, Fail, FakeLlm, Reply
from assistant.turns import Actor, ConversationRef
from bots.discord_app import DiscordAdapter
from bots.terminal import TerminalChat
from tests.conftest import SlackBot, settle_discord
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.slack_api import BOT_USER, FakeSlack

UNAVAILABLE = "The language model service is unavailable right now. Please try again."


class Driver(Protocol):
    limit: int | None  # the most characters one message may show; None: no limit
    redelivers: bool  # whether the platform can deliver one message twice

    async def ask(self, text: str, *, twice: bool = False) -> list[str]:
        """Say `text` in a new conversation (delivered twice if `twice`); the answer's messages."""
        ...


class TerminalDriver:
    limit = None
    redelivers = False

    def __init__(self, make_assistant: Callable[..., Any]) -> None:
        self._make_assistant = make_assistant
        self._assistant: Assistant | None = None
        self._count = 0

    async def ask(self, text: str, *, twice: bool = False) -> list[str]:
        self._count += 1
        if self._assistant is None:
            self._assistant = await self._make_assistant()
        output = io.StringIO()
        lines = iter([text])

        def read_line() -> str:
            for line in lines:
                return line
            raise EOFError

        await TerminalChat(
            self._assistant,
            ref=ConversationRef(platform="terminal", channel="me", thread=f"c{self._count}"),
            actor=Actor(platform="terminal", user_id="me"),
            console=Console(file=output, width=10_000, color_system=None),
            read_line=read_line,
        ).run()
        _, _, answer = output.getvalue().partition("assistant> ")
        return [answer.strip()]


class SlackDriver:
    limit = 12_000  # a streamed message; posted ones hold 3,000
    redelivers = True

    def __init__(self, bot: SlackBot, fake: FakeSlack) -> None:
        self._bot = bot
        self._fake = fake
        self._count = 0

    async def ask(self, text: str, *, twice: bool = False) -> list[str]:
        self._count += 1
        ts = f"1700000000.{self._count:06d}"
        event = {"type": "app_mention", "user": "U1", "text": f"<@{BOT_USER}> {text}"}
        event |= {"ts": ts, "channel": "C0CONTRACT"}
        for attempt in range(2 if twice else 1):
            options = {"retry_num": attempt} if attempt else {}
            await self._fake.send_event(self._bot.url, event, event_id=f"Ev{ts}", **options)
            await self._bot.settle(self._fake)
        return [message.text for message in self._fake.thread("C0CONTRACT", ts)]


class DiscordDriver:
    limit = 2000
    redelivers = True  # e.g. a MESSAGE_CREATE replayed after a gateway RESUME

    def __init__(self, bot: DiscordAdapter, fake: FakeDiscord) -> None:
        self._bot = bot
        self._fake = fake

    async def ask(self, text: str, *, twice: bool = False) -> list[str]:
        asked = await self._fake.send_message(text, mention_bot=True)
        await settle_discord(self._bot, self._fake)
        if twice:
            await self._fake.dispatch("MESSAGE_CREATE", asked)
            await settle_discord(self._bot, self._fake)
        return [
            m.content
            for m in self._fake.shown()
            if m.message_reference and m.message_reference["message_id"] == asked["id"]
        ]


@pytest.fixture(params=["terminal", "slack", "discord"])
def driver(request: pytest.FixtureRequest, make_assistant: Callable[..., Any]) -> Driver:
    """Sync, so it can ask for the platform's (async) fixtures by name."""
    if request.param == "terminal":
        return TerminalDriver(make_assistant)
    if request.param == "slack":
        return SlackDriver(request.getfixturevalue("slack_bot"), request.getfixturevalue("slack"))
    return DiscordDriver(
        request.getfixturevalue("discord_bot"), request.getfixturevalue("discord_fake")
    )


def _long_answer_with_code() -> str:
    prose = [
        f"Paragraph {i} explains step {i} of the deployment in plain words." for i in range(130)
    ]
    code = [f"    total = total + {i}  # step {i}" for i in range(160)]
    return (
        "\n\n".join(prose[:60])
        + "\n\n```python\n"
        + "\n".join(code)
        + "\n```\n\n"
        + ("\n\n".join(prose[60:]))
    )


def _content(text: str) -> list[str]:
    """The words a reader sees, with the fence lines a split adds or moves left out."""
    lines = [line for line in text.splitlines() if not line.strip().startswith("```")]
    return " ".join(lines).split()


async def test_an_answer_is_shown_as_the_model_gave_it(driver: Driver, fake_llm: FakeLlm):
    fake_llm.script(Reply(text="The VPN uses port 1194.", chunk_chars=5))
    assert await driver.ask("which port?") == ["The VPN uses port 1194."]


async def test_a_long_answer_with_code_arrives_whole_and_every_message_renders(
    driver: Driver, fake_llm: FakeLlm
):
    answer = _long_answer_with_code()
    assert len(answer) > 12_000
    fake_llm.script(Reply(text=answer, chunk_chars=400))
    shown = await driver.ask("explain the deployment")

    assert _content("\n".join(shown)) == _content(answer)
    for message in shown:
        assert driver.limit is None or len(message) <= driver.limit
        fences = [line for line in message.splitlines() if line.strip().startswith("```")]
        assert len(fences) % 2 == 0, "a message with an unclosed code block renders wrong"


async def test_a_failed_turn_tells_the_user(driver: Driver, fake_llm: FakeLlm):
    fake_llm.script(Fail(status=503), Fail(status=503), Fail(status=503))
    shown = await driver.ask("hello?")
    assert UNAVAILABLE in "\n".join(shown)


async def test_a_stream_cut_mid_answer_keeps_what_was_said_and_tells_the_user(
    driver: Driver, fake_llm: FakeLlm
):
    fake_llm.script(Cut(text="The first half of the answer"))
    shown = "\n".join(await driver.ask("hello?"))
    assert shown.startswith("The first half of the answer")
    assert "cut off" in shown


async def test_a_message_delivered_twice_is_answered_once(driver: Driver, fake_llm: FakeLlm):
    if not driver.redelivers:
        pytest.skip("this surface never delivers a message twice")
    fake_llm.script(Reply(text="Only once."))
    assert await driver.ask("hi", twice=True) == ["Only once."]
    assert len(fake_llm.requests) == 1
