"""Tools that act on a user's behalf run only with that user's yes: asked before the call, only
the requester's click counts, no answer in time is a no, and every decision is stored."""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from assistant.engine import Accepted, Assistant
from assistant.store import Store, migrate
from assistant.store.approval_store import Ask
from assistant.store.tables import utcnow
from assistant.testing import CallTools, Reply
from assistant.tools import ToolRegistry
from assistant.turns import (
    Actor,
    ApprovalAsked,
    ApprovalDecided,
    Completed,
    Event,
    Inbound,
    ToolFinished,
    ToolStarted,
)
from tests.conftest import ALICE, REF, collect, inbound, write_prompt

BOB = Actor(platform="test", user_id="U2", display_name="Bob")


def deleted_tickets(tools: ToolRegistry, looked_up: asyncio.Event | None = None) -> list[str]:
    deleted: list[str] = []

    def delete_ticket(ticket: str) -> str:
        """Delete a ticket for good."""
        deleted.append(ticket)
        return f"deleted {ticket}"

    async def look_up(ticket: str) -> str:
        """Read a ticket."""
        if looked_up is not None:
            looked_up.set()
        return f"{ticket}: printer on fire"

    tools.register(delete_ticket, confirm=True)
    tools.register(look_up)
    return deleted


@pytest.fixture
def looked_up() -> asyncio.Event:
    return asyncio.Event()


@pytest.fixture
def deleted(tools: ToolRegistry, prompts_dir: Any, looked_up: asyncio.Event) -> list[str]:
    write_prompt(prompts_dir, tools=["delete_ticket", "look_up"])
    return deleted_tickets(tools, looked_up)


def script_deletion(fake_llm: Any) -> None:
    fake_llm.script(
        CallTools(calls=(("delete_ticket", {"ticket": "T-1"}), ("look_up", {"ticket": "T-2"}))),
        Reply(text="Done."),
    )


async def answer_with(assistant: Assistant, message: Inbound, decide: Any = None) -> list[Event]:
    """The turn's events; `decide(asked)` is awaited when the turn asks (a click)."""
    events: list[Event] = []
    async with aclosing(assistant.respond(message)) as stream:
        async for event in stream:
            events.append(event)
            if isinstance(event, ApprovalAsked) and decide is not None:
                asyncio.get_running_loop().create_task(decide(event))
    return events


def tool_results(request: dict[str, Any]) -> dict[str, str]:
    asked = {c["id"]: c["function"]["name"] for c in request["messages"][-3]["tool_calls"]}
    return {
        asked[m["tool_call_id"]]: m["content"] for m in request["messages"] if m["role"] == "tool"
    }


async def test_the_requester_approves_and_the_action_runs(make_assistant, fake_llm, deleted, store):
    assistant = await make_assistant()
    script_deletion(fake_llm)

    async def approve(asked: ApprovalAsked) -> None:
        verdict = await assistant.decide(asked.approval_id, ALICE, approve=True)
        assert verdict.applied

    events = await answer_with(assistant, inbound("delete T-1"), approve)

    [asked] = [e for e in events if isinstance(e, ApprovalAsked)]
    assert (asked.tool, json.loads(asked.arguments), asked.requester) == (
        "delete_ticket",
        {"ticket": "T-1"},
        ALICE,
    )
    [decided] = [e for e in events if isinstance(e, ApprovalDecided)]
    assert (decided.decision, decided.decided_by) == ("approved", "test:U1")
    assert deleted == ["T-1"] and isinstance(events[-1], Completed)
    assert tool_results(fake_llm.requests[1])["delete_ticket"] == "deleted T-1"
    row = await store.approvals.get(asked.approval_id)
    assert (row.tool, row.status, row.decided_by, row.requester) == (
        "delete_ticket",
        "approved",
        "test:U1",
        "test:U1",
    )


async def test_a_decline_is_told_to_the_model_and_nothing_runs(
    make_assistant, fake_llm, deleted, looked_up
):
    assistant = await make_assistant()
    script_deletion(fake_llm)

    async def decline(asked: ApprovalAsked) -> None:
        await asyncio.wait_for(looked_up.wait(), 10)  # the harmless call does not wait
        await assistant.decide(asked.approval_id, ALICE, approve=False)

    events = await answer_with(assistant, inbound("delete T-1"), decline)

    assert deleted == []
    results = tool_results(fake_llm.requests[1])
    assert "not run" in results["delete_ticket"] and "declined" in results["delete_ticket"]
    assert results["look_up"] == "T-2: printer on fire"
    failed = [e.name for e in events if isinstance(e, ToolFinished) and not e.ok]
    assert failed == ["delete_ticket"]


async def test_someone_elses_click_does_not_count_and_silence_is_a_no(
    make_assistant, fake_llm, deleted, store
):
    assistant = await make_assistant(approval_timeout=0.6)
    script_deletion(fake_llm)
    verdicts = []

    async def bob_approves(asked: ApprovalAsked) -> None:
        verdicts.append(await assistant.decide(asked.approval_id, BOB, approve=True))

    events = await answer_with(assistant, inbound("delete T-1"), bob_approves)

    [verdict] = verdicts
    assert not verdict.applied and verdict.requester == "test:U1"
    [decided] = [e for e in events if isinstance(e, ApprovalDecided)]
    assert decided.decision == "expired" and deleted == []
    assert "within 0.6 s" in tool_results(fake_llm.requests[1])["delete_ticket"]
    late = await assistant.decide(decided.approval_id, ALICE, approve=True)
    assert (late.applied, late.status) == (False, "expired")
    row = await store.approvals.get(decided.approval_id)
    assert (row.status, row.decided_by) == ("expired", None)


async def test_a_click_on_another_replica_decides_the_turn(make_assistant, fake_llm, deleted):
    """The click may reach any replica: the turn's own process learns it from the store."""
    assistant, other = await make_assistant(), await make_assistant()
    script_deletion(fake_llm)

    async def approve_elsewhere(asked: ApprovalAsked) -> None:
        await other.decide(asked.approval_id, ALICE, approve=True)

    events = await answer_with(assistant, inbound("delete T-1"), approve_elsewhere)

    assert deleted == ["T-1"] and isinstance(events[-1], Completed)


async def test_where_nobody_can_be_asked_the_action_does_not_run(
    make_assistant, fake_llm, deleted, store
):
    assistant = await make_assistant()
    script_deletion(fake_llm)

    events = await collect(assistant.respond(inbound("delete T-1", can_ask=False)))

    assert deleted == [] and not [e for e in events if isinstance(e, ApprovalAsked)]
    [decided] = [e for e in events if isinstance(e, ApprovalDecided)]
    assert decided.decision == "unasked"
    assert "nobody could be asked" in tool_results(fake_llm.requests[1])["delete_ticket"]
    assert [e.name for e in events if isinstance(e, ToolStarted)] == ["delete_ticket", "look_up"]
    row = await store.approvals.get(decided.approval_id)
    assert row.status == "unasked"


async def test_a_turn_that_stops_while_asking_closes_the_ask(make_assistant, fake_llm, deleted):
    assistant = await make_assistant()
    script_deletion(fake_llm)

    async with aclosing(assistant.respond(inbound("delete T-1"))) as stream:
        async for event in stream:
            if isinstance(event, ApprovalAsked):
                asked = event
                break  # the user closed the window

    verdict = await assistant.decide(asked.approval_id, ALICE, approve=True)
    assert (verdict.applied, verdict.status) == (False, "expired") and deleted == []


async def test_two_actions_in_one_round_are_decided_one_by_one(make_assistant, fake_llm, deleted):
    assistant = await make_assistant()
    fake_llm.script(
        CallTools(
            calls=(("delete_ticket", {"ticket": "T-1"}), ("delete_ticket", {"ticket": "T-2"}))
        ),
        Reply(text="Done."),
    )

    async def approve_only_t2(asked: ApprovalAsked) -> None:
        keep = json.loads(asked.arguments)["ticket"] == "T-1"
        await assistant.decide(asked.approval_id, ALICE, approve=not keep)

    events = await answer_with(assistant, inbound("delete both"), approve_only_t2)

    assert deleted == ["T-2"]
    decisions = sorted(e.decision for e in events if isinstance(e, ApprovalDecided))
    assert decisions == ["approved", "declined"]
    results = [m["content"] for m in fake_llm.requests[1]["messages"] if m["role"] == "tool"]
    assert "declined" in results[0] and results[1] == "deleted T-2"  # in the order asked


async def test_a_restart_expires_what_the_stopped_process_asked(
    make_assistant, fake_llm, deleted, store
):
    """The process that asked is gone: its ask can no longer run anything, so a click on it
    must not say it did; the turn, answered again, asks anew."""
    stopped = await make_assistant(heartbeat_seconds=0.05)
    survivor = await make_assistant(heartbeat_seconds=0.05)
    await stopped.owed.beat()
    accepted = await stopped.accept(inbound("delete T-1", reply_place='{"channel":"C1"}'))
    assert isinstance(accepted, Accepted)
    old = await store.approvals.ask(
        Ask(
            message_id=accepted.message_id,
            call_id="call_0",
            tool="delete_ticket",
            arguments='{"ticket": "T-1"}',
            requester="test:U1",
            expires_at=utcnow() + timedelta(minutes=5),
        )
    )
    await asyncio.sleep(0.2)  # missed beats: the owner stopped
    [orphan] = await survivor.owed.orphans("test")
    assert await survivor.owed.adopt(orphan)
    script_deletion(fake_llm)

    async def approve(asked: ApprovalAsked) -> None:
        await survivor.decide(asked.approval_id, ALICE, approve=True)

    async with aclosing(survivor.resume(orphan)) as stream:
        async for event in stream:
            if isinstance(event, ApprovalAsked):
                assert event.approval_id != old
                late = await survivor.decide(old, ALICE, approve=True)
                assert (late.applied, late.status) == (False, "expired")
                await approve(event)

    assert deleted == ["T-1"]


async def test_the_approvals_migration_keeps_the_messages_it_finds(database_url: str) -> None:
    """0011 on SQLite and Postgres: messages stored before it read as having no files; an
    ask is stored against its message; down and up again, the messages stay."""
    store = Store.connect(database_url)
    try:
        await migrate.upgrade(store.engine, "0010")
        conversation_id = await store.conversation_id(REF)
        async with store.engine.begin() as connection:  # as 0010 knew a message
            old_id = (
                await connection.execute(
                    text(
                        "INSERT INTO messages (conversation_id, role, author_id, author_name,"
                        " text, token_count, status, created_at)"
                        " VALUES (:c, 'user', '', '', 'old', 1, 'ok', CURRENT_TIMESTAMP)"
                        " RETURNING id"
                    ),
                    {"c": conversation_id},
                )
            ).scalar_one()
        await migrate.upgrade(store.engine)
        await migrate.check(store.engine)
        [message] = await store.messages(conversation_id)
        assert (message.text, message.attachments) == ("old", None)
        ask = Ask(
            message_id=old_id,
            call_id="c",
            tool="files.write_file",
            arguments="{}",
            requester="slack:U1",
            expires_at=utcnow() + timedelta(minutes=1),
        )
        approval_id = await store.approvals.ask(ask)
        assert (await store.approvals.decide(approval_id, "slack:U1", approve=True)).applied

        await migrate.downgrade(store.engine, "0010")
        await migrate.upgrade(store.engine)
        assert [m.text for m in await store.messages(conversation_id)] == ["old"]
    finally:
        await store.close()
