"""What the configured model server can do, probed for real, and what the product does about
each gap: `assistant doctor`.

Each probe is one small request (a few tokens on a paid API). A finding is `ok`, a `gap` the
product works around (and says how), or a `blocker` no turn can get past; the command exits
non-zero on a blocker.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import openai

from assistant.knowledge.embeddings import Embedder, EmbeddingError
from assistant.llm import (
    ChatMessage,
    ChatModel,
    ChatRequest,
    Completion,
    LlmError,
    OpenAIChatModel,
    connection_timed_out,
)
from assistant.model_traits import ModelTable
from assistant.tools import ToolDefinition

Level = Literal["ok", "gap", "blocker"]

_CALCULATOR = ToolDefinition(
    name="calculator",
    description="Evaluate an arithmetic expression such as '6 * 14'.",
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
    },
)
_TOOL_QUESTION = "Use the calculator tool to work out 6 * 14, please."
_JSON_QUESTION = 'Reply with the JSON object {"answer": 84} and nothing else.'


@dataclass(frozen=True, kw_only=True)
class Finding:
    check: str
    result: str
    level: Level
    action: str = ""  # what the product does about it


class ServerUnreachable(Exception):
    """No answer at all from OPENAI_BASE_URL: one line says where and why."""


@dataclass(frozen=True, kw_only=True)
class Doctor:
    """Probes one server for the models the configuration names (the first is the default)."""

    chat: OpenAIChatModel
    unstreamed: OpenAIChatModel  # the same server, tool rounds never streamed
    models: Sequence[str]
    table: ModelTable
    max_concurrency: int | None = None  # LLM_MAX_CONCURRENCY
    embedder: Embedder | None = None  # EMBEDDING_MODEL on the same server

    @property
    def client(self) -> openai.AsyncOpenAI:
        return self.chat.client

    async def close(self) -> None:
        await self.chat.close()
        await self.unstreamed.close()

    async def examine(self) -> list[Finding]:
        listing = await self._listing()
        model = self.models[0]
        streaming = await self._streaming(model)
        answered = streaming[0].level != "blocker"
        findings = [_presence(self.models, _served(listing), answered=answered), *streaming]
        if not answered:
            return findings
        findings.append(await self._tools_streamed(model))
        findings.append(await self._tools_unstreamed(model))
        findings.append(await self._json(model))
        props = await self._fetch(f"{self._root}/props")  # llama.cpp's: its window, its slots
        findings.append(await self._context(model, listing, props))
        slots = _slots(props, self.max_concurrency)
        if slots is not None:
            findings.append(slots)
        findings.append(_parameters(self.table, model))
        findings.append(await self._embeddings())
        return findings

    async def _embeddings(self) -> Finding:
        """Whether knowledge collections get vectors here, or search on keywords alone."""
        keywords = "knowledge search runs on keywords alone"
        if self.embedder is None:
            return Finding(
                check="embeddings",
                result="EMBEDDING_MODEL is not set",
                level="gap",
                action=f"{keywords}; set EMBEDDING_MODEL to an embedding model this server serves",
            )
        try:
            embedded = await self.embedder.embed(["doctor"], account=lambda _: None)
        except EmbeddingError as exc:
            return Finding(check="embeddings", result=str(exc), level="gap", action=keywords)
        return Finding(
            check="embeddings",
            result=f"{self.embedder.model}: {embedded.dimensions} dimensions",
            level="ok",
            action="knowledge search fuses keywords and vectors",
        )

    @property
    def where(self) -> str:
        """The server's URL as it may be shown: without a user or password in it."""
        parts = urlsplit(str(self.client.base_url))
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        netloc += f":{parts.port}" if parts.port else ""
        return urlunsplit(parts._replace(netloc=netloc))

    async def _listing(self) -> object:
        """`GET /models` as the server answers it (None when it lists nothing)."""
        try:
            listing = await self.client.get("/models", cast_to=object, options=_PROBE)
        except openai.APIConnectionError as exc:
            why = "Request timed out." if connection_timed_out(exc) else "Connection error."
            raise ServerUnreachable(f"cannot reach {self.where} ({why})") from None
        except openai.AuthenticationError:
            raise ServerUnreachable(
                f"{self.where} refused the API key (check OPENAI_API_KEY)"
            ) from None
        except openai.APIStatusError as exc:
            if exc.status_code == 404:
                return None  # some proxies do not list models; the probes below still tell
            raise ServerUnreachable(
                f"{self.where} answered HTTP {exc.status_code} to GET /models"
            ) from None
        except ValueError:  # not JSON: the chat probes below still tell
            return None
        return listing

    async def _streaming(self, model: str) -> list[Finding]:
        request = ChatRequest(
            model=model,
            messages=[ChatMessage(role="user", content="Reply with the word OK.")],
            params={"max_tokens": 16},
        )
        try:
            pieces, done = await _run(self.chat, request)
        except LlmError as exc:  # no turn can be answered
            return [Finding(check="streamed answer", result=_error(exc), level="blocker")]
        streamed = Finding(
            check="streamed answer",
            result=f"{len(pieces)} pieces, first after {done.ttft_ms or 0:.0f} ms",
            level="ok" if pieces else "gap",
            action="" if pieces else "answers appear all at once instead of as they are written",
        )
        if done.usage is not None:
            usage = Finding(
                check="usage in streams",
                result=f"{done.usage.prompt_tokens} prompt + {done.usage.completion_tokens} "
                "completion tokens",
                level="ok",
            )
        else:
            usage = Finding(
                check="usage in streams",
                result="not sent",
                level="gap",
                action="tokens are estimated with our tokenizer, marked ~",
            )
        return [streamed, usage]

    async def _tools_streamed(self, model: str) -> Finding:
        check = "tool calls, streamed"
        request = _tool_request(model)
        try:
            done = (await _run(self.chat, request))[1]
        except LlmError as exc:
            return Finding(check=check, result=_error(exc), level="gap", action=_NO_TOOLS)
        if not done.streamed:
            return Finding(
                check=check,
                result="refused by the server",
                level="gap",
                action="sends tool rounds unstreamed",
            )
        return _tool_finding(check, done)

    async def _tools_unstreamed(self, model: str) -> Finding:
        check = "tool calls, not streamed"
        try:
            done = (await _run(self.unstreamed, _tool_request(model)))[1]
        except LlmError as exc:
            return Finding(check=check, result=_error(exc), level="gap", action=_NO_TOOLS)
        return _tool_finding(check, done)

    async def _json(self, model: str) -> Finding:
        request = ChatRequest(
            model=model,
            messages=[ChatMessage(role="user", content=_JSON_QUESTION)],
            params={"response_format": {"type": "json_object"}, "max_tokens": 32},
        )
        action = "a response_schema reply that is not valid gets one repair call"
        try:
            done = (await _run(self.chat, request))[1]
        except LlmError as exc:
            return Finding(check="JSON output", result=_error(exc), level="gap", action=action)
        try:
            json.loads(done.text)
        except ValueError:
            return Finding(
                check="JSON output", result="reply was not JSON", level="gap", action=action
            )
        return Finding(check="JSON output", result="valid JSON", level="ok")

    async def _context(self, model: str, listing: object, props: object) -> Finding:
        size = await self._context_size(model, listing, props)
        if size is None:
            return Finding(
                check="context length",
                result="not reported",
                level="gap",
                action="trusts memory.context_tokens; shrinks it on an overflow",
            )
        return Finding(
            check="context length",
            result=f"{size:,} tokens (the server's count)",
            level="ok",
            action="keep memory.context_tokens below it",
        )

    @property
    def _root(self) -> str:
        return str(self.client.base_url).rstrip("/").removesuffix("/v1")

    async def _context_size(self, model: str, listing: object, props: object) -> int | None:
        """Where each server says it: vLLM in /v1/models, llama.cpp in /props (both already
        read), LiteLLM in /model/info, Ollama in /api/ps (its /api/show gives the length the
        model was trained for, while the server runs with a smaller num_ctx and silently drops
        what is over)."""
        for answer in (listing, props):
            size = _context_in(answer, model)
            if size is not None:
                return size
        for path in (f"{self._root}/model/info", f"{self._root}/api/ps"):
            size = _context_in(await self._fetch(path), model)
            if size is not None:
                return size
        return None

    async def _fetch(self, path: str) -> object:
        """GET one of a server's own endpoints; None when it has none (or says nonsense)."""
        try:
            return await self.client.get(path, cast_to=object, options=_PROBE)
        except (openai.APIError, ValueError):  # no such endpoint, or not JSON
            return None


# Discovery probes wait this long at most: a server that hangs on a path it does not know must
# not keep the doctor silent for the model call's whole timeout.
_PROBE: openai.RequestOptions = {"timeout": 10.0}
_NO_TOOLS = "tool-using versions answer without their tools on this server"


def _served(listing: object) -> list[str]:
    data = listing.get("data") if isinstance(listing, dict) else None
    return [str(m.get("id")) for m in data or () if isinstance(m, dict)]


def _slots(props: object, max_concurrency: int | None) -> Finding | None:
    """llama.cpp's server says how many requests it serves at once (`/props`); with one, a
    second request ends the running one, so calls must queue on our side."""
    slots = props.get("total_slots") if isinstance(props, dict) else None
    if not isinstance(slots, int):
        return None
    check, result = "requests at once", f"{slots} (the server's slots)"
    if max_concurrency is not None and max_concurrency <= slots:
        return Finding(check=check, result=result, level="ok")
    return Finding(
        check=check,
        result=result,
        level="gap",
        action=f"set LLM_MAX_CONCURRENCY={slots}: more at once cut each other off",
    )


def _tool_request(model: str) -> ChatRequest:
    return ChatRequest(
        model=model,
        messages=[ChatMessage(role="user", content=_TOOL_QUESTION)],
        tools=[_CALCULATOR],
        params={"max_tokens": 64},
    )


def _tool_finding(check: str, done: Completion) -> Finding:
    calls = [c for c in done.tool_calls if c.name == "calculator"]
    if not calls:
        return Finding(
            check=check, result="the model answered in text", level="gap", action=_NO_TOOLS
        )
    try:
        arguments = json.loads(calls[0].arguments)
    except ValueError:
        return Finding(
            check=check,
            result=f"garbled arguments {calls[0].arguments[:40]!r}",
            level="gap",
            action="the tool's error goes back to the model, which may try again",
        )
    return Finding(check=check, result=f"calculator({json.dumps(arguments)})", level="ok")


def _presence(models: Sequence[str], served: list[str], *, answered: bool) -> Finding:
    """Whether the server lists the configured models. One not listed may still answer:
    llama.cpp serves its one model whatever the request names."""
    check = "models served"
    if not served:
        return Finding(
            check=check, result="the server lists none", level="ok" if answered else "gap"
        )
    missing = [m for m in models if m not in served]
    shown = ", ".join(served[:5]) + (f" (+{len(served) - 5})" if len(served) > 5 else "")
    if not missing:
        return Finding(check=check, result=shown, level="ok")
    result = f"{shown}; not listed: {', '.join(missing)}"
    if answered and missing == [models[0]]:
        return Finding(
            check=check,
            result=f"{result} (it answers anyway)",
            level="gap",
            action="the server answers with its own model whatever the name",
        )
    return Finding(
        check=check,
        result=result,
        level="blocker" if models[0] in missing and not answered else "gap",
        action="name a model it serves: a prompt's model or fallback_models, or ASSISTANT_MODEL",
    )


def _parameters(table: ModelTable, model: str) -> Finding:
    traits = table.traits(model)
    said = [f"max_tokens sent as {traits.token_limit}"]
    if not traits.sampling:
        said.append("temperature/top_p not sent")
    if traits.reasoning_effort:
        said.append("reasoning_effort sent")
    return Finding(
        check="request parameters",
        result=", ".join(said),
        level="ok",
        action="assistant/data/models.yaml; MODELS_FILE adds to it",
    )


def _context_in(answer: object, model: str) -> int | None:
    if not isinstance(answer, dict):
        return None
    for entry in answer.get("data") or ():  # vLLM's /v1/models; LiteLLM's /model/info
        if not isinstance(entry, dict) or entry.get("id", entry.get("model_name")) != model:
            continue
        info = entry.get("model_info") or {}
        size = entry.get("max_model_len") or info.get("max_input_tokens")
        if isinstance(size, int):
            return size
    settings = answer.get("default_generation_settings") or {}  # llama.cpp's /props
    if isinstance(settings.get("n_ctx"), int):
        return int(settings["n_ctx"])
    for loaded in answer.get("models") or ():  # Ollama's /api/ps
        if isinstance(loaded, dict) and model in (loaded.get("name"), loaded.get("model")):
            size = loaded.get("context_length")
            return size if isinstance(size, int) else None
    return None


async def _run(model: ChatModel, request: ChatRequest) -> tuple[list[str], Completion]:
    pieces: list[str] = []
    async for item in model.stream(request):
        if isinstance(item, Completion):
            return pieces, item
        pieces.append(item)
    raise LlmError("the stream ended without a completion")


def _error(exc: LlmError) -> str:
    return f"{type(exc).__name__}: {str(exc)[:120]}"
