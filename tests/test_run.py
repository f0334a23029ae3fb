"""`assistant run` as an operator starts it: a real process serving Slack, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import yaml

from assistant.testing import Reply
from tests.fakes.discord_api import GUILD_ID as DISCORD_GUILD_ID
from tests.fakes.discord_api import TOKEN as DISCORD_TOKEN
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.slack_api import BOT_USER, SIGNING_SECRET, FakeSlack
from tests.test_cli import ASSISTANT, REPO, assistant

CHANNEL = "C0RUN"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SLACK_", "DISCORD_"))
    }
    clean.update(DATABASE_URL=f"sqlite:///{tmp_path}/run.db", PROMPTS_DIR=str(REPO / "prompts"))
    # one process: these tests (and the crash trials) start, kill and restart *the* process;
    # tests/test_workers.py runs several
    clean["WORKERS"] = "1"
    return clean


def test_run_without_a_platform_says_what_to_set(env, tmp_path):
    result = assistant("run", "--fake", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "SLACK_BOT_TOKEN" in result.stderr and "Traceback" not in result.stderr


def test_run_with_a_bot_token_but_no_signing_secret_names_the_setting(env, tmp_path):
    env["SLACK_BOT_TOKEN"] = "xoxb-secret-value-123"
    result = assistant("run", "--fake", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("SLACK_SIGNING_SECRET:")
    assert "xoxb-secret-value-123" not in result.stderr + result.stdout


async def test_run_serves_slack_and_stops_gracefully(env, tmp_path, fake_llm):
    slack = await FakeSlack().start()
    port = free_port()
    env.update(
        SLACK_BOT_TOKEN="xoxb-run-token",
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.api_url,
        SLACK_PORT=str(port),
        OPENAI_BASE_URL=fake_llm.base_url,
        OPENAI_API_KEY="sk-run-test-key",
    )
    fake_llm.script(Reply(text="Served by assistant run."))
    process = await asyncio.create_subprocess_exec(
        *ASSISTANT, "run", env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
    )
    try:
        url = f"http://127.0.0.1:{port}/slack/events"
        event = {"type": "app_mention", "user": "U1", "text": f"<@{BOT_USER}> hi"}
        event |= {"ts": "1700000000.000001", "channel": CHANNEL}
        await _until_accepted(slack, url, event)
        await slack.wait_until(lambda: _answered(slack))
        assert slack.shown_text(CHANNEL, "1700000000.000001") == "Served by assistant run."
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        await slack.stop()
    log = stderr.decode()
    assert process.returncode == 0, log
    assert f"database: {tmp_path}/run.db" in log.splitlines()  # said at start, one line
    assert "stopping" in log
    for secret in ("xoxb-run-token", SIGNING_SECRET, "sk-run-test-key"):
        assert secret not in log


async def _until_accepted(slack: FakeSlack, url: str, event: dict) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            status = await slack.send_event(url, event, event_id="EvRun")
            assert status == 200
            return
        except OSError:  # not listening yet: the process is still starting
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def _answered(slack: FakeSlack) -> bool:
    return any(not m.streaming and m.text for m in slack.messages.values())


def test_the_manifest_subscribes_to_what_the_adapter_handles():
    manifest = yaml.safe_load((REPO / "manifest.yaml").read_text(encoding="utf-8"))
    settings = manifest["settings"]
    events = set(settings["event_subscriptions"]["bot_events"])
    assert {"app_mention", "message.channels", "message.im"} <= events
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"app_mentions:read", "chat:write", "commands", "im:history", "users:read"} <= scopes
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == ["/assistant"]
    urls = [
        settings["event_subscriptions"]["request_url"],
        settings["interactivity"]["request_url"],
        manifest["features"]["slash_commands"][0]["url"],
    ]
    assert all(url.endswith("/slack/events") for url in urls)


async def test_run_serves_discord_and_logs_the_invite_url(env, tmp_path, fake_llm):
    async with FakeDiscord() as discord_fake:
        env.update(
            DISCORD_TOKEN=DISCORD_TOKEN,
            DISCORD_API_URL=discord_fake.rest_base,
            DISCORD_GATEWAY_URL=discord_fake.gateway_url,
            DISCORD_GUILD_ID=DISCORD_GUILD_ID,
            OPENAI_BASE_URL=fake_llm.base_url,
            OPENAI_API_KEY="sk-run-test-key",
        )
        fake_llm.script(Reply(text="Served on Discord."))
        process = await asyncio.create_subprocess_exec(
            *ASSISTANT, "run", env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
        )
        try:
            await discord_fake.wait_ready()
            await discord_fake.wait_until(lambda: discord_fake.commands.get(DISCORD_GUILD_ID))
            await discord_fake.send_message("hi", mention_bot=True)
            await discord_fake.wait_until(
                lambda: any(m.content == "Served on Discord." for m in discord_fake.shown())
            )
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    log = stderr.decode()
    assert process.returncode == 0, log
    assert "scope=bot+applications.commands&permissions=274878024704" in log
    assert DISCORD_TOKEN not in log and "sk-run-test-key" not in log


async def test_run_without_the_message_content_intent_says_so_in_one_line(env, tmp_path):
    async with FakeDiscord(message_content_intent=False) as discord_fake:
        env.update(
            DISCORD_TOKEN=DISCORD_TOKEN,
            DISCORD_API_URL=discord_fake.rest_base,
            DISCORD_GATEWAY_URL=discord_fake.gateway_url,
        )
        result = await asyncio.to_thread(assistant, "run", "--fake", env=env, cwd=tmp_path)
    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "Message Content intent" in line
    assert "Traceback" not in result.stderr


def test_run_on_a_port_in_use_names_the_setting(env, tmp_path):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        env.update(
            SLACK_BOT_TOKEN="xoxb-x",
            SLACK_SIGNING_SECRET="s",
            SLACK_PORT=str(taken.getsockname()[1]),
        )
        result = assistant("run", "--fake", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "SLACK_PORT: cannot listen on port" in result.stderr
    assert "Traceback" not in result.stderr


def test_socket_mode_with_slack_unreachable_is_one_line_not_endless_retries(env, tmp_path):
    env.update(
        SLACK_BOT_TOKEN="xoxb-run-token",
        SLACK_APP_TOKEN="xapp-run-token",
        SLACK_API_URL=f"http://127.0.0.1:{free_port()}/api/",  # nothing listens there
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",
    )
    result = assistant("run", env=env, cwd=tmp_path)
    assert result.returncode == 2
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: SLACK_API_URL: cannot reach Slack at http://127.0.0.1:")
    assert "Traceback" not in result.stderr and "xapp-run-token" not in result.stderr


async def test_sigterm_while_slack_does_not_answer_ends_the_process(env, tmp_path):
    """A Slack that accepts the connection and never answers: the process is still
    connecting when it is told to stop, and stops."""
    held: list[asyncio.StreamWriter] = []  # connections taken, never answered

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    env.update(
        SLACK_BOT_TOKEN="xoxb-run-token",
        SLACK_APP_TOKEN="xapp-run-token",
        SLACK_API_URL=f"http://127.0.0.1:{port}/api/",
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",
    )
    process = await asyncio.create_subprocess_exec(
        *ASSISTANT, "run", env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
    )
    try:
        started = await _until_logged(process, "Slack: connecting (Socket Mode)")
        await asyncio.sleep(1)  # waiting on Slack
        assert process.returncode is None
        process.send_signal(signal.SIGTERM)
        _, rest = await asyncio.wait_for(process.communicate(), timeout=10)
        stderr = started + rest
    finally:
        if process.returncode is None:
            process.kill()
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()
    assert process.returncode == 0, stderr.decode()
    assert "stopped while connecting" in stderr.decode()


async def _until_logged(process: asyncio.subprocess.Process, wanted: str) -> bytes:
    """What the process wrote to stderr up to the line holding `wanted`: a loaded machine
    takes seconds just to import, so a fixed wait may signal a process not yet serving."""
    assert process.stderr is not None
    said = b""
    while wanted.encode() not in said:
        line = await asyncio.wait_for(process.stderr.readline(), timeout=60)
        assert line, said.decode()  # it ended first
        said += line
    return said
