"""History windows and summary folding, end to end and as pure functions."""

from __future__ import annotations

from assistant.memory import fit_window, plan_fold
from assistant.store.repository import HistoryEntry
from assistant.testing import Fail, Reply
from assistant.tokens import TokenCounter
from assistant.turns import Completed
from tests.conftest import REF, collect, inbound, write_prompt

BUDGET = 1200
SUMMARIZE_OVER = 700


def messages(*tokens: int) -> list[HistoryEntry]:
    """Newest first, ids descending, as the store hands them over."""
    return [
        HistoryEntry(id=len(tokens) - i, role="user", text=f"m{i}", token_count=t)
        for i, t in enumerate(tokens)
    ]


def test_window_keeps_the_newest_messages_that_fit():
    window = fit_window(messages(40, 30, 50, 10), budget=75)
    assert [m.token_count for m in window] == [30, 40]  # oldest first


def test_window_always_holds_the_newest_message():
    assert [m.token_count for m in fit_window(messages(500, 10), budget=100)] == [500]


def test_no_fold_under_the_threshold():
    plan = plan_fold(messages(100, 100, 100), summarize_over=400)
    assert plan.fold == [] and len(plan.keep) == 3


def test_fold_keeps_the_newest_half_and_folds_the_rest_oldest_first():
    plan = plan_fold(messages(100, 100, 100, 100, 100), summarize_over=400)
    assert [m.token_count for m in plan.keep] == [100, 100]
    assert [m.id for m in plan.fold] == [1, 2, 3]


async def test_a_200_message_conversation_stays_in_budget_and_carries_a_summary(
    make_assistant, fake_llm, prompts_dir, store
):
    write_prompt(
        prompts_dir, memory={"context_tokens": BUDGET, "summarize_over_tokens": SUMMARIZE_OVER}
    )
    assistant = await make_assistant()
    counter = TokenCounter("gpt-4o-mini")

    for turn in range(100):
        text = f"Please remember fact number {turn}: server {turn} runs release {turn}.{turn}."
        events = await collect(assistant.respond(inbound(text)))
        assert isinstance(events[-1], Completed), events[-1]

    conversation = await store.find_conversation(REF)
    assert await store.count_messages(conversation.id) == 200
    replies = [r for r in fake_llm.requests if "tools" in r]
    summaries = [r for r in fake_llm.requests if "tools" not in r]
    assert len(replies) == 100
    for request in replies:
        assert counter.count_request(request["messages"], request["tools"]) <= BUDGET
    # folding happens now and then, not on every turn
    assert 5 <= len(summaries) <= 50
    calls = await store.llm_calls(conversation.id)
    assert sum(c.purpose == "summary" for c in calls) == len(summaries)

    last = replies[-1]["messages"]
    summary_text = [m["content"] for m in last if m["content"].startswith("Summary of the earlier")]
    assert summary_text and conversation.summary in summary_text[0]
    contents = [m["content"] for m in last]
    assert contents[-1].startswith("Please remember fact number 99")
    assert not any("fact number 0:" in c for c in contents[1:] if not c.startswith("Summary"))
    # each summary call sees the previous summary, so older facts are carried forward
    assert "(none yet)" in summaries[0]["messages"][-1]["content"]
    assert "Earlier summary:\nSummary: " in summaries[-1]["messages"][-1]["content"]


async def test_a_failed_summary_does_not_fail_the_turn(
    make_assistant, fake_llm, prompts_dir, store
):
    write_prompt(prompts_dir, memory={"context_tokens": 2000, "summarize_over_tokens": 60})
    assistant = await make_assistant()
    fake_llm.script(Reply(text="first answer " * 20))
    await collect(assistant.respond(inbound("first question " * 20)))
    fake_llm.script(Fail(status=400, message="summary rejected"), Reply(text="second answer"))

    events = await collect(assistant.respond(inbound("second question")))

    assert isinstance(events[-1], Completed) and events[-1].text == "second answer"
    conversation = await store.find_conversation(REF)
    calls = await store.llm_calls(conversation.id)
    assert [(c.purpose, c.status) for c in calls][-2:] == [("summary", "error"), ("reply", "ok")]
    assert conversation.summary == ""
