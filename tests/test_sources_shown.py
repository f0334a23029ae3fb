"""An answer's sources, shown by every surface after the answer in its platform's way: Slack's
context block, Discord's footnotes, the terminal's dim list. The sources come the real way: a
tool the model calls cites them through its `ToolContext`, the engine keeps those the answer
cites and stores them with it. Each test reads what the user sees on the (fake) platform."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from assistant.builtin_tools import builtin_registry
from assistant.store import Store
from assistant.testing import CallTools, FakeLlm, Reply
from assistant.tools import ToolContext, ToolRegistry
from assistant.turns import Actor, ConversationRef, Source
from bots.render import LABEL_CHARS, source_lines
from bots.slack_reply import source_blocks
from bots.terminal import TerminalChat
from tests.conftest import SlackBot, settle_discord, write_prompt
from tests.fakes.discord_api import FakeDiscord, FakeMessage
from tests.fakes.slack_api import BOT_USER, FakeSlack, Fault

CHANNEL = "C0GENERAL"
TS = "1700000000.000100"

VPN = Source(
    number=0,
    collection="handbook",
    document="it/vpn.md",
    title="VPN guide",
    heading="Ports",
    link="https://wiki.example.com/it/vpn#ports",
)
ESCALATION = Source(  # no link, and Slack's three control characters in its title
    number=0,
    collection="handbook",
    document="ops/on-call.md",
    title="On-call & escalation <draft>",
    heading="Paging",
)
FOUND = {
    "vpn": [VPN, ESCALATION],
    "many": [
        Source(
            number=0,
            collection="handbook",
            document=f"part{i}.md",
            title=f"Part {i}",
            link=f"https://wiki.example.com/part{i}",
        )
        for i in range(1, 13)
    ],
}
SEARCH = CallTools(calls=(("search_handbook", {"query": "vpn"}),))
ANSWER = "The VPN uses port 1194 [1]; page the on-call engineer if it is down [2]."


async def search_handbook(query: str, context: ToolContext) -> str:
    """Search the team handbook."""
    cited = [context.cite(source) for source in FOUND.get(query, [])]
    return "\n".join(f"[{s.number}] {s.label()}: (passage)" for s in cited) or "nothing found"


@pytest.fixture
def tools() -> ToolRegistry:
    registry = builtin_registry()
    registry.register(search_handbook)
    return registry


@pytest.fixture
def prompts_dir(tmp_path: Path) -> Path:
    """A version that may search the handbook (the tool cites what it finds)."""
    directory = tmp_path / "prompts"
    write_prompt(directory, tools=["search_handbook", "calculator"])
    return directory


def numbered(*sources: Source) -> list[Source]:
    """`sources` as the turn numbers them: 1, 2 … in the order found."""
    return [
        Source(
            number=i,
            collection=s.collection,
            document=s.document,
            title=s.title,
            heading=s.heading,
            link=s.link,
        )
        for i, s in enumerate(sources, start=1)
    ]


def _long_answer(paragraphs: int) -> str:
    line = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor"
    return "\n\n".join(f"{line} {i}." for i in range(paragraphs)) + " See [1]."


# --- Slack -----------------------------------------------------------------------------------


def mention(text: str) -> dict:
    return {
        "type": "app_mention",
        "user": "U1",
        "text": f"<@{BOT_USER}> {text}",
        "ts": TS,
        "channel": CHANNEL,
    }


def context_blocks(message) -> list[dict]:
    return [b for b in message.blocks if b["type"] == "context"]


def source_texts(message) -> list[str]:
    return [e["text"] for b in context_blocks(message) for e in b["elements"]]


async def ask_slack(bot: SlackBot, slack: FakeSlack, text: str) -> list:
    await slack.send_event(bot.url, mention(text), event_id="E1")
    await bot.settle(slack)
    return slack.thread(CHANNEL, TS)


SLACK_LINES = [
    "[1] <https://wiki.example.com/it/vpn#ports|VPN guide &gt; Ports>",
    "[2] On-call &amp; escalation &lt;draft&gt; &gt; Paging",
]


async def test_slack_shows_the_sources_under_a_streamed_answer_above_the_buttons(
    slack_bot, slack, fake_llm, store: Store
):
    fake_llm.script(SEARCH, Reply(text=ANSWER, chunk_chars=8))
    [answer] = await ask_slack(slack_bot, slack, "which VPN port?")

    assert answer.text == ANSWER and not answer.streaming
    assert source_texts(answer) == SLACK_LINES
    kinds = [b["type"] for b in answer.blocks]
    assert kinds == ["context", "actions"]  # the stream's text, then sources, then 👍/👎
    [stop] = slack.calls_to("chat.stopStream")
    assert "context" in str(stop["blocks"])  # they came with the stream's end, not an edit
    message_id = int(answer.buttons()[0]["value"])
    assert await store.sources_of(message_id) == numbered(VPN, ESCALATION)
    print("\nslack blocks:", answer.blocks)


async def test_slack_keeps_the_sources_when_the_stream_dies_and_chat_update_takes_over(
    slack_bot, slack, fake_llm
):
    answer = _long_answer(30)
    fake_llm.script(SEARCH, Reply(text=answer, chunk_chars=100, chunk_delay=0.01))
    slack.streams_die_after = 2
    shown = await ask_slack(slack_bot, slack, "go on")

    assert slack.calls_to("chat.update"), "the fallback edited the message"
    assert "\n".join(m.text for m in shown).split() == answer.split()
    assert source_texts(shown[-1]) == SLACK_LINES[:1]  # only [1] is cited
    assert shown[-1].buttons()
    assert not any(context_blocks(m) for m in shown[:-1])


@pytest.mark.parametrize("where", ["stream", "posts"])
async def test_slack_puts_the_sources_on_the_last_message_of_a_long_answer(
    slack_bot, slack, fake_llm, where
):
    if where == "posts":  # no streaming: the answer is posted in 3,000-character messages
        slack.fail("chat.startStream", Fault(error="not_allowed_token_type"))
    answer = _long_answer(200)
    assert len(answer) > 12_000  # past one streamed message too
    fake_llm.script(SEARCH, Reply(text=answer, chunk_chars=400))
    shown = await ask_slack(slack_bot, slack, "tell me everything")

    assert len(shown) >= 2
    # nothing lost (a full stream may end mid-word, its tail continuing in the next message)
    assert "".join("".join(m.text for m in shown).split()) == "".join(answer.split())
    assert source_texts(shown[-1]) == SLACK_LINES[:1]
    assert shown[-1].buttons()
    assert not any(context_blocks(m) or m.buttons() for m in shown[:-1])


async def test_slack_takes_ten_sources_to_a_context_block(slack_bot, slack, fake_llm):
    fake_llm.script(
        CallTools(calls=(("search_handbook", {"query": "many"}),)),
        Reply(text="It is all in the handbook."),  # cites none by number: all are shown
    )
    [answer] = await ask_slack(slack_bot, slack, "where is it written?")

    blocks = context_blocks(answer)
    assert [len(b["elements"]) for b in blocks] == [10, 2]
    assert len({b["block_id"] for b in blocks}) == 2
    assert source_texts(answer)[-1] == "[12] <https://wiki.example.com/part12|Part 12>"


async def test_slack_shows_no_sources_block_for_an_answer_without_sources(
    slack_bot, slack, fake_llm, store: Store
):
    fake_llm.script(Reply(text="Hello there."))
    [answer] = await ask_slack(slack_bot, slack, "hi")

    assert context_blocks(answer) == []
    assert [b["type"] for b in answer.blocks] == ["actions"]
    assert await store.sources_of(int(answer.buttons()[0]["value"])) == []


async def test_slack_keeps_the_sources_as_text_when_only_plain_messages_get_through(
    slack_bot, slack, fake_llm
):
    slack.fail("chat.stopStream", Fault(error="internal_error"))  # the stream cannot end,
    slack.fail("chat.postMessage", Fault(error="invalid_blocks"))  # nor a message with blocks
    fake_llm.script(SEARCH, Reply(text=ANSWER))
    shown = await ask_slack(slack_bot, slack, "which VPN port?")

    last = shown[-1]
    assert last.blocks == [] and last.text == ANSWER + "\n\n" + "\n".join(SLACK_LINES)


def test_a_source_line_too_long_for_slack_drops_its_link_not_the_source():
    long_link = Source(
        number=3, collection="c", document="d", title="Deep page", link="https://x/" + "a" * 3000
    )
    [block] = source_blocks([long_link])
    assert block["elements"] == [{"type": "mrkdwn", "text": "[3] Deep page"}]


def test_a_long_title_is_cut_in_every_surface_s_line():
    wordy = Source(number=1, collection="c", document="d", title="T" * 500, link="https://x")
    [line] = source_lines([wordy])
    assert line == "[1] " + "T" * (LABEL_CHARS - 1) + "… — https://x"


# --- Discord ---------------------------------------------------------------------------------

DISCORD_NOTES = (
    "[1] VPN guide > Ports — <https://wiki.example.com/it/vpn#ports>\n"
    "[2] On-call & escalation <draft> > Paging"
)


async def ask_discord(bot, fake: FakeDiscord, text: str) -> list[FakeMessage]:
    asked = await fake.send_message(text, mention_bot=True)
    await settle_discord(bot, fake)
    return [
        m
        for m in fake.shown()
        if m.message_reference and m.message_reference["message_id"] == asked["id"]
    ]


async def test_discord_ends_the_answer_with_footnotes(
    discord_bot, discord_fake, fake_llm, store: Store
):
    fake_llm.script(SEARCH, Reply(text=ANSWER, chunk_chars=8))
    [answer] = await ask_discord(discord_bot, discord_fake, "which VPN port?")

    assert answer.content == f"{ANSWER}\n\n{DISCORD_NOTES}"
    assert answer.buttons()
    message_id = int(answer.buttons()[0]["custom_id"].rsplit(":", 1)[1])
    assert await store.sources_of(message_id) == numbered(VPN, ESCALATION)
    print("\ndiscord message:\n" + answer.content)


def _answer_with_code() -> str:
    prose = "\n\n".join(f"Step {i}: check the settings of part {i} again." for i in range(50))
    code = "\n".join(f"    total = total + {i}  # line {i}" for i in range(80))
    return f"{prose}\n\n```python\n{code}\n```\n\nThat is all [1]."


def _fences_balanced(text: str) -> bool:
    return len([line for line in text.splitlines() if line.startswith("```")]) % 2 == 0


async def test_discord_footnotes_end_the_last_message_of_a_split_answer(
    discord_bot, discord_fake, fake_llm
):
    answer = _answer_with_code()
    fake_llm.script(SEARCH, Reply(text=answer, chunk_chars=300))
    shown = await ask_discord(discord_bot, discord_fake, "explain")

    assert len(shown) >= 3
    assert all(len(m.content) <= 2000 and _fences_balanced(m.content) for m in shown)
    assert shown[-1].content.endswith(
        "\n\n[1] VPN guide > Ports — <https://wiki.example.com/it/vpn#ports>"
    )
    assert not any("wiki.example.com" in m.content for m in shown[:-1])
    assert shown[-1].buttons() and not any(m.buttons() for m in shown[:-1])


async def test_discord_footnotes_that_do_not_fit_go_in_one_more_message(
    discord_bot, discord_fake, fake_llm
):
    answer = "x" * 1990 + " [1]"  # one full message: the footnote cannot join it
    fake_llm.script(SEARCH, Reply(text=answer, chunk_chars=500))
    shown = await ask_discord(discord_bot, discord_fake, "fill it up")

    assert [m.content for m in shown] == [
        answer,
        "[1] VPN guide > Ports — <https://wiki.example.com/it/vpn#ports>",
    ]
    assert shown[-1].buttons() and not shown[0].buttons()


async def test_discord_footnotes_never_land_inside_an_unclosed_code_block(
    discord_bot, discord_fake, fake_llm
):
    answer = "Run this [1]:\n\n```sh\nsudo openvpn client.conf"  # the model left it open
    fake_llm.script(SEARCH, Reply(text=answer))
    [shown] = await ask_discord(discord_bot, discord_fake, "how do I connect?")

    code, _, notes = shown.content.rpartition("```")
    assert code.startswith(answer) and _fences_balanced(shown.content)
    assert notes == "\n\n[1] VPN guide > Ports — <https://wiki.example.com/it/vpn#ports>"


async def test_discord_shows_no_footnotes_for_an_answer_without_sources(
    discord_bot, discord_fake, fake_llm
):
    fake_llm.script(Reply(text="Hello there."))
    [answer] = await ask_discord(discord_bot, discord_fake, "hi")
    assert answer.content == "Hello there."


# --- the terminal ----------------------------------------------------------------------------


async def chat(assistant, line: str, *, colour: bool = False) -> str:
    """Type `line` into a terminal chat; what it printed from the answer on."""
    output = io.StringIO()
    lines = iter([line])

    def read_line() -> str:
        for typed in lines:
            return typed
        raise EOFError

    colours = {"color_system": "standard", "force_terminal": True} if colour else {}
    await TerminalChat(
        assistant,
        ref=ConversationRef(platform="terminal", channel="me", thread="default"),
        actor=Actor(platform="terminal", user_id="me"),
        console=Console(file=output, width=10_000, **({"color_system": None} | colours)),
        read_line=read_line,
    ).run()
    _, _, answer = output.getvalue().partition("assistant> ")
    return answer


async def test_the_terminal_lists_the_sources_after_the_answer(make_assistant, fake_llm):
    fake_llm.script(SEARCH, Reply(text=ANSWER))
    printed = await chat(await make_assistant(), "which VPN port?")

    answer, _, listed = printed.partition("Sources:\n")
    assert ANSWER in answer
    assert listed.rstrip("\n").splitlines() == [
        "  [1] VPN guide > Ports — https://wiki.example.com/it/vpn#ports",
        "  [2] On-call & escalation <draft> > Paging",
    ]
    print("\nterminal:\nassistant> " + printed)


async def test_the_terminal_shows_the_sources_in_dim(make_assistant, fake_llm):
    fake_llm.script(SEARCH, Reply(text=ANSWER))
    printed = await chat(await make_assistant(), "which VPN port?", colour=True)
    assert "\x1b[2m  [1] VPN guide > Ports" in printed  # SGR 2: dim


async def test_the_terminal_lists_no_sources_for_an_answer_without_them(
    make_assistant, fake_llm: FakeLlm
):
    fake_llm.script(Reply(text="Hello there."))
    printed = await chat(await make_assistant(), "hi")
    assert "Hello there." in printed and "Sources" not in printed
