"""A fake OpenAI-compatible server on loopback: scriptable per test, and an offline demo model.

Tests queue what the next requests get (text, tool calls, errors, a hung or cut stream) and read
back every request body; with nothing queued, a small deterministic "model" answers, which is what
`assistant chat --fake` talks to.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from assistant.tokens import TokenCounter


@dataclass(frozen=True, kw_only=True)
class Reply:
    """Stream `text` in pieces of `chunk_chars`, waiting `first_delay` then `chunk_delay` each."""

    text: str
    chunk_chars: int = 16
    first_delay: float = 0.0
    chunk_delay: float = 0.0
    cached_tokens: int = 0
    finish_reason: str = "stop"  # "length" or "content_filter" for a reply stopped early


@dataclass(frozen=True, kw_only=True)
class CallTools:
    """Ask for tool calls, each `(name, arguments)`, in one response (so they run in parallel)."""

    calls: tuple[tuple[str, dict[str, Any]], ...]
    text: str = ""


@dataclass(frozen=True, kw_only=True)
class Fail:
    """Answer with an HTTP error, e.g. 429 with `{"retry-after-ms": "20"}`."""

    status: int
    message: str = "scripted failure"
    headers: dict[str, str] = field(default_factory=dict)
    echo_key: bool = False  # quote the caller's API key back, as careless servers do


@dataclass(frozen=True, kw_only=True)
class Hang:
    """Send `text` then go silent (the stream stays open) until the client gives up."""

    text: str = ""


@dataclass(frozen=True, kw_only=True)
class Cut:
    """Send `text` then drop the connection mid-body, as a crashing proxy would."""

    text: str = ""


Streamed = Reply | CallTools | Hang | Cut
Script = Streamed | Fail
Responder = Callable[[dict[str, Any]], Script]

_ARITHMETIC = re.compile(r"[-+(]*\d[\d.\s]*(?:[-+*/^%][-+(\s]*\d[\d.\s)]*)+")


def demo_responder(body: dict[str, Any]) -> Script:
    """A tiny deterministic model: uses the calculator and clock when offered, else echoes."""
    messages = body.get("messages", [])
    offered = {t["function"]["name"] for t in body.get("tools", [])}
    last = messages[-1] if messages else {"role": "user", "content": ""}
    content = str(last.get("content") or "")
    system = str(messages[0].get("content") or "") if messages else ""
    if "summary" in system.lower() and "conversation" in system.lower():
        return Reply(text=f"Summary: {content[:300]}")
    if last.get("role") == "tool":
        results = [str(m.get("content")) for m in _trailing_tool_results(messages)]
        return Reply(text="Here is what I found: " + "; ".join(results))
    expression = _ARITHMETIC.search(content)
    if expression and "calculator" in offered:
        return CallTools(calls=(("calculator", {"expression": expression.group().strip()}),))
    if "time" in content.lower() and "current_time" in offered:
        return CallTools(calls=(("current_time", {"timezone": "UTC"}),))
    return Reply(text=f"(fake model) You said: {content}")


def _trailing_tool_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.insert(0, message)
    return results


class FakeLlm:
    """The server. Use as `async with FakeLlm() as llm:` then point a client at `llm.base_url`."""

    def __init__(self, responder: Responder = demo_responder) -> None:
        self.requests: list[dict[str, Any]] = []
        self._queue: deque[Script] = deque()
        self._responder = responder
        self._closing = asyncio.Event()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def script(self, *items: Script) -> None:
        """Queue what the next requests get, in order; after them the responder answers."""
        self._queue.extend(items)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeLlm:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/_fake/requests", self._recorded)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeLlm:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _models(self, _request: web.Request) -> web.Response:
        return _json({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def _recorded(self, _request: web.Request) -> web.Response:
        """Every request body received so far, for tests that run the server in another process."""
        return _json({"requests": self.requests})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        script = self._queue.popleft() if self._queue else self._responder(body)
        if isinstance(script, Fail):
            message = script.message
            if script.echo_key:
                key = request.headers.get("Authorization", "").removeprefix("Bearer ")
                message += f" (API key provided: {key})"
            error = {"error": {"message": message, "type": "fake", "code": script.status}}
            return _json(error, status=script.status, headers=script.headers)
        if not body.get("stream"):
            return _json(self._whole_completion(body, script))
        return await self._stream(request, body, script)

    async def _stream(
        self, request: web.Request, body: dict[str, Any], script: Streamed
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        ident = f"chatcmpl-fake{next(self._ids)}"
        model = str(body.get("model", "fake"))

        async def send(payload: dict[str, Any] | str) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            await response.write(f"data: {data}\n\n".encode())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        await send(chunk({"role": "assistant", "content": ""}))
        text = script.text
        delays = (script.first_delay, script.chunk_delay) if isinstance(script, Reply) else (0, 0)
        size = script.chunk_chars if isinstance(script, Reply) else 16
        for index, piece in enumerate(_pieces(text, size)):
            await asyncio.sleep(delays[0] if index == 0 else delays[1])
            await send(chunk({"content": piece}))
        if isinstance(script, Hang):
            await self._wait_closing(3600)
            return response
        if isinstance(script, Cut):
            assert request.transport is not None
            request.transport.abort()
            return response
        finish = script.finish_reason if isinstance(script, Reply) else "stop"
        if isinstance(script, CallTools):
            finish = "tool_calls"
            for index, (name, arguments) in enumerate(script.calls):
                for delta in _tool_call_deltas(index, f"call_{ident}_{index}", name, arguments):
                    await send(chunk({"tool_calls": [delta]}))
        await send(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            await send({**chunk({}), "choices": [], "usage": self._usage(body, script)})
        await send("[DONE]")
        await response.write_eof()
        return response

    async def _wait_closing(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)

    def _usage(self, body: dict[str, Any], script: Streamed) -> dict[str, Any]:
        counter = TokenCounter(str(body.get("model", "")))
        prompt = counter.count_request(body.get("messages", []), body.get("tools", []))
        completion = counter.count(script.text)
        if isinstance(script, CallTools):
            completion += counter.count(json.dumps(script.calls))
        cached = script.cached_tokens if isinstance(script, Reply) else 0
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": min(cached, prompt)},
        }

    def _whole_completion(self, body: dict[str, Any], script: Streamed) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": script.text}
        if isinstance(script, CallTools):
            message["tool_calls"] = [
                {
                    "id": f"call_{index}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(arguments)},
                }
                for index, (name, arguments) in enumerate(script.calls)
            ]
        return {
            "id": f"chatcmpl-fake{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model", "fake")),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if isinstance(script, CallTools) else "stop",
                }
            ],
            "usage": self._usage(body, script),
        }


def _pieces(text: str, size: int) -> Iterator[str]:
    for start in range(0, len(text), max(size, 1)):
        yield text[start : start + size]


def _tool_call_deltas(
    index: int, call_id: str, name: str, arguments: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """The way real servers send a call: id and name first, then the JSON arguments in pieces."""
    yield {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": ""},
    }
    for piece in _pieces(json.dumps(arguments), 7):
        yield {"index": index, "function": {"arguments": piece}}


def _json(
    payload: dict[str, Any] | list[Any], *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    # Exactly application/json: some clients (discord.py, for one) reject a charset suffix.
    return web.Response(
        body=json.dumps(payload).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
