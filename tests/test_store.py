"""The store and its migrations, on SQLite and on Postgres (ASSISTANT_TEST_POSTGRES_URL)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import inspect, text

from assistant.prompts.bindings import Binding, Scope
from assistant.records import CallRecord, NewMessage
from assistant.store import PromptVersionConflict, Store, migrate
from assistant.store.tables import Message, PromptVersionRow
from assistant.turns import ConversationRef

REF = ConversationRef(platform="slack", workspace="T1", channel="C1", thread="1700000000.000100")
TABLES = {
    "conversations",
    "messages",
    "prompt_versions",
    "llm_calls",
    "processed_events",
    "prompt_bindings",
    "prompt_audit",
    "prompt_assignments",
    "response_cache",
    "feedback",
}


async def table_names(store: Store) -> set[str]:
    async with store.engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


async def test_migrations_build_the_schema_from_an_empty_database(database_url):
    store = Store.connect(database_url)
    try:
        assert await table_names(store) == set()
        await migrate.upgrade(store.engine)
        assert await table_names(store) >= TABLES | {"alembic_version"}
        await migrate.upgrade(store.engine)  # a second start changes nothing
        await migrate.check(store.engine)  # the models and the migrations agree
        await migrate.downgrade(store.engine, "base")
        assert await table_names(store) == {"alembic_version"}
        await migrate.upgrade(store.engine)
        assert await table_names(store) >= TABLES
    finally:
        await store.close()


async def test_upgrading_a_database_that_holds_data_keeps_it(database_url):
    store = Store.connect(database_url)
    try:
        await migrate.upgrade(store.engine, "0001")
        async with store.engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO llm_calls (purpose, model, prompt_tokens, completion_tokens, "
                    "cached_tokens, total_ms, status, created_at) "
                    "VALUES ('reply', 'gpt-4o-mini', 10, 5, 0, 12.5, 'ok', CURRENT_TIMESTAMP)"
                )
            )
        await migrate.upgrade(store.engine)
        async with store.engine.connect() as connection:
            row = (await connection.execute(text("SELECT model, cache_hit FROM llm_calls"))).one()
        assert row.model == "gpt-4o-mini" and not row.cache_hit
    finally:
        await store.close()


async def llm_call_columns(store: Store) -> set[str]:
    async with store.engine.connect() as connection:
        columns = await connection.run_sync(lambda sync: inspect(sync).get_columns("llm_calls"))
    return {column["name"] for column in columns}


async def test_the_token_source_migration_round_trip_keeps_the_calls(database_url):
    """0007 adds where each call's tokens came from: calls stored before it read as the
    server's, with no reasoning tokens; going back drops the columns and keeps the calls."""
    insert = (
        "INSERT INTO llm_calls (purpose, model, prompt_tokens, completion_tokens, "
        "cached_tokens, total_ms, status, created_at, cache_hit) "
        "VALUES ('reply', :model, 10, 5, 0, 12.5, 'ok', CURRENT_TIMESTAMP, false)"
    )
    read = text("SELECT model, token_source, reasoning_tokens FROM llm_calls ORDER BY id")
    store = Store.connect(database_url)
    try:
        await migrate.upgrade(store.engine, "0006")
        async with store.engine.begin() as connection:
            await connection.execute(text(insert), {"model": "before"})
        await migrate.upgrade(store.engine, "0007")
        async with store.engine.begin() as connection:
            await connection.execute(text(insert), {"model": "after"})  # the defaults apply
            await connection.execute(
                text(
                    "UPDATE llm_calls SET token_source = 'estimate:o200k_base', "
                    "reasoning_tokens = 3 WHERE model = 'after'"
                )
            )
            rows = (await connection.execute(read)).all()
        assert [tuple(row) for row in rows] == [
            ("before", "server", 0),
            ("after", "estimate:o200k_base", 3),
        ]
        await migrate.upgrade(store.engine)  # later revisions too: check compares with head
        await migrate.check(store.engine)

        await migrate.downgrade(store.engine, "0006")
        assert not {"token_source", "reasoning_tokens"} & await llm_call_columns(store)
        async with store.engine.connect() as connection:
            models = (await connection.execute(text("SELECT model FROM llm_calls"))).scalars()
            assert sorted(models) == ["after", "before"]

        await migrate.upgrade(store.engine)
        assert {"token_source", "reasoning_tokens"} <= await llm_call_columns(store)
        async with store.engine.connect() as connection:
            rows = (await connection.execute(read)).all()
        assert [tuple(row) for row in rows] == [("before", "server", 0), ("after", "server", 0)]
    finally:
        await store.close()


REPORT_INDEXES = {
    "messages": {"ix_messages_created_at"},
    "llm_calls": {"ix_llm_calls_model_created_at", "ix_llm_calls_version_usage"},
    "feedback": {"ix_feedback_updated_at"},
}


async def report_indexes(store: Store) -> set[str]:
    def read(sync: Any) -> set[str]:
        found = inspect(sync)
        return {
            index["name"] or "" for table in REPORT_INDEXES for index in found.get_indexes(table)
        }

    async with store.engine.connect() as connection:
        return await connection.run_sync(read) & set().union(*REPORT_INDEXES.values())


async def test_the_report_indexes_migration_round_trip_keeps_the_calls(database_url):
    """0008 adds only indexes (what a report reads at a million calls): up, back down and up
    again, the calls stay and the models and migrations agree."""
    insert = text(
        "INSERT INTO llm_calls (purpose, model, prompt_tokens, completion_tokens, "
        "cached_tokens, total_ms, status, created_at, cache_hit) "
        "VALUES ('reply', :model, 10, 5, 0, 12.5, 'ok', CURRENT_TIMESTAMP, false)"
    )
    models = text("SELECT model FROM llm_calls ORDER BY id")
    store = Store.connect(database_url)
    try:
        await migrate.upgrade(store.engine, "0007")
        async with store.engine.begin() as connection:
            await connection.execute(insert, {"model": "before"})
        assert await report_indexes(store) == set()
        await migrate.upgrade(store.engine, "0008")
        assert await report_indexes(store) == set().union(*REPORT_INDEXES.values())

        await migrate.downgrade(store.engine, "0007")
        assert await report_indexes(store) == set()
        await migrate.upgrade(store.engine)
        await migrate.check(store.engine)  # the models hold what the migrations made
        async with store.engine.begin() as connection:
            await connection.execute(insert, {"model": "after"})
            assert list((await connection.execute(models)).scalars()) == ["before", "after"]
        assert await report_indexes(store) == set().union(*REPORT_INDEXES.values())
    finally:
        await store.close()


async def test_a_call_record_is_stored_with_its_token_source_and_reasoning(db):
    conversation_id = await db.conversation_id(REF)
    calls = [
        CallRecord(purpose="reply", model="m", total_ms=1.0, status="ok"),
        CallRecord(
            purpose="reply",
            model="m",
            total_ms=1.0,
            status="ok",
            completion_tokens=800,
            reasoning_tokens=500,
            token_source="estimate:cl100k_base",
        ),
    ]
    await db.finish_turn(conversation_id, prompt_version_id=None, reply=None, calls=calls)

    stored = await db.llm_calls(conversation_id)
    assert [(c.token_source, c.reasoning_tokens) for c in stored] == [
        ("server", 0),
        ("estimate:cl100k_base", 500),
    ]


async def test_processes_starting_together_migrate_once(database_url):
    stores = [Store.connect(database_url) for _ in range(3)]
    try:
        async with asyncio.timeout(30):  # without the migration lock they deadlock on DDL
            await asyncio.gather(*(migrate.upgrade(store.engine) for store in stores))
        assert await table_names(stores[0]) >= TABLES
    finally:
        for store in stores:
            await store.close()


async def test_sqlite_runs_in_wal_mode(sqlite_url):
    store = Store.connect(sqlite_url)
    try:
        async with store.engine.connect() as connection:
            mode = (await connection.execute(text("PRAGMA journal_mode"))).scalar()
            timeout = (await connection.execute(text("PRAGMA busy_timeout"))).scalar()
        assert mode == "wal" and timeout == 5000
    finally:
        await store.close()


async def test_one_conversation_per_place_even_under_concurrent_first_messages(db):
    rows = await asyncio.gather(*(db.conversation(REF) for _ in range(8)))
    assert len({row.id for row in rows}) == 1
    other = await db.conversation(ConversationRef(platform="slack", workspace="T1", channel="C1"))
    assert other.id != rows[0].id


async def test_user_message_is_stored_with_its_token_count_and_time(db):
    conversation_id = await db.conversation_id(REF)
    message = NewMessage(role="user", author_id="slack:U1", text="hi", token_count=4)
    message_id, history = await db.begin_turn(
        conversation_id, message, prompt_version_id=None, token_limit=1000
    )
    [stored] = await db.messages(history.state.id)
    assert stored.id == message_id
    assert [entry.text for entry in history.newest] == ["hi"] and history.complete
    assert (stored.text, stored.token_count, stored.author_id) == ("hi", 4, "slack:U1")
    assert stored.created_at.tzinfo is not None


async def test_newest_messages_read_only_what_the_budget_needs(db):
    conversation = await db.conversation(REF)
    for index in range(150):
        await db.add_message(
            Message(
                conversation_id=conversation.id,
                role="user",
                text=f"m{index}",
                token_count=10,
                status="incomplete" if index == 149 else "ok",
            )
        )
    newest = await db.newest_messages(conversation.id, after_id=0, token_limit=95)
    assert [m.text for m in newest] == [f"m{i}" for i in range(148, 138, -1)]
    everything = await db.newest_messages(conversation.id, after_id=0, token_limit=10_000)
    assert len(everything) == 149  # the incomplete one is not history
    after = await db.newest_messages(conversation.id, after_id=everything[5].id, token_limit=10_000)
    assert [m.text for m in after] == [m.text for m in everything[:5]]


async def test_an_event_is_claimed_once(db):
    keep = timedelta(minutes=10)
    assert await db.claim_event(["event:E1", "msg:C1:1.0"], keep=keep)
    assert not await db.claim_event(["event:E1"], keep=keep)
    assert not await db.claim_event(["event:E2", "msg:C1:1.0"], keep=keep)  # same message
    assert await db.claim_event(["event:E3", "msg:C1:2.0"], keep=keep)
    results = await asyncio.gather(*(db.claim_event(["event:race"], keep=keep) for _ in range(6)))
    assert results.count(True) == 1


async def test_expired_event_keys_are_pruned(db, database_url):
    assert await db.claim_event(["event:old"], keep=timedelta(minutes=10))
    later = Store.connect(database_url)  # pruning runs once a minute per process: a new one
    try:
        assert await later.claim_event(["event:other"], keep=timedelta(0))  # prunes the rest
        assert await later.claim_event(["event:old"], keep=timedelta(minutes=10))
    finally:
        await later.close()


async def test_a_vote_is_one_per_person_and_answer_and_carries_the_version(db):
    version = await db.prompts.save_version(
        PromptVersionRow(name="p", version=1, content_hash="h", source_file="p/1.yaml", body="b")
    )
    conversation_id = await db.conversation_id(REF)
    reply_id = await db.finish_turn(
        conversation_id,
        prompt_version_id=version.id,
        reply=NewMessage(role="assistant", text="answer", token_count=1),
        calls=[],
    )
    assert reply_id is not None
    votes = [db.votes.record(reply_id, "slack:U1", vote) for vote in (1, -1, 1, -1)]
    assert all(await asyncio.gather(*votes))  # concurrent first votes: one row, no error
    assert await db.votes.record(reply_id, "slack:U2", 1)
    rows = await db.votes.of(reply_id)
    assert sorted(r.user_id for r in rows) == ["slack:U1", "slack:U2"]
    assert {r.prompt_version_id for r in rows} == {version.id}
    question_id, _ = await db.begin_turn(
        conversation_id,
        NewMessage(role="user", text="q", token_count=1),
        prompt_version_id=version.id,
        token_limit=10,
    )
    assert not await db.votes.record(question_id, "slack:U1", 1)  # not an answer
    assert not await db.votes.record(10**6, "slack:U1", 1)


async def test_a_released_prompt_version_cannot_change(db):
    row = dict(name="helpdesk", version=3, source_file="prompts/helpdesk/3.yaml", body="a")
    first = await db.prompts.save_version(PromptVersionRow(content_hash="h1", **row))
    again = await db.prompts.save_version(PromptVersionRow(content_hash="h1", **row))
    assert first.id == again.id
    with pytest.raises(PromptVersionConflict, match=r"prompts/helpdesk/3\.yaml.*new version"):
        await db.prompts.save_version(PromptVersionRow(content_hash="h2", **row))
    assert [v.content_hash for v in await db.prompts.versions("helpdesk")] == ["h1"]


async def test_a_reply_and_its_calls_are_stored_together(db):
    conversation_id = await db.conversation_id(REF)
    reply = NewMessage(role="assistant", text="done", token_count=4)
    calls = [
        CallRecord(purpose=p, model="m", total_ms=1.0, status="ok") for p in ("summary", "reply")
    ]
    reply_id = await db.finish_turn(
        conversation_id, prompt_version_id=None, reply=reply, calls=calls
    )
    stored = await db.llm_calls(conversation_id)
    assert [c.purpose for c in stored] == ["summary", "reply"]
    assert {c.message_id for c in stored} == {reply_id}
    assert {c.conversation_id for c in stored} == {conversation_id}


async def test_oldest_messages_start_right_after_the_pointer(db):
    conversation_id = await db.conversation_id(REF)
    for index in range(10):
        await db.add_message(
            Message(conversation_id=conversation_id, role="user", text=f"m{index}", token_count=10)
        )
    everything = await db.newest_messages(conversation_id, after_id=0, token_limit=1000)
    pointer = everything[-3].id  # m2
    oldest = await db.oldest_messages(conversation_id, after_id=pointer, token_limit=25)
    assert [m.text for m in oldest] == ["m3", "m4"]


async def test_bindings_that_apply_to_a_place_come_most_specific_first(db):
    here = ConversationRef(platform="slack", workspace="T1", channel="C1", thread="x")
    for scope, version in (
        (Scope(kind="global"), 1),
        (Scope.of("workspace", here), 2),
        (Scope.of("channel", here), 3),
        (Scope(kind="channel", platform="slack", workspace="T1", channel="C2"), 4),
    ):
        binding = Binding(prompt="helpdesk", version=version)
        await db.prompts.change_binding(scope, binding, actor="t:1", surface="test", action="use")
    found = await db.prompts.bindings_for(here)
    assert [(scope.kind, binding.version) for scope, binding in found] == [
        ("channel", 3),
        ("workspace", 2),
        ("global", 1),
    ]
    elsewhere = ConversationRef(platform="discord", workspace="G1", channel="C1")
    assert [s.kind for s, _ in await db.prompts.bindings_for(elsewhere)] == ["global"]


async def test_a_summary_never_moves_backwards(db):
    conversation_id = await db.conversation_id(REF)
    assert await db.save_summary(conversation_id, summary="up to 9", tokens=5, through_id=9)
    assert not await db.save_summary(conversation_id, summary="up to 5", tokens=5, through_id=5)
    _, history = await db.begin_turn(
        conversation_id,
        NewMessage(role="user", text="hi", token_count=3),
        prompt_version_id=None,
        token_limit=100,
    )
    assert (history.state.summary, history.state.summary_through_id) == ("up to 9", 9)


async def test_a_versions_usage_counts_violations_and_cache_hits(db):
    version = await db.prompts.save_version(
        PromptVersionRow(name="p", version=1, content_hash="h", source_file="p/1.yaml", body="b")
    )
    conversation_id = await db.conversation_id(REF)

    def call(purpose: str, **flags: Any) -> CallRecord:
        return CallRecord(purpose=purpose, model="m", total_ms=1.0, status="ok", **flags)

    await db.finish_turn(
        conversation_id,
        prompt_version_id=version.id,
        reply=None,
        calls=[
            call("reply", contract_error="at /: bad"),
            call("reply"),
            call("reply", cache_hit=True),
            call("summary"),
        ],
    )
    usage = await db.prompts.usage(version.id)
    assert (usage.calls, usage.contract_violations, usage.cache_hits) == (3, 1, 1)
