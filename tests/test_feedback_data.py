"""From production back to evals and training: 👎 answers become valid candidate cases, 👍
conversations become fine-tuning JSONL."""

from __future__ import annotations

import json

from assistant.evals.feedback import candidate_cases, finetune_lines
from assistant.evals.suite import load_suite
from assistant.testing import Reply
from assistant.turns import Actor, Completed
from tests.conftest import REF, collect, inbound

BOB = Actor(platform="test", user_id="U2")


async def answer(assistant, fake_llm, question: str, reply: str, thread: str) -> Completed:
    fake_llm.script(Reply(text=reply))
    ref = REF.__class__(platform="test", workspace="W1", channel="C1", thread=thread)
    events = await collect(assistant.respond(inbound(question, ref=ref)))
    done = events[-1]
    assert isinstance(done, Completed)
    return done


async def test_disliked_answers_become_cases_that_load(
    make_assistant, fake_llm, store, prompts_dir
):
    assistant = await make_assistant()
    bad = await answer(assistant, fake_llm, "reset my password", "No idea.", "t1")
    good = await answer(assistant, fake_llm, "what is 2+2", "4", "t2")
    await assistant.record_feedback(bad.message_id, BOB, vote=-1)
    await assistant.record_feedback(good.message_id, BOB, vote=1)

    text = await candidate_cases(store, "assistant")
    assert text.startswith("# 1 candidate cases from 👎 answers to assistant")
    path = prompts_dir / "assistant" / "evals.yaml"
    path.write_text(text, encoding="utf-8")
    suite = load_suite(path, prompt="assistant", known_tools=[])
    [case] = suite.cases
    assert case.question == "reset my password"
    assert any("No idea." in a.describe() for a in case.expect)


async def test_liked_conversations_become_finetuning_jsonl(make_assistant, fake_llm, store):
    assistant = await make_assistant()
    await answer(assistant, fake_llm, "hello", "Hi!", "t1")
    liked = await answer(assistant, fake_llm, "what is 2+2", "4", "t1")
    disliked = await answer(assistant, fake_llm, "and 3+3?", "7", "t1")
    await assistant.record_feedback(liked.message_id, BOB, vote=1)
    await assistant.record_feedback(disliked.message_id, BOB, vote=-1)

    lines = [json.loads(line) async for line in finetune_lines(store)]
    [example] = lines
    roles = [m["role"] for m in example["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert example["messages"][-1]["content"] == "4"
    assert "test assistant" in example["messages"][0]["content"]
