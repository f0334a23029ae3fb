"""A turn through the real engine when the model's server says no: a context it cannot hold,
a primary model that is down. The user always gets an answer or plain words, and the
conversation recovers on the next message."""

from __future__ import annotations

from datetime import UTC, datetime

from assistant.reporting.figures import Period, build_report
from assistant.reporting.wording import report_text
from assistant.store import Store
from assistant.testing import Fail, Reply
from assistant.turns import Completed, Failed, TextDelta
from tests.conftest import REF, collect, inbound, write_prompt

OPENAI_OVERFLOW = (
    "This model's maximum context length is {limit} tokens. However, your messages resulted "
    "in {asked} tokens. Please reduce the length of the messages."
)


async def calls(store: Store) -> list[tuple[str, str, str | None]]:
    conversation = await store.find_conversation(REF)
    assert conversation is not None and conversation.id is not None
    return [(c.model, c.status, c.error_class) for c in await store.llm_calls(conversation.id)]


async def test_an_overflow_is_answered_with_a_shrunk_context_and_later_turns_keep_to_it(
    make_assistant, fake_llm, store
):
    assistant = await make_assistant()
    for number in range(6):  # some history, each turn well within the version's 6000 tokens
        fake_llm.script(Reply(text=f"answer {number} " + "detail " * 150))
        await collect(assistant.respond(inbound(f"question {number} " + "context " * 150)))
    sent_before = len(fake_llm.requests[-1]["messages"])
    fake_llm.script(
        Fail(status=400, message=OPENAI_OVERFLOW.format(limit=1000, asked=3000)),
        Reply(text="Here it is."),
        Reply(text="And again."),
    )

    events = await collect(assistant.respond(inbound("and now?")))

    assert isinstance(events[-1], Completed) and events[-1].text == "Here it is."
    refused, retried = fake_llm.requests[-2:]
    assert len(retried["messages"]) < len(refused["messages"]) == sent_before + 2
    assert retried["messages"][-1]["content"] == "and now?"  # the user's message is never cut
    assert ("gpt-4o-mini", "error", "LlmContextOverflow") in await calls(store)
    await collect(assistant.respond(inbound("one more")))  # no second refusal needed
    assert len(fake_llm.requests[-1]["messages"]) <= len(retried["messages"]) + 2


async def test_a_message_too_long_for_the_model_is_refused_in_plain_words_and_never_resent(
    make_assistant, fake_llm, store
):
    assistant = await make_assistant()
    long_message = "lorem ipsum " * 1500  # ~3,000 of our tokens: fits the version, not the model
    fake_llm.script(Fail(status=400, message=OPENAI_OVERFLOW.format(limit=2048, asked=5200)))

    events = await collect(assistant.respond(inbound(long_message)))

    failed = events[-1]
    assert isinstance(failed, Failed) and not failed.retryable
    assert "too long" in failed.user_message and "fit" in failed.user_message
    assert not [e for e in events if isinstance(e, TextDelta)]
    fake_llm.script(Reply(text="Short and sweet."))
    done = (await collect(assistant.respond(inbound("ok, briefly: hi"))))[-1]
    assert isinstance(done, Completed)
    sent = [m["content"] for m in fake_llm.requests[-1]["messages"]]
    assert long_message not in sent and sent[-1] == "ok, briefly: hi"


async def test_a_fallback_model_answers_when_the_primary_is_down_and_is_accounted_as_itself(
    make_assistant, fake_llm, store, prompts_dir
):
    write_prompt(prompts_dir, fallback_models=["gpt-4.1-mini"])
    assistant = await make_assistant()
    fake_llm.script(*[Fail(status=503, message="overloaded")] * 3, Reply(text="From the fallback."))

    done = (await collect(assistant.respond(inbound("hello"))))[-1]

    assert isinstance(done, Completed) and done.text == "From the fallback."
    assert [r["model"] for r in fake_llm.requests] == ["gpt-4o-mini"] * 3 + ["gpt-4.1-mini"]
    assert await calls(store) == [
        ("gpt-4o-mini", "error", "LlmUnavailable"),
        ("gpt-4.1-mini", "ok", None),
    ]
    assert done.usage.cost_usd is not None  # priced at the fallback's own rates
    conversation = await store.find_conversation(REF)
    rows = await store.llm_calls(conversation.id)
    assert [r.fallback_for for r in rows] == [None, "gpt-4o-mini"]
    report = report_text(await build_report(store, Period.last("1d", now=datetime.now(UTC))))
    assert "1 answer by fallback models (gpt-4.1-mini 1)" in report


async def test_without_fallbacks_the_primary_failing_still_answers_the_user(
    make_assistant, fake_llm
):
    assistant = await make_assistant()
    fake_llm.script(*[Fail(status=503, message="overloaded")] * 3)
    failed = (await collect(assistant.respond(inbound("hello"))))[-1]
    assert isinstance(failed, Failed) and "unavailable" in failed.user_message


async def test_tool_choice_is_the_versions_on_the_first_round_then_auto(
    make_assistant, fake_llm, prompts_dir
):
    write_prompt(prompts_dir, tool_choice="calculator")
    assistant = await make_assistant()
    await collect(assistant.respond(inbound("what is 6 * 14?")))
    first, second = fake_llm.requests
    assert first["tool_choice"] == {"type": "function", "function": {"name": "calculator"}}
    assert second["tool_choice"] == "auto"


async def test_a_fallback_that_answers_also_gets_the_contract_repair(
    make_assistant, fake_llm, prompts_dir
):
    schema = {"type": "object", "required": ["answer"], "properties": {"answer": {}}}
    write_prompt(prompts_dir, fallback_models=["gpt-4.1-mini"], response_schema=schema)
    assistant = await make_assistant()
    fake_llm.script(
        *[Fail(status=503, message="overloaded")] * 3,
        Reply(text="not json"),
        Reply(text='{"answer": 84}'),
    )
    done = (await collect(assistant.respond(inbound("hello"))))[-1]
    assert isinstance(done, Completed) and done.text == '{"answer": 84}'
    assert [r["model"] for r in fake_llm.requests][-2:] == ["gpt-4.1-mini"] * 2


async def test_an_overflow_a_fallback_answered_teaches_the_primary_its_window(
    make_assistant, fake_llm, prompts_dir
):
    """This turn the fallback holds the long context; later turns fit the version's own
    model instead of being refused by it first every time."""
    write_prompt(prompts_dir, fallback_models=["gpt-4.1-mini"])
    assistant = await make_assistant()
    for number in range(4):
        fake_llm.script(Reply(text=f"answer {number} " + "detail " * 150))
        await collect(assistant.respond(inbound(f"question {number} " + "context " * 150)))
    fake_llm.script(
        Fail(status=400, message=OPENAI_OVERFLOW.format(limit=1000, asked=2000)),
        Reply(text="The fallback held it."),
        Reply(text="Back on the primary."),
    )
    done = (await collect(assistant.respond(inbound("and now?"))))[-1]
    assert isinstance(done, Completed) and done.text == "The fallback held it."
    refused, held = fake_llm.requests[-2:]
    assert (refused["model"], held["model"]) == ("gpt-4o-mini", "gpt-4.1-mini")
    before = len(fake_llm.requests)
    done = (await collect(assistant.respond(inbound("next?"))))[-1]
    assert isinstance(done, Completed) and done.text == "Back on the primary."
    [fitted] = fake_llm.requests[before:]
    assert fitted["model"] == "gpt-4o-mini"
    assert len(fitted["messages"]) < len(refused["messages"])
