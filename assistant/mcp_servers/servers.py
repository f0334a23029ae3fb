"""Every server `tools.yaml` declares, started together, their tools put in the registry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from assistant.mcp_servers.declared import DeclaredServer, load_servers
from assistant.mcp_servers.supervisor import CONNECT_TIMEOUT, ServerSupervisor
from assistant.mcp_servers.tool import McpTool
from assistant.tools import ToolRegistry

log = logging.getLogger(__name__)

START_WAIT = 10.0  # how long start-up waits for the servers' first connection


class McpServers:
    """The declared servers' supervisors, and the registry their tools are added to.

    A tool a prompt version names is registered at once (`attach`), so the version can be
    served while its server starts; every other tool is registered when its server lists it.
    """

    def __init__(
        self, servers: Sequence[DeclaredServer], *, connect_timeout: float = CONNECT_TIMEOUT
    ) -> None:
        self.supervisors = {
            server.name: ServerSupervisor(
                server, on_listing=self._listed, connect_timeout=connect_timeout
            )
            for server in servers
        }
        self._registry: ToolRegistry | None = None
        self._wanted: set[str] = set()

    @classmethod
    def load(cls, prompts_dir: Path, *, connect_timeout: float = CONNECT_TIMEOUT) -> McpServers:
        """The servers of `PROMPTS_DIR/tools.yaml` (ToolsFileError when it is malformed)."""
        return cls(load_servers(prompts_dir), connect_timeout=connect_timeout)

    def attach(self, registry: ToolRegistry, wanted: Iterable[str]) -> None:
        """Register now the tools of `wanted` (the names versions and suites use) that belong
        to a declared server; the rest follow as the servers list them."""
        self._registry = registry
        for name in sorted(set(wanted)):
            server, dot, remote = name.partition(".")
            if dot and server in self.supervisors:
                self._wanted.add(name)
                self._add(McpTool(self.supervisors[server], remote))

    async def start(self, *, wait: float = START_WAIT) -> None:
        """Start every server, waiting at most `wait` for their first connection attempts (a
        server still down then is retried in the background; its tools answer an error)."""
        for supervisor in self.supervisors.values():
            supervisor.start()
        attempts = [supervisor.first_attempt() for supervisor in self.supervisors.values()]
        if attempts:
            try:
                async with asyncio.timeout(wait):
                    await asyncio.gather(*attempts)
            except TimeoutError:
                pending = [s.name for s in self.supervisors.values() if not s.connected]
                log.warning("mcp servers still starting after %g s: %s", wait, ", ".join(pending))

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self.supervisors.values()))

    def _listed(self, supervisor: ServerSupervisor) -> None:
        if self._registry is None:
            return
        for remote in supervisor.tools:
            self._add(McpTool(supervisor, remote))
        for name in sorted(self._wanted):
            server, _, remote = name.partition(".")
            if server == supervisor.name and remote not in supervisor.tools:
                log.warning(
                    "mcp server %s does not offer %s, which a prompt version or eval names",
                    server,
                    name,
                )

    def _add(self, tool: McpTool) -> None:
        registry = self._registry
        if registry is None or registry.get(tool.name) is not None:
            return
        try:
            registry.add(tool)
        except ValueError as exc:  # two names that reach the model as one: the first stays
            log.warning("mcp tool %s left out: %s", tool.name, exc)
