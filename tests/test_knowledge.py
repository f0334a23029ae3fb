"""Team knowledge end to end: a folder synced into the store (on SQLite and Postgres), searched
by the `search_knowledge` tool in a real turn against the fake model server, its sources shown
and stored with the answer, and each place seeing only the collections bound to it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assistant.admin.commands import AdminCommands
from assistant.admin.grammar import CommandContext
from assistant.builtin_tools import builtin_registry
from assistant.engine import Assistant
from assistant.knowledge.embeddings import Embedder
from assistant.knowledge.service import Knowledge
from assistant.llm import OpenAIChatModel
from assistant.pricing import PriceTable
from assistant.prompts.bindings import Scope
from assistant.store import Store
from assistant.store.tables import LlmCall
from assistant.testing import FakeLlm
from assistant.turns import Actor, Completed, ConversationRef
from tests.conftest import build_assistant, collect, inbound, write_prompt

VPN = """# VPN

## Rotating the keys

Keys are rotated every quarter. To rotate the VPN keys, run `vpnctl rotate --all` from the
bastion host, then restart the gateway.

## Who to call

The network team is on call for VPN outages.
"""

HOLIDAYS = """# Holidays

Everyone gets 25 days of paid holiday a year. Ask your manager before booking.
"""

SECRET = """# Acquisition plans

The secret project Bluebird will rotate the VPN keys of the company we buy.
"""

CHANNEL_A = ConversationRef(platform="test", workspace="W1", channel="C1", thread="T1")
CHANNEL_B = ConversationRef(platform="test", workspace="W1", channel="C2", thread="T9")
ADMIN = Actor(platform="test", user_id="A1", display_name="Ada")


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "handbook"
    folder.mkdir()
    (folder / "vpn.md").write_text(VPN, encoding="utf-8")
    (folder / "holidays.md").write_text(HOLIDAYS, encoding="utf-8")
    return folder


@pytest.fixture
def secret_docs(tmp_path: Path) -> Path:
    folder = tmp_path / "board"
    folder.mkdir()
    (folder / "plans.md").write_text(SECRET, encoding="utf-8")
    return folder


@pytest.fixture
def knowledge(db: Store, model: OpenAIChatModel) -> Knowledge:
    embedder = Embedder(model.client, model="fake-embedding", prices=PriceTable.load())
    return Knowledge(db, embedder)


async def add(knowledge: Knowledge, name: str, folder: Path, *places: Scope) -> None:
    store = knowledge.store
    info = await store.add_collection(
        name,
        str(folder),
        link=f"https://wiki.example.com/{name}/",
        description="",
        origin="cli",
        actor="cli:test",
        surface="cli",
    )
    for place in places:
        await store.bind(name, place, actor="cli:test", surface="cli")
    await knowledge.sync(info)


async def knowing_assistant(
    db: Store, model: OpenAIChatModel, knowledge: Knowledge, tmp_path: Path
) -> Assistant:
    prompts = tmp_path / "prompts"
    write_prompt(prompts, tools=["search_knowledge"], examples=[])
    return await build_assistant(db, model, prompts, builtin_registry(knowledge.search_knowledge))


async def ask(assistant: Assistant, text: str, ref: ConversationRef = CHANNEL_A) -> Completed:
    events = await collect(assistant.respond(inbound(text, ref=ref)))
    completed = events[-1]
    assert isinstance(completed, Completed), events
    return completed


def sent_to_model(fake: FakeLlm) -> str:
    return json.dumps([r for r in fake.requests if "messages" in r])


async def test_an_answer_cites_the_document_it_came_from_and_keeps_its_source(
    db: Store, model: OpenAIChatModel, knowledge: Knowledge, docs: Path, tmp_path: Path
) -> None:
    await add(knowledge, "handbook", docs, Scope(kind="global"))
    assistant = await knowing_assistant(db, model, knowledge, tmp_path)

    completed = await ask(assistant, "How do I rotate the VPN keys?")

    assert "vpnctl rotate --all" in completed.text
    assert "[1]" in completed.text
    [source] = completed.sources
    assert (source.number, source.collection, source.document) == (1, "handbook", "vpn.md")
    assert source.heading == "VPN > Rotating the keys"
    assert source.link is not None and source.link.startswith(
        "https://wiki.example.com/handbook/vpn.md"
    )
    assert await db.sources_of(completed.message_id) == [source]


async def test_the_query_embedding_is_accounted_with_the_turn(
    db: Store, model: OpenAIChatModel, knowledge: Knowledge, docs: Path, tmp_path: Path
) -> None:
    await add(knowledge, "handbook", docs, Scope(kind="global"))
    assistant = await knowing_assistant(db, model, knowledge, tmp_path)

    completed = await ask(assistant, "How many days of holiday do we get?")

    assert "25 days" in completed.text
    conversation = await db.find_conversation(CHANNEL_A)
    assert conversation is not None and conversation.id is not None
    calls: list[LlmCall] = await db.llm_calls(conversation.id)
    purposes = [c.purpose for c in calls]
    assert purposes.count("embedding") == 1 and purposes.count("reply") == 2
    embedding = next(c for c in calls if c.purpose == "embedding")
    assert embedding.model == "fake-embedding" and embedding.cost_usd is not None


async def test_a_document_bound_to_one_channel_never_reaches_another(
    db: Store,
    model: OpenAIChatModel,
    fake_llm: FakeLlm,
    knowledge: Knowledge,
    docs: Path,
    secret_docs: Path,
    tmp_path: Path,
) -> None:
    await add(knowledge, "handbook", docs, Scope(kind="global"))
    await add(knowledge, "board", secret_docs, Scope.of("channel", CHANNEL_B))
    assistant = await knowing_assistant(db, model, knowledge, tmp_path)

    elsewhere = await ask(assistant, "Which project will rotate the VPN keys?", CHANNEL_A)
    assert {s.collection for s in elsewhere.sources} == {"handbook"}
    assert "Bluebird" not in sent_to_model(fake_llm)

    there = await ask(assistant, "Which project will rotate the VPN keys?", CHANNEL_B)
    assert "board" in {s.collection for s in there.sources}
    assert "Bluebird" in there.text


async def test_resync_embeds_only_the_passages_that_changed(
    db: Store, fake_llm: FakeLlm, knowledge: Knowledge, docs: Path
) -> None:
    store = knowledge.store
    info = await store.add_collection(
        "handbook", str(docs), link=None, description="", origin="cli", actor="t", surface="cli"
    )
    first = await knowledge.sync(info)
    embedded_first = sum(len(r) for r in fake_llm.embedding_requests)
    assert first.embedded == embedded_first > 2 and first.reused == 0

    again = await knowledge.sync(info)
    assert (again.changed, again.embedded) == (0, 0)
    assert sum(len(r) for r in fake_llm.embedding_requests) == embedded_first

    edited = VPN.replace("every quarter", "every month")
    (docs / "vpn.md").write_text(edited, encoding="utf-8")
    (docs / "holidays.md").unlink()
    third = await knowledge.sync(info)

    assert (third.changed, third.removed, third.embedded) == (1, 1, 1)
    [texts] = fake_llm.embedding_requests[-1:]
    assert len(texts) == 1 and "every month" in texts[0]
    collection = await store.collection("handbook")
    assert collection is not None and collection.documents == 1


async def test_without_embeddings_the_search_runs_on_keywords(
    db: Store, model: OpenAIChatModel, docs: Path, tmp_path: Path
) -> None:
    knowledge = Knowledge(db, None)
    await add(knowledge, "handbook", docs, Scope(kind="global"))
    assistant = await knowing_assistant(db, model, knowledge, tmp_path)

    completed = await ask(assistant, "How do I rotate the VPN keys?")

    assert [s.document for s in completed.sources] == ["vpn.md"]
    collection = await knowledge.store.collection("handbook")
    assert collection is not None and collection.embedding_model is None


async def test_knowledge_commands_are_read_by_all_changed_by_admins_and_audited(
    db: Store, knowledge: Knowledge, docs: Path, model: OpenAIChatModel, tmp_path: Path
) -> None:
    await add(knowledge, "handbook", docs)
    assistant = await knowing_assistant(db, model, knowledge, tmp_path)
    commands = AdminCommands(
        prompts=db.prompts,
        versions=assistant.versions,
        admins=["test:A1"],
        knowledge=knowledge,
    )
    anyone = CommandContext(
        actor=Actor(platform="test", user_id="U2"), surface="test", ref=CHANNEL_A
    )
    admin = CommandContext(actor=ADMIN, surface="test", ref=CHANNEL_A)

    nothing = await commands.run("knowledge search rotate keys", anyone)
    assert nothing.ok and "No knowledge collection is searched here" in nothing.text

    refused = await commands.run("knowledge use handbook", anyone)
    assert not refused.ok and "Only admins" in refused.text

    used = await commands.run("knowledge use handbook", admin)
    assert used.ok and "now searched in channel test/W1/C1" in used.text
    found = await commands.run("knowledge search rotate the VPN keys", anyone)
    assert found.ok and "1. VPN > Rotating the keys (handbook: vpn.md)" in found.text

    elsewhere = CommandContext(actor=ADMIN, surface="test", ref=CHANNEL_B)
    assert "No knowledge collection" in (await commands.run("knowledge search vpn", elsewhere)).text

    listed = await commands.run("knowledge list", anyone)
    assert "handbook: 2 documents" in listed.text and "(searched here)" in listed.text

    dropped = await commands.run("knowledge drop handbook", admin)
    assert dropped.ok and "no longer searched" in dropped.text
    unknown = await commands.run("knowledge use handbok", admin)
    assert not unknown.ok and "Did you mean handbook?" in unknown.text
    usage = await commands.run("knowledge frob", admin)
    assert not usage.ok and "knowledge use NAME" in usage.text

    audit = await knowledge.store.audit()
    assert [(a.action, a.actor) for a in audit][:2] == [("drop", "test:A1"), ("use", "test:A1")]


async def test_a_file_that_cannot_be_read_keeps_what_was_indexed_and_is_reported(
    db: Store, knowledge: Knowledge, docs: Path
) -> None:
    store = knowledge.store
    info = await store.add_collection(
        "handbook", str(docs), link=None, description="", origin="cli", actor="t", surface="cli"
    )
    await knowledge.sync(info)
    (docs / "vpn.md").write_bytes(b"# VPN\n\nKeys \xff\xfe rotate.\n")

    report = await knowledge.sync(info)

    assert report.removed == 0 and len(report.problems) == 1
    assert "vpn.md" in report.problems[0] and "UTF-8" in report.problems[0]
    found = await knowledge.search("rotate VPN keys", collections=[info], account=lambda _: None)
    assert "vpn.md" in {hit.document for hit in found.hits}
