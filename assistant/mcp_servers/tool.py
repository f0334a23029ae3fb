"""A tool an MCP server offers, as the engine sees any tool: named `server.tool`, described
and schemed by the server unchanged, run under the same time limit and result budget."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from mcp import MCPError
from mcp.types import (
    AudioContent,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)
from mcp.types import Tool as ServerTool
from referencing import Registry

from assistant.mcp_servers.supervisor import ServerSupervisor, ServerUnavailable
from assistant.tools import ToolContext, ToolDefinition, as_text, timed_out

_UNKNOWN_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


class McpTool:
    """Tool `remote` of the server `supervisor` keeps; its definition follows the server's
    latest listing (a server that was down at start is described once it connects)."""

    def __init__(self, supervisor: ServerSupervisor, remote: str) -> None:
        self._supervisor = supervisor
        self.remote = remote
        self.name = f"{supervisor.name}.{remote}"

    @property
    def source(self) -> str:
        return f"mcp:{self._supervisor.name}"

    @property
    def offered(self) -> ServerTool | None:
        return self._supervisor.tools.get(self.remote)

    @property
    def definition(self) -> ToolDefinition:
        found = self.offered
        if found is None:
            return ToolDefinition(
                name=self.name,
                description=f"(unavailable: server {self._supervisor.name} has not listed it)",
                parameters=_UNKNOWN_SCHEMA,
            )
        described = found.description or self.remote
        return ToolDefinition(name=self.name, description=described, parameters=found.input_schema)

    @property
    def confirm(self) -> bool:
        """tools.yaml decides when it says; else the server's annotations: destructive and not
        read-only. A tool not listed yet asks too: nothing known of it says it is harmless."""
        server = self._supervisor.server
        if self.remote in server.confirm_tools:
            return True
        if server.confirm_all is not None:
            return server.confirm_all
        found = self.offered
        if found is None:
            return True
        hints = found.annotations
        return hints is not None and hints.destructive_hint is True and not hints.read_only_hint

    async def run(
        self, raw_arguments: str, *, time_limit: float, context: ToolContext | None = None
    ) -> tuple[bool, str]:
        limit = self._supervisor.server.timeout or time_limit
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        try:
            arguments = _parsed(raw_arguments)
            offered = await self._supervisor.tool(self.remote, wait=limit)
            problem = _invalid(arguments, offered.input_schema)
            if problem:
                return False, f"error: invalid arguments ({problem})"
            result = await self._supervisor.call(
                self.remote, arguments, wait=max(deadline - loop.time(), 0.001)
            )
        except _BadArguments as exc:
            return False, f"error: invalid arguments ({exc})"
        except TimeoutError:
            return False, timed_out(limit)
        except ServerUnavailable as exc:
            return False, f"error: {exc}"
        except MCPError as exc:
            return False, f"error: server {self._supervisor.name} refused the call: {exc}"
        except Exception as exc:  # a malformed answer, say: the model hears of it, not a crash
            return False, f"error: server {self._supervisor.name}: {type(exc).__name__}: {exc}"
        return result_text(result)


class _BadArguments(Exception):
    """The model's arguments are not a JSON object."""


def _parsed(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError as exc:
        raise _BadArguments(f"not JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(value, dict):
        raise _BadArguments("expected a JSON object of named arguments")
    return value


def _invalid(arguments: dict[str, Any], schema: dict[str, Any]) -> str | None:
    """What breaks the server's schema, as FunctionTool says it (`where: what`), or None. A
    schema we cannot read is left to the server to enforce."""
    try:
        validator = Draft202012Validator(schema, registry=Registry())
        errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
    except (SchemaError, RecursionError, LookupError):
        return None
    problems = [
        f"{'.'.join(str(p) for p in error.absolute_path) or 'arguments'}: {error.message}"
        for error in errors[:3]
    ]
    return "; ".join(problems) or None


def result_text(result: CallToolResult) -> tuple[bool, str]:
    """(ok, text for the model): the text parts joined, anything else named in brackets; a
    result the server marks as an error is an `error: …`."""
    parts = [_part(block) for block in result.content]
    text = "\n".join(part for part in parts if part)
    if not text and result.structured_content is not None:
        text = json.dumps(result.structured_content, default=str)
    if result.is_error:
        return False, as_text(f"error: {text or 'the tool failed and said nothing'}")
    return True, as_text(text)


def _part(block: object) -> str:
    if isinstance(block, TextContent):
        return block.text
    if isinstance(block, ImageContent):
        return f"[image: {block.mime_type}]"
    if isinstance(block, AudioContent):
        return f"[audio: {block.mime_type}]"
    if isinstance(block, ResourceLink):
        return f"[resource: {block.uri}]"
    if isinstance(block, EmbeddedResource):
        if isinstance(block.resource, TextResourceContents):
            return block.resource.text
        return f"[resource: {block.resource.uri}]"
    return f"[{type(block).__name__}]"
