"""MCP servers as tools, against a real MCP server (tests/fixtures/mcp_server.py, written with
the SDK's server API) over stdio and over streamable HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from assistant.config import load_settings
from assistant.mcp_servers.declared import ToolsFileError, load_servers
from assistant.mcp_servers.servers import McpServers
from assistant.prompts.files import PromptFileError, load_prompts_dir
from assistant.runtime import open_runtime
from assistant.testing import CallTools, FakeLlm, Reply
from assistant.tools import ToolRegistry
from assistant.turns import Completed
from bots.cli import app
from tests.conftest import collect, inbound, write_prompt

SERVER = Path(__file__).parent / "fixtures" / "mcp_server.py"


def write_tools(prompts_dir: Path, servers: dict[str, Any]) -> Path:
    path = prompts_dir / "tools.yaml"
    path.write_text(yaml.safe_dump({"servers": servers}), encoding="utf-8")
    return path


def stdio_server(pid_file: Path, **extra: Any) -> dict[str, Any]:
    return {
        "command": [sys.executable, str(SERVER), "stdio"],
        "env": {"PID_FILE": str(pid_file), **extra.pop("env", {})},
        **extra,
    }


def pids(pid_file: Path) -> list[int]:
    return [int(line) for line in pid_file.read_text().split()] if pid_file.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def pid_file(tmp_path: Path) -> Path:
    return tmp_path / "pids"


@pytest.fixture
async def started(prompts_dir: Path, tools: ToolRegistry) -> AsyncIterator[Callable[..., Any]]:
    """Starts tools.yaml's servers into the `tools` registry; closes them after the test."""
    opened: list[McpServers] = []

    async def start(wanted: tuple[str, ...] = ()) -> McpServers:
        servers = McpServers.load(prompts_dir)
        servers.attach(tools, wanted)
        opened.append(servers)
        await servers.start(wait=60)
        return servers

    yield start
    for servers in opened:
        await servers.close()


async def call(tools: ToolRegistry, name: str, arguments: dict[str, Any], limit: float = 30):
    [result] = await tools.run_all(
        [("c1", name, json.dumps(arguments))], allowed=[name], time_limit=limit
    )
    return result


# ---- stdio ------------------------------------------------------------------------------------


async def test_the_model_calls_an_mcp_tool_by_its_wire_name_and_reads_its_result(
    prompts_dir, pid_file, tools, started, make_assistant, fake_llm, monkeypatch
):
    monkeypatch.setenv("FIXTURE_GREETING", "hello ")
    write_tools(
        prompts_dir, {"fixture": stdio_server(pid_file, env={"GREETING": "${FIXTURE_GREETING}"})}
    )
    write_prompt(prompts_dir, tools=["fixture.echo", "calculator"])
    await started()
    assistant = await make_assistant()
    fake_llm.script(
        CallTools(calls=(("fixture__echo", {"text": "world"}),)), Reply(text="It said hello.")
    )

    events = await collect(assistant.respond(inbound("say hello")))

    assert isinstance(events[-1], Completed)
    first, second = fake_llm.requests
    offered = {t["function"]["name"]: t["function"] for t in first["tools"]}
    # the server's own description and schema, unchanged
    assert offered["fixture__echo"]["parameters"]["properties"]["text"]["type"] == "string"
    assert "Say `text` back" in offered["fixture__echo"]["description"]
    assert second["messages"][-1]["content"] == "hello world"  # env from ${FIXTURE_GREETING}


async def test_a_crash_mid_call_is_an_error_to_the_model_and_the_server_comes_back(
    prompts_dir, pid_file, tools, started
):
    write_tools(prompts_dir, {"fixture": stdio_server(pid_file)})
    await started()
    [first_pid] = pids(pid_file)

    crashed = await call(tools, "fixture.crash", {})
    later = await call(tools, "fixture.add", {"a": 2, "b": 3})

    assert not crashed.ok and crashed.content.startswith("error: server fixture failed")
    assert "restarted" in crashed.content
    assert later.ok and later.content == "5"
    assert len(pids(pid_file)) == 2 and not alive(first_pid)


async def test_a_hung_call_times_out_and_the_server_still_serves_the_next(
    prompts_dir, pid_file, tools, started
):
    write_tools(prompts_dir, {"fixture": stdio_server(pid_file)})
    await started()

    hung = await call(tools, "fixture.hang", {}, limit=0.5)
    later = await call(tools, "fixture.echo", {"text": "still here"})

    assert not hung.ok and hung.content == "error: the tool timed out after 0.5 s"
    assert later.ok and later.content == "still here"
    assert len(pids(pid_file)) == 1  # answering pings: not restarted


async def test_calls_share_one_server_at_once(prompts_dir, pid_file, tools, started):
    write_tools(prompts_dir, {"fixture": stdio_server(pid_file)})
    await started()
    calls = [(f"c{n}", "fixture.add", json.dumps({"a": n, "b": n})) for n in range(8)]

    results = await tools.run_all(calls, allowed=["fixture.add"], time_limit=30)

    assert [r.content for r in results] == [str(2 * n) for n in range(8)]


async def test_results_arguments_and_errors_as_the_model_reads_them(
    prompts_dir, pid_file, tools, started
):
    write_tools(prompts_dir, {"fixture": stdio_server(pid_file)})
    await started()

    picture = await call(tools, "fixture.picture", {})
    failed = await call(tools, "fixture.fail", {"reason": "disk full"})
    wrong = await call(tools, "fixture.add", {"a": "two", "b": 3})
    missing = await call(tools, "fixture.echo", {})

    assert picture.ok and picture.content == "a red dot\n[image: image/png]"
    assert not failed.ok and failed.content == "error: Error executing tool fail: disk full"
    assert wrong.content == "error: invalid arguments (a: 'two' is not of type 'integer')"
    assert missing.content == "error: invalid arguments (arguments: 'text' is a required property)"


async def test_destructive_tools_ask_first_and_tools_yaml_can_say_so_too(
    prompts_dir, pid_file, tools, started
):
    # a tool named as the server calls it, or by its full name: both ask
    write_tools(prompts_dir, {"fixture": stdio_server(pid_file, confirm=["echo", "fixture.add"])})
    await started()

    def confirm(name: str) -> bool:
        tool = tools.get(name)
        assert tool is not None
        return tool.confirm

    assert confirm("fixture.delete_everything")  # annotated destructive
    assert not confirm("fixture.peek")  # destructive hint, but read-only
    assert confirm("fixture.add")  # tools.yaml: confirm: [fixture.add]
    assert confirm("fixture.echo")  # tools.yaml: confirm: [echo]
    assert tools.get("fixture.add").source == "mcp:fixture"  # type: ignore[union-attr]


async def test_a_noisy_servers_stderr_is_logged_in_bounds(
    prompts_dir, pid_file, tools, started, caplog
):
    write_tools(prompts_dir, {"fixture": stdio_server(pid_file)})
    await started()
    caplog.set_level(logging.INFO, logger="assistant.mcp_servers")

    assert (await call(tools, "fixture.shout", {"lines": 300})).content == "shouted"
    await asyncio.sleep(1)  # the relay thread logs what it read

    relayed = [r.getMessage() for r in caplog.records if "mcp server fixture: " in r.getMessage()]
    assert 0 < len(relayed) <= 100
    assert max(len(line) for line in relayed) < 2100


async def test_a_server_that_cannot_start_is_a_clear_error_and_start_up_goes_on(
    prompts_dir, tmp_path, tools, started
):
    write_tools(prompts_dir, {"broken": {"command": [str(tmp_path / "no-such-server")]}})
    write_prompt(prompts_dir, tools=["broken.search"])
    servers = await started(wanted=("broken.search",))

    result = await call(tools, "broken.search", {"q": "x"}, limit=1)

    assert not servers.supervisors["broken"].connected
    assert not result.ok and result.content.startswith("error: server broken is not connected")
    assert "no-such-server" in result.content


async def test_a_tool_the_server_does_not_offer_says_so(prompts_dir, pid_file, tools, started):
    write_tools(prompts_dir, {"fixture": stdio_server(pid_file)})
    await started(wanted=("fixture.nothing",))

    result = await call(tools, "fixture.nothing", {})

    assert result.content == "error: tool fixture.nothing is not offered by server fixture"


# ---- streamable HTTP ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class HttpServer:
    """The fixture server on a free loopback port, in a subprocess, as an operator runs one:
    it can die (a crash) and be started again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: ASYNC220 - started once, never waited on here
            [sys.executable, str(SERVER), "http", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(300):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            await writer.wait_closed()
            return

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()  # uvicorn waits for open streams: killed if it takes too long
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
async def http_server() -> AsyncIterator[HttpServer]:
    server = HttpServer()
    await server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_over_http_a_round_trip_a_hang_and_headers_from_the_environment(
    prompts_dir, tools, started, http_server, monkeypatch
):
    monkeypatch.setenv("FIXTURE_TOKEN", "s3cret-token")
    write_tools(
        prompts_dir,
        {"web": {"url": http_server.url, "headers": {"Authorization": "Bearer ${FIXTURE_TOKEN}"}}},
    )
    [declared] = load_servers(prompts_dir)
    await started()

    added = await call(tools, "web.add", {"a": 20, "b": 22})
    hung = await call(tools, "web.hang", {}, limit=0.5)
    later = await call(tools, "web.echo", {"text": "after"})

    assert declared.headers == {"Authorization": "Bearer s3cret-token"}
    assert "s3cret" not in repr(declared)
    assert added.ok and added.content == "42"
    assert hung.content == "error: the tool timed out after 0.5 s"
    assert later.ok and later.content == "after"


async def test_over_http_a_crash_mid_call_is_an_error_and_the_server_is_found_again(
    prompts_dir, tools, started, http_server
):
    """An HTTP server is the operator's to run: when it dies mid-call the model hears so, and
    once it is back the assistant reconnects by itself."""
    write_tools(prompts_dir, {"web": {"url": http_server.url}})
    servers = await started()

    crashed = await call(tools, "web.crash", {}, limit=10)
    assert not crashed.ok and crashed.content.startswith("error: server web failed")
    assert http_server.process is not None and http_server.process.wait(timeout=10) == 3

    await http_server.start()  # the operator's restart, on the same port
    for _ in range(100):  # reconnects with backoff (0.5 s doubling)
        if servers.supervisors["web"].connected:
            break
        await asyncio.sleep(0.2)
    later = await call(tools, "web.add", {"a": 2, "b": 3})
    assert later.ok and later.content == "5"


# ---- tools.yaml ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("servers", "says"),
    [
        ({"files": {"command": "x", "url": "http://h/mcp"}}, "field 'servers.files': give either"),
        ({"files": {}}, "field 'servers.files': give either command"),
        ({"Files!": {"command": "x"}}, "'Files!' is not a server name"),
        ({"files": {"command": "x", "timeot": 3}}, "field 'servers.files.timeot': unknown field"),
        ({"files": {"url": "ftp://h"}}, "field 'servers.files.url': expected an http(s) URL"),
        ({"files": {"command": "x", "timeout": -1}}, "field 'servers.files.timeout'"),
        (
            {"files": {"command": "x", "confirm": ["other.write"]}},
            "field 'servers.files.confirm': 'other.write' is not a tool of server files",
        ),
        (
            {"files": {"command": "x", "env": {"TOKEN": "${NO_SUCH_VARIABLE_HERE}"}}},
            "field 'servers.files.env.TOKEN': the environment has no NO_SUCH_VARIABLE_HERE",
        ),
    ],
)
def test_a_malformed_tools_yaml_names_the_file_and_the_field(prompts_dir, servers, says):
    path = write_tools(prompts_dir, servers)

    with pytest.raises(ToolsFileError) as raised:
        load_servers(prompts_dir)

    assert str(raised.value).startswith(f"{path}: ")
    assert says in str(raised.value)


def test_versions_may_name_a_declared_servers_tools_but_no_other(prompts_dir):
    write_prompt(prompts_dir, tools=["files.read"])

    load_prompts_dir(prompts_dir, known_tools=["calculator", "files.*"])
    with pytest.raises(PromptFileError, match=r"unknown tool 'files\.read'"):
        load_prompts_dir(prompts_dir, known_tools=["calculator", "other.*"])
    write_prompt(prompts_dir, version=2, tools=["files.*"])
    with pytest.raises(PromptFileError, match=r"'files\.\*' is a pattern; name each tool"):
        load_prompts_dir(prompts_dir, known_tools=["calculator", "files.*"])


# ---- the runtime: `eval run`, `assistant tools list` -------------------------------------------


async def test_an_eval_tool_case_runs_an_mcp_tool_and_the_server_ends_with_the_runtime(
    tmp_path, prompts_dir, pid_file
):
    write_tools(prompts_dir, {"fixture": stdio_server(pid_file)})
    write_prompt(prompts_dir, tools=["fixture.add"])
    suite = {
        "tools": {
            "fixture.add": [
                {"input": {"a": 1, "b": 2}, "expected": "3"},
                {"input": {"a": 1, "b": 1}, "expected": "3"},
            ]
        }
    }
    (prompts_dir / "assistant" / "evals.yaml").write_text(yaml.safe_dump(suite))
    settings = load_settings(database_url=f"sqlite:///{tmp_path}/e.db", prompts_dir=prompts_dir)
    async with FakeLlm() as fake:
        runtime = await open_runtime(settings, base_url=fake.base_url, fake=True)
        try:
            run = await runtime.runner.run(runtime.suites["assistant"], 1)
        finally:
            await runtime.close()

    assert (run.tool_cases, run.tool_passed) == (2, 1)
    [pid] = pids(pid_file)
    assert not alive(pid)


def test_tools_list_shows_sources_confirm_versions_and_unreachable_servers(
    prompts_dir, pid_file, tmp_path, monkeypatch
):
    write_tools(
        prompts_dir,
        {
            "fixture": stdio_server(pid_file),
            "gone": {"command": [str(tmp_path / "no-such-server")]},
        },
    )
    write_prompt(prompts_dir, version=2, tools=["fixture.echo", "calculator", "gone.search"])
    monkeypatch.setenv("PROMPTS_DIR", str(prompts_dir))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/l.db")
    monkeypatch.setenv("COLUMNS", "200")  # one line a row, however wide the test's terminal

    result = CliRunner().invoke(app, ["tools", "list", "--timeout", "30"])

    assert result.exit_code == 0, result.output
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in result.output.splitlines()]
    rows = {row[0]: row[1:] for row in cells if row}
    assert rows["fixture.echo"] == ["mcp:fixture", "no", "assistant@2", "connected"]
    assert rows["fixture.delete_everything"][:2] == ["mcp:fixture", "yes"]
    assert rows["calculator"] == ["built-in", "no", "assistant@1, assistant@2", "ready"]
    assert rows["gone.search"] == ["mcp:gone", "yes", "assistant@2", "server unreachable"]
    assert "MCP server gone could not be reached (stdio)" in result.output
    assert all(not alive(pid) for pid in pids(pid_file))
