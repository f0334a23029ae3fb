"""Shared fixtures: a real fake-LLM server on loopback, real databases, a real engine."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from assistant.admin.commands import AdminCommands
from assistant.builtin_tools import builtin_registry
from assistant.engine import Assistant, EngineConfig
from assistant.evals.runner import EvalRunner
from assistant.llm import OpenAIChatModel, Timeouts
from assistant.observe import NO_OBSERVER, Observer
from assistant.pricing import PriceTable
from assistant.prompts.files import PromptCatalog, load_prompts_dir
from assistant.store import Store, migrate
from assistant.testing import FakeLlm
from assistant.tools import ToolRegistry
from assistant.turns import Actor, ConversationRef, Event, Inbound
from bots.discord_app import DiscordAdapter
from bots.slack_app import SlackAdapter
from tests.fakes.discord_api import GUILD_ID as DISCORD_GUILD_ID
from tests.fakes.discord_api import TOKEN as DISCORD_TOKEN
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.slack_api import SIGNING_SECRET, FakeSlack

POSTGRES_URL = os.environ.get("ASSISTANT_TEST_POSTGRES_URL")

BASE_PROMPT: dict[str, Any] = {
    "name": "assistant",
    "version": 1,
    "model": "gpt-4o-mini",
    "params": {"temperature": 0.2, "seed": 7},
    "system": "You are a test assistant talking to {{ user_name }}.",
    "tools": ["current_time", "calculator"],
    "memory": {"context_tokens": 6000, "summarize_over_tokens": 4000},
}


def write_prompt(directory: Path, **fields: Any) -> Path:
    """Write a prompt file the way an author would; fields override BASE_PROMPT."""
    spec = {**BASE_PROMPT, **fields}
    path = directory / str(spec["name"]) / f"{spec['version']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeLlm]:
    async with FakeLlm() as server:
        yield server


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/assistant.db"


async def _create_postgres_database() -> tuple[str, str]:
    assert POSTGRES_URL is not None
    name = f"assistant_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = POSTGRES_URL.rpartition("/")
    return name, f"{base}/{name}"


async def _drop_postgres_database(name: str) -> None:
    assert POSTGRES_URL is not None
    admin = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> AsyncIterator[str]:
    """An empty database of each kind: SQLite always, Postgres when a URL is given."""
    if request.param == "sqlite":
        yield sqlite_url
        return
    if not POSTGRES_URL:
        pytest.skip("set ASSISTANT_TEST_POSTGRES_URL to run the store tests on Postgres")
    name, url = await _create_postgres_database()
    try:
        yield url
    finally:
        await _drop_postgres_database(name)


@contextlib.asynccontextmanager
async def migrated(url: str) -> AsyncIterator[Store]:
    """A store on `url` with every migration applied, closed on the way out."""
    store = Store.connect(url)
    try:
        await migrate.upgrade(store.engine)
        yield store
    finally:
        await store.close()


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[Store]:
    async with migrated(sqlite_url) as opened:
        yield opened


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Store]:
    """A migrated store on each database the store tests run on (SQLite, and Postgres)."""
    async with migrated(database_url) as opened:
        yield opened


@pytest.fixture
def prompts_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "prompts"
    write_prompt(directory)
    return directory


@pytest.fixture
def tools() -> ToolRegistry:
    return builtin_registry()


@pytest.fixture
async def model(fake_llm: FakeLlm) -> AsyncIterator[OpenAIChatModel]:
    # Wide enough for a loaded machine, where a process's first call also pays the client's
    # lazy imports (a 1 s first-token limit failed healthy streams there). The hung-stream
    # tests wait the idle limit out.
    chat_model = OpenAIChatModel.connect(
        api_key="sk-test-not-a-real-key",
        base_url=fake_llm.base_url,
        timeouts=Timeouts(first_token=10.0, idle=2.0, total=30.0),
        max_retries=2,
    )
    yield chat_model
    await chat_model.close()


@pytest.fixture
def make_assistant(
    store: Store, model: OpenAIChatModel, prompts_dir: Path, tools: ToolRegistry
) -> Callable[..., Any]:
    """Build an engine over the shared store and fake LLM; keyword args tune EngineConfig."""

    async def build(**config: Any) -> Assistant:
        return await build_assistant(store, model, prompts_dir, tools, **config)

    return build


@pytest.fixture
def runner_for(
    make_assistant: Callable[..., Any], store: Store, model: OpenAIChatModel, tools: ToolRegistry
) -> Callable[..., Any]:
    """Builds an eval runner over the shared engine fixtures (after a test wrote its files)."""

    async def build() -> EvalRunner:
        return EvalRunner(
            assistant=await make_assistant(),
            store=store,
            model=model,
            tools=tools,
            judge_model="gpt-4o-mini",
            concurrency=3,
        )

    return build


async def build_assistant(
    store: Store,
    model: OpenAIChatModel,
    prompts_dir: Path,
    tools: ToolRegistry,
    *,
    observer: Observer = NO_OBSERVER,
    **config: Any,
) -> Assistant:
    """An engine as one serving process has it: each has its own worker id."""
    catalog = PromptCatalog(
        load_prompts_dir(prompts_dir, known_tools=tools.names()), default_prompt="assistant"
    )
    assistant = Assistant(
        store=store,
        model=model,
        catalog=catalog,
        tools=tools,
        prices=PriceTable.load(),
        config=EngineConfig(**config),
        observer=observer,
    )
    await assistant.sync_prompts()
    return assistant


REF = ConversationRef(platform="test", workspace="W1", channel="C1", thread="T1")
ALICE = Actor(platform="test", user_id="U1", display_name="Alice")


def inbound(text: str, *, ref: ConversationRef = REF, **fields: Any) -> Inbound:
    return Inbound(ref=ref, actor=ALICE, text=text, **fields)


async def collect(events: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in events]


@dataclass
class SlackBot:
    """The Slack adapter serving HTTP on loopback, as Slack would reach it."""

    adapter: SlackAdapter
    assistant: Assistant
    url: str

    async def settle(self, fake: FakeSlack) -> None:
        await settle(self.adapter, fake)


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = await FakeSlack(names={"U1": "Alice", "U2": "Bob"}).start()
    yield fake
    await fake.stop()


@pytest.fixture
async def start_slack_bot(
    make_assistant: Callable[..., Any], store: Store, slack: FakeSlack
) -> AsyncIterator[Callable[..., Any]]:
    """Start a Slack adapter (again: a restart) on the shared database; admin is UADMIN;
    keyword args tune EngineConfig."""
    adapters: list[SlackAdapter] = []

    async def start(**config: Any) -> SlackBot:
        assistant = await make_assistant(**config)
        commands = AdminCommands(
            prompts=store.prompts, versions=assistant.versions, admins=["slack:UADMIN"]
        )
        adapter = SlackAdapter(
            assistant=assistant,
            commands=commands,
            bot_token="xoxb-test-token",
            signing_secret=SIGNING_SECRET,
            api_url=slack.api_url,
            update_interval=0.01,
        )
        port = await adapter.serve_http(port=0, host="127.0.0.1")
        adapters.append(adapter)
        return SlackBot(adapter, assistant, f"http://127.0.0.1:{port}/slack/events")

    yield start
    for adapter in adapters:
        await adapter.close()


@pytest.fixture
async def slack_bot(start_slack_bot: Callable[..., Any]) -> SlackBot:
    return await start_slack_bot()


DISCORD_ADMIN = "2002"


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:  # points discord.py at the fake, and back afterwards
        fake.users[DISCORD_ADMIN] = "ada"
        yield fake


@pytest.fixture
async def start_discord_bot(
    make_assistant: Callable[..., Any], store: Store, discord_fake: FakeDiscord
) -> AsyncIterator[Callable[..., Any]]:
    """Start the Discord adapter (again: a restart) on the shared database; DISCORD_ADMIN is an
    admin; keyword args reach DiscordAdapter, `engine` tunes EngineConfig."""
    adapters: list[DiscordAdapter] = []

    async def start(engine: dict[str, Any] | None = None, **options: Any) -> DiscordAdapter:
        assistant = await make_assistant(**(engine or {}))
        commands = AdminCommands(
            prompts=store.prompts, versions=assistant.versions, admins=[f"discord:{DISCORD_ADMIN}"]
        )
        options = {"edit_interval": 0.01, "guild_ready_timeout": 0.05, **options}
        adapter = DiscordAdapter(
            assistant=assistant,
            commands=commands,
            token=DISCORD_TOKEN,
            guild_id=int(DISCORD_GUILD_ID),
            **options,
        )
        adapters.append(adapter)
        await adapter.start()
        return adapter

    yield start
    for adapter in adapters:
        await adapter.close()


@pytest.fixture
async def discord_bot(start_discord_bot: Callable[..., Any]) -> DiscordAdapter:
    return await start_discord_bot()


async def settle_discord(bot: DiscordAdapter, fake: FakeDiscord) -> None:
    await settle(bot, fake)


async def settle(adapter: SlackAdapter | DiscordAdapter, fake: FakeSlack | FakeDiscord) -> None:
    """Until no turn is under way and the platform has heard nothing new for a while."""
    deadline = time.monotonic() + 15
    seen = -1
    while time.monotonic() < deadline:
        await adapter.idle()
        awaiting = isinstance(fake, FakeDiscord) and fake.awaiting_answer()
        if len(fake.calls) == seen and not awaiting:
            return
        seen = len(fake.calls)
        await asyncio.sleep(0.15)
    raise AssertionError("the adapter did not settle")
