"""`assistant tools list`: every tool the model may be given, where it comes from, whether it
asks the user first, and which prompt versions use it; MCP servers are connected to find out."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from assistant.config import ConfigError, Settings, find_prompts, load_settings

if TYPE_CHECKING:
    from assistant.mcp_servers.supervisor import ServerSupervisor
    from assistant.prompts.files import PromptFile
    from assistant.tools import ToolRegistry

tools_app = typer.Typer(
    no_args_is_help=True, help="Tools: the built-ins and those of tools.yaml's MCP servers."
)
_ERR = Console(stderr=True, soft_wrap=True)


@dataclass(frozen=True, kw_only=True)
class ServerState:
    name: str
    transport: str
    connected: bool
    tools: int
    error: str | None


@tools_app.command("list")
def tools_list(
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for each MCP server to connect.", min=0.1)
    ] = 10.0,
) -> None:
    """Every tool: its source (built-in, mcp:SERVER), whether it asks first, and its versions."""
    settings = _settings()
    try:
        registry, files, servers = asyncio.run(_gather(settings, timeout))
    except ValueError as exc:  # a prompt file, suite or tools.yaml that is malformed
        _ERR.print(f"error: {exc}", style="bold red", highlight=False, markup=False)
        raise typer.Exit(2) from None
    console = _output()
    console.print(tools_table(registry, files, servers))
    for server in servers:
        if not server.connected:
            console.print(
                f"MCP server {server.name} could not be reached ({server.transport}): "
                f"{server.error or 'no answer'}; its tools are shown as the prompts name them.",
                style="yellow",
                highlight=False,
                markup=False,
            )


async def _gather(
    settings: Settings, wait: float
) -> tuple[ToolRegistry, list[PromptFile], list[ServerState]]:
    """The registry as `assistant run` builds it (without knowledge search behind its tool),
    its MCP servers connected for at most `wait` seconds and closed again."""
    from assistant.builtin_tools import builtin_registry
    from assistant.mcp_servers.declared import load_servers
    from assistant.runtime import load_prompts

    catalog, suites = load_prompts(settings, builtin_registry())
    registry = builtin_registry()
    declared = load_servers(settings.prompts_dir)
    if not declared:
        return registry, list(catalog.files), []
    from assistant.mcp_servers.servers import McpServers

    servers = McpServers(declared, connect_timeout=wait)
    named = [tool for prompt in catalog.files for tool in prompt.version.tools]
    named += [case.tool for suite in suites.values() for case in suite.tool_cases]
    servers.attach(registry, named)
    try:
        await servers.start(wait=wait)
        states = [_state(s) for s in servers.supervisors.values()]
    finally:
        await servers.close()
    return registry, list(catalog.files), states


def _state(supervisor: ServerSupervisor) -> ServerState:
    return ServerState(
        name=supervisor.name,
        transport=supervisor.server.transport,
        connected=supervisor.connected,
        tools=len(supervisor.tools),
        error=supervisor.last_error,
    )


def tools_table(
    registry: ToolRegistry, files: Sequence[PromptFile], servers: Sequence[ServerState]
) -> Table:
    users: dict[str, list[str]] = {}
    for prompt in files:
        for name in prompt.version.tools:
            users.setdefault(name, []).append(f"{prompt.version.name}@{prompt.version.version}")
    reached = {server.name: server.connected for server in servers}
    table = Table("tool", "source", "confirm", "used by", "status")
    for tool in registry.tools():
        name = tool.definition.name
        table.add_row(
            escape(name),
            escape(tool.source),
            "yes" if tool.confirm else "no",
            escape(", ".join(users.get(name, [])) or "-"),
            _status(tool.source, name, registry, reached),
        )
    return table


def _status(source: str, name: str, registry: ToolRegistry, reached: dict[str, bool]) -> str:
    if not source.startswith("mcp:"):
        return "ready"
    server = source.removeprefix("mcp:")
    if not reached.get(server, False):
        return "[yellow]server unreachable[/yellow]"
    tool = registry.get(name)
    offered = getattr(tool, "offered", None) is not None
    return "connected" if offered else f"[red]not offered by {escape(server)}[/red]"


def _settings() -> Settings:
    try:
        settings = load_settings()
        return settings.model_copy(update={"prompts_dir": find_prompts(settings).path})
    except ConfigError as exc:
        _ERR.print(f"error: {exc}", style="bold red", highlight=False, markup=False)
        raise typer.Exit(2) from None


def _output() -> Console:
    """A terminal's own width; unbounded for a pipe or a file (whole lines, whole tables)."""
    if sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit():
        return Console(soft_wrap=True)
    return Console(soft_wrap=True, width=100_000)
