"""Output contracts (a version's response_schema) and the response cache, through real turns."""

from __future__ import annotations

import json

import pytest

from assistant.admin.commands import AdminCommands, CommandContext
from assistant.contracts import check_reply
from assistant.prompts.files import PromptFileError, load_prompt_file
from assistant.testing import Reply
from assistant.turns import Completed, Failed, TextDelta
from tests.conftest import ALICE, REF, ConversationRef, collect, inbound, write_prompt

SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"enum": ["network", "hardware", "access"]},
        "urgent": {"type": "boolean"},
    },
    "required": ["category", "urgent"],
    "additionalProperties": False,
}


def test_a_fenced_reply_is_unwrapped_and_checked():
    check = check_reply('```json\n{"category": "network", "urgent": true}\n```', SCHEMA)
    assert check.ok and json.loads(check.text) == {"category": "network", "urgent": True}
    bad = check_reply('{"category": "plumbing", "urgent": true}', SCHEMA)
    assert not bad.ok and bad.error.startswith("at category:")
    assert check_reply("Sure! Here it is", SCHEMA).error.startswith("not valid JSON")


def test_an_invalid_schema_is_refused_when_the_file_loads(tmp_path):
    path = write_prompt(tmp_path, response_schema={"type": "objekt"})
    with pytest.raises(PromptFileError, match=r"1\.yaml: field 'response_schema': not a valid"):
        load_prompt_file(path, known_tools=["current_time", "calculator"])


async def test_a_violation_gets_one_repair_and_then_succeeds(
    prompts_dir, make_assistant, fake_llm, store
):
    write_prompt(prompts_dir, response_schema=SCHEMA, tools=[])
    assistant = await make_assistant()
    fake_llm.script(
        Reply(text='{"category": "plumbing", "urgent": true}'),
        Reply(text='{"category": "hardware", "urgent": true}'),
    )

    events = await collect(assistant.respond(inbound("my laptop is on fire")))

    done = events[-1]
    assert isinstance(done, Completed)
    assert json.loads(done.text) == {"category": "hardware", "urgent": True}
    assert [e.text for e in events if isinstance(e, TextDelta)] == [
        done.text
    ]  # no invalid JSON shown
    repair = fake_llm.requests[1]["messages"]
    assert repair[-2]["content"] == '{"category": "plumbing", "urgent": true}'
    assert "did not match the required JSON schema (at category:" in repair[-1]["content"]
    conversation = await store.find_conversation(REF)
    calls = await store.llm_calls(conversation.id)
    assert [c.contract_error is not None for c in calls] == [True, False]
    shown = await AdminCommands(prompts=store.prompts, versions=assistant.versions, admins=()).run(
        "prompt show assistant", CommandContext(actor=ALICE, surface="test")
    )
    assert "model calls for replies: 2; output-contract violations: 1" in shown.text


async def test_two_violations_fail_the_turn_clearly(prompts_dir, make_assistant, fake_llm, store):
    write_prompt(prompts_dir, response_schema=SCHEMA, tools=[])
    assistant = await make_assistant()
    fake_llm.script(Reply(text="It is a network thing."), Reply(text='{"category": "network"}'))

    events = await collect(assistant.respond(inbound("vpn drops")))

    failed = events[-1]
    assert isinstance(failed, Failed)
    assert failed.error_class == "ContractViolation"
    assert "did not have the required format" in failed.user_message
    assert failed.partial_text == ""
    assert not any(isinstance(e, TextDelta) for e in events)
    conversation = await store.find_conversation(REF)
    calls = await store.llm_calls(conversation.id)
    assert len(calls) == 2 and all(c.contract_error for c in calls)
    assert "urgent" in calls[1].contract_error


async def test_a_cached_version_answers_a_repeated_context_without_the_model(
    prompts_dir, make_assistant, fake_llm, store
):
    write_prompt(prompts_dir, cache=True)
    assistant = await make_assistant()
    fake_llm.script(Reply(text="Restart the router."))
    first = await collect(assistant.respond(inbound("wifi is down")))
    other = ConversationRef(platform="test", workspace="W1", channel="C1", thread="T2")

    second = await collect(assistant.respond(inbound("wifi is down", ref=other)))

    assert len(fake_llm.requests) == 1
    done = second[-1]
    assert isinstance(done, Completed) and done.text == first[-1].text == "Restart the router."
    assert done.usage.cache_hits == 1 and done.usage.cost_usd == 0.0
    conversation = await store.find_conversation(other)
    [call] = await store.llm_calls(conversation.id)
    assert call.cache_hit and call.cost_usd == 0.0 and call.prompt_tokens == 0
    fake_llm.script(Reply(text="Different context, fresh answer."))
    third = await collect(assistant.respond(inbound("wifi is still down", ref=other)))
    assert third[-1].text == "Different context, fresh answer."


async def test_a_version_without_cache_always_calls_the_model(make_assistant, fake_llm):
    assistant = await make_assistant()
    other = ConversationRef(platform="test", workspace="W1", channel="C1", thread="T2")
    await collect(assistant.respond(inbound("same words")))
    await collect(assistant.respond(inbound("same words", ref=other)))
    assert len(fake_llm.requests) == 2
