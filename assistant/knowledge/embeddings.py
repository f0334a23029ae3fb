"""Passages → vectors from the model server's `/v1/embeddings`: batched, retried, accounted.

The one module of `knowledge` that knows OpenAI's wire types: callers get `Embedded`, or an
`EmbeddingError` whose words tell an operator what failed and what to do about it. Servers
differ here as they do for chat (see `assistant/testing/personalities.py`, EMBEDDING_SERVERS):
which status says "no embeddings", how an input too long is refused, whether base64 and
`dimensions` are honoured, whether usage is counted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import logging
import math
import random
import re
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import openai

from assistant.llm import causes, connection_timed_out, retry_after
from assistant.pricing import PriceTable
from assistant.records import NO_TOKENS, SERVER_TOKENS, CallRecord, estimated_by
from assistant.tokens import TokenCounter

log = logging.getLogger(__name__)

PURPOSE = "embedding"  # CallRecord.purpose of every request made here
MAX_INPUTS = 2048  # inputs one request may hold (OpenAI's limit)
# OpenAI refuses a request of over 300,000 tokens, all inputs together; our count may be
# another tokenizer's than the server's, so batches stay well under it.
REQUEST_TOKENS = 250_000
RETRY_AFTER_CAP = 60.0  # the longest wait a server's Retry-After is obeyed for
RETRY_BUDGET = 120.0  # seconds one request may spend waiting between its attempts

# "No embeddings here", in each server's words: llama.cpp's llama-server without --embeddings
# (and Ollama passing those words on for a chat model), llama-cpp-python without
# `embedding=True`, vLLM before it stopped routing /v1/embeddings for chat models ("The model
# does not support Embeddings API"), Azure OpenAI given a chat deployment
# (OperationNotSupported, "The embeddings operation does not work with the specified model").
_UNSUPPORTED = re.compile(
    r"does not support embeddings|embedding=true|embeddings operation does not work"
    r"|operationnotsupported|not an embedding model",
    re.IGNORECASE,
)
_UNSUPPORTED_STATUS = (404, 405, 501)
# "An input (or the request) is too large", in each server's words: llama.cpp ("input (N
# tokens) is too large to process. increase the physical batch size", a 500; "is larger than
# the max context size"), OpenAI and vLLM ("maximum context length is N tokens"), OpenAI's
# 300,000 tokens a request (max_tokens_per_request) and 2048 inputs ("'$.input' is invalid"),
# Azure's "Too many inputs", llama-cpp-python's "exceed batch size", Ollama's "input length
# exceeds the context length".
_TOO_LARGE = re.compile(
    r"too large to process|physical batch size|larger than the max context size"
    r"|maximum context length|max_tokens_per_request|tokens per request|too many inputs"
    r"|'\$\.input' is invalid|exceed batch size|input length exceeds",
    re.IGNORECASE,
)
# The transport's errors for a connection never made: no request reached the server.
_NEVER_CONNECTED = ("ConnectError", "ConnectionRefusedError", "gaierror", "ClientConnector")

_Kind = Literal["retry", "too_large", "unsupported", "fatal"]


class EmbeddingError(Exception):
    """Texts could not be embedded; the message says what failed and what to do."""


class EmbeddingsUnsupported(EmbeddingError):
    """The server cannot embed with this model (no endpoint, not started for embeddings, not
    an embedding model): callers fall back to keyword search and say so once."""


@dataclass(frozen=True, kw_only=True)
class Embedded:
    vectors: list[list[float]]  # one per input, in order
    dimensions: int


class _Failed(Exception):
    """One attempt's failure, sorted by what to do next."""

    def __init__(
        self,
        kind: _Kind,
        error_class: str,
        detail: str,
        *,
        retry_after: float | None = None,
        reached: bool = True,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.error_class = error_class
        self.detail = detail
        self.retry_after = retry_after
        self.reached = reached  # the request got to the server: the attempt is accounted


@dataclass(frozen=True)
class _Text:
    position: int  # in the texts `embed` was given
    text: str
    tokens: int  # our count


@dataclass(frozen=True)
class _Answer:
    """What the server answered to one request: its vectors, or what is wrong with them."""

    vectors: list[list[float]]
    prompt_tokens: int | None  # the server's count; None: it gave none
    model: str
    problem: EmbeddingError | None = None  # the vectors are not usable


class Embedder:
    """Embeds texts in batches of `batch_size` (fewer when they hold many tokens), retrying a
    busy or failing server with back-off, halving a batch the server finds too large, and
    accounting every request that reached the server (`account`, one CallRecord each).

    The SDK's own retries are off for these calls: every attempt is ours, counted and bounded.
    `dimensions` asks for shorter vectors (text-embedding-3 models); a server that ignores it
    is an error, since the store's vectors must all have the size asked for.
    """

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        model: str,
        prices: PriceTable,
        batch_size: int = 64,
        max_attempts: int = 4,
        dimensions: int | None = None,
        timeout: float = 60.0,
        backoff_base: float = 0.5,
        send_key: bool = True,
    ) -> None:
        if not 1 <= batch_size <= MAX_INPUTS:
            raise ValueError(f"batch_size must be 1 to {MAX_INPUTS}, not {batch_size}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        if dimensions is not None and dimensions < 1:
            raise ValueError(f"dimensions must be at least 1, not {dimensions}")
        self._requests = _Requests(
            client.with_options(max_retries=0, timeout=timeout),
            key=client.api_key,
            model=model,
            prices=prices,
            dimensions=dimensions,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            send_key=send_key,
        )
        self._batch_size = batch_size

    @property
    def model(self) -> str:
        return self._requests.model

    async def embed(
        self,
        texts: Sequence[str],
        *,
        account: Callable[[CallRecord], None],
        on_batch: Callable[[int], None] | None = None,
    ) -> Embedded:
        """One vector per text, in order. `on_batch(n)` follows each request that embedded
        n texts (a progress bar's steps); `account` gets each request's record as it ends, so
        a failure part-way still accounts for what was spent.

        Raises EmbeddingsUnsupported when the server cannot embed with this model, and
        EmbeddingError for the rest (retries spent, an input too large, a broken answer).
        """
        items = self._items(texts)
        run = _Run(self._requests, account, on_batch, total=len(items))
        vectors: list[list[float]] = []
        for batch in self._batches(items):
            vectors.extend(await run.embed(batch))
        dimensions = run.dimensions or self._requests.dimensions or 0
        return Embedded(vectors=vectors, dimensions=dimensions)

    def _items(self, texts: Sequence[str]) -> list[_Text]:
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts, not one string")
        blank = next((i for i, text in enumerate(texts) if not text.strip()), None)
        if blank is not None:  # OpenAI refuses an empty input ("'$.input' is invalid")
            raise ValueError(f"text {blank + 1} of {len(texts)} is blank: nothing to embed")
        count = self._requests.counter.count
        return [_Text(i, text, count(text)) for i, text in enumerate(texts)]

    def _batches(self, items: list[_Text]) -> list[list[_Text]]:
        """Up to `batch_size` texts a request, and no more than REQUEST_TOKENS by our count
        (a text above that alone goes alone)."""
        batches: list[list[_Text]] = []
        batch: list[_Text] = []
        tokens = 0
        for item in items:
            full = len(batch) >= self._batch_size or tokens + item.tokens > REQUEST_TOKENS
            if batch and full:
                batches.append(batch)
                batch, tokens = [], 0
            batch.append(item)
            tokens += item.tokens
        if batch:
            batches.append(batch)
        return batches


class _Requests:
    """Requests to one server for one model: sending, reading the answer, sorting failures,
    the records and the words of the errors."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        key: str | None,
        model: str,
        prices: PriceTable,
        dimensions: int | None,
        max_attempts: int,
        backoff_base: float,
        send_key: bool,
    ) -> None:
        self._client = client
        self._key = key
        # the SDK insists on a key; a local server is not sent the placeholder (as llm.py does)
        self._headers = None if send_key else {"Authorization": openai.Omit()}
        self.model = model
        self._prices = prices
        self.dimensions = dimensions
        self.max_attempts = max_attempts
        self._backoff_base = backoff_base

    @functools.cached_property
    def counter(self) -> TokenCounter:
        """Our tokenizer for this model, loaded at the first texts (not at start-up)."""
        return TokenCounter(self.model)

    async def send(self, batch: list[_Text]) -> _Answer:
        """POST one batch: the answer (its vectors checked), or `_Failed`."""
        try:
            response = await self._client.embeddings.create(
                model=self.model,
                input=[item.text for item in batch],
                encoding_format="base64",  # a quarter of the bytes; floats are read too
                dimensions=openai.omit if self.dimensions is None else self.dimensions,
                extra_headers=self._headers,
            )
        except openai.APIError as exc:
            raise self._failure(exc) from None  # the cause is dropped: it may quote the key
        except TimeoutError:
            raise _Failed("retry", "Timeout", "no answer within the timeout") from None
        tokens = _prompt_tokens(response)
        model = str(getattr(response, "model", None) or self.model)
        try:
            vectors = _vectors(response, len(batch), self.dimensions)
        except EmbeddingError as problem:
            return _Answer(vectors=[], prompt_tokens=tokens, model=model, problem=problem)
        return _Answer(vectors=vectors, prompt_tokens=tokens, model=model)

    def _failure(self, exc: openai.APIError) -> _Failed:
        """What a failed request means: try again, halve the batch, give up on embeddings,
        or stop; in the server's words, never with the API key in them."""
        if isinstance(exc, openai.APIStatusError):
            return _status_failure(exc, self._redacted(_server_words(exc)))
        if isinstance(exc, openai.APIConnectionError):
            if connection_timed_out(exc):
                return _Failed("retry", "Timeout", "no answer within the timeout")
            reached = _reached(exc)
            said = "the connection was lost" if reached else "cannot reach the model server"
            return _Failed("retry", "ConnectionLost", said, reached=reached)
        return _Failed("fatal", "BadResponse", self._redacted(str(exc)))

    def _redacted(self, words: str) -> str:
        key = self._key
        return words.replace(key, "[redacted]") if key and len(key) > 8 else words

    def record(self, answer: _Answer, batch: list[_Text], ms: float) -> CallRecord:
        """A request the server answered: its count of the tokens, or ours when it gave none
        (llama.cpp before it filled usage in sent 0), priced either way: a broken answer
        was still billed."""
        if answer.prompt_tokens:
            tokens, source = answer.prompt_tokens, SERVER_TOKENS
        else:
            tokens = sum(item.tokens for item in batch)
            source = estimated_by(self.counter.tokenizer)
        return CallRecord(
            purpose=PURPOSE,
            model=answer.model,
            prompt_tokens=tokens,
            token_source=source,
            cost_usd=self._prices.cost(answer.model, prompt_tokens=tokens, completion_tokens=0),
            total_ms=ms,
            status="ok" if answer.problem is None else "error",
            error_class=None if answer.problem is None else "BadResponse",
        )

    def failed_record(self, error_class: str, ms: float) -> CallRecord:
        """A request that got no vectors: nothing counted (its zeros mean "not counted")."""
        return CallRecord(
            purpose=PURPOSE,
            model=self.model,
            total_ms=ms,
            status="error",
            error_class=error_class,
            token_source=NO_TOKENS,
        )

    def backoff(self, attempt: int, failure: _Failed) -> float:
        if failure.retry_after is not None:
            return min(failure.retry_after, RETRY_AFTER_CAP)
        jitter = random.uniform(0.5, 1.0)  # noqa: S311 - spreading retries, not a secret
        return min(self._backoff_base * 2.0 ** (attempt - 1) * jitter, RETRY_AFTER_CAP)

    def gave_up(self, failure: _Failed, attempts: int) -> EmbeddingError:
        if failure.kind == "unsupported":
            return EmbeddingsUnsupported(_unsupported_message(self.model, failure.detail))
        if failure.kind == "fatal":
            return EmbeddingError(
                f"the model server refused to embed with {self.model!r}: {failure.detail}"
            )
        advice = (
            "the server is rate limiting: wait, or raise the account's limits"
            if failure.error_class == "RateLimited"
            else "the server is failing or overloaded: try again later, or read its logs"
        )
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        return EmbeddingError(
            f"embedding with {self.model!r} failed after {tries} ({failure.detail}); {advice}"
        )

    def too_large(self, item: _Text, total: int, detail: str) -> EmbeddingError:
        hint = ""
        if "physical batch" in detail:
            hint = " (or start llama-server with a larger --ubatch-size and --batch-size)"
        return EmbeddingError(
            f"text {item.position + 1} of {total} ({item.tokens} tokens by our count) is too "
            f"large for {self.model!r}; the server said: {detail}. Cut such texts into "
            f"smaller passages{hint}."
        )


class _Run:
    """One `embed` call: its batches' requests, retries and halvings, its records and
    progress, and the vector size its first answer set."""

    def __init__(
        self,
        requests: _Requests,
        account: Callable[[CallRecord], None],
        on_batch: Callable[[int], None] | None,
        *,
        total: int,
    ) -> None:
        self._requests = requests
        self._account = account
        self._on_batch = on_batch
        self._total = total
        self.dimensions: int | None = None

    async def embed(self, batch: list[_Text]) -> list[list[float]]:
        """The batch's vectors; a batch too large for the server is halved until it fits, and
        a single text still too large is an error naming it."""
        try:
            vectors = await self._with_retries(batch)
        except _Failed as failure:
            if failure.kind != "too_large":
                raise self._requests.gave_up(failure, 1) from None
            if len(batch) == 1:
                raise self._requests.too_large(batch[0], self._total, failure.detail) from None
            log.info("embedding a batch of %d: too large (%s); halving it", len(batch), failure)
            half = len(batch) // 2
            return await self.embed(batch[:half]) + await self.embed(batch[half:])
        if self._on_batch is not None:
            self._on_batch(len(batch))
        return vectors

    async def _with_retries(self, batch: list[_Text]) -> list[list[float]]:
        """Attempts until one succeeds. Raises `_Failed` for a failure not worth trying again,
        and EmbeddingError once the attempts or the time to wait for them are spent."""
        requests = self._requests
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(batch)
            except _Failed as failure:
                if failure.kind != "retry":
                    raise
                delay = requests.backoff(attempt, failure)
                if attempt >= requests.max_attempts or waited + delay > RETRY_BUDGET:
                    raise requests.gave_up(failure, attempt) from None
                log.warning(
                    "embedding attempt %d failed (%s: %s); retrying in %.2f s",
                    attempt,
                    failure.error_class,
                    failure,
                    delay,
                )
            waited += delay
            await asyncio.sleep(delay)

    async def _attempt(self, batch: list[_Text]) -> list[list[float]]:
        requests = self._requests
        started = time.perf_counter()
        try:
            answer = await requests.send(batch)
        except _Failed as failure:
            if failure.reached:
                self._account(requests.failed_record(failure.error_class, _ms_since(started)))
            raise
        answer = self._same_size(answer)
        if isinstance(answer.problem, EmbeddingsUnsupported):  # an error body sent with 200
            self._account(requests.failed_record("EmbeddingsUnsupported", _ms_since(started)))
            raise answer.problem
        self._account(requests.record(answer, batch, _ms_since(started)))
        if answer.problem is not None:
            raise answer.problem
        return answer.vectors

    def _same_size(self, answer: _Answer) -> _Answer:
        """The answer, or it with a problem when its vectors are not the size of the first."""
        if answer.problem is not None:
            return answer
        size = len(answer.vectors[0])
        if self.dimensions is None or size == self.dimensions:
            self.dimensions = size
            return answer
        problem = EmbeddingError(
            f"the model server sent vectors of {size} numbers after vectors of "
            f"{self.dimensions} for {self._requests.model!r}: it is not answering with one "
            "model; check its configuration"
        )
        return _Answer(
            vectors=[], prompt_tokens=answer.prompt_tokens, model=answer.model, problem=problem
        )


def _status_failure(exc: openai.APIStatusError, words: str) -> _Failed:
    status = exc.status_code
    body = exc.body if isinstance(exc.body, dict) else {}
    said = f"HTTP {status}: {words}"
    marks = f"{words} {body.get('type') or ''} {body.get('code') or ''}"
    if status in _UNSUPPORTED_STATUS or _UNSUPPORTED.search(marks):
        return _Failed("unsupported", "EmbeddingsUnsupported", said)
    if _TOO_LARGE.search(marks):  # before 5xx: llama.cpp says it with a 500
        return _Failed("too_large", "InputTooLarge", said)
    if status == 429:
        return _Failed("retry", "RateLimited", said, retry_after=retry_after(exc))
    if status in (401, 403):
        return _Failed("fatal", "AuthFailed", f"{said} (check the API key)")
    if status >= 500 or status in (408, 409):
        return _Failed("retry", "Unavailable", said, retry_after=retry_after(exc))
    return _Failed("fatal", "Rejected", said)


def _server_words(exc: openai.APIStatusError) -> str:
    """The server's own message: OpenAI's `error.message` (the SDK has taken the envelope
    off), FastAPI's `detail` (vLLM's absent route), or the SDK's summary."""
    body = exc.body
    if isinstance(body, dict):
        for field in ("message", "detail", "error"):
            value = body.get(field)
            if isinstance(value, str) and value:
                return value
    if isinstance(body, str) and body:
        return body
    return exc.message


def _reached(exc: BaseException) -> bool:
    """Whether the request got to the server: not when the connection was never made."""
    return not any(type(c).__name__.startswith(_NEVER_CONNECTED) for c in causes(exc))


def _unsupported_message(model: str, detail: str) -> str:
    if "--embeddings" in detail:
        advice = (
            "start llama.cpp's llama-server with --embeddings and an embedding model; Ollama "
            "passes on the same words for a model that cannot embed: there, choose an embedding "
            "model instead (e.g. `ollama pull nomic-embed-text`)"
        )
    elif "embedding=true" in detail.lower():
        advice = "start llama-cpp-python with `--embedding true` and an embedding model"
    elif detail.startswith("HTTP 404"):
        advice = (
            "the server has no embeddings for this model name: check the embedding model's "
            "name, and serve an embedding model (vLLM serves embeddings only when the model it "
            "runs is an embedding model)"
        )
    else:
        advice = "set the embedding model to one this server embeds with"
    return (
        f"the model server cannot make embeddings with {model!r} ({detail}); knowledge search "
        f"uses keywords only until it can: {advice}"
    )


# ---------------------------------------------------------------- reading the answer


def _vectors(response: object, count: int, dimensions: int | None) -> list[list[float]]:
    """The answer's vectors in input order, each checked: as many as inputs, all one size
    (the size asked for, if any), finite, not all zero."""
    data = getattr(response, "data", None)
    if not isinstance(data, list):
        raise _no_data(response)
    if len(data) != count:
        raise EmbeddingError(f"the model server sent {len(data)} vectors for {count} texts")
    vectors = [_decoded(getattr(item, "embedding", None)) for item in _in_order(data)]
    sizes = {len(vector) for vector in vectors}
    if len(sizes) != 1:
        raise EmbeddingError(f"the model server sent vectors of mixed sizes {sorted(sizes)}")
    size = sizes.pop()
    if dimensions is not None and size != dimensions:
        raise EmbeddingError(
            f"asked for vectors of {dimensions} numbers, the model server sent {size}: it does "
            "not honour `dimensions` for this model (llama.cpp and llama-cpp-python ignore it); "
            "leave the embedding dimensions unset, or use a model that takes them"
        )
    return vectors


def _no_data(response: object) -> EmbeddingError:
    """An answer without vectors. vLLM before it stopped routing /v1/embeddings for chat
    models refused them with an error body and HTTP 200 (vllm-project/vllm#21704)."""
    message = str(getattr(response, "message", None) or "")
    if _UNSUPPORTED.search(message) or "embeddings api" in message.lower():
        model = str(getattr(response, "model", None) or "this model")
        return EmbeddingsUnsupported(_unsupported_message(model, f"HTTP 200: {message}"))
    return EmbeddingError("the model server's answer holds no vectors (no `data` list)")


def _in_order(data: list[object]) -> list[object]:
    """By `index` when every item has a distinct one (OpenAI's order is not promised)."""
    indices = [getattr(item, "index", None) for item in data]
    numbered = [(i, item) for i, item in zip(indices, data, strict=True) if isinstance(i, int)]
    if sorted(i for i, _ in numbered) != list(range(len(data))):
        return data
    return [item for _, item in sorted(numbered, key=lambda pair: pair[0])]


def _decoded(embedding: object) -> list[float]:
    """A vector from base64 (little-endian float32) or a list of numbers; finite, not empty,
    not all zero (a zero vector has no direction to compare)."""
    if isinstance(embedding, str):
        vector = _from_base64(embedding)
    elif isinstance(embedding, list) and all(_is_number(value) for value in embedding):
        vector = [float(value) for value in embedding]
    else:
        kind = "a list of lists (per-token vectors?)" if isinstance(embedding, list) else None
        raise EmbeddingError(
            f"the model server sent a vector that is {kind or type(embedding).__name__}, not "
            "a list of numbers"
        )
    if not vector or not all(map(math.isfinite, vector)):
        raise EmbeddingError("the model server sent an empty vector, or one with NaN or infinity")
    if not any(vector):
        raise EmbeddingError("the model server sent a vector of zeros")
    return vector


def _from_base64(text: str) -> list[float]:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EmbeddingError("the model server sent a vector that is not valid base64") from None
    if len(raw) % 4:
        raise EmbeddingError("the model server sent a base64 vector that is not float32")
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _prompt_tokens(response: object) -> int | None:
    usage = getattr(response, "usage", None)
    tokens = getattr(usage, "prompt_tokens", None)
    return tokens if _is_number(tokens) and isinstance(tokens, int) else None


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
