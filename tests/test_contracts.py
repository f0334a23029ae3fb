"""Output contracts (a version's response_schema) and the response cache, through real turns."""

from __future__ import annotations

import json

import pytest

from assistant.admin.commands import AdminCommands, CommandContext
from assistant.contracts import check_reply
from assistant.prompts.files import PromptFileError, load_prompt_file
from assistant.testing import Reply
from assistant.turns import Completed, Failed, TextDelta
from bots.terminal import describe
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
    assert check_reply("Sure! Here it is", SCHEMA).error == "not JSON: 'Sure! Here it is'"
    assert check_reply('{"category": }', SCHEMA).error.startswith("not valid JSON (Expecting")


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
    assert [c.purpose for c in calls] == ["reply", "repair"]  # the repair is told apart
    reply, repair = done.usage.purposes  # and /cost shows it with the same figures
    assert (reply.calls, repair.calls) == (1, 1)
    assert reply.cost_usd + repair.cost_usd == pytest.approx(sum(c.cost_usd for c in calls))
    assert f"in 2 call(s) (1 reply ${reply.cost_usd:.6f}, 1 repair $" in describe(done)
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


# --- schemas that would fail on every reply are refused when the file loads (issue 11) ----------


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        (
            {"$ref": "#/$defs/missing"},
            "field 'response_schema': $ref '#/$defs/missing' cannot be resolved; only "
            "references to a part of this schema (like '#/$defs/name') are allowed",
        ),
        (
            {"type": "object", "properties": {"a": {"$ref": "https://example.com/a.json"}}},
            "field 'response_schema': $ref 'https://example.com/a.json' cannot be resolved",
        ),
        ({"$ref": "#nowhere"}, "field 'response_schema': $ref '#nowhere' cannot be resolved"),
        (
            {"$ref": "#/$defs/a", "$defs": {"a": {"allOf": [{"$ref": "#"}]}}},
            "field 'response_schema': its $refs lead back to themselves without end",
        ),
        (
            {"properties": {"a": {"$ref": "#/properties/a"}}},
            "field 'response_schema': its $refs lead back to themselves without end",
        ),
        ({"type": "objekt"}, "field 'response_schema': not a valid JSON schema"),
    ],
)
def test_a_schema_that_cannot_be_applied_is_refused_by_field(tmp_path, schema, says):
    path = write_prompt(tmp_path, response_schema=schema)
    with pytest.raises(PromptFileError) as caught:
        load_prompt_file(path, known_tools=["current_time", "calculator"])
    assert str(caught.value).startswith(f"{path}: ")
    assert says in str(caught.value)


def test_a_schema_with_a_date_yaml_read_is_refused(tmp_path):
    path = write_prompt(tmp_path)
    text = path.read_text(encoding="utf-8") + "response_schema: {const: 2025-01-31}\n"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PromptFileError, match="field 'response_schema': not plain JSON"):
        load_prompt_file(path, known_tools=["current_time", "calculator"])


def test_references_inside_the_schema_load_and_check_replies(tmp_path):
    schema = {
        "$defs": {"category": {"enum": ["network", "hardware"]}},
        "type": "object",
        "properties": {"category": {"$ref": "#/$defs/category"}, "children": {"$ref": "#"}},
    }
    path = write_prompt(tmp_path, response_schema=schema)
    loaded = load_prompt_file(path, known_tools=["current_time", "calculator"]).version
    assert loaded.response_schema is not None
    assert check_reply('{"category": "network", "children": {}}', loaded.response_schema).ok
    assert not check_reply('{"category": "plumbing"}', loaded.response_schema).ok


def test_a_reply_nested_too_deeply_is_a_violation_not_a_crash():
    deep = "[" * 100_000 + "]" * 100_000
    check = check_reply(deep, {"type": "array"})
    assert not check.ok and "nested too deeply" in check.error
