"""Answers owed across a crash, at the engine and the store: stored with the message, settled
with the reply, adopted by exactly one process when the one answering stops."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from pathlib import Path

from assistant.builtin_tools import builtin_registry
from assistant.engine import Accepted, Assistant
from assistant.llm import OpenAIChatModel
from assistant.store import Store, migrate
from assistant.testing import Fail, Reply
from assistant.turns import Completed, Failed, Ignored, TextDelta, Thinking
from tests.conftest import build_assistant, collect, inbound

PLACE = '{"channel":"C1","thread_ts":"1.0"}'


async def engine(store: Store, model: OpenAIChatModel, prompts_dir: Path) -> Assistant:
    return await build_assistant(
        store, model, prompts_dir, builtin_registry(), heartbeat_seconds=0.05
    )


async def open_store(database_url: str) -> Store:
    store = Store.connect(database_url)
    await migrate.upgrade(store.engine)
    return store


async def owed(store: Store) -> list[tuple[int, str | None, int | None]]:
    """(the user's message, what shows the answer, the stored answer) of each owed turn."""
    async with store.engine.connect() as connection:
        rows = await connection.exec_driver_sql(
            "SELECT message_id, shown, reply_id FROM open_turns"
        )
        return [(row[0], row[1], row[2]) for row in rows]


async def test_an_owed_answer_is_stored_with_the_message_and_notes_its_reply(
    database_url, model, fake_llm, prompts_dir
):
    store = await open_store(database_url)
    try:
        assistant = await engine(store, model, prompts_dir)
        fake_llm.script(Reply(text="Answered."))
        accepted = await assistant.accept(inbound("hi", reply_place=PLACE, dedupe_keys=("e:1",)))
        assert isinstance(accepted, Accepted) and accepted.turn_id == accepted.message_id
        assert await owed(store) == [(accepted.message_id, None, None)]
        again = await assistant.accept(inbound("hi", reply_place=PLACE, dedupe_keys=("e:1",)))
        assert isinstance(again, Ignored)  # the redelivery stores nothing

        events = await collect(assistant.answer(accepted))
        assert isinstance(events[0], Thinking) and events[0].turn_id == accepted.message_id
        done = events[-1]
        assert isinstance(done, Completed)
        # owed until the surface has shown it: a crash now shows the stored answer, not a new one
        assert await owed(store) == [(accepted.message_id, None, done.message_id)]
        await assistant.owed.settle(accepted.message_id)
        assert await owed(store) == []
    finally:
        await store.close()


async def test_a_failed_turn_notes_no_answer_and_a_cut_one_stays_owed(
    make_assistant, fake_llm, store
):
    assistant = await make_assistant(heartbeat_seconds=0.05)
    fake_llm.script(Fail(status=400))  # refused, not retried: the user is told
    failed = await collect(assistant.respond(inbound("fails", reply_place=PLACE)))
    assert isinstance(failed[-1], Failed)
    [(failed_id, _, reply)] = await owed(store)
    assert reply is None  # a restart before the notice is shown asks again
    await assistant.owed.settle(failed_id)

    fake_llm.script(Reply(text="word " * 200, chunk_chars=5, chunk_delay=0.01))
    async with aclosing(assistant.respond(inbound("cut", reply_place=PLACE))) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                break  # the process stops mid-answer
    [(message_id, _, reply)] = await owed(store)
    assert reply is None  # the partial answer is kept, but it is not the answer
    messages = await store.messages((await store.find_conversation(inbound("x").ref)).id)
    assert any(m.id == message_id and m.text == "cut" for m in messages)


async def test_exactly_one_process_adopts_and_answers_an_orphan(
    database_url, model, fake_llm, prompts_dir
):
    stores = [await open_store(database_url) for _ in range(3)]
    try:
        stopped, *running = [await engine(s, model, prompts_dir) for s in stores]
        await stopped.owed.beat()
        accepted = await stopped.accept(inbound("still owed?", reply_place=PLACE))
        assert isinstance(accepted, Accepted)
        await stores[0].open_turns.mark_shown(accepted.message_id, "1700.0001")
        for survivor in running:  # judged on a long beat: under load the checks take time
            survivor.owed.beat_seconds = 60
            await survivor.owed.beat()
            assert await survivor.owed.orphans("test") == []  # its owner is alive

        for survivor in running:
            survivor.owed.beat_seconds = 0.05
        await asyncio.sleep(0.2)  # three missed beats: the owner stopped
        [orphan] = await running[0].owed.orphans("test")
        assert (orphan.text, orphan.shown, orphan.place) == ("still owed?", "1700.0001", PLACE)
        adopted = await asyncio.gather(*(r.owed.adopt(orphan) for r in running))
        assert sorted(adopted) == [False, True]

        winner = running[adopted.index(True)]
        fake_llm.script(Reply(text="Answered after the restart."))
        events = await collect(winner.resume(orphan))
        done = events[-1]
        assert isinstance(done, Completed) and done.text == "Answered after the restart."
        assert await owed(stores[0]) == [(orphan.message_id, None, done.message_id)]
        conversation = await stores[0].find_conversation(inbound("x").ref)
        texts = [(m.role, m.text) for m in await stores[0].messages(conversation.id)]
        assert texts == [("user", "still owed?"), ("assistant", "Answered after the restart.")]
    finally:
        for store in stores:
            await store.close()


async def test_a_retired_process_leaves_its_turns_at_once(make_assistant):
    first = await make_assistant(heartbeat_seconds=60)
    second = await make_assistant(heartbeat_seconds=60)
    await first.owed.beat()
    accepted = await first.accept(inbound("graceful stop", reply_place=PLACE))
    assert isinstance(accepted, Accepted)
    assert await second.owed.orphans("test") == []
    await first.owed.retire()
    [orphan] = await second.owed.orphans("test")
    assert orphan.message_id == accepted.message_id


async def test_unstorable_characters_are_kept_as_replacements(
    database_url, model, fake_llm, prompts_dir
):
    store = await open_store(database_url)
    try:
        assistant = await engine(store, model, prompts_dir)
        fake_llm.script(Reply(text="ok"), Reply(text="ok"))
        text = "nul\x00 and a lone surrogate \ud800 here"
        events = await collect(assistant.respond(inbound(text)))
        assert isinstance(events[-1], Completed)
        conversation = await store.find_conversation(inbound("x").ref)
        [question, _] = await store.messages(conversation.id)
        assert question.text == "nul\ufffd and a lone surrogate ? here"
        again = await collect(assistant.respond(inbound(text)))  # and the next turn reads it
        assert isinstance(again[-1], Completed)
    finally:
        await store.close()
