"""The fake server's personalities, read on the wire with a plain HTTP client (not ours).

Each test drives `FakeLlm(like=...)` the way a client would and checks the shape a real server
of that kind sends, as recorded in `assistant/testing/personalities.py`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from assistant.testing import CallTools, FakeLlm, Reply
from assistant.testing.personalities import PERSONALITIES
from assistant.tokens import TokenCounter

ALL = list(PERSONALITIES)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
        },
    }
]
CALLS = (("calculator", {"expression": "2 + 2"}), ("calculator", {"expression": "3 * 7"}))
FORCED = {"type": "function", "function": {"name": "calculator"}}


def chat(stream: bool = True, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "fake",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    }
    return body | fields


@dataclass
class Sse:
    """What came back from one streamed request."""

    status: int
    chunks: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False  # a `data: [DONE]` arrived
    cut: bool = False  # the connection dropped mid-body
    overtaken: bool = False  # another request, sent during this one, finished first

    def deltas(self) -> list[dict[str, Any]]:
        return [c["choices"][0]["delta"] for c in self.chunks if c["choices"]]

    def calls(self) -> list[dict[str, Any]]:
        return [call for delta in self.deltas() for call in delta.get("tool_calls") or ()]

    def finish(self) -> str | None:
        reasons = [c["choices"][0].get("finish_reason") for c in self.chunks if c["choices"]]
        return next((r for r in reasons if r), None)

    def text(self) -> str:
        return "".join(d.get("content") or "" for d in self.deltas())

    def usage_chunks(self) -> list[dict[str, Any]]:
        return [c for c in self.chunks if c.get("usage")]


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=10) as client:
        yield client


async def stream(
    http: httpx2.AsyncClient, llm: FakeLlm, body: dict[str, Any], **headers: str
) -> Sse:
    url = f"{llm.base_url}/chat/completions"
    async with http.stream("POST", url, json=body, headers=headers) as response:
        sse = Sse(status=response.status_code)
        if response.headers.get("content-type") != "text/event-stream":
            await response.aread()
            sse.chunks.append(response.json())
            return sse
        try:
            async for line in response.aiter_lines():
                if line == "data: [DONE]":
                    sse.done = True
                elif line.startswith("data: "):
                    sse.chunks.append(json.loads(line.removeprefix("data: ")))
        except httpx2.HTTPError:
            sse.cut = True
    return sse


async def post(
    http: httpx2.AsyncClient, llm: FakeLlm, body: dict[str, Any], **headers: str
) -> httpx2.Response:
    return await http.post(f"{llm.base_url}/chat/completions", json=body, headers=headers)


def joined_arguments(calls: list[dict[str, Any]], index: int) -> str:
    return "".join(
        c["function"].get("arguments") or "" for c in calls if c.get("index", 0) == index
    )


# ------------------------------------------------------------------ 1. tool calls in a stream


async def test_openai_and_vllm_name_a_call_once_then_stream_its_arguments(
    http: httpx2.AsyncClient,
) -> None:
    for like, opens_with_arguments in (("openai", True), ("vllm", False)):
        async with FakeLlm(like=like) as llm:
            llm.script(CallTools(calls=CALLS))
            sse = await stream(http, llm, chat(tools=TOOLS))
        calls = sse.calls()
        first = calls[0]
        assert first["index"] == 0 and first["type"] == "function"
        assert first["function"]["name"] == "calculator" and first["id"]
        assert ("arguments" in first["function"]) is opens_with_arguments, like
        later = [c for c in calls[1:] if c["index"] == 0]
        assert later and all(set(c) == {"index", "function"} for c in later), like
        assert all("name" not in c["function"] for c in later), like
        assert json.loads(joined_arguments(calls, 0)) == {"expression": "2 + 2"}
        assert json.loads(joined_arguments(calls, 1)) == {"expression": "3 * 7"}
        assert sse.finish() == "tool_calls" and sse.done
    assert first["id"].startswith("chatcmpl-tool-")  # vLLM's own call ids


async def test_llamacpp_repeats_the_whole_name_and_id_in_every_delta(
    http: httpx2.AsyncClient,
) -> None:
    async with FakeLlm(like="llamacpp") as llm:
        llm.script(CallTools(calls=CALLS[:1]))
        sse = await stream(http, llm, chat(tools=TOOLS, tool_choice=FORCED))
    calls = sse.calls()
    assert len(calls) > 2
    assert {c["function"]["name"] for c in calls} == {"calculator"}  # every one, whole
    assert len({c["id"] for c in calls}) == 1
    assert calls[0]["id"].startswith("call__0_calculator_")
    mirrors = [d["function_call"] for d in sse.deltas() if d.get("function_call")]
    assert [m["name"] for m in mirrors] == ["calculator"] * len(calls)
    assert json.loads(joined_arguments(calls, 0)) == {"expression": "2 + 2"}
    assert all(d.get("content") is None for d in sse.deltas())


async def test_ollama_sends_each_call_whole_in_one_chunk_with_its_index(
    http: httpx2.AsyncClient,
) -> None:
    async with FakeLlm(like="ollama") as llm:
        llm.script(CallTools(calls=CALLS))
        sse = await stream(http, llm, chat(tools=TOOLS))
    tool_deltas = [d for d in sse.deltas() if d.get("tool_calls")]
    assert len(tool_deltas) == 2
    for index, delta in enumerate(tool_deltas):
        (call,) = delta["tool_calls"]
        assert call["index"] == index and call["id"] and call["function"]["name"] == "calculator"
        assert json.loads(call["function"]["arguments"]) == CALLS[index][1]
        assert delta["content"] == ""
    assert sse.finish() == "tool_calls"


async def test_litellm_repeats_the_id_but_names_the_call_once(http: httpx2.AsyncClient) -> None:
    async with FakeLlm(like="litellm") as llm:
        llm.script(CallTools(calls=CALLS[:1]))
        sse = await stream(http, llm, chat(tools=TOOLS))
    calls = sse.calls()
    assert len({c["id"] for c in calls}) == 1 and all(c["type"] == "function" for c in calls)
    assert [c["function"].get("name") for c in calls].count("calculator") == 1
    assert json.loads(joined_arguments(calls, 0)) == {"expression": "2 + 2"}


@pytest.mark.parametrize("like", ALL)
async def test_arguments_can_come_as_a_json_object(http: httpx2.AsyncClient, like: str) -> None:
    async with FakeLlm(like=like, object_arguments=True) as llm:
        llm.script(CallTools(calls=CALLS[:1]), CallTools(calls=CALLS[:1]))
        sse = await stream(http, llm, chat(tools=TOOLS, tool_choice=FORCED))
        whole = (await post(http, llm, chat(False, tools=TOOLS, tool_choice=FORCED))).json()
    (call,) = sse.calls()
    assert call["function"]["arguments"] == {"expression": "2 + 2"}
    message = whole["choices"][0]["message"]
    assert message["tool_calls"][0]["function"]["arguments"] == {"expression": "2 + 2"}


async def test_index_can_be_left_out_as_old_ollama_did(http: httpx2.AsyncClient) -> None:
    async with FakeLlm(like="ollama", tool_call_index=False) as llm:
        llm.script(CallTools(calls=CALLS))
        sse = await stream(http, llm, chat(tools=TOOLS))
    assert len(sse.calls()) == 2
    assert all("index" not in call for call in sse.calls())


async def test_text_and_tool_calls_come_in_one_answer(http: httpx2.AsyncClient) -> None:
    async with FakeLlm() as llm:
        llm.script(CallTools(calls=CALLS[:1], text="Let me work that out."))
        sse = await stream(http, llm, chat(tools=TOOLS))
    assert sse.text() == "Let me work that out."
    assert sse.calls() and sse.finish() == "tool_calls"


# ------------------------------------------------------------------ 2. usage


@pytest.mark.parametrize("like", ALL)
async def test_usage_is_streamed_where_and_when_each_server_streams_it(
    http: httpx2.AsyncClient, like: str
) -> None:
    asked = chat(stream_options={"include_usage": True})
    async with FakeLlm(like=like) as llm:
        llm.script(Reply(text="Hello there."), Reply(text="Hello there."))
        with_usage = await stream(http, llm, asked)
        without = await stream(http, llm, chat())
    assert without.usage_chunks() == []
    carriers = with_usage.usage_chunks()
    if like == "llamacpp":  # stream_options is not read at all
        assert carriers == []
        return
    assert carriers == [with_usage.chunks[-1]]  # the last chunk before [DONE], and only it
    last = carriers[0]
    assert last["usage"]["prompt_tokens"] > 0 and last["usage"]["completion_tokens"] > 0
    assert with_usage.chunks[-2]["choices"][0]["finish_reason"] == "stop"
    if like == "litellm":  # a placeholder choice stays on the usage chunk
        assert last["choices"] == [{"index": 0, "delta": {}}]
    else:
        assert last["choices"] == []


@pytest.mark.parametrize("like", ALL)
async def test_an_unstreamed_answer_always_has_usage(http: httpx2.AsyncClient, like: str) -> None:
    async with FakeLlm(like=like) as llm:
        llm.script(Reply(text="Hello there."))
        answer = (await post(http, llm, chat(False))).json()
    usage = answer["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert answer["choices"][0]["message"]["content"] == "Hello there."


async def test_a_reasoning_model_reports_its_reasoning_tokens(http: httpx2.AsyncClient) -> None:
    body = chat(model="o4-mini", stream_options={"include_usage": True})
    async with FakeLlm(reasoning_tokens=100) as llm:
        llm.script(Reply(text="4"))
        usage = (await stream(http, llm, body)).usage_chunks()[0]["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 100
    assert usage["completion_tokens"] > 100  # reasoning is billed as output


# ------------------------------------------------------------------ 3. tool_choice


async def test_llamacpp_reads_a_missing_tool_choice_as_none(http: httpx2.AsyncClient) -> None:
    async with FakeLlm(like="llamacpp") as llm:
        llm.script(CallTools(calls=CALLS[:1]))
        sse = await stream(http, llm, chat(tools=TOOLS))
    assert sse.calls() == [] and sse.finish() == "stop"
    assert "calculator" in sse.text()


async def test_llamacpp_cannot_stream_a_tool_call_the_model_chose_itself(
    http: httpx2.AsyncClient,
) -> None:
    async with FakeLlm(like="llamacpp") as llm:
        llm.script(CallTools(calls=CALLS[:1]), Reply(text="Just words."))
        chose_tool = await stream(http, llm, chat(tools=TOOLS, tool_choice="auto"))
        chose_text = await stream(http, llm, chat(tools=TOOLS, tool_choice="auto"))
    assert chose_tool.status == 200  # the headers went out before the model ran
    assert chose_tool.chunks == [] and not chose_tool.done
    assert chose_text.text() == "Just words." and chose_text.done


async def test_llamacpp_answers_tool_choice_auto_unstreamed(http: httpx2.AsyncClient) -> None:
    async with FakeLlm(like="llamacpp") as llm:
        llm.script(CallTools(calls=CALLS[:1]))
        answer = await post(http, llm, chat(False, tools=TOOLS, tool_choice="auto"))
    message = answer.json()["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"][0]["function"]["name"] == "calculator"
    assert message["function_call"]["name"] == "calculator"  # the legacy mirror
    assert answer.json()["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("like", ["openai", "vllm", "litellm", "ollama"])
async def test_a_missing_tool_choice_means_auto(http: httpx2.AsyncClient, like: str) -> None:
    async with FakeLlm(like=like) as llm:
        llm.script(CallTools(calls=CALLS[:1]))
        sse = await stream(http, llm, chat(tools=TOOLS))
    assert sse.calls() and sse.finish() == "tool_calls"


@pytest.mark.parametrize(("like", "obeys"), [("openai", True), ("vllm", True), ("ollama", False)])
async def test_tool_choice_none_is_obeyed_except_by_ollama(
    http: httpx2.AsyncClient, like: str, obeys: bool
) -> None:
    async with FakeLlm(like=like) as llm:
        llm.script(CallTools(calls=CALLS[:1]))
        sse = await stream(http, llm, chat(tools=TOOLS, tool_choice="none"))
    assert (sse.calls() == []) is obeys


async def test_vllm_without_auto_tool_choice_refuses_auto(http: httpx2.AsyncClient) -> None:
    async with FakeLlm(like="vllm", auto_tool_choice=False) as llm:
        refused = await post(http, llm, chat(tools=TOOLS, tool_choice="auto"))
        forced = await stream(http, llm, chat(tools=TOOLS, tool_choice=FORCED))
    assert refused.status_code == 400
    assert refused.json()["error"]["message"].startswith('"auto" tool choice requires')
    assert forced.status == 200


# ------------------------------------------------------------------ 4. context overflow


def long_chat(words: int, stream: bool = True, **fields: Any) -> dict[str, Any]:
    text = "The quick brown fox jumps over the lazy dog. " * (words // 9)
    return chat(stream, messages=[{"role": "user", "content": text}], **fields)


@pytest.mark.parametrize("like", ["openai", "vllm", "litellm"])
async def test_an_overflow_is_a_400_in_the_servers_words(
    http: httpx2.AsyncClient, like: str
) -> None:
    async with FakeLlm(like=like, context_tokens=500) as llm:
        llm.script(Reply(text="kept for the next request"))
        refused = await post(http, llm, long_chat(2000))
        served = await stream(http, llm, chat())
    assert refused.status_code == 400
    error = refused.json()["error"]
    if like == "openai":
        assert error["code"] == "context_length_exceeded"
        assert error["type"] == "invalid_request_error" and error["param"] == "messages"
        assert error["message"].startswith("This model's maximum context length is 500 tokens.")
    elif like == "vllm":
        assert error["type"] == "BadRequestError" and error["code"] == 400
        assert error["param"] == "input_tokens"
        assert (
            "maximum context length is 500 tokens. However, your request has" in (error["message"])
        )
    else:
        assert error["message"].startswith("litellm.ContextWindowExceededError: ")
        assert error["code"] == "400" and error["type"] is None
    assert served.text() == "kept for the next request"  # a refusal consumes no script item


async def test_vllm_counts_the_output_asked_for(http: httpx2.AsyncClient) -> None:
    async with FakeLlm(like="vllm", context_tokens=500) as llm:
        prompt = llm.prompt_tokens(long_chat(100))
        refused = await post(http, llm, long_chat(100, max_tokens=500 - prompt + 1))
    message = refused.json()["error"]["message"]
    assert f"you requested {500 - prompt + 1} output tokens" in message
    assert f"your prompt contains {prompt} input tokens" in message


async def test_llamacpp_overflow_is_an_empty_stream_or_an_unstreamed_400(
    http: httpx2.AsyncClient,
) -> None:
    async with FakeLlm(like="llamacpp", context_tokens=500) as llm:
        streamed = await stream(http, llm, long_chat(2000))
        whole = await post(http, llm, long_chat(2000, False))
    assert streamed.status == 200 and streamed.chunks == [] and not streamed.done
    assert whole.status_code == 400
    error = whole.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert "in the messages, None in the completion" in error["message"]


async def test_ollama_silently_drops_the_oldest_messages(http: httpx2.AsyncClient) -> None:
    seen: list[list[dict[str, Any]]] = []

    def responder(body: dict[str, Any]) -> Reply:
        seen.append(body["messages"])
        return Reply(text="ok")

    history = [{"role": "system", "content": "Be brief."}]
    for turn in range(40):
        history.append({"role": "user", "content": f"Question {turn}: " + "words " * 30})
        history.append({"role": "assistant", "content": f"Answer {turn}: " + "words " * 30})
    history.append({"role": "user", "content": "And the last one?"})
    body = chat(messages=history, stream_options={"include_usage": True})
    async with FakeLlm(responder, like="ollama", context_tokens=1000) as llm:
        full = llm.prompt_tokens(body)
        sse = await stream(http, llm, body)
    assert full > 1000 and sse.status == 200 and sse.text() == "ok"
    (kept,) = seen
    assert kept[0] == history[0] and kept[-1] == history[-1]
    assert history[1] not in kept and len(kept) < len(history)
    assert sse.usage_chunks()[0]["usage"]["prompt_tokens"] <= 1000


async def test_local_servers_count_more_tokens_than_tiktoken() -> None:
    body = long_chat(900)
    tiktoken = TokenCounter("gpt-4o").count_request(body["messages"])
    counts = {like: FakeLlm(like=like).prompt_tokens(body) for like in ALL}
    assert counts["openai"] == tiktoken
    for like in ("llamacpp", "ollama"):
        assert 1.4 < counts[like] / tiktoken < 1.9, (like, counts[like], tiktoken)
    assert counts["vllm"] > tiktoken


# ------------------------------------------------------------------ 5. one slot

LONG = "a long answer " * 40


async def read_while(
    http: httpx2.AsyncClient, llm: FakeLlm, other: dict[str, Any]
) -> tuple[Sse, Sse]:
    """Stream LONG and, once its first words are in, send `other`; both as they came back."""
    url = f"{llm.base_url}/chat/completions"
    async with http.stream("POST", url, json=chat()) as response:
        first = Sse(status=response.status_code)
        lines = response.aiter_lines()
        second: asyncio.Task[Sse] | None = None
        async for line in lines:
            if line == "data: [DONE]":
                first.done = True
                first.overtaken = second is not None and second.done()
            elif line.startswith("data: "):
                first.chunks.append(json.loads(line.removeprefix("data: ")))
                if second is None and first.text():
                    second = asyncio.create_task(stream(http, llm, other))
    assert second is not None
    return first, await second


async def test_llamacpp_ends_a_running_stream_when_another_request_arrives(
    http: httpx2.AsyncClient,
) -> None:
    async with FakeLlm(like="llamacpp") as llm:
        llm.script(Reply(text=LONG, chunk_chars=4, chunk_delay=0.05), Reply(text="second"))
        interrupted, second = await read_while(http, llm, chat())
    assert interrupted.done and interrupted.finish() is None  # [DONE], no finish_reason
    assert 0 < len(interrupted.text()) < len(LONG)
    assert second.text() == "second" and second.finish() == "stop"


async def test_other_servers_answer_requests_at_once(http: httpx2.AsyncClient) -> None:
    async with FakeLlm(like="vllm") as llm:
        llm.script(Reply(text=LONG, chunk_chars=4, chunk_delay=0.01), Reply(text="quick"))
        slow, quick = await read_while(http, llm, chat())
    assert slow.text() == LONG and slow.finish() == "stop"
    assert quick.text() == "quick" and quick.finish() == "stop"
    assert slow.overtaken


# ------------------------------------------------------------------ 6. reasoning models


async def test_a_reasoning_model_refuses_max_tokens_and_temperature(
    http: httpx2.AsyncClient,
) -> None:
    async with FakeLlm() as llm:
        llm.script(Reply(text="fine"))
        tokens = await post(http, llm, chat(model="o3-mini", max_tokens=50))
        warm = await post(http, llm, chat(model="gpt-5", temperature=0.2))
        taken = await stream(
            http,
            llm,
            chat(model="gpt-5-mini", max_completion_tokens=50, reasoning_effort="low"),
        )
    assert tokens.status_code == warm.status_code == 400
    assert tokens.json() == {
        "error": {
            "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "unsupported_parameter",
        }
    }
    assert warm.json() == {
        "error": {
            "message": "Unsupported value: 'temperature' does not support 0.2 with this model. "
            "Only the default (1) value is supported.",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "unsupported_value",
        }
    }
    assert taken.text() == "fine"


async def test_chat_models_take_temperature_but_not_reasoning_effort(
    http: httpx2.AsyncClient,
) -> None:
    async with FakeLlm() as llm:
        chat_model = await post(http, llm, chat(False, model="gpt-5-chat-latest", temperature=0))
        effort = await post(http, llm, chat(model="gpt-4o", reasoning_effort="low"))
    assert chat_model.status_code == 200
    assert effort.status_code == 400
    assert effort.json()["error"]["param"] == "reasoning_effort"


# ------------------------------------------------------------------ 7. headers


async def test_each_requests_headers_are_recorded(http: httpx2.AsyncClient) -> None:
    async with FakeLlm() as llm:
        await stream(http, llm, chat())
        await stream(http, llm, chat(), Authorization="Bearer sk-local")
    assert len(llm.headers) == len(llm.requests) == 2
    keyless, keyed = ({k.lower(): v for k, v in h.items()} for h in llm.headers)
    assert "authorization" not in keyless
    assert keyed["authorization"] == "Bearer sk-local"


# ------------------------------------------------------------------ 8. discovery


@pytest.mark.parametrize("like", ALL)
async def test_models_are_listed(http: httpx2.AsyncClient, like: str) -> None:
    async with FakeLlm(like=like, models=("alpha", "beta"), context_tokens=4321) as llm:
        listed = (await http.get(f"{llm.base_url}/models")).json()
    assert [card["id"] for card in listed["data"]] == ["alpha", "beta"]
    if like == "vllm":
        assert {card["max_model_len"] for card in listed["data"]} == {4321}
    else:
        assert all("max_model_len" not in card for card in listed["data"])


async def test_each_server_tells_its_context_its_own_way(http: httpx2.AsyncClient) -> None:
    async with FakeLlm(like="llamacpp", context_tokens=4096) as llm:
        root = f"http://127.0.0.1:{llm.port}"
        props = (await http.get(f"{root}/props")).json()
    assert props["default_generation_settings"]["n_ctx"] == 4096
    async with FakeLlm(like="ollama", context_tokens=4096, trained_context_tokens=32768) as llm:
        root = f"http://127.0.0.1:{llm.port}"
        show = (await http.post(f"{root}/api/show", json={"model": "fake"})).json()
        missing = await http.post(f"{root}/api/show", json={"model": "other"})
        ps = (await http.get(f"{root}/api/ps")).json()
    assert show["model_info"]["llama.context_length"] == 32768  # trained, not in use
    assert missing.status_code == 404
    assert ps["models"][0]["context_length"] == 4096  # what it runs with
    async with FakeLlm(like="litellm", context_tokens=4096) as llm:
        info = (await http.get(f"http://127.0.0.1:{llm.port}/model/info")).json()
    assert info["data"][0]["model_info"]["max_input_tokens"] == 4096
    async with FakeLlm() as llm:
        root = f"http://127.0.0.1:{llm.port}"
        for path in ("/props", "/model/info", "/api/ps"):
            assert (await http.get(root + path)).status_code == 404


# ------------------------------------------------------------------ 9. unstreamed answers


@pytest.mark.parametrize("like", ALL)
async def test_unstreamed_tool_calls_follow_the_personality(
    http: httpx2.AsyncClient, like: str
) -> None:
    async with FakeLlm(like=like) as llm:
        llm.script(CallTools(calls=CALLS[:1]))
        answer = (await post(http, llm, chat(False, tools=TOOLS, tool_choice=FORCED))).json()
    message = answer["choices"][0]["message"]
    (call,) = message["tool_calls"]
    assert call["function"]["name"] == "calculator"
    assert json.loads(call["function"]["arguments"]) == {"expression": "2 + 2"}
    assert message["content"] == ("" if like == "ollama" else None)
    assert ("index" in call) is (like == "ollama")
    assert ("function_call" in message) is (like == "llamacpp")
    assert answer["usage"]["prompt_tokens"] > 0


# ------------------------------------------------------------------ the command


def test_an_unknown_server_is_a_usage_error_naming_the_known_ones() -> None:
    command = Path(sys.executable).parent / "assistant"
    result = subprocess.run(
        [str(command), "fake-llm", "--like", "tgi"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    said = " ".join(result.stderr.split())
    assert "'tgi' is not a server the fake knows" in said
    for name in ALL:
        assert name in said


def test_an_unknown_personality_is_refused_in_code_too() -> None:
    with pytest.raises(ValueError, match="choose one of: openai, vllm, ollama, litellm"):
        FakeLlm(like="tgi")
