"""The knowledge store on SQLite and on Postgres (ASSISTANT_TEST_POSTGRES_URL): collections,
passages and their vectors, bindings, and a search that never leaves the collections it is
given."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from assistant.prompts.bindings import Scope
from assistant.store import Store, knowledge_store, migrate
from assistant.store.database import SqliteDriver, create_engine, sqlite_driver
from assistant.store.knowledge_store import ChunkData, CollectionInfo, pack_vector, search_words
from assistant.turns import ConversationRef
from tests.conftest import POSTGRES_URL, migrated

DIMENSIONS = 8
HERE = ConversationRef(platform="slack", workspace="T1", channel="C1", thread="1.0")
CHANNEL = Scope.of("channel", HERE)
WORKSPACE = Scope.of("workspace", HERE)
GLOBAL = Scope(kind="global")
INJECTIONS = ['"', "NEAR(", "a OR", "x' --", "*", ":", "deploy:*", "-deploy", "AND NOT )"]


def vector(*leading: float) -> list[float]:
    """A small deterministic vector: the given leading values, then zeros."""
    return [*leading, *[0.0] * (DIMENSIONS - len(leading))]


def chunk(position: int, body: str, *, heading: str = "", along: list[float] | None = None):
    return ChunkData(
        position=position,
        heading=heading,
        anchor=f"part-{position}" if heading else "",
        text=body,
        token_count=len(body.split()),
        content_hash=hashlib.sha256(f"{heading}\n{body}".encode()).hexdigest(),
        embedding=pack_vector(along) if along is not None else None,
    )


async def add(db: Store, name: str, *, link: str | None = None) -> CollectionInfo:
    return await db.knowledge.add_collection(
        name, f"/docs/{name}", link=link, description="", origin="cli", actor="ops", surface="cli"
    )


async def put(db: Store, collection: CollectionInfo, path: str, chunks: list[ChunkData]) -> None:
    vectors = any(c.embedding is not None for c in chunks)
    await db.knowledge.replace_document(
        collection.id,
        path=path,
        title=path.rsplit("/", 1)[-1],
        content_hash=hashlib.sha256(repr(chunks).encode()).hexdigest(),
        chunks=chunks,
        model="embedder" if vectors else None,
        dimensions=DIMENSIONS if vectors else None,
    )


async def scalar(db: Store, sql: str) -> int:
    async with db.engine.connect() as connection:
        return int((await connection.execute(text(sql))).scalar_one())


async def needs_vectors(db: Store) -> None:
    why = await db.knowledge.vector_support()
    if why is not None:  # no pgvector: .ci/run builds it (scripts/install_pgvector.sh)
        pytest.skip(f"vectors unavailable here: {why}")


async def test_every_sqlite_connection_goes_through_the_one_chosen_library(store):
    """Two SQLite libraries on one file in one process corrupt it: the async engine and the
    work runner's thread must use the same one."""
    chosen = sqlite_driver()
    async with store.engine.connect() as connection:
        async_version = (await connection.execute(text("SELECT sqlite_version()"))).scalar()
    sync_version = await store._run(lambda c: c.execute(text("SELECT sqlite_version()")).scalar())
    assert async_version == sync_version == chosen.module.sqlite_version
    assert chosen.name in chosen.reason
    if chosen.vectors:
        async with store.engine.connect() as connection:
            assert (await connection.execute(text("SELECT vec_version()"))).scalar()


async def test_collections_are_added_updated_listed_and_removed_with_their_audit(db):
    handbook = await add(db, "handbook", link="https://wiki.example/handbook")
    again = await db.knowledge.add_collection(
        "handbook", "/moved", link=None, description="HR", origin="cli", actor="b", surface="cli"
    )
    await add(db, "api-docs")
    assert again.id == handbook.id and (again.path, again.link, again.description) == (
        "/moved",
        None,
        "HR",
    )
    assert [c.name for c in await db.knowledge.collections()] == ["api-docs", "handbook"]
    with pytest.raises(ValueError, match="not a collection name"):
        await add(db, "Bad Name!")

    await put(db, handbook, "a.md", [chunk(0, "payroll runs monthly", along=vector(1))])
    await db.knowledge.bind("handbook", CHANNEL, actor="ops", surface="slack")
    assert await db.knowledge.remove_collection("handbook", actor="ops", surface="cli")
    assert not await db.knowledge.remove_collection("handbook", actor="ops", surface="cli")

    assert await db.knowledge.collection("handbook") is None
    for table in ("knowledge_documents", "knowledge_chunks", "knowledge_bindings"):
        assert await scalar(db, f"SELECT count(*) FROM {table}") == 0
    changes = await db.knowledge.audit()
    assert [(c.action, c.collection) for c in changes] == [
        ("remove", "handbook"),
        ("use", "handbook"),
        ("add", "api-docs"),
        ("add", "handbook"),  # the second add only updated it: not audited
    ]
    assert changes[1].scope == CHANNEL and changes[0].scope is None


async def test_a_document_is_replaced_whole_and_its_hash_kept(db):
    handbook = await add(db, "handbook")
    await put(db, handbook, "hr/leave.md", [chunk(0, "old text"), chunk(1, "more old text")])
    await put(db, handbook, "hr/leave.md", [chunk(0, "new text")])
    await put(db, handbook, "ops/deploy.md", [chunk(0, "deploy on fridays")])

    hashes = await db.knowledge.document_hashes(handbook.id)
    assert set(hashes) == {"hr/leave.md", "ops/deploy.md"}
    info = await db.knowledge.collection("handbook")
    assert info is not None and (info.documents, info.chunks, info.embedded) == (2, 2, 0)
    found = await db.knowledge.search([handbook.id], text="old text", vector=None)
    assert [h.text for h in found.hits] == ["new text"]  # the old passages left the index

    assert await db.knowledge.remove_documents(handbook.id, ["hr/leave.md", "never.md"]) == 1
    assert set(await db.knowledge.document_hashes(handbook.id)) == {"ops/deploy.md"}
    await db.knowledge.finish_sync(handbook.id)
    synced = await db.knowledge.collection("handbook")
    assert synced is not None and synced.synced_at is not None and synced.chunks == 1


async def test_known_vectors_are_reused_for_the_same_model_even_after_a_move(db):
    handbook = await add(db, "handbook")
    moved = chunk(0, "a paragraph that moves", along=vector(1, 2))
    await put(db, handbook, "a.md", [moved, chunk(1, "stays", along=vector(3))])
    await put(db, handbook, "b.md", [chunk(0, "elsewhere", along=vector(4))])

    known = await db.knowledge.known_embeddings(
        handbook.id, [moved.content_hash, "unknown"], "embedder"
    )
    assert known == {moved.content_hash: pack_vector(vector(1, 2))}
    assert await db.knowledge.known_embeddings(handbook.id, [moved.content_hash], "other") == {}

    # A new model: the collection's other vectors go, and their documents count as changed.
    await db.knowledge.replace_document(
        handbook.id,
        path="b.md",
        title="b",
        content_hash="b2",
        chunks=[chunk(0, "elsewhere", along=vector(5))],
        model="new-model",
        dimensions=DIMENSIONS,
    )
    assert await db.knowledge.known_embeddings(handbook.id, [moved.content_hash], "embedder") == {}
    assert (await db.knowledge.document_hashes(handbook.id))["a.md"] == ""
    info = await db.knowledge.collection("handbook")
    assert info is not None and (info.embedding_model, info.embedded) == ("new-model", 1)


async def test_a_place_searches_its_channel_workspace_and_global_collections(db):
    for name in ("channel-only", "workspace-wide", "everywhere", "both", "elsewhere"):
        await add(db, name)
    bind = db.knowledge.bind
    assert await bind("channel-only", CHANNEL, actor="a", surface="slack")
    assert not await bind("channel-only", CHANNEL, actor="a", surface="slack")  # already
    await bind("workspace-wide", WORKSPACE, actor="a", surface="slack")
    await bind("everywhere", GLOBAL, actor="a", surface="cli")
    await bind("both", GLOBAL, actor="a", surface="cli")
    await bind("both", CHANNEL, actor="a", surface="slack")
    other_channel = Scope(kind="channel", platform="slack", workspace="T1", channel="C2")
    await bind("elsewhere", other_channel, actor="a", surface="slack")

    names = [c.name for c in await db.knowledge.bound_to(HERE)]
    assert names == ["both", "channel-only", "workspace-wide", "everywhere"]
    next_door = ConversationRef(platform="slack", workspace="T1", channel="C2", thread="")
    assert [c.name for c in await db.knowledge.bound_to(next_door)] == [
        "elsewhere",
        "workspace-wide",
        "both",
        "everywhere",
    ]
    other_team = ConversationRef(platform="slack", workspace="T9", channel="C1", thread="")
    assert [c.name for c in await db.knowledge.bound_to(other_team)] == ["both", "everywhere"]

    assert await db.knowledge.drop("both", CHANNEL, actor="a", surface="slack")
    assert not await db.knowledge.drop("both", CHANNEL, actor="a", surface="slack")
    assert [c.name for c in await db.knowledge.bound_to(HERE)][-2:] == ["both", "everywhere"]
    assert (await db.knowledge.bindings("both")) == [("both", GLOBAL)]
    with pytest.raises(LookupError):
        await bind("missing", GLOBAL, actor="a", surface="cli")


async def test_a_search_never_returns_a_collection_it_was_not_given(db):
    """The unbound collection holds the best match on both sides; it must never come back."""
    allowed, secret = await add(db, "allowed"), await add(db, "secret")
    await put(db, allowed, "a.md", [chunk(0, "the release checklist", along=vector(0, 1))])
    await put(
        db,
        secret,
        "s.md",
        [chunk(0, "salary salary salary bands", heading="Salary", along=vector(1))],
    )
    searches = [
        {"text": "salary bands", "vector": None},  # keywords
        {"text": "the of", "vector": vector(1)},  # vectors (no usable words)
        {"text": "salary bands", "vector": vector(1)},  # both
    ]
    for search in searches:
        outcome = await db.knowledge.search([allowed.id], limit=10, **search)
        assert {h.collection for h in outcome.hits} <= {"allowed"}, search
    both = await db.knowledge.search([allowed.id, secret.id], text="salary", vector=vector(1))
    assert both.hits[0].collection == "secret"  # it is the best match when it may be seen
    assert (await db.knowledge.search([], text="salary", vector=vector(1))).hits == []


async def test_a_passage_both_sides_find_comes_first(db):
    await needs_vectors(db)
    handbook = await add(db, "handbook", link="https://wiki.example/hb/")
    await put(
        db,
        handbook,
        "ops/deploy guide.md",
        [
            chunk(0, "deploy deploy deploy the rollback script", along=vector(0, 0, 1)),
            chunk(1, "how to deploy safely", heading="Safety", along=vector(1, 0.2)),
            chunk(2, "a passage about nothing in words", along=vector(1)),
            chunk(3, "lunch menu", along=vector(0, 0, 0, 1)),
        ],
    )
    outcome = await db.knowledge.search(
        [handbook.id], text="deploy", vector=vector(1), limit=3, candidates=2
    )
    assert outcome.mode == "hybrid" and outcome.note is None
    first = outcome.hits[0]
    assert (first.text, first.keyword_rank, first.vector_rank) == ("how to deploy safely", 2, 2)
    assert first.link == "https://wiki.example/hb/ops/deploy%20guide.md#part-1"
    assert {(h.keyword_rank is None, h.vector_rank is None) for h in outcome.hits[1:]} == {
        (True, False),
        (False, True),
    }
    assert outcome.hits[0].score > outcome.hits[1].score


async def test_keyword_syntax_in_a_question_is_read_as_words(db):
    handbook = await add(db, "handbook")
    await put(db, handbook, "ops.md", [chunk(0, "deploy with the near-zero downtime script")])
    for injected in INJECTIONS:
        outcome = await db.knowledge.search([handbook.id], text=injected, vector=None)
        assert outcome.mode == "keywords"
        found = await db.knowledge.search([handbook.id], text=f"deploy {injected}", vector=None)
        assert [h.text for h in found.hits] == ["deploy with the near-zero downtime script"]
    only_stop_words = await db.knowledge.search([handbook.id], text="the? of, AND!", vector=None)
    assert only_stop_words.hits == [] and only_stop_words.note is None
    assert search_words('What is "NEAR(deploy)" -x: y*') == ["near", "deploy", "x", "y"]


async def test_vectors_go_with_their_passages(db):
    await needs_vectors(db)
    handbook = await add(db, "handbook")
    rows = f"SELECT count(*) FROM knowledge_vec_{DIMENSIONS}"
    await put(
        db, handbook, "a.md", [chunk(i, f"passage {i}", along=vector(i + 1)) for i in range(3)]
    )
    await put(db, handbook, "b.md", [chunk(0, "other", along=vector(0, 1))])
    assert await scalar(db, rows) == 4
    await put(db, handbook, "a.md", [chunk(0, "shorter now", along=vector(1))])
    assert await scalar(db, rows) == 2
    orphans = (
        f"SELECT count(*) FROM knowledge_vec_{DIMENSIONS} AS v "
        f"LEFT JOIN knowledge_chunks AS c ON c.id = v.chunk_id WHERE c.id IS NULL"
    )
    assert await scalar(db, orphans) == 0
    assert await db.knowledge.rebuild_vectors(handbook.id) == 2
    assert await scalar(db, rows) == 2
    await db.knowledge.remove_documents(handbook.id, ["b.md"])
    assert await scalar(db, rows) == 1
    await db.knowledge.remove_collection("handbook", actor="ops", surface="cli")
    assert await scalar(db, rows) == 0


async def test_vectors_of_another_size_leave_that_collection_on_keywords(db):
    await needs_vectors(db)
    handbook = await add(db, "handbook")
    await put(db, handbook, "a.md", [chunk(0, "deploy steps", along=vector(1))])
    outcome = await db.knowledge.search([handbook.id], text="deploy", vector=[1.0, 0.0, 0.0])
    assert outcome.mode == "keywords" and [h.text for h in outcome.hits] == ["deploy steps"]
    assert outcome.note is not None and "sync it again" in outcome.note


async def test_the_knowledge_migration_round_trip(database_url):
    """0009 up, a vector table made at run time, down to 0008 (everything goes, the vector
    and full-text tables too) and up again; the models and migrations agree."""
    store = Store.connect(database_url)
    try:
        await migrate.upgrade(store.engine, "0008")
        assert "knowledge_chunks" not in await tables(store)
        await migrate.upgrade(store.engine)  # 0009, and what came after it
        await migrate.check(store.engine)
        handbook = await add(store, "handbook")
        await put(store, handbook, "a.md", [chunk(0, "deploy", along=vector(1))])
        vectors = await store.knowledge.vector_support() is None
        assert (f"knowledge_vec_{DIMENSIONS}" in await tables(store)) == vectors
        await migrate.check(store.engine)  # the vector table is not the models' business

        await migrate.downgrade(store.engine, "0008")
        assert not {t for t in await tables(store) if "knowledge" in t or "source" in t}
        await migrate.upgrade(store.engine)
        assert await store.knowledge.collections() == []
    finally:
        await store.close()


async def tables(store: Store) -> set[str]:
    async with store.engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


async def test_sqlite_without_extension_loading_searches_keywords_then_vectors_later(sqlite_url):
    """A Python that cannot load sqlite-vec keeps the vectors with the passages; a later
    process that can indexes them, without asking a model again."""
    if not sqlite_driver().vectors:
        pytest.skip("no SQLite library here loads sqlite-vec")
    plain = SqliteDriver(
        name="sqlite3", module=sqlite3, vectors=False, reason="this Python cannot load sqlite-vec"
    )
    store = Store(create_engine(sqlite_url, sqlite=plain))
    try:
        await migrate.upgrade(store.engine)
        assert await store.knowledge.vector_support() == "this Python cannot load sqlite-vec"
        handbook = await add(store, "handbook")
        await put(store, handbook, "a.md", [chunk(0, "deploy", along=vector(1))])
        outcome = await store.knowledge.search([handbook.id], text="deploy", vector=vector(1))
        assert (outcome.mode, outcome.note) == ("keywords", "this Python cannot load sqlite-vec")
        assert len(outcome.hits) == 1
    finally:
        await store.close()  # every connection of the one library closed before the other

    async with migrated(sqlite_url) as later:
        outcome = await later.knowledge.search([handbook.id], text="", vector=vector(1))
        assert outcome.mode == "vectors" and [h.text for h in outcome.hits] == ["deploy"]


@pytest.fixture
async def postgres_without_pgvector() -> AsyncIterator[str]:
    """A database whose user may not create extensions (pgvector is not a trusted one)."""
    if not POSTGRES_URL:
        pytest.skip("set ASSISTANT_TEST_POSTGRES_URL to run the store tests on Postgres")
    suffix = uuid.uuid4().hex[:12]
    role, database, password = f"knowledge_{suffix}", f"knowledge_{suffix}", uuid.uuid4().hex
    admin = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        await admin.execute(f'CREATE DATABASE "{database}" OWNER {role}')
        url = make_url(POSTGRES_URL).set(username=role, password=password, database=database)
        yield url.render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


@pytest.mark.postgres
async def test_postgres_without_pgvector_searches_keywords_and_says_why(
    postgres_without_pgvector,
):
    async with migrated(postgres_without_pgvector) as store:
        why = await store.knowledge.vector_support()
        assert why is not None and "CREATE EXTENSION vector" in why and "keywords only" in why
        handbook = await add(store, "handbook")
        await put(store, handbook, "a.md", [chunk(0, "deploy on fridays", along=vector(1))])
        outcome = await store.knowledge.search([handbook.id], text="deploy", vector=vector(1))
        assert (outcome.mode, outcome.note) == ("keywords", why)
        assert [h.text for h in outcome.hits] == ["deploy on fridays"]
        info = await store.knowledge.collection("handbook")
        assert info is not None and info.embedded == 1  # kept with the passage for later


async def test_common_words_give_way_to_rare_ones_and_bound_the_ranking(db, monkeypatch):
    """A word most passages hold says little: the rare word ranks; a question of only common
    words ranks the passages holding all of them first (here "common" is 3 passages)."""
    monkeypatch.setattr(knowledge_store, "_COMMON", 3)
    monkeypatch.setattr(knowledge_store, "_RANKED", 6)
    handbook = await add(db, "handbook")
    bodies = ["deploy service", "deploy service", "deploy api", "service api", "deploy rollback"]
    await put(db, handbook, "a.md", [chunk(i, body) for i, body in enumerate(bodies)])

    rare = await db.knowledge.search([handbook.id], text="deploy rollback", vector=None)
    assert [h.text for h in rare.hits] == ["deploy rollback"]  # "deploy" is in 4 of them
    both = await db.knowledge.search([handbook.id], text="deploy service", vector=None)
    assert [h.text for h in both.hits] == ["deploy service", "deploy service"]
