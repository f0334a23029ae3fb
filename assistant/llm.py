"""The model client: streamed chat completions over any OpenAI-compatible API, timed and typed.

The only module that knows OpenAI's wire types; the engine sees ChatMessage, Completion, LlmError.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import openai
from openai import AsyncStream

from assistant.tools import ToolDefinition

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ToolCallRequest:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, kw_only=True)
class ChatMessage:
    """A message in our own terms: system, user, assistant (maybe with tool calls) or tool."""

    role: str
    content: str = ""
    name: str | None = None
    tool_calls: tuple[ToolCallRequest, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class ChatRequest:
    model: str
    messages: Sequence[ChatMessage]
    tools: Sequence[ToolDefinition] = ()
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


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


class LlmStreamBroken(LlmError):
    retryable = True
    user_message = "The answer was cut off by the language model service. Please try again."


class LlmRejected(LlmError):
    user_message = "The language model refused the request."


class LlmAuthFailed(LlmError):
    user_message = "The assistant is not allowed to use the language model (check its API key)."


class ChatModel(Protocol):
    """What the engine needs of a model: a stream of text pieces ending with a Completion."""

    def stream(self, request: ChatRequest) -> AsyncGenerator[str | Completion, None]: ...


async def complete(model: ChatModel, request: ChatRequest) -> Completion:
    """A call whose text nobody watches stream (a summary, a judge's verdict)."""
    async for item in model.stream(request):
        if isinstance(item, Completion):
            return item
    raise LlmError("the model stream ended without a completion")


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    first_token: float = 30.0
    idle: float = 30.0
    total: float = 180.0


class OpenAIChatModel:
    """Streams chat completions; retries 429/5xx/connection errors before the first token only."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        timeouts: Timeouts = Timeouts(),
        max_retries: int = 2,
        backoff_base: float = 0.5,
    ) -> None:
        self._client = client
        self._timeouts = timeouts
        self._max_retries = max_retries
        self._backoff_base = backoff_base

    @classmethod
    def connect(
        cls, *, api_key: str | None, base_url: str | None, timeouts: Timeouts, max_retries: int
    ) -> OpenAIChatModel:
        client = openai.AsyncOpenAI(
            api_key=api_key or "unused",  # local servers (Ollama, vLLM) need no key
            base_url=base_url,
            max_retries=0,  # retries are ours: counted, logged and bounded by the total timeout
            timeout=timeouts.total,
        )
        return cls(client, timeouts=timeouts, max_retries=max_retries)

    async def close(self) -> None:
        await self._client.close()

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str | Completion, None]:
        started = time.perf_counter()
        deadline = started + self._timeouts.total
        attempt = 0
        while True:
            attempt += 1
            emitted = False
            try:
                async for item in self._attempt(request, started, deadline, attempt):
                    emitted = emitted or isinstance(item, str)
                    yield item
                return
            except LlmError as exc:
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

    async def _open_stream(self, body: dict[str, Any]) -> AsyncStream[object]:
        """POST the body as built. `chat.completions.create` would first walk every message
        through the SDK's TypedDict transform, which costs more than the rest of a turn on a
        long history; our body is already plain JSON, so it goes through the client's own
        `post`, with the same auth, headers, errors and SSE parsing. Chunks stay the JSON
        they arrive as: building a pydantic model per chunk cost 0.25 ms each, most of the
        CPU of 200 concurrent answers."""
        return await self._client.post(
            "/chat/completions",
            cast_to=object,
            body=body,
            stream=True,
            stream_cls=AsyncStream[object],
        )

    async def _attempt(
        self, request: ChatRequest, started: float, deadline: float, attempt: int
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

        stream: AsyncStream[object] | None = None
        try:
            async with asyncio.timeout(time_left()):
                stream = await self._open_stream(_wire_request(request))
            chunks = aiter(stream)
            while True:
                async with asyncio.timeout(time_left()):
                    chunk = await anext(chunks, None)
                if chunk is None:
                    break
                text = assembly.add(chunk)
                if ttft_ms is None and assembly.started:
                    ttft_ms = elapsed_ms()
                if text:
                    yield text
        except Exception as exc:  # the cause is dropped: it may quote the API key
            raise self._llm_error(exc, ttft_ms=ttft_ms, total_ms=elapsed_ms()) from None
        finally:
            if stream is not None:
                await stream.close()
        if assembly.finish_reason is None:
            raise LlmStreamBroken(
                "the stream ended before the model finished", ttft_ms=ttft_ms, total_ms=elapsed_ms()
            )
        yield assembly.completion(request.model, ttft_ms, elapsed_ms(), attempt)

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


class _Assembly:
    """Collects a streamed completion: text, tool calls split over deltas, usage at the end."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model = ""
        self.started = False

    def add(self, chunk: Any) -> str:
        """Take one chunk as the JSON it arrived as (a dict; anything else is ignored)."""
        if not isinstance(chunk, dict):
            return ""
        self.model = chunk.get("model") or self.model
        usage = chunk.get("usage")
        if usage:
            details = usage.get("prompt_tokens_details") or {}
            self.usage = Usage(
                prompt_tokens=usage.get("prompt_tokens") or 0,
                completion_tokens=usage.get("completion_tokens") or 0,
                cached_tokens=details.get("cached_tokens") or 0,
            )
        text = ""
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                text += delta["content"]
                self.started = True
            for call in delta.get("tool_calls") or ():
                self._add_call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        self.text.append(text)
        return text

    def _add_call(self, call: dict[str, Any]) -> None:
        self.started = True
        slot = self.calls.setdefault(call.get("index", 0), {"id": "", "name": "", "arguments": ""})
        if call.get("id"):
            slot["id"] = call["id"]
        function = call.get("function") or {}
        slot["name"] += function.get("name") or ""
        slot["arguments"] += function.get("arguments") or ""

    def completion(
        self, model: str, ttft_ms: float | None, total_ms: float, attempts: int
    ) -> Completion:
        calls = tuple(
            ToolCallRequest(
                id=slot["id"] or f"call_{index}", name=slot["name"], arguments=slot["arguments"]
            )
            for index, slot in sorted(self.calls.items())
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


def _wire_message(message: ChatMessage) -> dict[str, Any]:
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name:
        wire["name"] = message.name
    if message.tool_calls:
        wire["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id:
        wire["tool_call_id"] = message.tool_call_id
    return wire


def wire_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """The messages exactly as they go over the wire (what token counts must be taken of)."""
    return [_wire_message(m) for m in messages]


def _wire_request(request: ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": request.model,
        "messages": wire_messages(request.messages),
        "stream": True,
        "stream_options": {"include_usage": True},
        **request.params,
    }
    if request.tools:
        body["tools"] = [tool.to_openai() for tool in request.tools]
    return body


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is not None:
            try:
                return max(float(value) / divisor, 0.0)
            except ValueError:
                continue
    return None


def _translate(exc: openai.APIError, ttft_ms: float | None, total_ms: float) -> LlmError:
    """Map the SDK's errors to ours; the detail keeps the status, never the request's secrets."""
    if isinstance(exc, openai.APIStatusError):
        detail = f"HTTP {exc.status_code}: {exc.message}"
        if isinstance(exc, openai.RateLimitError):
            return LlmRateLimited(
                detail, retry_after=_retry_after(exc), ttft_ms=ttft_ms, total_ms=total_ms
            )
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return LlmAuthFailed(detail, ttft_ms=ttft_ms, total_ms=total_ms)
        if exc.status_code >= 500 or exc.status_code in (408, 409):
            return LlmUnavailable(
                detail, retry_after=_retry_after(exc), ttft_ms=ttft_ms, total_ms=total_ms
            )
        return LlmRejected(detail, ttft_ms=ttft_ms, total_ms=total_ms)
    if isinstance(exc, openai.APITimeoutError):
        return LlmTimeout(str(exc), ttft_ms=ttft_ms, total_ms=total_ms)
    if isinstance(exc, openai.APIConnectionError) and ttft_ms is not None:
        return LlmStreamBroken(
            f"connection lost mid-answer: {exc}", ttft_ms=ttft_ms, total_ms=total_ms
        )
    if isinstance(exc, openai.APIConnectionError):
        return LlmUnavailable(
            f"cannot reach the model server: {exc}", ttft_ms=ttft_ms, total_ms=total_ms
        )
    return LlmStreamBroken(str(exc), ttft_ms=ttft_ms, total_ms=total_ms)
