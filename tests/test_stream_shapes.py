"""Every shape real servers stream a completion in, sent byte for byte over loopback HTTP to
the real client: names once (OpenAI) or repeated in every delta (llama-cpp-python), whole
calls in one chunk (Ollama), no `index` or no `id`, arguments as a JSON object, text and tool
calls together, usage with or without choices; and the ways they refuse."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from assistant.llm import (
    ChatMessage,
    ChatRequest,
    Completion,
    LlmContextOverflow,
    LlmEmptyStream,
    OpenAIChatModel,
    Timeouts,
)
from assistant.model_traits import ModelTable
from assistant.tools import ToolDefinition

CALC = ToolDefinition(
    name="calculator",
    description="Evaluate arithmetic.",
    parameters={"type": "object", "properties": {"expression": {"type": "string"}}},
)
ASK = ChatRequest(model="m", messages=[ChatMessage(role="user", content="6*14?")], tools=[CALC])


@dataclass
class Wire:
    """A server that answers each request with the next scripted response, verbatim."""

    responses: list[Any] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.json())
        self.headers.append(dict(request.headers))
        script = self.responses.pop(0)
        if isinstance(script, tuple):  # (status, JSON body)
            return web.json_response(script[1], status=script[0])
        if isinstance(script, dict):  # an unstreamed completion
            return web.json_response(script)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in script:
            data = chunk if isinstance(chunk, str) else json.dumps(chunk)
            await response.write(f"data: {data}\n\n".encode())
        await response.write_eof()
        return response


@pytest.fixture
async def wire() -> AsyncIterator[Wire]:
    server = Wire()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = int(runner.addresses[0][1])
    yield server
    await runner.cleanup()


def client(wire: Wire, key: str | None = "sk-test", **options: Any) -> OpenAIChatModel:
    return OpenAIChatModel.connect(
        api_key=key,
        base_url=wire.base_url,
        timeouts=Timeouts(first_token=2, idle=2, total=10),
        max_retries=2,
        **options,
    )


async def complete(model: OpenAIChatModel, request: ChatRequest = ASK) -> Completion:
    try:
        async for item in model.stream(request):
            if isinstance(item, Completion):
                return item
    finally:
        await model.close()
    raise AssertionError("no completion")


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


def call(function: dict[str, Any], **keys: Any) -> dict[str, Any]:
    return chunk({"tool_calls": [{**keys, "type": "function", "function": function}]})


EXPR = {"expression": "6*14"}
ARGS = json.dumps(EXPR)
USAGE = {"prompt_tokens": 420, "completion_tokens": 9, "total_tokens": 429}
END = [chunk({}, "tool_calls"), "[DONE]"]

SHAPES = {
    "openai: name once, arguments in pieces": [
        call({"name": "calculator", "arguments": ""}, index=0, id="call_1"),
        call({"arguments": ARGS[:9]}, index=0),
        call({"arguments": ARGS[9:]}, index=0),
        *END,
    ],
    "llama-cpp-python: name and id repeated in every delta": [
        call({"name": "calculator", "arguments": ARGS[:5]}, index=0, id="call_1"),
        call({"name": "calculator", "arguments": ARGS[5:12]}, index=0, id="call_1"),
        call({"name": "calculator", "arguments": ARGS[12:]}, index=0, id="call_1"),
        *END,
    ],
    "ollama: the whole call in one chunk, no index": [
        call({"name": "calculator", "arguments": ARGS}, id="call_1"),
        *END,
    ],
    "no index and no id on later deltas": [
        call({"name": "calculator", "arguments": ""}, id="call_1"),
        call({"arguments": ARGS[:9]}),
        call({"arguments": ARGS[9:]}),
        *END,
    ],
    "arguments as a JSON object": [
        call({"name": "calculator", "arguments": EXPR}, index=0, id="call_1"),
        *END,
    ],
    "no id at all": [
        call({"name": "calculator", "arguments": ARGS}, index=0),
        *END,
    ],
}


@pytest.mark.parametrize("shape", SHAPES)
async def test_every_servers_tool_call_shape_assembles_the_same_call(wire: Wire, shape: str):
    wire.responses.append(SHAPES[shape])
    done = await complete(client(wire))
    assert [(c.name, json.loads(c.arguments)) for c in done.tool_calls] == [("calculator", EXPR)]
    assert done.tool_calls[0].id in ("call_1", "call_0")
    assert done.finish_reason == "tool_calls"


async def test_two_calls_without_index_are_told_apart_by_id(wire: Wire):
    wire.responses.append(
        [
            call({"name": "calculator", "arguments": ARGS}, id="a"),
            call({"name": "current_time", "arguments": '{"timezone": "UTC"}'}, id="b"),
            *END,
        ]
    )
    done = await complete(client(wire))
    assert [(c.id, c.name) for c in done.tool_calls] == [("a", "calculator"), ("b", "current_time")]


async def test_two_whole_calls_without_index_or_id_stay_two_calls(wire: Wire):
    wire.responses.append(
        [
            call({"name": "calculator", "arguments": ARGS}),
            call({"name": "calculator", "arguments": '{"expression": "1+1"}'}),
            *END,
        ]
    )
    done = await complete(client(wire))
    assert [json.loads(c.arguments) for c in done.tool_calls] == [EXPR, {"expression": "1+1"}]
    assert len({c.id for c in done.tool_calls}) == 2


async def test_a_name_streamed_in_pieces_is_joined_not_taken_for_a_repeat(wire: Wire):
    wire.responses.append(
        [
            call({"name": "ad", "arguments": ""}, index=0, id="c"),
            call({"name": "d", "arguments": "{}"}, index=0),
            *END,
        ]
    )
    done = await complete(client(wire))
    assert [c.name for c in done.tool_calls] == ["add"]


async def test_text_in_parts_and_usage_of_zero_prompt_tokens_are_kept(wire: Wire):
    parts = [{"type": "text", "text": "8"}, {"type": "text", "text": "4"}]
    usage = {"prompt_tokens": 0, "completion_tokens": 2}  # a server with a cached prompt
    wire.responses.append([chunk({"content": parts}, "stop"), {"choices": [], "usage": usage}])
    done = await complete(client(wire))
    assert done.text == "84"
    assert done.usage is not None and done.usage.completion_tokens == 2


async def test_one_stream_dropped_before_a_tool_call_does_not_stop_streaming_tools(wire: Wire):
    """A blip is retried unstreamed once; only a server that does it again (or says so) has
    its tool rounds unstreamed for good."""
    whole = {
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "calculator", "arguments": ARGS},
                        }
                    ],
                },
            }
        ],
    }
    wire.responses += [[], whole, SHAPES["openai: name once, arguments in pieces"], [], whole]
    wire.responses += [whole]
    model = client(wire)
    first = await anext_completion(model)
    second = await anext_completion(model)
    third = await anext_completion(model)
    assert (first.streamed, second.streamed, third.streamed) == (False, True, False)
    assert not model.streams_tools("m")  # twice: learnt
    await complete(model)
    assert [b["stream"] for b in wire.bodies] == [True, False, True, True, False, False]


async def test_text_and_a_tool_call_in_one_response_are_both_kept(wire: Wire):
    wire.responses.append(
        [
            chunk({"content": "Let me work that out. "}),
            call({"name": "calculator", "arguments": ARGS}, index=0, id="c"),
            *END,
        ]
    )
    done = await complete(client(wire))
    assert done.text == "Let me work that out. "
    assert [c.name for c in done.tool_calls] == ["calculator"]


@pytest.mark.parametrize(
    "tail",
    [
        [chunk({}, "stop"), {"model": "m", "choices": [], "usage": USAGE}],  # OpenAI, vLLM
        [chunk({}, "stop", usage=USAGE)],  # LiteLLM: on the last chunk with choices
    ],
    ids=["usage-without-choices", "usage-with-choices"],
)
async def test_usage_is_read_wherever_the_server_puts_it(wire: Wire, tail: list[Any]):
    wire.responses.append([chunk({"content": "84"}), *tail, "[DONE]"])
    done = await complete(client(wire, key=None))
    assert done.usage is not None and done.usage.prompt_tokens == 420


async def test_reasoning_tokens_are_read_from_the_usage_details(wire: Wire):
    usage = {**USAGE, "completion_tokens_details": {"reasoning_tokens": 6}}
    wire.responses.append([chunk({"content": "84"}, "stop"), {"choices": [], "usage": usage}])
    done = await complete(client(wire))
    assert done.usage is not None and done.usage.reasoning_tokens == 6


async def test_tools_are_offered_with_tool_choice_auto_and_no_key_is_sent_without_one(wire: Wire):
    wire.responses.append([chunk({"content": "84"}, "stop")])
    await complete(client(wire, key=None))
    assert wire.bodies[0]["tool_choice"] == "auto"  # llama.cpp reads a missing one as "none"
    assert "Authorization" not in wire.headers[0]


async def test_a_named_tool_choice_is_sent_in_openais_form(wire: Wire):
    wire.responses.append([chunk({"content": "84"}, "stop")])
    request = ChatRequest(model="m", messages=ASK.messages, tools=[CALC], tool_choice="calculator")
    await complete(client(wire), request)
    assert wire.bodies[0]["tool_choice"] == {"type": "function", "function": {"name": "calculator"}}
    assert wire.headers[0]["Authorization"] == "Bearer sk-test"


async def test_a_server_that_cannot_stream_tool_calls_gets_them_unstreamed(wire: Wire):
    refusal = {"error": {"message": "Automatic streaming tool choice is not supported"}}
    whole = {
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "calculator", "arguments": ARGS},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": USAGE,
    }
    wire.responses += [[refusal], whole, whole]
    model = client(wire)
    first = await anext_completion(model)
    second = await complete(model)
    assert (
        [c.name for c in first.tool_calls] == [c.name for c in second.tool_calls] == ["calculator"]
    )
    assert [b["stream"] for b in wire.bodies] == [True, False, False]  # learnt once, kept
    assert first.usage is not None and first.usage.prompt_tokens == 420


async def anext_completion(model: OpenAIChatModel, request: ChatRequest = ASK) -> Completion:
    async for item in model.stream(request):
        if isinstance(item, Completion):
            return item
    raise AssertionError("no completion")


async def test_the_table_sends_tool_rounds_unstreamed_for_a_declared_model(wire: Wire, tmp_path):
    table = tmp_path / "models.yaml"
    table.write_text("- {match: ['m'], stream_tools: false}\n")
    wire.responses.append(
        {
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "84"},
                    "finish_reason": "stop",
                }
            ],
        }
    )
    done = await complete(client(wire, models=ModelTable.load(table)))
    assert done.text == "84" and wire.bodies[0]["stream"] is False


@pytest.mark.parametrize(
    ("status", "error", "limit", "requested"),
    [
        (  # OpenAI
            400,
            {
                "message": "This model's maximum context length is 8192 tokens. However, your "
                "messages resulted in 9000 tokens. Please reduce the length of the messages.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            },
            8192,
            9000,
        ),
        (  # vLLM
            400,
            {
                "message": "This model's maximum context length is 4096 tokens. However, you "
                "requested 5000 tokens (4900 in the messages, 100 in the completion). Please "
                "reduce the length of the messages or completion.",
                "type": "BadRequestError",
                "code": 400,
            },
            4096,
            4900,
        ),
        (  # LiteLLM proxy
            400,
            {
                "message": "litellm.ContextWindowExceededError: litellm.BadRequestError: "
                "ContextWindowExceededError: OpenAIException - This model's maximum context "
                "length is 2048 tokens.",
                "type": None,
                "param": None,
                "code": "400",
            },
            2048,
            None,
        ),
        (  # llama.cpp's server (newer builds)
            400,
            {
                "code": 400,
                "message": "the request exceeds the available context size, try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": 5000,
                "n_ctx": 4096,
            },
            4096,
            5000,
        ),
        (  # Ollama
            400,
            {"message": "the input length exceeds the context length", "type": "api_error"},
            None,
            None,
        ),
    ],
    ids=["openai", "vllm", "litellm", "llamacpp", "ollama"],
)
async def test_each_servers_overflow_is_recognised(
    wire: Wire, status: int, error: dict[str, Any], limit: int | None, requested: int | None
):
    wire.responses.append((status, {"error": error}))
    with pytest.raises(LlmContextOverflow) as raised:
        await complete(client(wire))
    assert (raised.value.limit, raised.value.prompt_tokens) == (limit, requested)
    assert len(wire.bodies) == 1  # never retried as it is


async def test_an_empty_stream_is_tried_unstreamed_which_gives_the_real_error(wire: Wire):
    """llama-cpp-python streams nothing for a prompt past its context; unstreamed, the same
    request gets a 400 that says so, with its numbers."""
    overflow = {
        "message": "This model's maximum context length is 2048 tokens. However, you requested "
        "3000 tokens (3000 in the messages, None in the completion).",
        "type": "invalid_request_error",
        "code": "context_length_exceeded",
    }
    wire.responses += [[], (400, {"error": overflow})]
    with pytest.raises(LlmContextOverflow) as raised:
        await complete(client(wire), ChatRequest(model="m", messages=ASK.messages))
    assert (raised.value.limit, raised.value.prompt_tokens) == (2048, 3000)
    assert [b["stream"] for b in wire.bodies] == [True, False]


async def test_an_empty_stream_then_an_unstreamed_answer_is_answered_and_streaming_goes_on(
    wire: Wire,
):
    whole = {
        "model": "m",
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "84"}}
        ],
    }
    wire.responses += [["[DONE]"], whole, [chunk({"content": "85"}, "stop")]]
    model = client(wire)
    request = ChatRequest(model="m", messages=ASK.messages)
    first = await anext_completion(model, request)
    second = await complete(model, request)
    assert (first.text, first.attempts, second.text) == ("84", 2, "85")
    assert [b["stream"] for b in wire.bodies] == [True, False, True]  # a blip, not a trait


async def test_an_empty_stream_twice_is_called_empty(wire: Wire):
    wire.responses += [[], {"model": "m", "choices": []}]
    with pytest.raises(LlmEmptyStream):
        await complete(client(wire), ChatRequest(model="m", messages=ASK.messages))


async def test_reasoning_models_get_max_completion_tokens_and_no_temperature(wire: Wire):
    wire.responses += [[chunk({"content": "ok"}, "stop")], [chunk({"content": "ok"}, "stop")]]
    params = {"temperature": 0, "max_tokens": 50, "seed": 7, "reasoning_effort": "low"}
    table = ModelTable.load()
    model = client(wire, models=table)
    for name in ("o4-mini", "gpt-4o-mini"):
        request = ChatRequest(model=name, messages=ASK.messages, params=params)
        async for _ in model.stream(request):
            pass
    await model.close()
    reasoning, plain = wire.bodies
    assert reasoning["max_completion_tokens"] == 50 and "max_tokens" not in reasoning
    assert "temperature" not in reasoning and reasoning["reasoning_effort"] == "low"
    assert plain["max_tokens"] == 50 and plain["temperature"] == 0
    assert "reasoning_effort" not in plain


async def test_calls_beyond_the_concurrency_limit_wait_their_turn(wire: Wire):
    """A single-slot server cuts a running request when another arrives: with a limit of one
    the second request is only sent once the first has finished."""
    wire.responses += [[chunk({"content": "a"}, "stop")], [chunk({"content": "b"}, "stop")]]
    model = client(wire, max_concurrency=1)
    first = model.stream(ChatRequest(model="m", messages=ASK.messages))
    assert await anext(first) == "a"  # the first call holds the only slot, mid-answer
    second = asyncio.ensure_future(anext_text(model))
    await asyncio.sleep(0.2)
    assert len(wire.bodies) == 1 and not second.done()
    async for _ in first:
        pass
    assert await second == "b" and len(wire.bodies) == 2
    await model.close()


async def anext_text(model: OpenAIChatModel) -> str:
    async for item in model.stream(ChatRequest(model="m", messages=ASK.messages)):
        if isinstance(item, Completion):
            return item.text
    raise AssertionError("no completion")
