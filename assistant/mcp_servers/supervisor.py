"""One MCP server kept running: connected at start, its tools listed, restarted with backoff
when it crashes or stops answering, and closed (its process ended) with the assistant.

The SDK's `Client` lives inside one task (its transport is a task group that must be entered
and left by the same task); calls from any other task go through the session it holds, which
matches answers to requests by id, so several calls share one connection at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx2
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CONNECTION_CLOSED, CallToolResult, Implementation
from mcp.types import Tool as ServerTool

from assistant.mcp_servers.declared import DeclaredServer

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.5  # seconds before the first restart; doubled after each failure
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0  # a connection that lived this long resets the backoff
CONNECT_TIMEOUT = 30.0  # to start the server, shake hands and list its tools
HEALTH_INTERVAL = 15.0  # an idle connection is checked this often (a crash seen between calls)
PROBE_TIMEOUT = 5.0
CLOSE_GRACE = 10.0  # for a connection to close before its task is cancelled
WAIT_WHILE_FAILING = 2  # consecutive failures after which a call no longer waits for a restart
_CLIENT = Implementation(name="team-assistant", version="1")


class ServerUnavailable(Exception):
    """The server cannot take a call now; the message is fit for the model and the log."""


@dataclass
class _Connection:
    client: Client
    broken: asyncio.Event = field(default_factory=asyncio.Event)


class ServerSupervisor:
    """Keeps one declared server connected; `on_listing` hears of each (re)connection."""

    def __init__(
        self,
        server: DeclaredServer,
        *,
        on_listing: Callable[[ServerSupervisor], None] | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.server = server
        self.tools: dict[str, ServerTool] = {}  # the last listing; kept while reconnecting
        self.listed = False  # tools came from the server at least once
        self.last_error: str | None = None
        self._on_listing = on_listing
        self._connect_timeout = connect_timeout
        self._connection: _Connection | None = None
        self._ready = asyncio.Event()
        self._attempted = asyncio.Event()  # the first attempt ended, either way
        self._failures = 0
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        return self.server.name

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.broken.is_set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=f"mcp:{self.name}")

    async def first_attempt(self) -> None:
        """Until the first connection attempt succeeded or failed."""
        await self._attempted.wait()

    async def close(self) -> None:
        """Stop restarting and close the connection (a stdio server's process is ended: the
        SDK closes its stdin, then terminates and kills its process group)."""
        self._closing.set()
        if self._connection is not None:
            self._connection.broken.set()
        task = self._task
        if task is None:
            return
        await asyncio.wait({task}, timeout=CLOSE_GRACE)
        if not task.done():  # still starting: cancelled, the SDK still ends the process
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def tool(self, name: str, *, wait: float) -> ServerTool:
        """The server's definition of tool `name`, once connected (waiting at most `wait`)."""
        await self._connected(wait)
        found = self.tools.get(name)
        if found is None:
            raise ServerUnavailable(f"tool {self.name}.{name} is not offered by server {self.name}")
        return found

    async def call(self, name: str, arguments: dict[str, Any], *, wait: float) -> CallToolResult:
        """Call tool `name`; TimeoutError after `wait` seconds (the request is cancelled)."""
        connection = await self._connected(wait)
        try:
            async with asyncio.timeout(wait):
                return await connection.client.call_tool(name, arguments)
        except TimeoutError:
            check = asyncio.create_task(self._check(connection))  # hung as a whole? restart
            self._checks.add(check)
            check.add_done_callback(self._checks.discard)
            raise
        except MCPError as exc:
            if exc.error.code != CONNECTION_CLOSED:
                raise  # the server answered with an error: the connection is fine
            self._lost(connection, "closed the connection mid-call")
        except (OSError, httpx2.HTTPError) as exc:
            self._lost(connection, _reason(exc, self.server))
        raise ServerUnavailable(
            f"server {self.name} failed during the call ({self.last_error}); it is being restarted"
        )

    async def _connected(self, wait: float) -> _Connection:
        """The live connection; a call waits for one while the server is (re)starting, but not
        while it keeps failing (each call would cost its whole time limit)."""
        if self._closing.is_set():
            raise ServerUnavailable(f"server {self.name} is shut down")
        if not self.connected and self._failures < WAIT_WHILE_FAILING:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._ready.wait()
        connection = self._connection
        if connection is None or connection.broken.is_set():
            why = f" ({self.last_error})" if self.last_error else ""
            raise ServerUnavailable(
                f"server {self.name} is not connected{why}; it is retried in the background"
            )
        return connection

    def _lost(self, connection: _Connection, reason: str) -> None:
        self.last_error = reason
        connection.broken.set()
        if connection is self._connection:
            self._ready.clear()  # a call now waits for the restart

    async def _check(self, connection: _Connection) -> None:
        """After a call timed out: a server that no longer answers at all is restarted."""
        if not await self._responds(connection):
            self._lost(connection, "stopped answering (a call timed out, then a listing)")

    async def _responds(self, connection: _Connection) -> bool:
        """Whether the server still answers: it is asked for its tools (`ping` is gone from
        the 2026 protocol; every server lists tools), and a changed listing is taken."""
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                tools = await _list_tools(connection.client)
        except Exception:  # any failure to answer is the same news: restart
            return False
        if [tool.name for tool in tools] != list(self.tools):
            self._take(tools)
        return True

    def _take(self, tools: list[ServerTool]) -> None:
        self.tools = {tool.name: tool for tool in tools}
        self.listed = True
        if self._on_listing is not None:
            self._on_listing(self)

    # --- the supervising task ----------------------------------------------------------------

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        delay = BACKOFF_FIRST
        while not self._closing.is_set():
            began = loop.time()
            try:
                await self._serve_once()
            except Exception as exc:  # a server's failure is logged and retried, never raised
                self.last_error = _reason(exc, self.server)
            finally:
                self._connection = None
                self._ready.clear()
                self._attempted.set()
            if self._closing.is_set():
                break
            self._failures += 1
            if loop.time() - began > STABLE_AFTER:
                delay = BACKOFF_FIRST
            log.warning(
                "mcp server %s (%s) is down: %s; restarting in %.1f s",
                self.name,
                self.server.transport,
                self.last_error,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closing.wait()
            delay = min(delay * 2, BACKOFF_MAX)

    async def _serve_once(self) -> None:
        """Connect, list the tools, then hold the connection until it breaks or we close."""
        async with AsyncExitStack() as stack:
            async with asyncio.timeout(self._connect_timeout):
                client = await stack.enter_async_context(self._client(stack))
                tools = await _list_tools(client)
            connection = _Connection(client)
            self.last_error = None
            self._failures = 0
            self._connection = connection
            self._take(tools)
            self._ready.set()
            self._attempted.set()
            log.info("mcp server %s connected: %d tools", self.name, len(tools))
            await self._hold(connection)

    async def _hold(self, connection: _Connection) -> None:
        while not connection.broken.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEALTH_INTERVAL):
                    await connection.broken.wait()
            if not connection.broken.is_set() and not await self._responds(connection):
                self._lost(connection, "stopped answering")

    def _client(self, stack: AsyncExitStack) -> Client:
        server = self.server
        if server.url is not None:
            http = httpx2.AsyncClient(
                headers=server.headers, timeout=httpx2.Timeout(30.0, read=300.0)
            )
            stack.push_async_callback(http.aclose)
            transport = streamable_http_client(server.url, http_client=http)
        else:
            parameters = StdioServerParameters(
                command=server.command[0],
                args=list(server.command[1:]),
                env=server.env or None,
                cwd=server.cwd,
            )
            transport = stdio_client(parameters, errlog=stack.enter_context(_stderr_to_log(self)))
        return Client(transport, client_info=_CLIENT, cache=None)


async def _list_tools(client: Client) -> list[ServerTool]:
    tools: list[ServerTool] = []
    cursor: str | None = None
    for _ in range(100):  # a server whose pages never end cannot hang the start
        page = await client.list_tools(cursor=cursor)
        tools += page.tools
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def _reason(exc: BaseException, server: DeclaredServer) -> str:
    """What went wrong, on one line, without the URL's query or credentials."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "no answer within the connect timeout"
    said = " ".join(str(exc).split()) or type(exc).__name__
    if server.url:
        said = said.replace(server.url, server.target)
    return f"{type(exc).__name__}: {said}"[:500]


STDERR_LINE = 2000  # characters of a server's stderr line logged (the rest: a line of its own)
STDERR_LINES = 100  # lines a minute logged of a server's stderr


@contextlib.contextmanager
def _stderr_to_log(supervisor: ServerSupervisor) -> Iterator[TextIO]:
    """A pipe for the server's stderr, each line logged under the server's name (the operator
    reads a crashing server's traceback in our log). Our end for writing is closed with the
    connection, so the reader ends when the process does."""
    read_fd, write_fd = os.pipe()
    writer = os.fdopen(write_fd, "w")
    name = supervisor.name

    def relay() -> None:
        """Lines of at most STDERR_LINE characters (a server writing without newlines must
        not grow our memory), at most STDERR_LINES a minute (nor flood the log)."""
        window, said, left_out = time.monotonic(), 0, 0
        with os.fdopen(read_fd, "r", errors="replace") as reader:
            while line := reader.readline(STDERR_LINE):
                if not line.strip():
                    continue
                if time.monotonic() - window >= 60:
                    if left_out:
                        log.info("mcp server %s: %d more lines left out", name, left_out)
                    window, said, left_out = time.monotonic(), 0, 0
                if said >= STDERR_LINES:
                    left_out += 1
                    continue
                said += 1
                log.info("mcp server %s: %s", name, line.rstrip())

    threading.Thread(target=relay, name=f"mcp-stderr:{name}", daemon=True).start()
    try:
        yield writer
    finally:
        writer.close()
