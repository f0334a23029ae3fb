"""Images and files users attach on Slack and Discord: fetched by the adapters from the fake
platforms, shown to the fake model as image parts or inlined text, refused in plain words where
they cannot be had or seen, and recorded with the message."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from assistant.access import AccessPolicy
from assistant.attachments import AttachmentLimits
from assistant.llm import OpenAIChatModel, Timeouts
from assistant.model_traits import ModelTable
from assistant.store import Store
from assistant.testing import FakeLlm, Reply
from assistant.tokens import TokenCounter
from assistant.turns import ConversationRef
from tests.conftest import settle, write_prompt
from tests.fakes.discord_api import CHANNEL_ID, FakeDiscord, FakeMessage
from tests.fakes.slack_api import BOT_USER, TEAM, FakeSlack, manifest_scopes

CHANNEL = "C0GENERAL"
TS = "1700000000.000100"
SLACK_THREAD = ConversationRef(platform="slack", workspace=TEAM, channel=CHANNEL, thread=TS)
TOKEN = "xoxb-test-token"  # the conftest's Slack adapter's


@pytest.fixture
async def model(fake_llm: FakeLlm) -> AsyncIterator[OpenAIChatModel]:
    """The model client as `assistant run` makes it: with the bundled table, which says which
    models can see images."""
    chat = OpenAIChatModel.connect(
        api_key="sk-test-not-a-real-key",
        base_url=fake_llm.base_url,
        timeouts=Timeouts(first_token=10.0, idle=2.0, total=30.0),
        max_retries=2,
        models=ModelTable.load(),
    )
    yield chat
    await chat.close()


def picture(width: int = 64, height: int = 48, kind: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format=kind)
    return out.getvalue()


def mention(text: str, files: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "app_mention",
        "user": "U1",
        "text": f"<@{BOT_USER}> {text}",
        "ts": TS,
        "channel": CHANNEL,
        "files": files,
    }


async def ask_slack(bot: Any, slack: FakeSlack, text: str, *files: dict[str, Any]) -> str:
    """A mention with files; the answer the thread shows."""
    assert await slack.send_event(bot.url, mention(text, list(files)), event_id="Ev1") == 200
    await bot.settle(slack)
    return slack.shown_text(CHANNEL, TS)


async def ask_discord(bot: Any, fake: FakeDiscord, text: str, *files: dict[str, Any]) -> str:
    payload = fake.message_create(text, mention_bot=True, attachments=list(files))
    await fake.dispatch("MESSAGE_CREATE", payload)
    await settle(bot, fake)
    shown: list[FakeMessage] = [m for m in fake.shown(CHANNEL_ID) if m.interaction_id is None]
    return "\n".join(m.content for m in shown)


async def recorded(store: Store, ref: ConversationRef) -> list[dict[str, Any]]:
    """What `messages.attachments` says the model saw of the user's files."""
    conversation = await store.find_conversation(ref)
    assert conversation is not None and conversation.id is not None
    [user] = [m for m in await store.messages(conversation.id) if m.role == "user"]
    assert user.attachments is not None
    found: list[dict[str, Any]] = json.loads(user.attachments)
    return found


def last_user_content(fake_llm: FakeLlm, index: int = -1) -> Any:
    return fake_llm.requests[index]["messages"][-1]["content"]


# ---- images reach a model that can see


async def test_an_image_on_slack_reaches_the_model_as_an_image_part(
    slack_bot, slack, fake_llm, store
):
    png = picture()
    fake_llm.script(Reply(text="A red square."))
    shown = await ask_slack(
        slack_bot, slack, "what is this?", slack.share_file("chart.png", png, "image/png")
    )

    assert shown == "A red square."
    assert fake_llm.images == [("image/png", png)]  # base64 decoded: the very bytes sent
    text, image = last_user_content(fake_llm)
    assert text == {"type": "text", "text": "what is this?\n\n[image attachment: chart.png]"}
    assert image["type"] == "image_url"
    assert image["image_url"]["url"].startswith("data:image/png;base64,")
    assert await recorded(store, SLACK_THREAD) == [
        {"name": "chart.png", "media_type": "image/png", "size": len(png), "seen": "image",
         "reason": None}
    ]  # fmt: skip


async def test_an_image_on_discord_reaches_the_model_as_an_image_part(
    discord_bot, discord_fake, fake_llm, store
):
    jpeg = picture(kind="JPEG")
    fake_llm.script(Reply(text="A red photo."))
    attachment = discord_fake.attachment("photo.jpg", jpeg, "image/jpeg")
    shown = await ask_discord(discord_bot, discord_fake, "and this?", attachment)

    assert shown == "A red photo."
    assert fake_llm.images == [("image/jpeg", jpeg)]
    assert discord_fake.downloads == [attachment["id"]]
    [record] = await recorded(store, _discord_thread(discord_fake))
    assert record["seen"] == "image"


async def test_a_past_image_is_named_in_history_not_sent_again(slack_bot, slack, fake_llm):
    fake_llm.script(Reply(text="A red square."), Reply(text="Yes, red."))
    await ask_slack(
        slack_bot, slack, "what is this?", slack.share_file("a.png", picture(), "image/png")
    )
    follow_up = {"type": "message", "user": "U1", "text": "is it red?", "ts": "1700000000.000200",
                 "thread_ts": TS, "channel": CHANNEL, "channel_type": "channel"}  # fmt: skip
    await slack.send_event(slack_bot.url, follow_up, event_id="Ev2")
    await slack_bot.settle(slack)

    assert len(fake_llm.images) == 1  # the first turn's, once
    history = [m["content"] for m in fake_llm.requests[-1]["messages"][1:]]
    assert history == ["what is this?\n\n[image attachment: a.png]", "A red square.", "is it red?"]


def test_an_image_part_is_counted_by_the_tile_formula():
    from assistant.llm import ChatMessage, ImagePart, wire_messages

    counter = TokenCounter("gpt-4o-mini")
    image = ImagePart(media_type="image/png", data=picture(1024, 1024))
    plain = counter.count_request(wire_messages([ChatMessage(role="user", content="hi")]))
    with_image = counter.count_request(
        wire_messages([ChatMessage(role="user", content="hi", images=(image,))])
    )
    assert with_image - plain == 765  # 85 + 170 x 4 tiles, as OpenAI counts 1024 x 1024


# ---- text files


async def test_a_text_file_is_inlined_under_its_name(discord_bot, discord_fake, fake_llm, store):
    notes = "step 1: restart the VPN\nstep 2: ```run the check```\n"
    fake_llm.script(Reply(text="Restart it first."))
    attachment = discord_fake.attachment("notes.txt", notes.encode(), "text/plain; charset=utf-8")
    await ask_discord(discord_bot, discord_fake, "what comes first?", attachment)

    content = last_user_content(fake_llm)
    assert content.startswith("what comes first?\n\nAttachment notes.txt:\n````\nstep 1")
    assert content.endswith("run the check```\n````")  # a fence the file cannot close
    [record] = await recorded(store, _discord_thread(discord_fake))
    assert record["seen"] == "text"


async def test_a_long_text_file_is_cut_to_fit_and_the_user_is_told(
    slack_bot, slack, fake_llm, store
):
    log_lines = "".join(f"line {n}: all quiet on the network today\n" for n in range(3000))
    fake_llm.script(Reply(text="Nothing happened."))
    shown = await ask_slack(
        slack_bot,
        slack,
        "anything odd?",
        slack.share_file("vpn.log", log_lines.encode(), "text/plain"),
    )

    content = last_user_content(fake_llm)
    assert "line 0: all quiet" in content and "line 2999" not in content
    assert "[truncated to fit the context]" in content
    assert shown.startswith(
        "Note: vpn.log was too long to read whole: only its beginning was read."
    )
    assert shown.endswith("Nothing happened.")
    [record] = await recorded(store, SLACK_THREAD)
    assert record["seen"] == "text-truncated"
    assert TokenCounter("gpt-4o-mini").count(content) < 6000  # the version's context


async def test_a_file_it_cannot_read_is_named_and_not_downloaded(slack_bot, slack, fake_llm, store):
    fake_llm.script(Reply(text="I can only see the name."))
    shown = await ask_slack(
        slack_bot, slack, "summarise", slack.share_file("plan.pdf", b"%PDF-1.7", "application/pdf")
    )

    assert slack.downloads == []
    assert "[attachment: plan.pdf (application/pdf, 8 bytes), not shown to you" in (
        last_user_content(fake_llm)
    )
    assert shown.startswith("Note: plan.pdf was not read: the assistant reads images and text")
    [record] = await recorded(store, SLACK_THREAD)
    assert record["seen"] == "not-sent"


# ---- limits and refusals


async def test_an_oversized_image_is_refused_before_download_with_a_polite_note(
    slack_bot, slack, fake_llm, store
):
    big = slack.share_file("huge.png", picture(), "image/png", size=12 * 1024 * 1024)
    fake_llm.script(Reply(text="Answered without it."))
    shown = await ask_slack(slack_bot, slack, "look", big)

    assert slack.downloads == []
    assert fake_llm.images == []
    assert shown.startswith(
        "Note: huge.png was not read: it is 12 MB, larger than the 5 MB limit for files."
    )
    [record] = await recorded(store, SLACK_THREAD)
    assert record["seen"] == "not-sent" and "5 MB limit" in record["reason"]


async def test_a_file_larger_than_discord_said_is_cut_off_while_downloading(
    start_discord_bot, discord_fake, fake_llm
):
    bot = await start_discord_bot(engine={"attachments": AttachmentLimits(max_bytes=4096)})
    noise = Image.effect_noise((200, 200), 100)  # does not compress: well over 4 KB
    out = io.BytesIO()
    noise.save(out, format="PNG")
    lying = discord_fake.attachment("noise.png", out.getvalue(), "image/png", size=1000)
    fake_llm.script(Reply(text="No image, sorry."))
    shown = await ask_discord(bot, discord_fake, "see?", lying)

    assert fake_llm.images == []
    assert shown.startswith("Note: noise.png was not read: it is over the 4 KB limit for files.")


async def test_slacks_sign_in_page_instead_of_the_file_is_caught_and_named(
    slack_bot, slack, fake_llm, caplog
):
    slack.grant(TOKEN, manifest_scopes() - {"files:read"})
    fake_llm.script(Reply(text="I could not open it."))
    shown = await ask_slack(
        slack_bot, slack, "what is this?", slack.share_file("a.png", picture(), "image/png")
    )

    assert fake_llm.images == []
    assert shown.startswith(
        "Note: a.png was not read: Slack sent its sign-in page instead of the file (the app "
        "needs the files:read scope)."
    )
    assert any("add the files:read scope" in r.getMessage() for r in caplog.records)


async def test_a_slack_connect_file_is_looked_up_then_downloaded(slack_bot, slack, fake_llm):
    png = picture()
    fake_llm.script(Reply(text="Seen."))
    await ask_slack(
        slack_bot, slack, "shared?", slack.share_file("x.png", png, "image/png", connect=True)
    )

    assert slack.calls_to("files.info")
    assert fake_llm.images == [("image/png", png)]


# ---- a model that cannot see


def blind_prompt(prompts_dir: Path, model: str) -> None:
    write_prompt(prompts_dir, version=2, model=model)


async def test_a_model_that_cannot_see_says_so_plainly(
    start_slack_bot, slack, fake_llm, store, prompts_dir
):
    blind_prompt(prompts_dir, "gpt-3.5-turbo")  # no `vision` in the table: text only
    bot = await start_slack_bot()
    fake_llm.script(Reply(text="I cannot see images, but tell me what it shows."))
    shown = await ask_slack(
        bot, slack, "what is this?", slack.share_file("cat.png", picture(), "image/png")
    )

    assert fake_llm.images == []
    content = last_user_content(fake_llm)
    assert isinstance(content, str)
    assert "Say plainly that you cannot see images" in content
    assert shown.startswith(
        "Note: this model cannot see images, so cat.png could not be shown to it."
    )
    [record] = await recorded(store, SLACK_THREAD)
    assert record == {"name": "cat.png", "media_type": "image/png", "size": len(picture()),
                      "seen": "not-sent", "reason": "this model cannot see images"}  # fmt: skip


async def test_a_llama_cpp_server_without_its_projector_gets_the_same_plain_answer(
    start_discord_bot, discord_fake, fake_llm, store, prompts_dir
):
    blind_prompt(prompts_dir, "llava-v1.5-7b")  # named a vision model; served text-only
    fake_llm.image_input = "no-mmproj"
    bot = await start_discord_bot()
    fake_llm.script(Reply(text="I cannot see images."), Reply(text="Still no images here."))
    image = discord_fake.attachment("cat.png", picture(), "image/png")
    unread = discord_fake.attachment("plan.pdf", b"%PDF-1.7", "application/pdf")
    shown = await ask_discord(bot, discord_fake, "what is this?", image, unread)

    refused, answered = fake_llm.requests
    assert isinstance(refused["messages"][-1]["content"], list)  # sent, and refused with a 500
    assert "Say plainly that you cannot see images" in answered["messages"][-1]["content"]
    assert shown.startswith("Note: plan.pdf was not read")  # said before the model was asked
    assert shown.count("Note: plan.pdf was not read") == 1  # and not again on the retry
    assert "Note: this model cannot see images, so cat.png could not be shown" in shown
    assert shown.endswith("I cannot see images.")
    [record, _] = await recorded(store, _discord_thread(discord_fake))
    assert record["seen"] == "not-sent" and "refused images" in record["reason"]

    second = discord_fake.attachment("dog.png", picture(), "image/png")
    await ask_discord(bot, discord_fake, "and this one?", second)
    assert len(fake_llm.requests) == 3  # learnt: no image is sent to it again
    assert isinstance(last_user_content(fake_llm), str)


def _discord_thread(fake: FakeDiscord) -> ConversationRef:
    """The conversation of the first message with attachments the fake Discord sent."""
    asked = next(m for m in fake.user_messages.values() if m.get("attachments"))
    return ConversationRef(
        platform="discord", workspace=asked["guild_id"], channel=CHANNEL_ID, thread=asked["id"]
    )


async def test_the_bot_token_never_goes_to_a_file_stored_elsewhere(slack_bot, slack, fake_llm):
    """A remote file (a link to another service) has a URL off Slack: the token is not sent
    there, and the user hears the file was not fetched."""
    received: list[str] = []

    async def elsewhere(request: web.Request) -> web.Response:
        received.append(request.headers.get("Authorization", ""))
        return web.Response(body=b"hello", content_type="text/plain")

    outside = web.Application()
    outside.router.add_get("/{name}", elsewhere)
    runner = web.AppRunner(outside)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        remote = slack.share_file("notes.txt", b"hello", "text/plain")
        remote["url_private_download"] = remote["url_private"] = f"http://127.0.0.1:{port}/n"
        fake_llm.script(Reply(text="ok"))
        shown = await ask_slack(slack_bot, slack, "read this", remote)
    finally:
        await runner.cleanup()

    assert received == []
    assert "notes.txt was not read: it is not stored on Slack" in shown


async def test_a_blocked_users_files_are_never_downloaded(start_slack_bot, slack, fake_llm):
    """The access lists refuse the message: its files are not worth a download."""
    bot = await start_slack_bot(access=AccessPolicy(blocked_users=frozenset({"slack:U1"})))

    image = slack.share_file("a.png", picture(), "image/png")
    shown = await ask_slack(bot, slack, "read this", image)

    assert slack.downloads == [] and fake_llm.requests == []
    assert "don't have access" in shown
