"""The model client: streamed chat completions over any OpenAI-compatible API, timed and typed.

The only module that knows OpenAI's wire types; the engine sees ChatMessage, Completion, LlmError.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import httpx2
import openai
from openai import RequestOptions

from assistant.model_traits import ModelTable
from assistant.sse import SseReader
from assistant.tools import ToolDefinition, wire_name
from assistant.waits import WaitLimit

log = logging.getLogger(__name__)

DRAIN_SECONDS = 1.0  # reading the rest of a body after `[DONE]`, to keep its connection


@dataclass(frozen=True, kw_only=True)
class ToolCallRequest:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, kw_only=True)
class ImagePart:
    """An image a user message shows the model (sent as a `data:` URL after its text)."""

    media_type: str  # image/png, image/jpeg, image/gif or image/webp
    data: bytes

    def data_url(self) -> str:
        return f"data:{self.media_type};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass(frozen=True, kw_only=True)
class ChatMessage:
    """A message in our own terms: system, user (maybe with images), assistant (maybe with
    tool calls) or tool."""

    role: str
    content: str = ""
    name: str | None = None
    tool_calls: tuple[ToolCallRequest, ...] = ()
    tool_call_id: str | None = None
    images: tuple[ImagePart, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ChatRequest:
    model: str
    messages: Sequence[ChatMessage]
    tools: Sequence[ToolDefinition] = ()
    tool_choice: str | None = None  # auto | required | none | a tool's name; None: auto
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0  # reasoning tokens included, as OpenAI bills them
    cached_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True, kw_only=True)
class Completion:
    """A finished call: its text or tool calls, what the server billed, how long it took."""

    text: str
    tool_calls: tuple[ToolCallRequest, ...]
    finish_reason: str
    usage: Usage | None
    model: str
    ttft_ms: float | None
    total_ms: float
    attempts: int
    streamed: bool = True  # False: the answer came whole (the server could not stream it)


class LlmError(Exception):
    """A call that did not complete; says whether trying again may help and what to tell users."""

    retryable = False
    user_message = "The assistant could not get an answer from the language model."

    def __init__(
        self,
        detail: str,
        *,
        ttft_ms: float | None = None,
        total_ms: float = 0.0,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.ttft_ms = ttft_ms
        self.total_ms = total_ms
        self.retry_after = retry_after


class LlmTimeout(LlmError):
    retryable = True
    user_message = "The language model took too long to answer. Please try again."


class LlmRateLimited(LlmError):
    retryable = True
    user_message = "The language model is busy right now (rate limited). Please try again shortly."


class LlmUnavailable(LlmError):
    retryable = True
    user_message = "The language model service is unavailable right now. Please try again."


class LlmConnectionLost(LlmUnavailable):
    """The connection failed or closed before any HTTP answer came back."""


class LlmStreamBroken(LlmError):
    retryable = True
    user_message = "The answer was cut off by the language model service. Please try again."


class LlmEmptyStream(LlmStreamBroken):
    """The server said nothing at all: a crashed worker, or llama.cpp's way of refusing a
    prompt longer than its context."""

    user_message = "The language model sent back an empty answer. Please try again."


class LlmRejected(LlmError):
    user_message = "The language model refused the request."


class LlmContextOverflow(LlmRejected):
    """The request does not fit the model's context. `limit` (the context) and `prompt_tokens`
    (the refused prompt) are the server's own counts when it gives them: its tokenizer is not
    ours."""

    user_message = (
        "This conversation has grown too long for the language model. Older messages will be "
        "left out from now on: please send your message again."
    )

    def __init__(
        self,
        detail: str,
        *,
        limit: int | None = None,
        prompt_tokens: int | None = None,
        ttft_ms: float | None = None,
        total_ms: float = 0.0,
    ) -> None:
        super().__init__(detail, ttft_ms=ttft_ms, total_ms=total_ms)
        self.limit = limit
        self.prompt_tokens = prompt_tokens


class LlmImagesRefused(LlmRejected):
    """The server will not take images for this model: llama.cpp without its --mmproj
    projector (500), OpenAI, vLLM or LiteLLM for a text-only model (400)."""

    user_message = "The language model cannot see images."


class LlmAuthFailed(LlmError):
    user_message = "The assistant is not allowed to use the language model (check its API key)."


class ChatModel(Protocol):
    """What the engine needs of a model: a stream of text pieces ending with a Completion."""

    def stream(self, request: ChatRequest) -> AsyncGenerator[str | Completion, None]: ...

    def sees_images(self, model: str) -> bool:
        """Whether images are worth sending to `model` (its table entry, less what its
        server refused)."""
        ...


async def complete(model: ChatModel, request: ChatRequest) -> Completion:
    """A call whose text nobody watches stream (a summary, a judge's verdict)."""
    async with aclosing(model.stream(request)) as stream:  # its call slot is freed at once
        async for item in stream:
            if isinstance(item, Completion):
                return item
    raise LlmError("the model stream ended without a completion")


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    first_token: float = 30.0
    idle: float = 30.0
    total: float = 180.0


class OpenAIChatModel:
    """Streams chat completions; retries 429/5xx/connection errors before the first token only.

    Each request is sent in its model's own terms (`ModelTable`): a version's `max_tokens`
    becomes `max_completion_tokens` for a reasoning model, a temperature it would refuse is
    left out. A server that cannot stream tool calls gets its tool rounds unstreamed, from the
    table or learnt when it says so (or fails that way twice)."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        timeouts: Timeouts = Timeouts(),
        max_retries: int = 2,
        backoff_base: float = 0.5,
        models: ModelTable | None = None,
        max_concurrency: int | None = None,
        send_key: bool = True,
    ) -> None:
        self._client = client
        self._timeouts = timeouts
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._models = models or ModelTable([])
        self._slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self._options: RequestOptions = {}
        self.sends_key = send_key
        if not send_key:  # the SDK insists on a key; a local server must not be sent a fake one
            self._options["headers"] = {"Authorization": openai.Omit()}
        self._unstreamed_tools: set[str] = set()
        self._tool_stream_failures: dict[str, int] = {}
        self._blind: set[str] = set()  # models whose server refused images, this process

    @classmethod
    def connect(
        cls,
        *,
        api_key: str | None,
        base_url: str | None,
        timeouts: Timeouts,
        max_retries: int,
        models: ModelTable | None = None,
        max_concurrency: int | None = None,
    ) -> OpenAIChatModel:
        client = openai.AsyncOpenAI(
            api_key=api_key or "no-key",  # never sent: see send_key
            base_url=base_url,
            max_retries=0,  # retries are ours: counted, logged and bounded by the total timeout
            timeout=timeouts.total,
            http_client=openai.DefaultAioHttpClient(timeout=timeouts.total),
        )
        return cls(
            client,
            timeouts=timeouts,
            max_retries=max_retries,
            models=models,
            max_concurrency=max_concurrency,
            send_key=bool(api_key),
        )

    @property
    def client(self) -> openai.AsyncOpenAI:
        """The SDK client, for the odd request that is not a chat completion (`doctor`)."""
        return self._client

    async def close(self) -> None:
        await self._client.close()

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str | Completion, None]:
        """The call's text as it comes, then its Completion. With LLM_MAX_CONCURRENCY the call
        first waits for a free slot (a single-slot server cuts the running request when
        another arrives, so the queue is kept here); the wait is not counted in its timeouts."""
        async with self._slots or contextlib.nullcontext():
            async for item in self._stream(request):
                yield item

    async def _stream(self, request: ChatRequest) -> AsyncGenerator[str | Completion, None]:
        started = time.perf_counter()
        deadline = started + self._timeouts.total
        attempt = 0
        whole = not self._streams(request)
        refused: LlmError | None = None  # why this call went unstreamed
        while True:
            attempt += 1
            emitted = False
            try:
                async for item in self._attempt(request, started, deadline, attempt, whole):
                    emitted = emitted or isinstance(item, str)
                    if isinstance(item, Completion) and refused is not None:
                        self._streamed_tools_failed(request, refused)  # before reading stops
                    yield item
                return
            except LlmError as exc:
                if isinstance(exc, LlmImagesRefused) and any(m.images for m in request.messages):
                    self._cannot_see(request.model)
                if not whole and not emitted and _worth_unstreamed(request, exc):
                    log.warning(
                        "model %s: the stream failed before it said anything (%s: %s); "
                        "trying once unstreamed",
                        request.model,
                        type(exc).__name__,
                        exc,
                    )
                    whole, refused = True, exc
                    continue
                delay = self._retry_delay(exc, attempt, emitted, deadline)
                if delay is None:
                    raise
                log.warning(
                    "model call attempt %d failed (%s: %s); retrying in %.2f s",
                    attempt,
                    type(exc).__name__,
                    exc,
                    delay,
                )
            await asyncio.sleep(delay)

    def sees_images(self, model: str) -> bool:
        """Whether `model` takes images: the table's `vision`, unless its server said no."""
        return self._models.traits(model).vision and model not in self._blind

    def _cannot_see(self, model: str) -> None:
        if model not in self._blind:
            log.warning(
                "model %s: the server refused images; they are not sent to it from now on "
                "(set vision: false for it in MODELS_FILE to skip the refused call)",
                model,
            )
        self._blind.add(model)

    def streams_tools(self, model: str) -> bool:
        """Whether tool rounds for `model` are streamed (the table, and what the server did)."""
        return self._models.traits(model).stream_tools and model not in self._unstreamed_tools

    def _streams(self, request: ChatRequest) -> bool:
        return not request.tools or self.streams_tools(request.model)

    def _streamed_tools_failed(self, request: ChatRequest, refusal: LlmError) -> None:
        """A tool round failed streamed and answered unstreamed. llama-cpp-python cannot
        stream a call the model chose itself: it says "Automatic streaming tool choice is not
        supported", or drops the stream after its 200. Said in words, or seen twice (once may
        be a blip), that model's tool rounds go unstreamed from then on."""
        if not request.tools or not self.streams_tools(request.model):
            return
        seen = self._tool_stream_failures.get(request.model, 0) + 1
        self._tool_stream_failures[request.model] = seen
        if seen < 2 and not _says_no_streamed_tools(refusal):
            return
        log.warning(
            "model %s: the server cannot stream tool calls; its tool rounds are sent unstreamed",
            request.model,
        )
        self._unstreamed_tools.add(request.model)

    def _retry_delay(
        self, exc: LlmError, attempt: int, emitted: bool, deadline: float
    ) -> float | None:
        if emitted or attempt > self._max_retries:
            return None
        if not isinstance(exc, LlmRateLimited | LlmUnavailable):
            return None
        backoff = self._backoff_base * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)  # noqa: S311
        delay = min(exc.retry_after if exc.retry_after is not None else backoff, 30.0)
        if time.perf_counter() + delay >= deadline:
            return None
        return delay

    async def _open_stream(self, body: dict[str, Any]) -> httpx2.Response:
        """POST the body as built, and return the response with its body still to read.
        `chat.completions.create` would first walk every message through the SDK's TypedDict
        transform, which costs more than the rest of a turn on a long history; our body is
        already plain JSON, so it goes through the client's own `post`, with the same auth,
        headers and errors. The events are read by `_events`: chunks stay the JSON they
        arrive as (a pydantic model per chunk cost 0.25 ms each)."""
        return await self._client.post(
            "/chat/completions",
            cast_to=httpx2.Response,
            body=body,
            options=self._options,
            stream=True,
        )

    async def _post_whole(self, body: dict[str, Any]) -> object:
        """The same request unstreamed: one JSON completion."""
        return await self._client.post(
            "/chat/completions",
            cast_to=object,
            body={**body, "stream": False},
            options=self._options,
        )

    async def _attempt(
        self, request: ChatRequest, started: float, deadline: float, attempt: int, whole: bool
    ) -> AsyncGenerator[str | Completion, None]:
        assembly = _Assembly()
        ttft_ms: float | None = None

        def elapsed_ms() -> float:
            return (time.perf_counter() - started) * 1000

        first_token_by = started + self._timeouts.first_token  # across retries, not per try

        def time_left() -> float:
            now = time.perf_counter()
            limit = first_token_by - now if ttft_ms is None else self._timeouts.idle
            return max(min(limit, deadline - now), 0.0)

        body = self._wire_request(request)
        try:
            async with aclosing(self._chunks(body, whole, time_left, deadline)) as chunks:
                async for chunk in chunks:
                    text = assembly.add_whole(chunk) if whole else assembly.add(chunk)
                    if ttft_ms is None and (assembly.started or whole):
                        ttft_ms = elapsed_ms()
                    if text:
                        yield text
        except Exception as exc:  # the cause is dropped: it may quote the API key
            raise self._llm_error(exc, ttft_ms=ttft_ms, total_ms=elapsed_ms()) from None
        if assembly.finish_reason is None:
            empty = not assembly.started
            error = LlmEmptyStream if empty else LlmStreamBroken
            said = "anything" if empty else "finishing"
            raise error(
                f"the stream ended before the model said {said}",
                ttft_ms=ttft_ms,
                total_ms=elapsed_ms(),
            )
        named = {wire_name(tool.name): tool.name for tool in request.tools}
        done = assembly.completion(request.model, ttft_ms, elapsed_ms(), attempt, named)
        yield replace(done, streamed=not whole)

    async def _chunks(
        self, body: dict[str, Any], whole: bool, time_left: Callable[[], float], deadline: float
    ) -> AsyncGenerator[object, None]:
        """The response as the JSON chunks it arrives in, each awaited within `time_left()`;
        unstreamed, the one whole completion, within the call's deadline."""
        if whole:
            async with asyncio.timeout(max(deadline - time.perf_counter(), 0.0)):
                completion = await self._post_whole(body)
            yield completion
            return
        response: httpx2.Response | None = None
        limit = WaitLimit()
        try:
            response = await limit.wait(self._open_stream(body), time_left())
            chunks = aiter(_events(response))
            while True:
                chunk = await limit.wait(anext(chunks, None), time_left())
                if chunk is None:
                    return
                yield chunk
        finally:
            limit.close()
            if response is not None:
                await response.aclose()

    def _wire_request(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": wire_messages(request.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
            **self._models.traits(request.model).adapt(request.params),
        }
        if request.tools:
            body["tools"] = [tool.to_openai() for tool in request.tools]
            # llama.cpp reads a missing tool_choice as "none": say it always
            body["tool_choice"] = _tool_choice(request.tool_choice or "auto")
        return body

    def _llm_error(self, exc: Exception, *, ttft_ms: float | None, total_ms: float) -> LlmError:
        """What a failed attempt means to the caller; never with the API key in its text."""
        if isinstance(exc, LlmError):
            return exc
        if isinstance(exc, TimeoutError):
            phase = "first token" if ttft_ms is None else "next chunk"
            return LlmTimeout(f"no {phase} within the timeout", ttft_ms=ttft_ms, total_ms=total_ms)
        if isinstance(exc, openai.APIError):
            error = _translate(exc, ttft_ms, total_ms)
            key = self._client.api_key
            if key and len(key) > 8 and key in str(error):  # a server that echoes the key
                error.args = (str(error).replace(key, "[redacted]"),)
            return error
        # the transport (httpx2) raising mid-body: a cut stream
        return LlmStreamBroken(
            f"stream failed: {type(exc).__name__}: {exc}", ttft_ms=ttft_ms, total_ms=total_ms
        )


async def _events(response: httpx2.Response) -> AsyncGenerator[object, None]:
    """The stream's chunks, each the JSON it arrived as, until `[DONE]` or the end. An error
    the server sends inside the stream, or a transport failure, is raised as the SDK's own
    stream would raise it, so `_translate` reads both ways of reading alike."""
    reader = SseReader()
    body = response.aiter_bytes()
    try:
        async for data in body:
            for event in reader.feed(data):
                if event.startswith(b"[DONE]"):
                    await _drain(body)
                    return
                yield _checked(json.loads(event), response)
        for event in reader.end():
            if event.startswith(b"[DONE]"):
                return
            yield _checked(json.loads(event), response)
    except httpx2.TimeoutException as exc:
        raise openai.APITimeoutError(request=response.request) from exc
    except httpx2.TransportError as exc:
        raise openai.APIConnectionError(request=response.request) from exc


async def _drain(body: AsyncIterator[bytes]) -> None:
    """Read what follows `[DONE]` (most often only the end of the chunked body, in a write of
    its own), so that the connection goes back to the pool: closed mid-body it would be
    dropped, and the next call would open another (a TLS handshake, against a real server).
    A server that keeps sending past a second loses the connection instead."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in body:
                pass


def _checked(chunk: object, response: httpx2.Response) -> object:
    if not isinstance(chunk, dict) or not chunk.get("error"):
        return chunk
    error = chunk["error"]
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message:
        message = "An error occurred during streaming"
    raise openai.APIError(message=message, request=response.request, body=error)


def _tool_choice(choice: str) -> str | dict[str, Any]:
    if choice in ("auto", "required", "none"):
        return choice
    return {"type": "function", "function": {"name": wire_name(choice)}}


class _Assembly:
    """Collects a completion from whatever shape a server streams it in.

    OpenAI sends a call's id and name once, then its arguments in pieces, each delta with the
    call's `index`. llama-cpp-python repeats the whole name (and id) in every delta; Ollama
    sends each call whole in one chunk; some servers leave out `index` or `id`, send the
    arguments as a JSON object, or put usage on the last chunk that still has choices."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: list[dict[str, str]] = []
        self._slots: dict[object, dict[str, str]] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model = ""
        self.started = False

    def add(self, chunk: Any) -> str:
        """Take one chunk as the JSON it arrived as (a dict; anything else is ignored)."""
        if not isinstance(chunk, dict):
            return ""
        self.model = chunk.get("model") or self.model
        self._add_usage(chunk.get("usage"))
        text = ""
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or choice.get("message") or {}
            content = _text_of(delta.get("content"))
            if content:
                text += content
                self.started = True
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    self._add_call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                self.started = True
        self.text.append(text)
        return text

    def add_whole(self, response: Any) -> str:
        """Take an unstreamed completion: the same fields, under `message`."""
        if not isinstance(response, dict):
            raise LlmStreamBroken("the server sent something other than a JSON completion")
        return self.add(response)

    def _add_usage(self, usage: Any) -> None:
        counted = ("prompt_tokens", "completion_tokens")
        if not isinstance(usage, dict) or all(usage.get(k) is None for k in counted):
            return
        details = usage.get("prompt_tokens_details") or {}
        output_details = usage.get("completion_tokens_details") or {}
        self.usage = Usage(
            prompt_tokens=usage.get("prompt_tokens") or 0,
            completion_tokens=usage.get("completion_tokens") or 0,
            cached_tokens=details.get("cached_tokens") or 0,
            reasoning_tokens=output_details.get("reasoning_tokens") or 0,
        )

    def _add_call(self, call: dict[str, Any]) -> None:
        self.started = True
        slot = self._slot(call)
        if call.get("id"):
            slot["id"] = str(call["id"])
        function = call.get("function") or {}
        name = function.get("name") or ""
        if name and name != slot["name"]:  # llama-cpp-python repeats the whole name each time
            slot["name"] += name
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # a whole object: the call's arguments, complete
            slot["arguments"] = json.dumps(arguments)
        elif isinstance(arguments, str):
            slot["arguments"] += arguments

    def _slot(self, call: dict[str, Any]) -> dict[str, str]:
        """The call this delta continues: by `index` when given, else by `id`; with neither,
        the last one, unless the delta names a function after that one's arguments began
        (a server sending whole calls without either)."""
        key: object = call.get("index")
        if key is None:
            ident = call.get("id")
            last = self.calls[-1] if self.calls else None
            named = bool((call.get("function") or {}).get("name"))
            if last is not None:
                continues = last["id"] == ident if ident else not (named and last["arguments"])
                if continues:
                    return last
            key = ("id", ident or len(self.calls))
        if key not in self._slots:
            self._slots[key] = {"id": "", "name": "", "arguments": ""}
            self.calls.append(self._slots[key])
        return self._slots[key]

    def completion(
        self,
        model: str,
        ttft_ms: float | None,
        total_ms: float,
        attempts: int,
        named: Mapping[str, str],
    ) -> Completion:
        """The whole completion; a call's wire name is read back as the tool's own (`named`)."""
        calls = tuple(
            ToolCallRequest(
                id=slot["id"] or f"call_{index}",
                name=named.get(slot["name"], slot["name"]),
                arguments=slot["arguments"],
            )
            for index, slot in enumerate(self.calls)
        )
        return Completion(
            text="".join(self.text),
            tool_calls=calls,
            finish_reason=self.finish_reason or "stop",
            usage=self.usage,
            model=self.model or model,
            ttft_ms=ttft_ms,
            total_ms=total_ms,
            attempts=attempts,
        )


def _text_of(content: object) -> str:
    """A delta's text: a string, or a list of parts (`[{"type": "text", "text": …}]`)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text") or "") for part in content if isinstance(part, dict))
    return ""


def _wire_message(message: ChatMessage) -> dict[str, Any]:
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.images:  # OpenAI's content parts: the text, then each image
        wire["content"] = [
            {"type": "text", "text": message.content},
            *({"type": "image_url", "image_url": {"url": i.data_url()}} for i in message.images),
        ]
    if message.name:
        wire["name"] = message.name
    if message.tool_calls:
        wire["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": wire_name(c.name), "arguments": c.arguments},
            }
            for c in message.tool_calls
        ]
    if message.tool_call_id:
        wire["tool_call_id"] = message.tool_call_id
    return wire


def wire_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """The messages exactly as they go over the wire (what token counts must be taken of)."""
    return [_wire_message(m) for m in messages]


def retry_after(exc: openai.APIStatusError) -> float | None:
    """The seconds a 429 or 503 asks to wait (Retry-After, or OpenAI's retry-after-ms)."""
    headers = exc.response.headers
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is not None:
            try:
                return max(float(value) / divisor, 0.0)
            except ValueError:
                continue
    return None


# How each server words "the prompt is longer than my context": OpenAI and vLLM ("This model's
# maximum context length is 8192 tokens. However, you requested 9000 tokens"), LiteLLM
# (ContextWindowExceededError), llama.cpp ("the request exceeds the available context size",
# exceed_context_size_error), Ollama ("input length exceeds the context length"), Anthropic
# through a proxy ("prompt is too long").
_OVERFLOW = re.compile(
    r"context_length_exceeded|maximum context length|context ?window|contextwindowexceeded"
    r"|exceeds? the (available |maximum )?context|exceed_context_size|context length"
    r"|prompt is too long|too many tokens|input (length|is too long)",
    re.IGNORECASE,
)
_LIMIT = re.compile(r"(?:maximum context length is|n_ctx\W+|context size\W+)\s*(\d+)", re.I)
# The server's count of the prompt alone, in the words of OpenAI ("your messages resulted in
# N tokens", "(N in the messages, M in the completion)"), vLLM ("your request has N input
# tokens", "your prompt contains N input tokens") and llama.cpp (n_prompt_tokens); the total
# "you requested N tokens" last, as it may include the answer's max_tokens.
_PROMPT_COUNT = tuple(
    re.compile(pattern, re.I)
    for pattern in (
        r"(\d+) (?:tokens )?in the messages",
        r"(\d+) input tokens",
        r"messages resulted in (\d+)",
        r"n_prompt_tokens\W+(\d+)",
        r"you requested (\d+) tokens",
    )
)


# How servers refuse an image for a model that cannot take one: llama.cpp's server without
# --mmproj (tools/server/utils.cpp: 500 "image input is not supported - hint: if this is
# unexpected, you may need to provide the mmproj"), OpenAI ("Invalid content type. image_url is
# only supported by certain models."), vLLM ("… is not a multimodal model"), Ollama and LiteLLM
# ("does not support images", "vision is not supported").
_NO_IMAGES = re.compile(
    r"image input is not supported|image_url is only supported|not a multimodal model"
    r"|does(n't| not) support (image|vision)|(vision|images?) (is |are )?not supported",
    re.IGNORECASE,
)


def _worth_unstreamed(request: ChatRequest, exc: LlmError) -> bool:
    """Whether a stream that failed before saying anything is worth one unstreamed try: its
    body was empty or cut before the first event (llama-cpp-python's overflow: unstreamed,
    the same request gets its real error), or a tool round was refused before it began (its
    streamed tool choice)."""
    if exc.ttft_ms is not None:
        return False
    if isinstance(exc, LlmStreamBroken):  # empty, or cut before its first event
        return True
    return bool(request.tools) and (
        _says_no_streamed_tools(exc) or isinstance(exc, LlmConnectionLost)
    )


def _says_no_streamed_tools(exc: LlmError) -> bool:
    detail = str(exc).lower()
    return "stream" in detail and "tool" in detail and "not supported" in detail


def _overflow(
    detail: str, body: object, ttft_ms: float | None, total_ms: float
) -> LlmContextOverflow | None:
    """An overflow, with the server's limit and count when its message or body (llama.cpp:
    `n_ctx`, `n_prompt_tokens`) gives them."""
    fields = body if isinstance(body, dict) else {}
    if _OVERFLOW.search(f"{detail} {fields.get('type', '')}") is None:
        return None
    found = _LIMIT.search(detail)
    limit = int(found.group(1)) if found else _number(fields.get("n_ctx"))
    found = next((m for m in (p.search(detail) for p in _PROMPT_COUNT) if m), None)
    prompt = int(found.group(1)) if found else _number(fields.get("n_prompt_tokens"))
    return LlmContextOverflow(
        detail, limit=limit, prompt_tokens=prompt, ttft_ms=ttft_ms, total_ms=total_ms
    )


def _number(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# The transport's errors for a server that took the request, then hung up (its process died,
# or it failed after sending 200): not the same as a server nobody could reach.
_CLOSED_BY_SERVER = ("RemoteProtocolError", "ReadError", "ServerDisconnectedError")


def _connection_failed(
    exc: openai.APIConnectionError, ttft_ms: float | None, total_ms: float
) -> LlmError:
    if connection_timed_out(exc):
        return LlmTimeout("Request timed out.", ttft_ms=ttft_ms, total_ms=total_ms)
    if ttft_ms is not None:
        return LlmStreamBroken(
            "connection lost mid-answer: Connection error.", ttft_ms=ttft_ms, total_ms=total_ms
        )
    closed = next((c for c in causes(exc) if type(c).__name__ in _CLOSED_BY_SERVER), None)
    if closed is not None:
        return LlmStreamBroken(
            f"the server closed the connection before answering ({closed})",
            ttft_ms=ttft_ms,
            total_ms=total_ms,
        )
    return LlmConnectionLost(
        "cannot reach the model server: Connection error.", ttft_ms=ttft_ms, total_ms=total_ms
    )


def connection_timed_out(exc: openai.APIConnectionError) -> bool:
    """Whether a failed connection ran out of time, by its first cause. The SDK's aiohttp
    transport reports every aiohttp connection error (refused, reset, closed early) as
    `APITimeoutError`, so the class alone cannot tell."""
    root = causes(exc)[-1]
    if root is exc:
        return isinstance(exc, openai.APITimeoutError)
    return isinstance(root, TimeoutError) or type(root).__name__.endswith("Timeout")


def causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what raised it, outermost first."""
    chain = [exc]
    while chain[-1].__cause__ is not None and len(chain) < 20:
        chain.append(chain[-1].__cause__)
    return chain


def _translate(exc: openai.APIError, ttft_ms: float | None, total_ms: float) -> LlmError:
    """Map the SDK's errors to ours; the detail keeps the status, never the request's secrets."""
    if isinstance(exc, openai.APIStatusError):
        detail = f"HTTP {exc.status_code}: {exc.message}"
        if isinstance(exc, openai.RateLimitError):
            return LlmRateLimited(
                detail, retry_after=retry_after(exc), ttft_ms=ttft_ms, total_ms=total_ms
            )
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return LlmAuthFailed(detail, ttft_ms=ttft_ms, total_ms=total_ms)
        if _NO_IMAGES.search(detail):
            return LlmImagesRefused(detail, ttft_ms=ttft_ms, total_ms=total_ms)
        overflow = _overflow(detail, exc.body, ttft_ms, total_ms) if exc.status_code < 500 else None
        if overflow is not None:
            return overflow
        if exc.status_code >= 500 or exc.status_code in (408, 409):
            return LlmUnavailable(
                detail, retry_after=retry_after(exc), ttft_ms=ttft_ms, total_ms=total_ms
            )
        return LlmRejected(detail, ttft_ms=ttft_ms, total_ms=total_ms)
    if isinstance(exc, openai.APIConnectionError):
        return _connection_failed(exc, ttft_ms, total_ms)
    # an error event inside a stream the server had answered 200 to
    return _overflow(str(exc), exc.body, ttft_ms, total_ms) or LlmStreamBroken(
        str(exc), ttft_ms=ttft_ms, total_ms=total_ms
    )
