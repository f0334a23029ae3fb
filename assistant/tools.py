"""Tools: a typed function becomes a definition the model sees, kept apart from the call we run."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from assistant.observe import UNWATCHED, ToolRun, TurnWatch
from assistant.records import CallRecord
from assistant.turns import Actor, ConversationRef, Source

ToolFunction = Callable[..., Any]
_MAX_RESULT_CHARS = 16_000
_WIRE_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_WIRE_MAX = 64


def wire_name(name: str) -> str:
    """The name the model's API is sent for tool `name`. OpenAI (and servers that copy its
    checks) accept only `^[a-zA-Z0-9_-]{1,64}$`, so an MCP tool's `server.tool` travels as
    `server__tool`, too long a name as its head and a hash. Everything of ours says `name`;
    only the wire, in and out, says this."""
    wired = _WIRE_UNSAFE.sub("_", name.replace(".", "__"))
    if len(wired) <= _WIRE_MAX:
        return wired
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{wired[: _WIRE_MAX - 9]}_{digest}"


@dataclass(frozen=True, kw_only=True)
class ToolDefinition:
    """What the model is told: a name, a description and a JSON schema for the arguments."""

    name: str
    description: str
    parameters: dict[str, Any]

    def to_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": wire_name(self.name),
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass(kw_only=True)
class ToolContext:
    """What a tool may know of the turn it serves. A tool asks for it by taking a parameter
    typed `ToolContext` (never shown to the model, which cannot forge it):

    - `ref`: where the conversation is. A tool that reads the team's documents searches only
      what this place may see.
    - `account`: the turn's ledger, for the model calls a tool makes itself (an embedding).
    - `sources`: what the tool found, numbered in the order found, for the answer to cite.
    - `message_id`, `requester`: the turn's question and its author, whose approval a tool
      marked `confirm` waits for (read by the engine, not by tools).
    - `watch`: where a tool that searches reports the search (traces, metrics).
    """

    ref: ConversationRef
    account: Callable[[CallRecord], None]
    sources: list[Source] = field(default_factory=list)
    message_id: int | None = None  # the user's message this turn answers
    requester: Actor | None = None  # who may approve an action; None: nobody can be asked
    watch: TurnWatch = UNWATCHED  # the turn's instruments: each tool run, each search

    def cite(self, source: Source) -> Source:
        """`source` numbered for this turn: the same passage found twice keeps its number."""
        for known in self.sources:
            if (known.collection, known.document, known.heading) == (
                source.collection,
                source.document,
                source.heading,
            ):
                return known
        numbered = Source(
            number=len(self.sources) + 1,
            collection=source.collection,
            document=source.document,
            title=source.title,
            heading=source.heading,
            link=source.link,
        )
        self.sources.append(numbered)
        return numbered


@dataclass(frozen=True, kw_only=True)
class ToolResult:
    """What goes back to the model; a failure is a result too, so the model can recover."""

    call_id: str
    name: str
    ok: bool
    content: str


class Tool(Protocol):
    """Anything the model may call: a Python function here, or a tool an MCP server offers.

    `source` says where it comes from ("built-in", "mcp:SERVER"), for `assistant tools list`
    and the logs. `confirm`: the user who started the turn must approve each call before it
    runs (an action on their behalf); the engine asks, the tool never does.
    """

    @property
    def definition(self) -> ToolDefinition: ...

    @property
    def source(self) -> str: ...

    @property
    def confirm(self) -> bool: ...

    async def run(
        self, raw_arguments: str, *, time_limit: float, context: ToolContext | None = None
    ) -> tuple[bool, str]:
        """(ok, text for the model). Never raises: a failure, a timeout or bad arguments is
        an `error: …` text the model can recover from."""
        ...


@dataclass(frozen=True, kw_only=True)
class FunctionTool:
    """A typed Python function as a tool: its arguments validated against its type hints."""

    definition: ToolDefinition
    arguments: type[BaseModel]
    function: ToolFunction
    context_parameter: str | None = None  # the parameter that receives the `ToolContext`
    source: str = "built-in"
    confirm: bool = False

    async def run(
        self, raw_arguments: str, *, time_limit: float, context: ToolContext | None = None
    ) -> tuple[bool, str]:
        try:
            parsed = self.arguments.model_validate_json(raw_arguments or "{}")
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors()
            )
            return False, f"error: invalid arguments ({problems})"
        kwargs = {name: getattr(parsed, name) for name in type(parsed).model_fields}
        if self.context_parameter is not None:
            if context is None:
                return False, "error: this tool works only inside a conversation"
            kwargs[self.context_parameter] = context
        try:
            async with asyncio.timeout(time_limit):
                value = await self._call(kwargs)
        except TimeoutError:
            return False, timed_out(time_limit)
        except Exception as exc:  # a tool's failure is reported to the model, not raised
            return False, f"error: {type(exc).__name__}: {exc}"
        return True, as_text(value)

    async def _call(self, kwargs: dict[str, Any]) -> Any:
        if inspect.iscoroutinefunction(self.function):
            return await self.function(**kwargs)
        return await asyncio.to_thread(self.function, **kwargs)


def timed_out(time_limit: float) -> str:
    return f"error: the tool timed out after {time_limit:g} s"


def as_text(value: Any) -> str:
    """A tool's value as the model reads it, cut at the result budget (a tool that returns a
    whole log must not fill the context)."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) > _MAX_RESULT_CHARS:
        return text[:_MAX_RESULT_CHARS] + f"… [truncated, {len(text)} characters in all]"
    return text


def tool_from_function(
    function: ToolFunction, *, name: str | None = None, confirm: bool = False
) -> FunctionTool:
    """Build the definition from the signature (types, defaults) and the docstring."""
    hints = get_type_hints(function)
    fields: dict[str, Any] = {}
    context_parameter = None
    for parameter in inspect.signature(function).parameters.values():
        if parameter.name not in hints:
            raise TypeError(f"tool {function.__name__}: parameter {parameter.name!r} has no type")
        if hints[parameter.name] is ToolContext:
            context_parameter = parameter.name
            continue
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (hints[parameter.name], default)
    tool_name = name or function.__name__
    arguments = create_model(
        f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )
    schema = arguments.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    description = inspect.cleandoc(function.__doc__ or "").strip() or tool_name
    definition = ToolDefinition(name=tool_name, description=description, parameters=schema)
    return FunctionTool(
        definition=definition,
        arguments=arguments,
        function=function,
        context_parameter=context_parameter,
        confirm=confirm,
    )


class ToolRegistry:
    """All tools this process can run; a prompt version picks which of them the model may see."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def register(
        self, function: ToolFunction, *, name: str | None = None, confirm: bool = False
    ) -> ToolFunction:
        """Add a Python function as a tool; `confirm`: each call waits for the user's approval."""
        self.add(tool_from_function(function, name=name, confirm=confirm))
        return function

    def add(self, tool: Tool) -> None:
        name = tool.definition.name
        if name in self._tools:
            raise ValueError(f"a tool named {name!r} is already registered")
        twins = [known for known in self._tools if wire_name(known) == wire_name(name)]
        if twins:
            raise ValueError(f"tools {twins[0]!r} and {name!r} would reach the model by one name")
        self._tools[name] = tool

    def names(self) -> list[str]:
        return sorted(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def tools(self) -> list[Tool]:
        """Every tool, by name."""
        return [self._tools[name] for name in sorted(self._tools)]

    def definitions(self, names: Iterable[str]) -> list[ToolDefinition]:
        return [self._tools[name].definition for name in names if name in self._tools]

    async def run_all(
        self,
        calls: Sequence[tuple[str, str, str]],
        *,
        allowed: Iterable[str],
        time_limit: float,
        context: ToolContext | None = None,
    ) -> list[ToolResult]:
        """Run (call_id, name, arguments) calls in parallel; results in the order asked."""
        permitted = set(allowed)

        async def run_one(call_id: str, name: str, raw: str) -> ToolResult:
            tool = self._tools.get(name) if name in permitted else None
            started = time.time_ns()
            if tool is None:
                ok, content = False, f"error: no tool named {name!r} is available"
            else:
                ok, content = await tool.run(raw, time_limit=time_limit, context=context)
            if context is not None:
                context.watch.tool(
                    ToolRun(
                        name=name,
                        call_id=call_id,
                        ok=ok,
                        started_ns=started,
                        ended_ns=time.time_ns(),
                        source=tool.source if tool is not None else "unknown",
                    )
                )
            return ToolResult(call_id=call_id, name=name, ok=ok, content=content)

        return list(await asyncio.gather(*(run_one(*call) for call in calls)))
