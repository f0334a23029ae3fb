"""Builds the running engine from Settings: the one place where the parts are wired together."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from assistant.admin.commands import AdminCommands
from assistant.builtin_tools import builtin_registry
from assistant.config import Settings
from assistant.doctor import Doctor
from assistant.engine import Assistant, EngineConfig
from assistant.evals.runner import EvalRunner
from assistant.evals.suite import EvalSuite, load_suites
from assistant.llm import OpenAIChatModel, Timeouts
from assistant.model_traits import ModelTable
from assistant.pricing import PriceTable
from assistant.prompts.files import PromptCatalog, load_prompts_dir
from assistant.reporting.figures import Period, build_report
from assistant.reporting.wording import report_text
from assistant.store import Store, migrate
from assistant.store.eval_store import FAKE_MODEL
from assistant.tools import ToolRegistry


@dataclass(kw_only=True)
class Runtime:
    store: Store
    model: OpenAIChatModel
    assistant: Assistant
    commands: AdminCommands
    tools: ToolRegistry
    suites: dict[str, EvalSuite]
    runner: EvalRunner  # one for the process: its concurrency bound holds across runs
    fake: bool = False  # answered by the bundled fake model: reports are of its traffic

    async def close(self) -> None:
        await self.model.close()
        await self.store.close()


@dataclass(frozen=True, kw_only=True)
class ChatDuties:
    """`report` and `eval run` as admin commands in chat: the same work as the schedule."""

    store: Store
    assistant: Assistant
    runner: EvalRunner
    suites: dict[str, EvalSuite]
    settings: Settings
    fake: bool = False

    async def report(self, spec: str) -> str:
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


async def open_runtime(
    settings: Settings, *, base_url: str | None = None, fake: bool = False
) -> Runtime:
    """Migrate, load and sync prompts, connect the model; `base_url` overrides OPENAI_BASE_URL.

    Args:
        fake: `base_url` is the bundled fake model (`--fake`). Every version then asks for the
            model "fake", whatever it names, so its calls, cached replies and eval runs are
            recorded as the fake's and no report, cache or eval gate takes them for a real
            model's.
    """
    tools = builtin_registry()
    catalog, suites = load_prompts(settings, tools)
    prices = PriceTable.load(settings.pricing_file)
    store = Store.connect(settings.database_url)
    try:
        await migrate.upgrade(store.engine)
        model = connect_model(settings, base_url=base_url)
        assistant = Assistant(
            store=store,
            model=model,
            catalog=catalog,
            tools=tools,
            prices=prices,
            config=engine_config(settings, fake=fake),
        )
        await assistant.sync_prompts()
    except BaseException:
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
    )
    duties = ChatDuties(
        store=store, assistant=assistant, runner=runner, suites=suites, settings=settings, fake=fake
    )
    return Runtime(
        store=store,
        model=model,
        assistant=assistant,
        commands=admin_commands(settings, duties),
        tools=tools,
        suites=suites,
        runner=runner,
        fake=fake,
    )


def engine_config(settings: Settings, *, fake: bool) -> EngineConfig:
    return EngineConfig(
        default_model=settings.assistant_model,
        tool_timeout=settings.tool_timeout,
        max_tool_rounds=settings.max_tool_rounds,
        heartbeat_seconds=settings.worker_heartbeat_seconds,
        only_model=FAKE_MODEL if fake else None,  # the fake answers every version as itself
    )


def load_prompts(
    settings: Settings, tools: ToolRegistry
) -> tuple[PromptCatalog, dict[str, EvalSuite]]:
    """Every prompt version and eval suite in PROMPTS_DIR, checked against the known tools."""
    catalog = PromptCatalog(
        load_prompts_dir(settings.prompts_dir, known_tools=tools.names()),
        default_prompt=settings.default_prompt,
    )
    return catalog, load_suites(settings.prompts_dir, known_tools=tools.names())


def connect_model(
    settings: Settings, *, base_url: str | None = None, models: ModelTable | None = None
) -> OpenAIChatModel:
    """The model client as configured; `models` overrides the parameters table (doctor)."""
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
    table = ModelTable.load(settings.models_file)
    catalog, _ = load_prompts(settings, builtin_registry())
    default = catalog.latest(catalog.default_name).version.model or settings.assistant_model
    named = [default, settings.assistant_model]
    for prompt in catalog.files:
        named += [prompt.version.model or settings.assistant_model, *prompt.version.fallback_models]
    return Doctor(
        chat=connect_model(settings, base_url=base_url, models=table),
        unstreamed=connect_model(
            settings, base_url=base_url, models=table.without_streamed_tools()
        ),
        models=list(dict.fromkeys(named)),
        table=table,
        max_concurrency=settings.llm_max_concurrency,
    )


def admin_commands(settings: Settings, duties: ChatDuties) -> AdminCommands:
    """The admin grammar with `report` and `eval run` doing the schedule's work in chat."""
    return AdminCommands(
        prompts=duties.store.prompts,
        versions=duties.assistant.versions,
        admins=settings.admin_users,
        evals=duties.store.evals,
        suites=duties.suites,
        reporter=duties.report,
        evaluator=duties.evaluate,
    )
