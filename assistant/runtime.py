"""Builds the running engine from Settings: the one place where the parts are wired together."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from assistant.config import Settings
from assistant.observe import NO_OBSERVER, Observer, Observers
from assistant.store import Store, migrate
from assistant.store.eval_store import FAKE_MODEL

log = logging.getLogger(__name__)

FAKE_EMBEDDING_MODEL = "fake-embedding"  # what `--fake` embeds with: the fake's own vectors

# The engine, the model client (openai), prompts and evals are imported by the functions that
# build them: `assistant chat` shows its prompt while they load (issue 14).
if TYPE_CHECKING:
    from assistant.admin.commands import AdminCommands
    from assistant.doctor import Doctor
    from assistant.engine import Assistant, EngineConfig
    from assistant.evals.runner import EvalRunner
    from assistant.evals.suite import EvalSuite
    from assistant.knowledge.service import Knowledge
    from assistant.llm import OpenAIChatModel
    from assistant.mcp_servers.servers import McpServers
    from assistant.model_traits import ModelTable
    from assistant.observability.metrics import Metrics
    from assistant.observability.traces import Tracing
    from assistant.pricing import PriceTable
    from assistant.prompts.files import PromptCatalog
    from assistant.tools import ToolRegistry
    from assistant.turns import ConversationRef


@dataclass(kw_only=True)
class Runtime:
    store: Store
    model: OpenAIChatModel
    assistant: Assistant
    commands: AdminCommands
    tools: ToolRegistry
    suites: dict[str, EvalSuite]
    runner: EvalRunner  # one for the process: its concurrency bound holds across runs
    knowledge: Knowledge
    fake: bool = False  # answered by the bundled fake model: reports are of its traffic
    mcp: McpServers | None = None  # tools.yaml's servers, when it declares any
    metrics: Metrics | None = None  # what `/metrics` shows of this process's turns
    tracing: Tracing | None = None  # OTLP traces, when OTEL_EXPORTER_OTLP_*ENDPOINT is set

    async def close(self) -> None:
        if self.mcp is not None:  # first: their processes must not outlive this one
            await self.mcp.close()
        await self.model.close()
        await self.store.close()
        if self.tracing is not None:  # last: the spans of everything above are sent
            await self.tracing.close()


@dataclass(frozen=True, kw_only=True)
class ChatDuties:
    """`report` and `eval run` as admin commands in chat: the same work as the schedule."""

    store: Store
    assistant: Assistant
    runner: EvalRunner
    suites: dict[str, EvalSuite]
    knowledge: Knowledge
    settings: Settings
    fake: bool = False

    async def report(self, spec: str) -> str:
        # the report's figures and wording: loaded by the first `report`, not by every start
        from assistant.reporting.figures import Period, build_report
        from assistant.reporting.wording import report_text

        period = Period.last(spec, now=datetime.now(UTC))
        budget = self.settings.daily_budget_usd
        found = await build_report(self.store, period, daily_budget_usd=budget, fake=self.fake)
        return report_text(found)

    async def evaluate(self, name: str | None, version: int | None) -> str:
        if name is not None and name not in self.suites:
            return f"No eval suite for {name}: add prompts/{name}/evals.yaml."
        runner = self.runner
        lines = []
        for prompt in [name] if name is not None else sorted(self.suites):
            chosen = version if version is not None else await runner.version_in_use(prompt)
            if await self.assistant.versions.version(prompt, chosen) is None:
                return f"{prompt} has no version {chosen}."
            outcome = await runner.run_and_compare(self.suites[prompt], chosen, trigger="chat")
            lines.append(outcome.summary())
        return "\n".join(lines) or "No prompt has an eval suite yet."


async def open_store(settings: Settings) -> Store:
    """The database, migrated: every command's first use of it, so a database that cannot be
    used is reported here (`migrate.DatabaseUnreachable`)."""
    store = Store.connect(settings.database_url)
    try:
        await migrate.upgrade(store.engine)
    except BaseException:
        await store.close()
        raise
    return store


async def history_length(store: Store, ref: ConversationRef) -> int:
    """`Assistant.history_length` from the store alone: a chat greets before the engine loads."""
    conversation = await store.find_conversation(ref)
    if conversation is None or conversation.id is None:
        return 0
    return await store.count_messages(conversation.id)


async def open_runtime(
    settings: Settings,
    *,
    base_url: str | None = None,
    fake: bool = False,
    store: Store | None = None,
    mcp: bool = True,
) -> Runtime:
    """Migrate, load and sync prompts, connect the model; `base_url` overrides OPENAI_BASE_URL.

    Args:
        fake: `base_url` is the bundled fake model (`--fake`). Every version then asks for the
            model "fake", whatever it names, so its calls, cached replies and eval runs are
            recorded as the fake's and no report, cache or eval gate takes them for a real
            model's.
        store: already opened by `open_store` (the runtime owns it from now on, closing it
            when opening fails); None opens it after the prompts loaded.
        mcp: start the MCP servers of `tools.yaml` (a runtime opened only to migrate and
            store the prompts, as `run` does before its workers start, needs none).
    """
    from assistant.builtin_tools import builtin_registry
    from assistant.engine import Assistant
    from assistant.evals.runner import EvalRunner
    from assistant.observability.metrics import Metrics
    from assistant.observability.traces import open_tracing
    from assistant.pricing import PriceTable

    metrics = Metrics()  # cheap: counted in memory, served by `run` (bots/ops_http.py)
    # None (and OpenTelemetry never imported) unless an OTLP endpoint is set
    tracing = open_tracing(capture_content=settings.otel_capture_content)
    observer = metrics if tracing is None else Observers(metrics, tracing)
    model: OpenAIChatModel | None = None
    servers: McpServers | None = None
    try:
        catalog, suites = load_prompts(settings, builtin_registry())  # the tools' names
        prices = PriceTable.load(settings.pricing_file)
        store = store or await open_store(settings)
        model = connect_model(settings, base_url=base_url)
        knowledge = open_knowledge(settings, store, model, prices, fake=fake, observer=observer)
        tools = builtin_registry(knowledge.search_knowledge)
        if mcp:
            servers = await start_mcp_servers(settings, tools, catalog, suites)
        assistant = Assistant(
            store=store,
            model=model,
            catalog=catalog,
            tools=tools,
            prices=prices,
            config=engine_config(settings, fake=fake),
            observer=observer,
        )
        await assistant.sync_prompts()
    except BaseException:
        if tracing is not None:
            await tracing.close()
        if servers is not None:
            await servers.close()
        if model is not None:
            await model.close()
        if store is not None:
            await store.close()
        raise
    runner = EvalRunner(
        assistant=assistant,
        store=store,
        model=model,
        tools=tools,
        judge_model=FAKE_MODEL if fake else settings.assistant_model,
        concurrency=settings.eval_concurrency,
        tool_timeout=settings.tool_timeout,
        fake=fake,
        knowledge=knowledge,
    )
    duties = ChatDuties(
        store=store,
        assistant=assistant,
        runner=runner,
        suites=suites,
        knowledge=knowledge,
        settings=settings,
        fake=fake,
    )
    return Runtime(
        store=store,
        model=model,
        assistant=assistant,
        commands=admin_commands(settings, duties),
        tools=tools,
        suites=suites,
        runner=runner,
        knowledge=knowledge,
        fake=fake,
        mcp=servers,
        metrics=metrics,
        tracing=tracing,
    )


async def start_mcp_servers(
    settings: Settings, tools: ToolRegistry, catalog: PromptCatalog, suites: dict[str, EvalSuite]
) -> McpServers | None:
    """The servers of `PROMPTS_DIR/tools.yaml`, started, their tools in `tools` (those the
    versions and suites name at once, the others as each server lists them); None without
    servers, and then the MCP SDK is never imported (it takes most of a second)."""
    from assistant.mcp_servers.declared import load_servers

    declared = load_servers(settings.prompts_dir)
    if not declared:
        return None
    from assistant.mcp_servers.servers import McpServers

    servers = McpServers(declared)
    named = [tool for prompt in catalog.files for tool in prompt.version.tools]
    named += [case.tool for suite in suites.values() for case in suite.tool_cases]
    servers.attach(tools, named)
    await servers.start()
    return servers


async def sync_knowledge(settings: Settings, runtime: Runtime) -> None:
    """Index what changed in every collection (`knowledge.yaml`'s created first). A failure
    (the embeddings server down, a folder gone) is logged, not raised: the assistant still
    answers, from what the last sync indexed."""
    try:
        reports = await runtime.knowledge.sync_all(settings.prompts_dir, actor="file")
    except Exception as exc:
        log.warning("knowledge: could not sync the collections: %s", exc)
        return
    for report in reports:
        if isinstance(report, Exception):
            log.warning("knowledge: %s", report)
            continue
        log.info(
            "knowledge: %s synced: %d of %d documents changed, %d passages embedded, %d reused",
            report.collection,
            report.changed,
            report.documents,
            report.embedded,
            report.reused,
        )


def open_knowledge(
    settings: Settings,
    store: Store,
    model: OpenAIChatModel,
    prices: PriceTable,
    *,
    fake: bool,
    observer: Observer = NO_OBSERVER,
) -> Knowledge:
    """Knowledge search and sync, embedding with EMBEDDING_MODEL on the model's own server
    (the fake serves its own vectors); without it, keyword search only. A query is embedded
    inside a turn, so it gets a shorter leash than a sync: a slow server costs the turn
    seconds, not minutes, and the search goes on with keywords."""
    from assistant.knowledge.embeddings import Embedder
    from assistant.knowledge.service import Knowledge

    name = FAKE_EMBEDDING_MODEL if fake else settings.embedding_model
    if name is None:
        return Knowledge(store, None, observer=observer)
    client, key = model.client, model.sends_key
    return Knowledge(
        store,
        Embedder(client, model=name, prices=prices, send_key=key),
        query_embedder=Embedder(
            client, model=name, prices=prices, send_key=key, max_attempts=2, timeout=10.0
        ),
        observer=observer,
    )


def engine_config(settings: Settings, *, fake: bool) -> EngineConfig:
    from assistant.attachments import AttachmentLimits
    from assistant.engine import EngineConfig

    return EngineConfig(
        default_model=settings.assistant_model,
        tool_timeout=settings.tool_timeout,
        approval_timeout=settings.approval_timeout,
        attachments=AttachmentLimits(
            max_bytes=settings.attachment_max_bytes, max_count=settings.attachment_max_count
        ),
        max_tool_rounds=settings.max_tool_rounds,
        heartbeat_seconds=settings.worker_heartbeat_seconds,
        only_model=FAKE_MODEL if fake else None,  # the fake answers every version as itself
        access=settings.access_policy(),
        daily_budget_usd=settings.daily_budget_usd,
    )


def load_prompts(
    settings: Settings, tools: ToolRegistry
) -> tuple[PromptCatalog, dict[str, EvalSuite]]:
    """Every prompt version and eval suite in PROMPTS_DIR, checked against the known tools."""
    from assistant.evals.suite import load_suites
    from assistant.mcp_servers.declared import load_servers, tool_patterns
    from assistant.prompts.files import PromptCatalog, load_prompts_dir

    # an MCP server's tools as `server.*`: known once it connects (ToolsFileError if malformed)
    known = [*tools.names(), *tool_patterns(load_servers(settings.prompts_dir))]
    catalog = PromptCatalog(
        load_prompts_dir(settings.prompts_dir, known_tools=known),
        default_prompt=settings.default_prompt,
    )
    return catalog, load_suites(settings.prompts_dir, known_tools=known)


def connect_model(
    settings: Settings, *, base_url: str | None = None, models: ModelTable | None = None
) -> OpenAIChatModel:
    """The model client as configured; `models` overrides the parameters table (doctor)."""
    from assistant.llm import OpenAIChatModel, Timeouts
    from assistant.model_traits import ModelTable

    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    return OpenAIChatModel.connect(
        api_key=key,
        base_url=base_url or settings.openai_base_url,
        timeouts=Timeouts(
            first_token=settings.llm_first_token_timeout,
            idle=settings.llm_idle_timeout,
            total=settings.llm_total_timeout,
        ),
        max_retries=settings.llm_max_retries,
        models=models or ModelTable.load(settings.models_file),
        max_concurrency=settings.llm_max_concurrency,
    )


def open_doctor(settings: Settings, *, base_url: str | None = None) -> Doctor:
    """The doctor for the configured server and every model the configuration names: the
    default prompt's first, then ASSISTANT_MODEL and each version's model and fallbacks."""
    from assistant.builtin_tools import builtin_registry
    from assistant.doctor import Doctor  # `assistant doctor` only
    from assistant.model_traits import ModelTable

    table = ModelTable.load(settings.models_file)
    catalog, _ = load_prompts(settings, builtin_registry())
    default = catalog.latest(catalog.default_name).version.model or settings.assistant_model
    named = [default, settings.assistant_model]
    for prompt in catalog.files:
        named += [prompt.version.model or settings.assistant_model, *prompt.version.fallback_models]
    chat = connect_model(settings, base_url=base_url, models=table)
    embedder = None
    if settings.embedding_model is not None:
        from assistant.knowledge.embeddings import Embedder
        from assistant.pricing import PriceTable

        prices = PriceTable.load(settings.pricing_file)
        embedder = Embedder(
            chat.client,
            model=settings.embedding_model,
            prices=prices,
            send_key=chat.sends_key,
            max_attempts=1,
            timeout=10.0,
        )
    return Doctor(
        chat=chat,
        unstreamed=connect_model(
            settings, base_url=base_url, models=table.without_streamed_tools()
        ),
        models=list(dict.fromkeys(named)),
        table=table,
        max_concurrency=settings.llm_max_concurrency,
        embedder=embedder,
    )


def admin_commands(settings: Settings, duties: ChatDuties) -> AdminCommands:
    """The admin grammar with `report` and `eval run` doing the schedule's work in chat."""
    from assistant.admin.commands import AdminCommands

    return AdminCommands(
        prompts=duties.store.prompts,
        versions=duties.assistant.versions,
        admins=settings.admin_users,
        evals=duties.store.evals,
        suites=duties.suites,
        reporter=duties.report,
        evaluator=duties.evaluate,
        knowledge=duties.knowledge,
        budgets=duties.assistant.budgets,
    )
