"""Builds the running engine from Settings: the one place where the parts are wired together."""

from __future__ import annotations

from dataclasses import dataclass

from assistant.builtin_tools import builtin_registry
from assistant.commands import AdminCommands
from assistant.config import Settings
from assistant.engine import Assistant, EngineConfig
from assistant.evals import EvalSuite, load_suites
from assistant.llm import OpenAIChatModel, Timeouts
from assistant.pricing import PriceTable
from assistant.prompts import PromptCatalog, load_prompts_dir
from assistant.store import Store, migrate
from assistant.tools import ToolRegistry


@dataclass(kw_only=True)
class Runtime:
    store: Store
    model: OpenAIChatModel
    assistant: Assistant
    commands: AdminCommands
    tools: ToolRegistry
    suites: dict[str, EvalSuite]

    async def close(self) -> None:
        await self.model.close()
        await self.store.close()


async def open_runtime(settings: Settings, *, base_url: str | None = None) -> Runtime:
    """Migrate, load and sync prompts, connect the model; `base_url` overrides OPENAI_BASE_URL."""
    tools = builtin_registry()
    catalog = PromptCatalog(
        load_prompts_dir(settings.prompts_dir, known_tools=tools.names()),
        default_prompt=settings.default_prompt,
    )
    suites = load_suites(settings.prompts_dir, known_tools=tools.names())
    prices = PriceTable.load(settings.pricing_file)
    store = Store.connect(settings.database_url)
    try:
        await migrate.upgrade(store.engine)
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        model = OpenAIChatModel.connect(
            api_key=key,
            base_url=base_url or settings.openai_base_url,
            timeouts=Timeouts(
                first_token=settings.llm_first_token_timeout,
                idle=settings.llm_idle_timeout,
                total=settings.llm_total_timeout,
            ),
            max_retries=settings.llm_max_retries,
        )
        assistant = Assistant(
            store=store,
            model=model,
            catalog=catalog,
            tools=tools,
            prices=prices,
            config=EngineConfig(
                default_model=settings.assistant_model,
                tool_timeout=settings.tool_timeout,
                max_tool_rounds=settings.max_tool_rounds,
            ),
        )
        await assistant.sync_prompts()
    except BaseException:
        await store.close()
        raise
    commands = AdminCommands(
        prompts=store.prompts,
        versions=assistant.versions,
        admins=settings.admin_users,
        evals=store.evals,
        suites=suites,
    )
    return Runtime(
        store=store,
        model=model,
        assistant=assistant,
        commands=commands,
        tools=tools,
        suites=suites,
    )
