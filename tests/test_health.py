"""`/healthz` and `/readyz` as a kubelet probes them: served where the operator expects them,
unready while the database or the model server is gone, ready again once it is back."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
import pytest

from assistant.llm import OpenAIChatModel, Timeouts
from assistant.observability.health import (
    Health,
    database_check,
    migrations_check,
    model_check,
)
from assistant.observability.metrics import Metrics
from assistant.store import Store, migrate
from assistant.testing import FakeLlm, Reply
from bots.ops_http import Ops, OpsServer
from tests.conftest import (
    POSTGRES_URL,
    _create_postgres_database,
    _drop_postgres_database,
    migrated,
)
from tests.fakes.discord_api import GUILD_ID as DISCORD_GUILD_ID
from tests.fakes.discord_api import TOKEN as DISCORD_TOKEN
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.slack_api import SIGNING_SECRET, FakeSlack
from tests.test_cli import ASSISTANT
from tests.test_run import env as env  # the fixture, shared
from tests.test_run import free_port

Answer = tuple[int, dict[str, Any]]


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def probe(url: str) -> Answer:
    status, body = await get(url)
    return status, json.loads(body)


async def until(ask: Callable[[], Awaitable[Answer]], status: int) -> dict[str, Any]:
    """Probe until the answer has `status` (60 s at most, as a kubelet would keep probing);
    its body."""
    deadline = time.monotonic() + 60
    while True:
        try:
            found, body = await ask()
        except aiohttp.ClientConnectionError:  # not listening yet: still starting
            found, body = 0, {}
        if found == status:
            return body
        if time.monotonic() > deadline:
            pytest.fail(f"/readyz never answered {status}; last {found}: {body}")
        await asyncio.sleep(0.2)


@asynccontextmanager
async def ops_on(health: Health) -> AsyncIterator[str]:
    server = OpsServer(Ops(metrics=Metrics(), health=health))
    port = await server.start(port=0, host="127.0.0.1")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.close()


def connect(llm: FakeLlm) -> OpenAIChatModel:
    return OpenAIChatModel.connect(
        api_key="sk-health-test-key",
        base_url=llm.base_url,
        timeouts=Timeouts(first_token=10.0, idle=2.0, total=30.0),
        max_retries=0,
    )


@pytest.mark.postgres
async def test_readyz_turns_unready_when_the_database_goes_away_and_ready_when_it_returns(
    fake_llm,
):
    if not POSTGRES_URL:
        pytest.skip("set ASSISTANT_TEST_POSTGRES_URL to take a Postgres database away")
    name, url = await _create_postgres_database()
    admin = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://"))
    model = connect(fake_llm)
    try:
        async with migrated(url) as store:
            engine = store.engine
            checks = [database_check(engine, every=0), migrations_check(engine, every=0)]
            health = Health([*checks, model_check(model, every=0)])
            async with ops_on(health) as base:
                ready = await until(lambda: probe(f"{base}/readyz"), 200)
                assert ready["ready"] is True and ready["failing"] == []
                assert set(ready["checks"]) == {"database", "migrations", "model_server"}

                # the database goes away: no new connections, every open one cut
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                    name,
                )
                gone = await until(lambda: probe(f"{base}/readyz"), 503)
                assert "database" in gone["failing"] and gone["ready"] is False
                assert gone["checks"]["model_server"]["ok"] is True
                assert url not in json.dumps(gone)
                status, _ = await get(f"{base}/healthz")
                assert status == 200  # alive all along: a restart would not bring it back

                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
                back = await until(lambda: probe(f"{base}/readyz"), 200)
                assert back["checks"]["database"]["ok"] is True
    finally:
        await model.close()
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
        await _drop_postgres_database(name)


async def test_readyz_turns_unready_when_the_model_server_stops(store):
    llm = await FakeLlm().start()
    model = connect(llm)
    try:
        health = Health([database_check(store.engine), model_check(model, every=0)])
        async with ops_on(health) as base:
            ready = await until(lambda: probe(f"{base}/readyz"), 200)
            assert ready["checks"]["model_server"]["ok"] is True
            await llm.stop()
            down = await until(lambda: probe(f"{base}/readyz"), 503)
            assert down["failing"] == ["model_server"]
            assert "sk-health-test-key" not in json.dumps(down)
            assert llm.base_url not in json.dumps(down)
    finally:
        await model.close()
        await llm.stop()


async def test_assistant_run_serves_health_and_metrics_on_slacks_http_port(env, tmp_path):
    slack = await FakeSlack().start()
    port = free_port()
    env.update(
        SLACK_BOT_TOKEN="xoxb-health-token",
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.api_url,
        SLACK_PORT=str(port),
    )
    process = await asyncio.create_subprocess_exec(
        *ASSISTANT, "run", "--fake", env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
    )
    try:
        base = f"http://127.0.0.1:{port}"
        ready = await until(lambda: probe(f"{base}/readyz"), 200)
        assert ready["checks"]["platforms"] == {"ok": True, "detail": "connected: slack"}
        assert set(ready["checks"]) == {"database", "migrations", "platforms", "model_server"}
        assert (await get(f"{base}/healthz"))[0] == 200
        status, text = await get(f"{base}/metrics")
        assert status == 200 and "assistant_turns_in_flight" in text
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        await slack.stop()
    assert process.returncode == 0, stderr.decode()
    assert "xoxb-health-token" not in json.dumps(ready)


async def test_assistant_run_serves_them_on_metrics_port_for_the_discord_gateway(env, tmp_path):
    metrics_port = free_port()
    async with FakeDiscord() as discord_fake, FakeLlm() as llm:
        llm.script(Reply(text="unused"))
        env.update(
            DISCORD_TOKEN=DISCORD_TOKEN,
            DISCORD_API_URL=discord_fake.rest_base,
            DISCORD_GATEWAY_URL=discord_fake.gateway_url,
            DISCORD_GUILD_ID=DISCORD_GUILD_ID,
            OPENAI_BASE_URL=llm.base_url,
            OPENAI_API_KEY="sk-run-test-key",
            METRICS_PORT=str(metrics_port),
        )
        process = await asyncio.create_subprocess_exec(
            *ASSISTANT, "run", env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
        )
        try:
            base = f"http://127.0.0.1:{metrics_port}"
            ready = await until(lambda: probe(f"{base}/readyz"), 200)
            assert ready["checks"]["platforms"]["detail"] == "connected: discord"
            status, text = await get(f"{base}/metrics")
            assert status == 200 and "# TYPE assistant_turns_total counter" in text
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    log = stderr.decode()
    assert process.returncode == 0, log
    assert f"metrics and health on http://0.0.0.0:{metrics_port}/metrics" in log


async def test_a_schema_behind_is_unready_and_one_a_newer_build_migrated_is_not(sqlite_url):
    """Behind: this build's tables are missing. Ahead: a rolling deploy's first new replica
    migrated it; the old replicas keep serving, or none would be left."""
    store = Store.connect(sqlite_url)
    try:
        await migrate.upgrade(store.engine, "0011")
        behind = await migrations_check(store.engine, every=0).state()
        assert not behind.ok and "this build expects" in behind.detail

        await migrate.upgrade(store.engine)
        assert (await migrations_check(store.engine, every=0).state()).ok
        async with store.engine.begin() as connection:
            await connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
        ahead = await migrations_check(store.engine, every=0).state()
        assert ahead.ok and "newer than this build's" in ahead.detail
    finally:
        await store.close()
