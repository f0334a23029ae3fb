"""The demo model behind `--fake`, spoken to over HTTP as the engine speaks to it: it learns
from the request's examples, calls tools, and varies only when sampling is not pinned."""

from __future__ import annotations

from typing import Any

import aiohttp

from assistant.testing import FakeLlm

EXAMPLES = [
    {"role": "user", "content": "How do I switch which prompt version answers here?"},
    {"role": "assistant", "content": "Use `prompt use NAME VERSION`."},
    {"role": "user", "content": "Who can change the prompt version?"},
    {"role": "assistant", "content": "The people in ADMIN_USERS."},
]
CALCULATOR = {"type": "function", "function": {"name": "calculator", "parameters": {}}}


async def ask(llm: FakeLlm, question: str, **body: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": "Be brief."}, *EXAMPLES]
    payload = {"model": "fake", "messages": [*messages, {"role": "user", "content": question}]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{llm.base_url}/chat/completions", json={**payload, **body}) as response,
    ):
        assert response.status == 200
        message: dict[str, Any] = (await response.json())["choices"][0]["message"]
        return message


async def test_a_question_near_an_example_gets_that_examples_answer():
    async with FakeLlm() as llm:
        answer = await ask(llm, "How do I switch the prompt version here?", seed=7)
        assert answer["content"] == "Use `prompt use NAME VERSION`."
        unrelated = await ask(llm, "Tell me about penguins", seed=7)
        assert unrelated["content"] == "(fake model) You said: Tell me about penguins"


async def test_unpinned_sampling_walks_through_near_answers_and_a_seed_stops_it():
    async with FakeLlm() as llm:
        question = "How do I switch the prompt version here?"
        varied = [(await ask(llm, question, temperature=0.9))["content"] for _ in range(3)]
        assert varied[0] != varied[1] and varied[0] == varied[2]
        pinned = [(await ask(llm, question, temperature=0.9, seed=1))["content"] for _ in range(3)]
        assert len(set(pinned)) == 1
        cold = [(await ask(llm, question, temperature=0))["content"] for _ in range(3)]
        assert len(set(cold)) == 1


async def test_arithmetic_goes_to_the_calculator_when_offered():
    async with FakeLlm() as llm:
        answer = await ask(llm, "What is 17 * 23?", tools=[CALCULATOR], seed=7)
        [call] = answer["tool_calls"]
        assert call["function"]["name"] == "calculator"
        assert '"17 * 23"' in call["function"]["arguments"]
        without = await ask(llm, "What is 17 * 23?", seed=7)
        assert "tool_calls" not in without or not without["tool_calls"]
