"""The model client against the fake server, through the real openai SDK and HTTP."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from aiohttp import web

from assistant.llm import (
    ChatMessage,
    ChatRequest,
    Completion,
    LlmAuthFailed,
    LlmError,
    LlmRejected,
    LlmStreamBroken,
    LlmTimeout,
    LlmUnavailable,
    OpenAIChatModel,
    Timeouts,
)
from assistant.testing import CallTools, Cut, Fail, FakeLlm, Hang, Reply

REQUEST = ChatRequest(model="gpt-4o-mini", messages=[ChatMessage(role="user", content="hi")])
SECRET = "sk-test-very-secret-0123456789"


def connect(base_url: str, **timeouts: float) -> OpenAIChatModel:
    # wide enough for a loaded machine (a first call also pays lazy imports); the timeout
    # tests pass their own
    limits = {"first_token": 10.0, "idle": 5.0, "total": 30.0, **timeouts}
    return OpenAIChatModel.connect(
        api_key=SECRET, base_url=base_url, timeouts=Timeouts(**limits), max_retries=2
    )


async def run(
    model: OpenAIChatModel, request: ChatRequest = REQUEST
) -> tuple[list[str], Completion]:
    pieces: list[str] = []
    async for item in model.stream(request):
        if isinstance(item, Completion):
            return pieces, item
        pieces.append(item)
    raise AssertionError("no completion")


async def test_text_streams_in_pieces_with_usage_and_timing(fake_llm: FakeLlm):
    fake_llm.script(Reply(text="one two three four", chunk_chars=4, cached_tokens=3))
    model = connect(fake_llm.base_url)
    pieces, done = await run(model)
    await model.close()
    assert pieces == ["one ", "two ", "thre", "e fo", "ur"]
    assert done.text == "one two three four" and done.finish_reason == "stop"
    assert done.usage is not None and done.usage.cached_tokens == 3
    assert done.usage.completion_tokens == 4
    assert done.ttft_ms is not None and done.ttft_ms <= done.total_ms
    body = fake_llm.requests[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_tool_call_arguments_split_over_chunks_are_assembled(fake_llm: FakeLlm):
    fake_llm.script(
        CallTools(
            calls=(
                ("calculator", {"expression": "(1 + 2) * 3 / 4"}),
                ("current_time", {"timezone": "America/Argentina/Buenos_Aires"}),
            )
        )
    )
    model = connect(fake_llm.base_url)
    _, done = await run(model)
    await model.close()
    assert done.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in done.tool_calls] == [
        ("calculator", '{"expression": "(1 + 2) * 3 / 4"}'),
        ("current_time", '{"timezone": "America/Argentina/Buenos_Aires"}'),
    ]
    assert len({c.id for c in done.tool_calls}) == 2


async def test_429_is_retried_after_the_servers_delay(fake_llm: FakeLlm):
    fake_llm.script(Fail(status=429, headers={"retry-after-ms": "150"}), Reply(text="ok"))
    model = connect(fake_llm.base_url)
    _, done = await run(model)
    await model.close()
    assert done.text == "ok" and done.attempts == 2
    assert done.total_ms >= 150


async def test_retries_are_bounded(fake_llm: FakeLlm):
    fake_llm.script(*[Fail(status=500, headers={"retry-after-ms": "1"})] * 5)
    model = connect(fake_llm.base_url)
    with pytest.raises(LlmUnavailable, match="HTTP 500"):
        await run(model)
    await model.close()
    assert len(fake_llm.requests) == 3


@pytest.mark.parametrize(("status", "error"), [(401, LlmAuthFailed), (400, LlmRejected)])
async def test_client_errors_are_not_retried(fake_llm: FakeLlm, status, error):
    fake_llm.script(Fail(status=status, echo_key=True))
    model = connect(fake_llm.base_url)
    with pytest.raises(error) as caught:
        await run(model)
    await model.close()
    assert len(fake_llm.requests) == 1
    assert not caught.value.retryable
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)


async def test_first_token_timeout(fake_llm: FakeLlm):
    fake_llm.script(Reply(text="late", first_delay=2.0))
    model = connect(fake_llm.base_url, first_token=0.2)
    with pytest.raises(LlmTimeout, match="first token"):
        await run(model)
    await model.close()


async def test_the_first_token_timeout_covers_retries(fake_llm: FakeLlm):
    fake_llm.script(
        Fail(status=429, headers={"retry-after-ms": "300"}), Reply(text="late", first_delay=0.4)
    )
    model = connect(fake_llm.base_url, first_token=0.5)
    with pytest.raises(LlmTimeout, match="first token"):
        await run(model)
    await model.close()


async def test_idle_timeout_on_a_hung_stream(fake_llm: FakeLlm):
    fake_llm.script(Hang(text="partial"))
    model = connect(fake_llm.base_url, idle=0.2)
    pieces: list[str] = []

    async def consume() -> None:
        async for item in model.stream(REQUEST):
            pieces.append(str(item))

    with pytest.raises(LlmTimeout, match="next chunk") as caught:
        await consume()
    await model.close()
    assert "".join(pieces) == "partial"
    assert caught.value.ttft_ms is not None and caught.value.total_ms >= 200


async def test_total_timeout_bounds_a_slow_but_steady_stream(fake_llm: FakeLlm):
    fake_llm.script(Reply(text="x" * 40, chunk_chars=1, chunk_delay=0.05))
    model = connect(fake_llm.base_url, idle=1.0, total=0.5)
    with pytest.raises(LlmTimeout):
        await run(model)
    await model.close()


async def test_a_stream_cut_midway_is_a_broken_stream_not_an_answer(fake_llm: FakeLlm):
    fake_llm.script(Cut(text="half an ans"))
    model = connect(fake_llm.base_url)
    with pytest.raises(LlmStreamBroken):
        await run(model)
    await model.close()
    assert len(fake_llm.requests) == 1


async def test_unreachable_server_is_unavailable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    model = OpenAIChatModel.connect(
        api_key=SECRET,
        base_url=f"http://127.0.0.1:{port}/v1",
        timeouts=Timeouts(first_token=1, idle=1, total=3),
        max_retries=1,
    )
    with pytest.raises(LlmUnavailable) as caught:
        await run(model)
    await model.close()
    assert isinstance(caught.value, LlmError) and caught.value.retryable


async def test_a_finished_stream_leaves_its_connection_for_the_next_call():
    """Servers behind uvicorn (vLLM, LiteLLM, llama-cpp-python) end the body in a write of
    its own after `[DONE]`: closed before that end arrives, the connection was dropped and
    every call opened another (a TLS handshake each, against a real server)."""
    peers: set[object] = set()

    async def stream(request: web.Request) -> web.StreamResponse:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await asyncio.sleep(0.05)  # the app has returned; the server ends the body later
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", stream)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    model = connect(f"http://127.0.0.1:{port}/v1")
    try:
        for _ in range(4):
            pieces, done = await run(model)
            assert pieces == ["hi"] and done.finish_reason == "stop"
    finally:
        await model.close()
        await runner.cleanup()
    assert len(peers) == 1
