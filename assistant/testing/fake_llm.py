"""A fake OpenAI-compatible server on loopback: scriptable per test, and an offline demo model.

Tests queue what the next requests get (text, tool calls, errors, a hung or cut stream) and read
back every request body and its headers; with nothing queued, a small deterministic "model"
answers, which is what `assistant chat --fake` talks to; `/v1/embeddings` serves
`fake_embedding` vectors, in which texts sharing words lie near each other. `FakeLlm(like=...)`
makes it behave as a particular real server does where servers differ (see `personalities.py`),
so the engine can be tested against each of them without running any.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import math
import re
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from assistant.testing.demo_model import DemoModel
from assistant.testing.personalities import (
    EmbeddingServer,
    ImageInput,
    Personality,
    auto_tool_choice_refusal,
    count_like,
    effort_refusal,
    embedding_input_refusal,
    embedding_server,
    embedding_too_long,
    embeddings_unsupported,
    image_refusal,
    is_reasoning_model,
    litellm_model_info,
    llamacpp_props,
    model_card,
    ollama_ps,
    ollama_show,
    overflow_error,
    overflows,
    personality,
    reasoning_refusal,
    unknown_model_refusal,
)
from assistant.testing.scripts import CallTools, Cut, Fail, Hang, Reply, Responder, Script, Streamed
from assistant.tokens import TokenCounter

__all__ = [
    "CallTools",
    "Cut",
    "EmbeddingScript",
    "Fail",
    "FakeLlm",
    "Hang",
    "Reply",
    "Script",
    "Vectors",
    "fake_embedding",
]

EMBEDDING_DIMENSIONS = 256  # what a request that names no `dimensions` gets


@dataclass(frozen=True, kw_only=True)
class Vectors:
    """Answer the next embeddings request with `vectors` (None: the fake's own), as a broken
    server might: NaN, too few, of mixed sizes; `usage=False` leaves usage out."""

    vectors: tuple[tuple[float, ...], ...] | None = None
    usage: bool = True


EmbeddingScript = Vectors | Fail | Hang | Cut


class FakeLlm:
    """The server. Use as `async with FakeLlm() as llm:` then point a client at `llm.base_url`.

    `like` picks which real server it behaves as (see `personalities.py`): "openai" (the
    default), "vllm", "ollama", "litellm" or "llamacpp" (llama-cpp-python). The rest tune it:
    `context_tokens` (None: the server's usual window), `models` (what `/v1/models` lists),
    `slots` (requests served at once; None: as the server does, 0: unlimited),
    `trained_context_tokens` (what Ollama's `/api/show` reports; None: 131072),
    `auto_tool_choice` (False: vLLM started without --enable-auto-tool-choice),
    `reasoning_tokens` (what an OpenAI reasoning model reports thinking), `object_arguments`
    (send tool arguments as a JSON object, as some servers wrongly do) and `tool_call_index`
    (False: leave `index` out of tool-call deltas, as Ollama did before 0.4.7). `image_input`
    is what the served model does with an image: "accepted", "no-mmproj" (llama.cpp's server
    without its projector: 500) or "text-only" (OpenAI's 400 for a model without vision);
    every image received is kept, decoded, in `images` as (media type, bytes).

    `/v1/embeddings` answers as `embeds_like` does (None: as `like`; "llama-server" is
    llama.cpp's own server, unlike llama-cpp-python's "llamacpp"): `serves_embeddings=False`
    is a server (or served model) that cannot embed, `embedding_dimensions` the model's own
    vector size, `embedding_input_tokens` one input's limit (None: the server's own).
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        like: str = "openai",
        context_tokens: int | None = None,
        models: tuple[str, ...] = ("fake",),
        slots: int | None = None,
        trained_context_tokens: int | None = None,
        auto_tool_choice: bool = True,
        reasoning_tokens: int = 64,
        object_arguments: bool = False,
        tool_call_index: bool = True,
        strict_models: bool = False,  # refuse a model not in `models`, as most servers do
        embeds_like: str | None = None,
        serves_embeddings: bool = True,
        embedding_dimensions: int = EMBEDDING_DIMENSIONS,
        embedding_input_tokens: int | None = None,
        image_input: ImageInput = "accepted",
    ) -> None:
        self.personality = personality(like)
        if not auto_tool_choice and like != "vllm":
            raise ValueError(
                "auto_tool_choice=False is vLLM's --enable-auto-tool-choice; use like='vllm'"
            )
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # each request's headers, parallel to requests
        self.image_input = image_input
        self.images: list[tuple[str, bytes]] = []  # every image part received, decoded
        self.context_tokens = context_tokens or self.personality.context_tokens
        self.models = models
        self._strict_models = strict_models and not self.personality.answers_any_model
        self.trained_context_tokens = trained_context_tokens or 131_072
        self._slot_count = self.personality.slots if slots is None else slots
        self._slots = _Slots(self._slot_count, interrupts=self.personality.interrupts_streams)
        self._auto_tool_choice = auto_tool_choice
        self._shapes = _Shapes(
            self.personality,
            reasoning_tokens=reasoning_tokens,
            object_arguments=object_arguments,
            tool_call_index=tool_call_index,
        )
        self._queue: deque[Script] = deque()
        self._responder = responder or DemoModel()
        self._embeddings = _Embeddings(
            embedding_server(embeds_like or like),
            serves=serves_embeddings,
            dimensions=embedding_dimensions,
            input_tokens=embedding_input_tokens,
            context_tokens=self.context_tokens,
        )
        self.embedding_requests = self._embeddings.requests
        self.embedding_bodies = self._embeddings.bodies
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def script(self, *items: Script) -> None:
        """Queue what the next requests get, in order; after them the responder answers."""
        self._queue.extend(items)

    def script_embeddings(self, *items: EmbeddingScript) -> None:
        """Queue what the next embeddings requests get (a queue apart from the chat one, so a
        test may mix both); after them the fake's own vectors answer."""
        self._embeddings.queue.extend(items)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeLlm:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embed)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/_fake/requests", self._recorded)
        self._add_context_endpoint(app)
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

    # ---------------------------------------------------------------- discovery endpoints

    def _add_context_endpoint(self, app: web.Application) -> None:
        """Each server's own way to say its context length (OpenAI has none)."""
        endpoint = self.personality.context_endpoint
        if endpoint == "props":
            app.router.add_get("/props", self._props)
        elif endpoint == "api_show":
            app.router.add_post("/api/show", self._show)
            app.router.add_get("/api/ps", self._ps)
        elif endpoint == "model_info":
            app.router.add_get("/model/info", self._model_info)
            app.router.add_get("/v1/model/info", self._model_info)

    async def _models(self, _request: web.Request) -> web.Response:
        # llama-cpp-python's /v1/models waits for the model lock like a completion does
        lock = self._slots.hold() if self.personality.interrupts_streams else _no_wait()
        async with lock:
            cards = [model_card(self.personality, m, self.context_tokens) for m in self.models]
        return _json({"object": "list", "data": cards})

    async def _props(self, _request: web.Request) -> web.Response:
        slots = self._slot_count or 1
        return _json(llamacpp_props(self.context_tokens, slots, self.models[0]))

    async def _show(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = str(body.get("model") or body.get("name") or "")
        if name not in self.models:
            return _json({"error": f"model '{name}' not found"}, status=404)
        return _json(ollama_show(name, self.trained_context_tokens))

    async def _ps(self, _request: web.Request) -> web.Response:
        return _json(ollama_ps(self.models, self.context_tokens))

    async def _model_info(self, _request: web.Request) -> web.Response:
        return _json(litellm_model_info(self.models, self.context_tokens))

    async def _recorded(self, _request: web.Request) -> web.Response:
        """Every request body received so far, for tests that run the server in another process."""
        recorded = {"requests": self.requests, "headers": self.headers}
        return _json(recorded | {"embeddings": self.embedding_bodies})

    # ---------------------------------------------------------------- embeddings

    async def _embed(self, request: web.Request) -> web.StreamResponse:
        """A scripted fault first, as for chat; then the server's own refusals; then vectors."""
        body = await request.json()
        script = self._embeddings.take(body)
        if isinstance(script, Fail):
            return self._failure(request, script)
        if isinstance(script, Hang):
            await self._wait_closing(3600)
            return web.Response(status=503)
        if isinstance(script, Cut):
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        if self._strict_models and body.get("model") not in self.models:
            return _json(unknown_model_refusal(str(body.get("model"))), status=404)
        async with self._embedding_lock():
            status, answer = self._embeddings.answer(body, script)
        return _json(answer, status=status)

    def _embedding_lock(self) -> contextlib.AbstractAsyncContextManager[None]:
        """llama-cpp-python embeds with its one model, behind the lock a completion takes
        (app.py create_embedding depends on get_llama_proxy): a waiting embeddings request
        ends a running stream as another completion would."""
        shared = self._embeddings.server.name == self.personality.name
        return self._slots.hold() if shared and self.personality.interrupts_streams else _no_wait()

    # ---------------------------------------------------------------- chat completions

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        """Record the request, then answer as the server would: a scripted failure first, then
        the server's own refusals (parameters, context), then the model's answer."""
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        images = received_images(body)
        self.images.extend(images)
        refused = image_refusal(self.image_input) if images else None
        if refused is not None:  # the server checks the content before anything else
            return _json(refused[1], status=refused[0])
        head = self._queue[0] if self._queue else None
        if isinstance(head, Fail):  # a scripted failure comes before anything the server checks
            self._queue.popleft()
            return self._failure(request, head)
        refusal = self._refusal(body)  # a refused request leaves the queued answer for the next
        if refusal is not None:
            code = refusal["error"].get("code")
            return _json(refusal, status=code if isinstance(code, int) else 400)
        streamed = bool(body.get("stream"))
        seen, overflow = self._fit(body)
        if overflow is not None and not (streamed and self.personality.overflow == "llamacpp"):
            return _json(overflow, status=400)
        if overflow is not None:
            return await self._stream(request, body, None)
        script = self._queue.popleft() if self._queue else self._responder(seen)
        if isinstance(script, Fail):
            return self._failure(request, script)
        script = self._as_offered(body, script)
        if not streamed:
            async with self._slots.hold():
                return _json(self._whole_completion(seen, script))
        return await self._stream(request, seen, script)

    def _failure(self, request: web.Request, script: Fail) -> web.Response:
        message = script.message
        if script.echo_key:
            key = request.headers.get("Authorization", "").removeprefix("Bearer ")
            message += f" (API key provided: {key})"
        error = {"error": {"message": message, "type": "fake", "code": script.status}}
        return _json(error, status=script.status, headers=script.headers)

    def _refusal(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The 4xx a server sends for what it will not take, before any model runs."""
        if self._strict_models and body.get("model") not in self.models:
            return unknown_model_refusal(str(body.get("model")))
        if self.personality.reasoning_models:
            if is_reasoning_model(str(body.get("model", ""))):
                return reasoning_refusal(body)
            if "reasoning_effort" in body:
                return effort_refusal()
        if not self._auto_tool_choice and body.get("tools") and self._tool_choice(body) == "auto":
            return auto_tool_choice_refusal()
        return tool_name_refusal(body)

    def _fit(self, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """What the model sees of the request, and the server's overflow error if it refuses it.
        Ollama refuses nothing: it drops the oldest messages until the prompt fits."""
        server = self.personality
        output = body.get("max_completion_tokens") or body.get("max_tokens")
        output = output if isinstance(output, int) else None
        prompt, context = self.prompt_tokens(body), self.context_tokens
        if not overflows(server.overflow, context=context, prompt=prompt, output=output):
            return body, None
        if server.overflow == "truncate":
            return self._truncated(body), None
        error = overflow_error(server.overflow, context=context, prompt=prompt, output=output)
        return body, error

    def _truncated(self, body: dict[str, Any]) -> dict[str, Any]:
        """Ollama's chatPrompt: skip messages from the front, keeping system ones, until it fits;
        the newest message stays whatever its size."""
        messages: list[dict[str, Any]] = body.get("messages", [])
        kept = messages
        for start in range(len(messages)):
            system = [m for m in messages[:start] if m.get("role") == "system"]
            kept = system + messages[start:]
            if self.prompt_tokens({**body, "messages": kept}) <= self.context_tokens:
                break
        return {**body, "messages": kept}

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        """The prompt's size as this server counts it (tiktoken for OpenAI, its own otherwise)."""
        messages = body.get("messages", [])
        tools = body.get("tools", [])
        if self.personality.chars_per_token is None:
            return TokenCounter(str(body.get("model", ""))).count_request(messages, tools)
        return count_like(self.personality, _rendered(messages, tools), len(messages))

    def _tool_choice(self, body: dict[str, Any]) -> str | dict[str, Any]:
        """The tool_choice the server acts on: Ollama reads none, llama-cpp-python's default is
        "none"."""
        if not self.personality.reads_tool_choice:
            return "auto"
        choice = body.get("tool_choice")
        return self.personality.missing_tool_choice if choice is None else choice

    def _as_offered(self, body: dict[str, Any], script: Streamed) -> Streamed:
        """A model told not to use tools (or never shown them) answers in words instead."""
        if not isinstance(script, CallTools) or self._tool_choice(body) != "none":
            return script
        said = "; ".join(f"{name}({json.dumps(args)})" for name, args in script.calls)
        return Reply(text=script.text or f"I would use {said}.")

    # ---------------------------------------------------------------- streamed answers

    async def _stream(
        self, request: web.Request, body: dict[str, Any], script: Streamed | None
    ) -> web.StreamResponse:
        """Stream `script`; None (or a tool call llama-cpp-python cannot stream) sends the
        headers and then drops the connection without a single event."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        async with self._slots.hold():  # llama-cpp-python answers 200 first, then waits
            if script is None or self._cannot_stream(body, script):
                # the 200 and its headers go out (uvicorn sends them before the body fails),
                # then the connection closes before a single event
                assert request.transport is not None and response._payload_writer is not None
                response._payload_writer.send_headers()
                await asyncio.sleep(0)
                request.transport.abort()
                return response
            ident = self._shapes.completion_id()
            out = _Events(response, ident, str(body.get("model", "fake")), self._slots.wanted)
            with contextlib.suppress(_Interrupted):  # its [DONE] is sent, the body ended
                await self._events(request, out, body, script)
        return response

    def _cannot_stream(self, body: dict[str, Any], script: Streamed) -> bool:
        """llama-cpp-python: "Automatic streaming tool choice is not supported"."""
        chose = isinstance(script, CallTools) and self._tool_choice(body) == "auto"
        return chose and not self.personality.streams_chosen_tools

    async def _events(
        self, request: web.Request, out: _Events, body: dict[str, Any], script: Streamed
    ) -> None:
        await out.send(out.chunk(self._shapes.opening(script)))
        if not self._shapes.tools_replace_text(script):
            delays = (
                (script.first_delay, script.chunk_delay) if isinstance(script, Reply) else (0, 0)
            )
            size = script.chunk_chars if isinstance(script, Reply) else 16
            for index, piece in enumerate(_pieces(script.text, size)):
                await asyncio.sleep(delays[0] if index == 0 else delays[1])
                await out.send(out.chunk({"content": piece}))
        if isinstance(script, Hang):
            await self._wait_closing(3600)
            return
        if isinstance(script, Cut):
            assert request.transport is not None
            request.transport.abort()
            return
        finish = script.finish_reason if isinstance(script, Reply) else "stop"
        if isinstance(script, CallTools):
            finish = "tool_calls"
            for delta in self._shapes.tool_deltas(out.ident, script):
                await out.send(out.chunk(delta))
        await out.send(out.chunk(self._shapes.closing_delta(script), finish))
        choices = self._shapes.usage_choices(body)  # usage, where and whether the server streams it
        if choices is not None:
            usage = self._usage(body, script)
            await out.send({**out.chunk({}), "choices": choices, "usage": usage})
        await out.done()

    async def _wait_closing(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)

    def _usage(self, body: dict[str, Any], script: Streamed) -> dict[str, Any]:
        """The usage both forms report; one place, so a subclass can report other figures."""
        return self._shapes.usage(body, script, self.prompt_tokens(body))

    def _whole_completion(self, body: dict[str, Any], script: Streamed) -> dict[str, Any]:
        return self._shapes.whole_completion(body, script, self._usage(body, script))


class _Shapes:
    """How one server shapes what it sends: the deltas of a stream, a tool call's pieces and id,
    its arguments, usage and an unstreamed completion. `FakeLlm` decides what to answer; this
    decides how it looks, from the personality and the options that bend it."""

    def __init__(
        self,
        server: Personality,
        *,
        reasoning_tokens: int,
        object_arguments: bool,
        tool_call_index: bool,
    ) -> None:
        self.personality = server
        self._reasoning_tokens = reasoning_tokens
        self._object_arguments = object_arguments
        self._tool_call_index = tool_call_index
        self._ids = itertools.count(1)

    def completion_id(self) -> str:
        return f"chatcmpl-fake{next(self._ids)}"

    # ---------------------------------------------------------------- streamed answers

    def tools_replace_text(self, script: Streamed) -> bool:
        """llama-cpp-python's tool path streams no text: content is null throughout."""
        return isinstance(script, CallTools) and self.personality.legacy_function_call

    def opening(self, script: Streamed) -> dict[str, Any]:
        if self.personality.name != "llamacpp":
            return {"role": "assistant", "content": ""}
        if isinstance(script, CallTools):
            return {"role": "assistant", "content": None, "function_call": None, "tool_calls": None}
        return {"role": "assistant"}

    def closing_delta(self, script: Streamed) -> dict[str, Any]:
        if isinstance(script, CallTools) and self.personality.legacy_function_call:
            return {"role": None, "content": None, "function_call": None, "tool_calls": None}
        return {}

    def tool_deltas(self, ident: str, script: CallTools) -> Iterator[dict[str, Any]]:
        """Every delta that carries the calls of the stream `ident`, in order."""
        for index, (name, arguments) in enumerate(script.calls):
            call_id = self.call_id(ident, index, name)
            for call in self._call_deltas(index, call_id, name, arguments):
                yield self._tool_delta(call)

    def _call_deltas(
        self, index: int, call_id: str, name: str, arguments: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        """One call as this server splits it over deltas."""
        server = self.personality
        function: dict[str, Any] = {"name": name}
        whole = {"index": index, "id": call_id, "type": "function", "function": function}
        if server.tool_call_stream == "whole" or self._object_arguments:
            function["arguments"] = self.arguments(arguments)
            yield self._indexed(whole)
            return
        if not server.name_on_every_delta:
            if server.first_delta_has_arguments:
                function["arguments"] = ""
            yield self._indexed(whole)
        for piece in _pieces(json.dumps(arguments), 7):
            delta: dict[str, Any] = {"index": index}
            if server.id_on_every_delta:
                delta |= {"id": call_id, "type": "function"}
            function = {"name": name} if server.name_on_every_delta else {}
            delta["function"] = function | {"arguments": piece}
            yield self._indexed(delta)

    def _indexed(self, call: dict[str, Any]) -> dict[str, Any]:
        if self._tool_call_index:
            return call
        return {key: value for key, value in call.items() if key != "index"}

    def _tool_delta(self, call: dict[str, Any]) -> dict[str, Any]:
        """The delta carrying one call piece: llama-cpp-python mirrors it as function_call and
        nulls the rest; Ollama keeps `content: ""` beside it."""
        if self.personality.legacy_function_call:
            mirror = dict(call["function"])
            return {"role": None, "content": None, "function_call": mirror, "tool_calls": [call]}
        if self.personality.tool_call_stream == "whole":
            return {"content": "", "tool_calls": [call]}
        return {"tool_calls": [call]}

    def usage_choices(self, body: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The choices a streamed usage chunk carries, or None where no usage is streamed:
        only when asked for by stream_options.include_usage, and never by some servers."""
        asked = bool((body.get("stream_options") or {}).get("include_usage"))
        where = self.personality.stream_usage
        if not asked or where == "never":
            return None
        if where == "last_chunk_with_choices":
            return [{"index": 0, "delta": {}}]
        return []

    # ---------------------------------------------------------------- shared by both forms

    def call_id(self, ident: str, index: int, name: str) -> str:
        digest = hashlib.sha256(f"{ident}/{index}".encode()).hexdigest()
        return self.personality.tool_call_id.format(
            cmpl=ident,
            completion=ident.removeprefix("chat"),
            index=index,
            name=name,
            hex8=digest[:8],
            hex16=digest[:16],
            hex24=digest[:24],
        )

    def arguments(self, arguments: dict[str, Any]) -> str | dict[str, Any]:
        return arguments if self._object_arguments else json.dumps(arguments)

    def usage(self, body: dict[str, Any], script: Streamed, prompt: int) -> dict[str, Any]:
        """Usage for `script` answering a prompt of `prompt` tokens, as this server counts."""
        server = self.personality
        model = str(body.get("model", ""))
        said = script.text + (json.dumps(script.calls) if isinstance(script, CallTools) else "")
        if server.chars_per_token is None:
            counter = TokenCounter(model)
            completion = counter.count(script.text)
            if isinstance(script, CallTools):
                completion += counter.count(json.dumps(script.calls))
        else:
            completion = math.ceil(len(said) / server.chars_per_token)
        thinking = self._reasoning_tokens if server.reasoning_models else 0
        thinking = thinking if is_reasoning_model(model) else 0
        completion += thinking
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if server.usage_details:
            cached = script.cached_tokens if isinstance(script, Reply) else 0
            usage["prompt_tokens_details"] = {"cached_tokens": min(cached, prompt)}
        if thinking:
            usage["completion_tokens_details"] = {
                "reasoning_tokens": thinking,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            }
        return usage

    def whole_completion(
        self, body: dict[str, Any], script: Streamed, usage: dict[str, Any]
    ) -> dict[str, Any]:
        ident = self.completion_id()
        message: dict[str, Any] = {"role": "assistant", "content": script.text}
        if isinstance(script, CallTools):
            message |= self._whole_calls(ident, script)
        return {
            "id": ident,
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
            "usage": usage,
        }

    def _whole_calls(self, ident: str, script: CallTools) -> dict[str, Any]:
        """An unstreamed answer's calls (and content, null beside them on most servers)."""
        server = self.personality
        calls = []
        for index, (name, arguments) in enumerate(script.calls):
            call_id = self.call_id(ident, index, name)
            function = {"name": name, "arguments": self.arguments(arguments)}
            call = {"id": call_id, "type": "function", "function": function}
            calls.append({"index": index, **call} if server.name == "ollama" else call)
        fields: dict[str, Any] = {"tool_calls": calls}
        if server.content_null_with_tools and not script.text:
            fields["content"] = None
        if server.legacy_function_call and len(calls) == 1:
            fields["function_call"] = calls[0]["function"]
        return fields


class _Interrupted(Exception):
    """A request is waiting for the model: llama-cpp-python ends the running stream."""


class _Events:
    """One SSE response: builds chunks with the stream's id and checks, after each event, whether
    another request wants the model (as llama-cpp-python's get_event_publisher does)."""

    def __init__(
        self, response: web.StreamResponse, ident: str, model: str, wanted: Callable[[], bool]
    ) -> None:
        self.response = response
        self.ident = ident
        self.model = model
        self._wanted = wanted

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.ident,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    async def send(self, payload: dict[str, Any]) -> None:
        await self.response.write(f"data: {json.dumps(payload)}\n\n".encode())
        if self._wanted():
            await self.done()
            raise _Interrupted

    async def done(self) -> None:
        await self.response.write(b"data: [DONE]\n\n")
        await self.response.write_eof()


class _Slots:
    """How many requests the model serves at once (None: all). llama-cpp-python holds its one
    model behind two locks (server/app.py get_llama_proxy): a request waits on the outer one
    while the inner one is busy, which is how a running stream sees that it is wanted."""

    def __init__(self, count: int | None, *, interrupts: bool) -> None:
        self._waiting = asyncio.Lock()
        self._running = asyncio.Semaphore(count) if count else None
        self._interrupts = interrupts

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        if self._running is None:
            yield
            return
        async with self._waiting:
            await self._running.acquire()
        try:
            yield
        finally:
            self._running.release()

    def wanted(self) -> bool:
        return self._interrupts and self._waiting.locked()


@contextlib.asynccontextmanager
async def _no_wait() -> AsyncIterator[None]:
    yield


def received_images(body: dict[str, Any]) -> list[tuple[str, bytes]]:
    """The images a request's messages carry as `data:` URL parts: (media type, bytes)."""
    found = []
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else ():
            if not isinstance(part, dict) or part.get("type") != "image_url":
                continue
            url = str((part.get("image_url") or {}).get("url") or "")
            head, _, data = url.partition(",")
            if head.startswith("data:") and head.endswith(";base64"):
                found.append((head[5:-7], base64.b64decode(data)))
    return found


def _rendered(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
    """The text a chat template would make of the request, for a server's own count."""
    parts = [json.dumps(tools)] if tools else []
    for message in messages:
        parts.append(str(message.get("role", "")))
        content = message.get("content") or ""
        if isinstance(content, list):  # content parts: their text is what is counted
            content = " ".join(
                str(part.get("text", "")) if isinstance(part, dict) else str(part)
                for part in content
            )
        parts.append(str(content))
        if message.get("tool_calls"):
            parts.append(json.dumps(message["tool_calls"]))
    return "\n".join(parts)


class _Embeddings:
    """`/v1/embeddings` as one server answers it: what it refuses, how it counts and cuts the
    inputs, which vector size and encoding it sends. Records every request for the tests."""

    def __init__(
        self,
        server: EmbeddingServer,
        *,
        serves: bool,
        dimensions: int,
        input_tokens: int | None,
        context_tokens: int,
    ) -> None:
        if not serves and embeddings_unsupported(server) is None:
            raise ValueError(
                f"serves_embeddings=False: no record of how {server.name} answers then; "
                "use embeds_like='llama-server', 'llamacpp', 'ollama' or 'vllm'"
            )
        self.server = server
        self.serves = serves
        self.dimensions = dimensions
        self.input_tokens = input_tokens or server.input_tokens or context_tokens
        self.queue: deque[EmbeddingScript] = deque()
        self.requests: list[list[str]] = []  # each request's inputs, as text
        self.bodies: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def take(self, body: dict[str, Any]) -> EmbeddingScript | None:
        """Record the request; the scripted answer queued for it, if any."""
        self.bodies.append(body)
        self.requests.append(_embedding_inputs(body.get("input")) or [])
        return self.queue.popleft() if self.queue else None

    def answer(
        self, body: dict[str, Any], script: EmbeddingScript | None
    ) -> tuple[int, dict[str, Any]]:
        if not self.serves:
            refusal = embeddings_unsupported(self.server)
            assert refusal is not None
            return refusal
        inputs = _embedding_inputs(body.get("input"))
        if inputs is None:
            return 400, _bad_request("'input' must be a string, strings or token id lists")
        model = str(body.get("model", ""))
        tokens = [self._count(model, text) for text in inputs]
        refusal = embedding_input_refusal(self.server, inputs, tokens)
        refusal = refusal or embedding_too_long(self.server, tokens=tokens, limit=self.input_tokens)
        if refusal is not None:
            return refusal
        size = body.get("dimensions")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
            return 400, _bad_request("'dimensions' must be a positive integer")
        vectors = [self._vector(text, size) for text in inputs]
        if isinstance(script, Vectors) and script.vectors is not None:
            vectors = [list(vector) for vector in script.vectors]
        counted = sum(min(count, self.input_tokens) for count in tokens)
        usage = script.usage if isinstance(script, Vectors) else True
        return 200, self._listed(body, vectors, counted if usage else None)

    def _count(self, model: str, text: str) -> int:
        """Tokens as this server counts them (tiktoken for OpenAI, its own otherwise)."""
        if not text:
            return 0
        if self.server.chars_per_token is None:
            return TokenCounter(model).count(text)
        return math.ceil(len(text) / self.server.chars_per_token)

    def _vector(self, text: str, size: int | None) -> list[float]:
        server = self.server
        if server.too_long == "truncate" and server.chars_per_token is not None:
            text = text[: int(self.input_tokens * server.chars_per_token)]
        if server.dimensions == "any":
            return fake_embedding(text, size or self.dimensions)
        vector = fake_embedding(text, self.dimensions)
        if server.dimensions == "shorten" and size is not None and size < self.dimensions:
            return _unit(vector[:size])
        return vector

    def _listed(
        self, body: dict[str, Any], vectors: list[list[float]], tokens: int | None
    ) -> dict[str, Any]:
        packed = body.get("encoding_format") == "base64" and self.server.base64
        data = []
        for index, vector in enumerate(vectors):
            item: dict[str, Any] = {"object": "embedding", "index": index}
            item["embedding"] = _base64(vector) if packed else vector
            if packed and self.server.name == "llama-server":
                item["encoding_format"] = "base64"
            data.append(item)
        listed: dict[str, Any] = {"object": "list", "data": data, "model": body.get("model")}
        if self.server.response_id:
            listed = {"id": f"embd-fake{next(self._ids)}", "created": int(time.time()), **listed}
        if tokens is not None:
            listed["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return listed


# Words too common to tell texts apart, and the endings cut so that "deploys", "deployed" and
# "deploying" are one word: crude, deterministic, and enough for neighbours to make sense.
_STOP_WORDS = frozenset(
    (
        "a", "an", "and", "are", "as", "at", "be", "but", "by", "do", "does", "for", "from",
        "has", "have", "how", "i", "if", "in", "is", "it", "its", "me", "my", "no", "not", "of",
        "on", "or", "our", "so", "that", "the", "their", "them", "then", "there", "these",
        "they", "this", "to", "was", "we", "were", "what", "when", "where", "which", "who",
        "why", "will", "with", "you", "your",
    )
)  # fmt: skip
_WORD_RUN = re.compile(r"\w+")
_BIGRAM_WEIGHT = 0.5


def fake_embedding(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """The fake's vector of `text`: its words (and word pairs, at half weight) hashed into
    `dimensions` signed buckets, then normalised, so texts sharing words have a high cosine
    and others near none. Rounded to float32, as servers send them, so the float and the
    base64 encodings carry the same numbers. A text without words gets one fixed unit vector.
    """
    if dimensions < 1:
        raise ValueError("dimensions must be at least 1")
    words = [_stem(word) for word in _WORD_RUN.findall(text.lower()) if word not in _STOP_WORDS]
    vector = [0.0] * dimensions
    for word in words:
        _add_feature(vector, word, 1.0)
    for first, second in itertools.pairwise(words):
        _add_feature(vector, f"{first} {second}", _BIGRAM_WEIGHT)
    if not any(vector):
        vector[0] = 1.0
    return _unit(vector)


def _stem(word: str) -> str:
    for ending, shortest in (("ing", 6), ("ed", 5), ("s", 4)):
        if word.endswith(ending) and len(word) >= shortest and not word.endswith("ss"):
            return word[: -len(ending)]
    return word


def _add_feature(vector: list[float], feature: str, weight: float) -> None:
    """One feature into its bucket, with a sign from the same hash (Python's own `hash` is
    salted per process: the vectors must be the same in every run)."""
    digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
    sign = 1.0 if digest >> 63 == 0 else -1.0
    vector[digest % len(vector)] += sign * weight


def _unit(vector: Sequence[float]) -> list[float]:
    """`vector` at length 1, each number rounded to float32."""
    norm = math.sqrt(sum(value * value for value in vector)) or 1.0
    scaled = [value / norm for value in vector]
    return list(struct.unpack(f"<{len(scaled)}f", struct.pack(f"<{len(scaled)}f", *scaled)))


def _base64(vector: Sequence[float]) -> str:
    """Little-endian float32, base64: what OpenAI sends for `encoding_format: base64`."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _embedding_inputs(raw: object) -> list[str] | None:
    """The inputs of a request, as text: a string, a list of strings, one list of token ids or
    a list of them (ids joined as text); None for anything else."""
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list):
        return None
    if raw and all(_token_id(item) for item in raw):
        return [" ".join(str(item) for item in raw)]
    inputs = []
    for item in raw:
        if isinstance(item, str):
            inputs.append(item)
        elif isinstance(item, list) and all(_token_id(token) for token in item):
            inputs.append(" ".join(str(token) for token in item))
        else:
            return None
    return inputs


def _token_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def tool_name_refusal(body: dict[str, Any]) -> dict[str, Any] | None:
    """OpenAI's 400 for a function name outside `^[a-zA-Z0-9_-]{1,64}$` (an MCP tool's
    `server.tool` sent as it is), which LiteLLM and vLLM's OpenAI front end pass on too."""
    for index, tool in enumerate(body.get("tools") or ()):
        name = (tool.get("function") or {}).get("name") if isinstance(tool, dict) else None
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            return _bad_request(
                f"Invalid 'tools[{index}].function.name': string does not match pattern. "
                "Expected a string that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'."
            )
    return None


def _bad_request(message: str) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    }


def _pieces(text: str, size: int) -> Iterator[str]:
    for start in range(0, len(text), max(size, 1)):
        yield text[start : start + size]


def _json(
    payload: dict[str, Any] | list[Any], *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    # Exactly application/json: some clients (discord.py, for one) reject a charset suffix.
    return web.Response(
        body=json.dumps(payload).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
