"""A whole turn through the real engine, the real openai SDK and the fake server on loopback."""

from __future__ import annotations

import asyncio
import json

from assistant.store import Store
from assistant.store.tables import Message
from assistant.testing import CallTools, Cut, Fail, Hang, Reply
from assistant.turns import (
    Completed,
    Failed,
    Ignored,
    TextDelta,
    Thinking,
    ToolFinished,
    ToolStarted,
)
from tests.conftest import REF, collect, inbound, write_prompt


async def conversation_messages(store: Store) -> list[Message]:
    conversation = await store.find_conversation(REF)
    assert conversation is not None and conversation.id is not None
    return await store.messages(conversation.id)


async def test_streamed_answer_arrives_in_pieces_and_is_stored(make_assistant, fake_llm, store):
    assistant = await make_assistant()
    fake_llm.script(
        Reply(text="The build is green and the deploy went out at noon.", chunk_chars=5)
    )

    events = await collect(assistant.respond(inbound("How is the build?")))

    assert isinstance(events[0], Thinking)
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 5
    done = events[-1]
    assert isinstance(done, Completed)
    assert "".join(deltas) == done.text == "The build is green and the deploy went out at noon."
    assert done.prompt_version == "assistant@1"
    assert done.usage.prompt_tokens > 0 and done.usage.completion_tokens > 0
    assert done.usage.cost_usd is not None and done.usage.cost_usd > 0
    stored = await conversation_messages(store)
    assert [(m.role, m.text) for m in stored] == [
        ("user", "How is the build?"),
        ("assistant", done.text),
    ]
    assert stored[1].id == done.message_id
    request = fake_llm.requests[-1]
    assert request["messages"][0]["content"] == "You are a test assistant talking to Alice."
    assert request["temperature"] == 0.2 and request["seed"] == 7


async def test_accounting_row_per_call_with_version_tokens_cost_and_timing(
    make_assistant, fake_llm, store
):
    assistant = await make_assistant()
    fake_llm.script(Reply(text="hello", cached_tokens=10))
    await collect(assistant.respond(inbound("hi")))

    conversation = await store.find_conversation(REF)
    [call] = await store.llm_calls(conversation.id)
    [version] = await store.prompts.versions("assistant")
    assert call.status == "ok" and call.purpose == "reply"
    assert call.prompt_version_id == version.id
    assert call.model == "gpt-4o-mini"
    assert call.cached_tokens == 10
    expected = ((call.prompt_tokens - 10) * 0.15 + 10 * 0.075 + call.completion_tokens * 0.60) / 1e6
    assert abs(call.cost_usd - expected) < 1e-12
    assert call.ttft_ms is not None and 0 < call.ttft_ms <= call.total_ms


async def test_two_parallel_tool_calls_in_one_round(make_assistant, fake_llm, tools, prompts_dir):
    barrier = asyncio.Barrier(2)  # only passes if both tools run at the same time

    async def lookup_ticket(ticket: str) -> str:
        """Find a ticket's status."""
        await barrier.wait()
        return f"{ticket}: open"

    tools.register(lookup_ticket)
    write_prompt(prompts_dir, tools=["lookup_ticket"])
    assistant = await make_assistant(tool_timeout=2.0)
    fake_llm.script(
        CallTools(
            calls=(("lookup_ticket", {"ticket": "OPS-1"}), ("lookup_ticket", {"ticket": "OPS-2"}))
        ),
        Reply(text="Both tickets are open."),
    )

    events = await collect(assistant.respond(inbound("status of OPS-1 and OPS-2?")))

    started = [e for e in events if isinstance(e, ToolStarted)]
    finished = [e for e in events if isinstance(e, ToolFinished)]
    assert [json.loads(e.arguments)["ticket"] for e in started] == ["OPS-1", "OPS-2"]
    assert len(finished) == 2
    assert all(e.ok for e in finished)
    assert [t["function"]["name"] for t in fake_llm.requests[0]["tools"]] == ["lookup_ticket"]
    second = fake_llm.requests[1]["messages"]
    assert [m["content"] for m in second if m["role"] == "tool"] == ["OPS-1: open", "OPS-2: open"]
    assert second[-3]["tool_calls"][1]["function"]["name"] == "lookup_ticket"
    assert isinstance(events[-1], Completed)
    assert events[-1].text == "Both tickets are open."
    assert events[-1].usage.calls == 2


async def test_a_tool_that_raises_is_reported_to_the_model(
    make_assistant, fake_llm, tools, prompts_dir
):
    def deploy(service: str) -> str:
        """Deploy a service."""
        raise RuntimeError(f"{service} is frozen for the release")

    tools.register(deploy)
    write_prompt(prompts_dir, tools=["deploy"])
    assistant = await make_assistant()
    fake_llm.script(
        CallTools(calls=(("deploy", {"service": "billing"}),)),
        Reply(text="I could not deploy billing: it is frozen."),
    )

    events = await collect(assistant.respond(inbound("deploy billing")))

    assert [e.ok for e in events if isinstance(e, ToolFinished)] == [False]
    [tool_message] = [m for m in fake_llm.requests[1]["messages"] if m["role"] == "tool"]
    assert tool_message["content"] == "error: RuntimeError: billing is frozen for the release"
    assert isinstance(events[-1], Completed)


async def test_tool_rounds_are_bounded(make_assistant, fake_llm):
    assistant = await make_assistant(max_tool_rounds=2)
    loop = CallTools(calls=(("calculator", {"expression": "1+1"}),))
    fake_llm.script(loop, loop, Reply(text="Done looping."))

    events = await collect(assistant.respond(inbound("keep calculating")))

    assert isinstance(events[-1], Completed)
    assert len(fake_llm.requests) == 3
    assert "tools" in fake_llm.requests[1]
    assert "tools" not in fake_llm.requests[2], "the last round must force a text answer"


async def test_rate_limited_then_success(make_assistant, fake_llm, store):
    assistant = await make_assistant()
    fake_llm.script(Fail(status=429, headers={"retry-after-ms": "30"}), Reply(text="second try"))

    events = await collect(assistant.respond(inbound("hi")))

    assert isinstance(events[-1], Completed)
    assert events[-1].text == "second try"
    assert len(fake_llm.requests) == 2
    conversation = await store.find_conversation(REF)
    [call] = await store.llm_calls(conversation.id)
    assert call.status == "ok"


async def test_persistent_server_errors_end_in_failed_with_the_message_kept(
    make_assistant, fake_llm, store
):
    assistant = await make_assistant()
    fake_llm.script(*[Fail(status=503, headers={"retry-after-ms": "1"})] * 3)

    events = await collect(assistant.respond(inbound("are you there?")))

    failed = events[-1]
    assert isinstance(failed, Failed)
    assert failed.retryable and failed.error_class == "LlmUnavailable"
    assert "unavailable" in failed.user_message
    assert len(fake_llm.requests) == 3  # the first try and two retries
    [message] = await conversation_messages(store)
    assert message.text == "are you there?"
    conversation = await store.find_conversation(REF)
    [call] = await store.llm_calls(conversation.id)
    assert (call.status, call.error_class, call.message_id) == (
        "error",
        "LlmUnavailable",
        message.id,
    )


async def test_hung_stream_fails_after_the_idle_timeout(make_assistant, fake_llm, store):
    assistant = await make_assistant()
    fake_llm.script(Hang(text="Let me think about"))

    events = await collect(assistant.respond(inbound("a hard question")))

    failed = events[-1]
    assert isinstance(failed, Failed)
    assert failed.error_class == "LlmTimeout"
    assert "took too long" in failed.user_message
    assert failed.partial_text == "Let me think about"
    messages = await conversation_messages(store)
    assert [(m.role, m.status) for m in messages] == [("user", "ok"), ("assistant", "incomplete")]
    conversation = await store.find_conversation(REF)
    [call] = await store.llm_calls(conversation.id)
    assert call.error_class == "LlmTimeout" and call.total_ms >= 2000  # the idle limit


async def test_stream_cut_midway_fails_with_the_message_stored(make_assistant, fake_llm, store):
    assistant = await make_assistant()
    fake_llm.script(Cut(text="The answer is"))

    events = await collect(assistant.respond(inbound("what is the answer?")))

    failed = events[-1]
    assert isinstance(failed, Failed)
    assert failed.error_class == "LlmStreamBroken"
    assert "cut off" in failed.user_message
    assert len(fake_llm.requests) == 1, "text was already shown: no silent retry"
    messages = await conversation_messages(store)
    assert messages[0].text == "what is the answer?"
    # the next turn does not see the broken half-answer as history
    fake_llm.script(Reply(text="42"))
    await collect(assistant.respond(inbound("try again")))
    contents = [m["content"] for m in fake_llm.requests[-1]["messages"]]
    assert "The answer is" not in contents
    assert contents[-2:] == ["what is the answer?", "try again"]


async def test_redelivered_event_is_ignored(make_assistant, fake_llm, store):
    assistant = await make_assistant()
    first = await collect(assistant.respond(inbound("hi", dedupe_keys=("event:Ev1", "msg:C1:1.0"))))
    again = await collect(assistant.respond(inbound("hi", dedupe_keys=("event:Ev2", "msg:C1:1.0"))))

    assert isinstance(first[-1], Completed)
    assert again == [Ignored(reason="duplicate delivery")]
    assert len(fake_llm.requests) == 1
    assert len(await conversation_messages(store)) == 2


async def test_a_message_too_long_for_the_budget_is_refused_clearly(
    make_assistant, fake_llm, prompts_dir, store
):
    write_prompt(prompts_dir, memory={"context_tokens": 300, "summarize_over_tokens": 0})
    assistant = await make_assistant()

    events = await collect(assistant.respond(inbound("word " * 2000)))

    failed = events[-1]
    assert isinstance(failed, Failed) and not failed.retryable
    assert "too long" in failed.user_message
    assert fake_llm.requests == []
    assert len(await conversation_messages(store)) == 1


async def test_unknown_model_is_unpriced_not_free(make_assistant, fake_llm, prompts_dir, store):
    write_prompt(prompts_dir, model="acme-llm-9000")
    assistant = await make_assistant()

    events = await collect(assistant.respond(inbound("hi")))

    done = events[-1]
    assert isinstance(done, Completed)
    assert done.usage.cost_usd is None
    assert done.usage.unpriced_models == ("acme-llm-9000",)
    conversation = await store.find_conversation(REF)
    [call] = await store.llm_calls(conversation.id)
    assert call.cost_usd is None and call.prompt_tokens > 0


async def test_conversations_are_kept_apart(make_assistant, fake_llm):
    assistant = await make_assistant()
    other = REF.__class__(platform="test", workspace="W1", channel="C1", thread="T2")
    await collect(assistant.respond(inbound("secret plan A")))
    await collect(assistant.respond(inbound("unrelated", ref=other)))

    contents = [m["content"] for m in fake_llm.requests[-1]["messages"]]
    assert "secret plan A" not in contents
