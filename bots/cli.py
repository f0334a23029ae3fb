"""The `assistant` command: chat, database and fake-server entry points."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import getpass
import logging
import os
import shlex
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer
from rich.console import Console

from assistant.admin.grammar import USAGE, CommandContext
from assistant.config import (
    SHIPPED_PROMPTS_NOTE,
    ConfigError,
    Settings,
    database_location,
    find_prompts,
    load_settings,
)
from assistant.prompts.files import PromptFileError
from assistant.records import CallRecord
from assistant.runtime import (
    Runtime,
    history_length,
    open_doctor,
    open_runtime,
    open_store,
    sync_knowledge,
)
from assistant.store import PromptVersionConflict, Store, migrate
from assistant.testing.personalities import PERSONALITIES
from assistant.turns import Actor, ConversationRef
from bots.cli_tools import tools_app
from bots.terminal import HeldLogs, Opening, TerminalChat

if TYPE_CHECKING:
    from assistant.admin.commands import AdminCommands
    from assistant.engine import Assistant

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="Database schema migrations.")
app.add_typer(db_app, name="db")
eval_app = typer.Typer(no_args_is_help=True, help="Prompt evals: run suites, compare versions.")
app.add_typer(eval_app, name="eval")
export_app = typer.Typer(no_args_is_help=True, help="Data out: fine-tuning examples.")
app.add_typer(export_app, name="export")
knowledge_app = typer.Typer(
    no_args_is_help=True, help="Team knowledge: collections of documents the assistant searches."
)
app.add_typer(knowledge_app, name="knowledge")
app.add_typer(tools_app, name="tools")

NO_MODEL = (
    "No language model is configured. Set OPENAI_API_KEY (environment or .env) to use OpenAI,\n"
    "or set OPENAI_BASE_URL to a local OpenAI-compatible server (Ollama: "
    "http://localhost:11434/v1, vLLM, llama.cpp). To try it offline: assistant chat --fake"
)
_USER_ERRORS = (
    ConfigError,
    PromptFileError,
    PromptVersionConflict,
    ValueError,  # KnowledgeFileError and SyncError among them
    migrate.DatabaseUnreachable,
)
PROMPTS_USAGE = (
    "Usage: assistant prompts ACTION ...  (the admin grammar, from a shell)\n"
    "  prompts sync                 store every version in PROMPTS_DIR (start-up does it too)\n"
    + "\n".join(
        "  prompts" + line.removeprefix("  prompt")
        for line in USAGE.splitlines()
        if line.startswith("  prompt ")
    )
)
T = TypeVar("T")
_ERR = Console(stderr=True, soft_wrap=True)  # one message, one line: never wrapped
# Output to a pipe or a file is laid out this wide: rich assumes 80 columns there, and would
# wrap or cut tables. Nothing is padded to it (tables take their content's width).
_UNBOUNDED = 100_000


def _run(main: Callable[[], Awaitable[T]]) -> T:
    """Run `main`; a configuration problem becomes one red line and exit code 2, no traceback."""
    try:
        return asyncio.run(main())  # type: ignore[arg-type]
    except _USER_ERRORS as exc:
        _ERR.print(f"error: {exc}", style="bold red", highlight=False, markup=False)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        _refuse(exc)


def _refuse(exc: ConfigError) -> NoReturn:
    """A setting that stops the command: one red line, exit code 2."""
    _ERR.print(f"error: {exc}", style="bold red", highlight=False, markup=False)
    raise typer.Exit(2) from None


def _with_prompts(settings: Settings) -> Settings:
    """`settings` with PROMPTS_DIR made absolute (the folder the command reads whatever it
    does next), saying so when the package's examples stand in for a missing ./prompts."""
    try:
        found = find_prompts(settings)
    except ConfigError as exc:
        _refuse(exc)
    if found.shipped:
        _ERR.print(SHIPPED_PROMPTS_NOTE, highlight=False, markup=False)
    return settings.model_copy(update={"prompts_dir": found.path})


def _require_folder(option: str, path: Path) -> None:
    """Refuse, before any work, a file to write into a folder that does not exist."""
    if not path.parent.is_dir():
        _ERR.print(
            f"error: {option} {path}: the folder {path.parent} does not exist",
            style="bold red",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(2)


@contextlib.asynccontextmanager
async def _opened(
    settings: Settings,
    *,
    fake: bool = False,
    store: Store | None = None,
    knowledge: bool = False,
) -> AsyncIterator[Runtime]:
    """The runtime, answered by the bundled fake model when `fake`; on the way out the runtime
    is closed, then the fake (also when opening the runtime failed). `store`: opened already
    (`open_store`), the runtime's from now on. `knowledge`: sync every knowledge collection
    first (a chat or an eval run answers from the documents as they are now)."""
    async with contextlib.AsyncExitStack() as stack:
        base_url = None
        try:
            if fake:
                from assistant.testing import FakeLlm  # aiohttp's server: only offline

                fake_llm = await FakeLlm().start()
                stack.push_async_callback(fake_llm.stop)
                base_url = fake_llm.base_url
        except BaseException:
            if store is not None:
                await store.close()
            raise
        runtime = await open_runtime(settings, base_url=base_url, fake=fake, store=store)
        stack.push_async_callback(runtime.close)
        if knowledge:
            await sync_knowledge(settings, runtime)
        yield runtime


@contextlib.asynccontextmanager
async def _chat_opening(settings: Settings, *, fake: bool) -> AsyncIterator[Opening]:
    """The chat's engine, opened behind its prompt: the database first (a database that cannot
    be used is said before the prompt, and the greeting counts the conversation's messages),
    the rest (the model client, prompts, the fake model) once the prompt shows."""
    store = await open_store(settings)
    async with contextlib.AsyncExitStack() as stack:
        begun: list[asyncio.Task[object]] = []

        async def start() -> tuple[Assistant, AdminCommands | None]:
            begun.append(asyncio.current_task())  # type: ignore[arg-type]
            opened = _opened(settings, fake=fake, store=store, knowledge=True)
            runtime = await stack.enter_async_context(opened)
            return runtime.assistant, runtime.commands  # the person here runs the process

        try:
            yield Opening(history_length=functools.partial(history_length, store), start=start)
        finally:
            if not begun:
                await store.close()
            elif not begun[0].done():  # interrupted while opening: it closes what it opened
                begun[0].cancel()
                with contextlib.suppress(BaseException):
                    await begun[0]


def _announce_database(settings: Settings) -> None:
    """One line at start naming the database: the default is a file in the current folder,
    easy to lose track of when the command is run from elsewhere."""
    where = database_location(settings.database_url)
    _ERR.print(f"database: {where}", highlight=False, markup=False)


def _output() -> Console:
    """The console for a command's results: a terminal's own width (or COLUMNS, when set),
    unbounded for a pipe or a file (whatever reads it gets whole lines)."""
    if sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit():
        return Console(soft_wrap=True)
    return Console(soft_wrap=True, width=_UNBOUNDED)


@app.command()
def chat(
    fake: Annotated[
        bool, typer.Option(help="Offline: answer with the bundled fake model.")
    ] = False,
    conversation: Annotated[str, typer.Option(help="Which conversation to resume.")] = "default",
    show_cost: Annotated[
        bool, typer.Option("--show-cost", help="Print tokens, cost and latency after each reply.")
    ] = False,
) -> None:
    """Chat in the terminal with the same engine Slack and Discord use; resumes where you left."""
    settings = _settings()
    if not fake and settings.openai_api_key is None and settings.openai_base_url is None:
        _ERR.print(NO_MODEL, style="yellow", highlight=False, markup=False)
        raise typer.Exit(2)
    settings = _with_prompts(settings)
    _announce_database(settings)
    console = Console(soft_wrap=True)
    logs = HeldLogs(console)  # printed between answers, never into one
    logging.basicConfig(level=logging.WARNING, handlers=[logs])
    user = getpass.getuser()

    async def main() -> None:
        async with _chat_opening(settings, fake=fake) as opening:
            await TerminalChat(
                opening,
                ref=ConversationRef(
                    platform="terminal", workspace="local", channel=user, thread=conversation
                ),
                actor=Actor(platform="terminal", user_id=user, display_name=user),
                console=console,
                show_cost=show_cost,
                logs=logs,
            ).run()

    _run(main)


@app.command()
def run(
    fake: Annotated[
        bool, typer.Option(help="Offline: answer with the bundled fake model.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Processes sharing Slack's HTTP port (default: WORKERS, else one per usable "
            "core; one without an HTTP surface).",
        ),
    ] = None,
) -> None:
    """Migrate, sync prompts and serve every configured chat platform until stopped."""
    settings = _settings()
    no_model = not fake and settings.openai_api_key is None and settings.openai_base_url is None
    from bots import services  # the platforms and the scheduler: only `run` needs them

    problem = NO_MODEL if no_model else services.missing_configuration(settings)
    if problem:
        _ERR.print(problem, style="yellow", highlight=False, markup=False)
        raise typer.Exit(2)
    settings = _with_prompts(settings)
    _announce_database(settings)
    count, why_one = services.worker_count(settings, workers or settings.workers)
    who = "[supervisor] " if count > 1 else ""  # each worker's lines say [worker N]
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s"
    )
    if why_one:
        logging.getLogger(__name__).warning(why_one)
    if count > 1:
        from bots.workers import supervise

        _run(lambda: supervise(settings, count, fake=fake, user_errors=_USER_ERRORS))
        return

    async def main() -> None:
        async with _opened(settings, fake=fake) as runtime:
            await services.serve(settings, runtime)

    _run(main)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def prompts(ctx: typer.Context) -> None:
    """Prompt versions: sync | list | show | diff | use | rollback | ab | history (see `help`)."""
    words = list(ctx.args)
    if words in ([], ["help"], ["--help"], ["-h"]):  # no database needed to say how to ask
        typer.echo(PROMPTS_USAGE)
        raise typer.Exit(0 if words else 2)
    settings = _with_prompts(_settings())

    from bots.chat_actions import run_admin  # the admin commands: not loaded by a chat's start

    async def main() -> int:
        async with _opened(settings) as runtime:
            if words == ["sync"]:
                count = len(runtime.assistant.versions.catalog.files)
                typer.echo(f"{count} prompt versions in {settings.prompts_dir} are in the store")
                return 0
            context = CommandContext(
                actor=Actor(platform="cli", user_id=getpass.getuser()), surface="cli"
            )
            result = await run_admin(runtime.commands, shlex.join(["prompt", *words]), context)
            typer.echo(result.text, err=not result.ok)
            return 0 if result.ok else 1

    raise typer.Exit(_run(main))


BUDGET_USAGE = (
    "Usage: assistant budget ACTION ...  (the admin grammar, from a shell)\n"
    + "\n".join("  " + line.strip() for line in USAGE.splitlines() if line.startswith("  budget "))
)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def budget(ctx: typer.Context) -> None:
    """Spending limits: show (every budget and what is spent) | set USD [--scope ...]
    [--target PLACE] [--period day|month]."""
    words = list(ctx.args)
    if words in ([], ["help"], ["--help"], ["-h"]):
        typer.echo(BUDGET_USAGE)
        raise typer.Exit(0 if words else 2)
    settings = _with_prompts(_settings())

    from bots.chat_actions import run_admin

    async def main() -> int:
        async with _opened(settings) as runtime:
            context = CommandContext(
                actor=Actor(platform="cli", user_id=getpass.getuser()), surface="cli"
            )
            result = await run_admin(runtime.commands, shlex.join(["budget", *words]), context)
            typer.echo(result.text, err=not result.ok)
            return 0 if result.ok else 1

    raise typer.Exit(_run(main))


@eval_app.command("run")
def eval_run(
    name: Annotated[str | None, typer.Argument(help="Prompt to evaluate (default: all).")] = None,
    version: Annotated[int | None, typer.Argument(help="Its version (default: latest).")] = None,
    compare: Annotated[
        int | None, typer.Option(help="Compare with this version (default: the one in use).")
    ] = None,
    fake: Annotated[bool, typer.Option(help="Offline, against the bundled fake model.")] = False,
) -> None:
    """Run eval suites; exits 1 on a regression or a suite below its threshold (a CI gate)."""
    settings = _settings()
    if not fake and settings.openai_api_key is None and settings.openai_base_url is None:
        _ERR.print(NO_MODEL, style="yellow", highlight=False, markup=False)
        raise typer.Exit(2)
    settings = _with_prompts(settings)
    console = _output()

    from bots.cli_evals import eval_plan, run_plan  # this command's tables and progress

    async def main() -> int:
        async with _opened(settings, fake=fake, knowledge=True) as runtime:
            plan = eval_plan(runtime, name, version, compare)
            outcomes = await run_plan(runtime.runner, runtime, plan, console)
        return 1 if any(o.regressed or o.below_threshold for o in outcomes) else 0

    raise typer.Exit(_run(main))


@eval_app.command("from-feedback")
def eval_from_feedback(
    name: Annotated[str, typer.Argument(help="The prompt whose 👎 answers to turn into cases.")],
) -> None:
    """Print candidate eval cases (YAML) made from answers users rated 👎."""
    from assistant.evals.feedback import candidate_cases  # this command's alone

    settings = _settings()

    async def main() -> str:
        return await _with_store(settings, lambda store: candidate_cases(store, name))

    typer.echo(_run(main), nl=False)


@export_app.command("finetune")
def export_finetune(
    output: Annotated[Path, typer.Option(help="Where to write the JSONL.")] = Path(
        "finetune.jsonl"
    ),
) -> None:
    """Write conversations whose answers users rated 👍 as chat fine-tuning JSONL."""
    from assistant.evals.feedback import finetune_lines  # this command's alone

    settings = _settings()

    _require_folder("--output", output)

    async def write(store: Store) -> int:
        count = 0
        with output.open("w", encoding="utf-8") as sink:
            async for line in finetune_lines(store):
                sink.write(line + "\n")
                count += 1
        return count

    async def main() -> int:
        return await _with_store(settings, write)

    typer.echo(f"wrote {_run(main)} examples to {output}")


def _cli_actor() -> str:
    return f"cli:{getpass.getuser()}"


_FAKE_HELP = "Embed with the bundled fake model's vectors (offline)."


@knowledge_app.command("add")
def knowledge_add(
    name: Annotated[str, typer.Argument(help="The collection's name: lowercase, digits, - or _.")],
    path: Annotated[Path, typer.Argument(help="The folder of documents (md, txt, html, pdf).")],
    link: Annotated[
        str | None, typer.Option(help="Where its documents can be read: a base URL.")
    ] = None,
    description: Annotated[str, typer.Option(help="What the collection holds.")] = "",
    sync: Annotated[bool, typer.Option(help="Index it now.")] = True,
    fake: Annotated[bool, typer.Option(help=_FAKE_HELP)] = False,
) -> None:
    """Add a collection (or change its folder and link), then index it."""
    from assistant.knowledge.catalog import check_name
    from bots.cli_knowledge import sync_with_progress

    if not path.is_dir():
        _ERR.print(f"error: {path} is not a folder", style="bold red", markup=False)
        raise typer.Exit(2)
    settings = _with_prompts(_settings())
    console = _output()

    async def main() -> int:
        check_name(name)  # a ValueError: one red line
        async with _opened(settings, fake=fake) as runtime:
            store = runtime.knowledge.store
            info = await store.add_collection(
                name,
                str(path.resolve()),
                link=link,
                description=description,
                origin="cli",
                actor=_cli_actor(),
                surface="cli",
            )
            console.print(f"collection {name}: {info.path}", highlight=False, markup=False)
            if sync:
                done = await sync_with_progress(runtime.knowledge, [info], console)
                return 1 if any(isinstance(d, Exception) for d in done) else 0
            return 0

    raise typer.Exit(_run(main))


@knowledge_app.command("sync")
def knowledge_sync(
    name: Annotated[str | None, typer.Argument(help="One collection (default: all).")] = None,
    fake: Annotated[bool, typer.Option(help=_FAKE_HELP)] = False,
) -> None:
    """Index what changed: knowledge.yaml's collections are created first. Only passages whose
    text changed are embedded again."""
    from assistant.knowledge.catalog import load_catalog
    from assistant.knowledge.sync import adopt_declared
    from bots.cli_knowledge import sync_with_progress

    settings = _with_prompts(_settings())
    console = _output()

    async def main() -> int:
        async with _opened(settings, fake=fake) as runtime:
            declared = load_catalog(settings.prompts_dir)
            await adopt_declared(runtime.store, declared, actor=_cli_actor())
            store = runtime.knowledge.store
            collections = await store.collections()
            if name is not None:
                collections = [c for c in collections if c.name == name]
                if not collections:
                    _ERR.print(f"error: no collection named {name!r}", style="bold red")
                    return 2
            if not collections:
                console.print("No collections: add one with `assistant knowledge add NAME PATH`.")
            done = await sync_with_progress(runtime.knowledge, collections, console)
            return 1 if any(isinstance(d, Exception) for d in done) else 0

    raise typer.Exit(_run(main))


@knowledge_app.command("list")
def knowledge_list() -> None:
    """Every collection: its size, its vectors, and where it is searched."""
    from bots.cli_knowledge import collections_table

    settings = _settings()
    console = _output()

    async def main(store: Store) -> None:
        places: dict[str, list[str]] = {}
        for collection, scope in await store.knowledge.bindings():
            places.setdefault(collection, []).append(scope.describe())
        collections = await store.knowledge.collections()
        if not collections:
            console.print("No collections: add one with `assistant knowledge add NAME PATH`.")
            return
        console.print(collections_table(collections, places))

    _run(lambda: _with_store(settings, main))


@knowledge_app.command("show")
def knowledge_show(
    name: Annotated[str, typer.Argument(help="The collection.")],
) -> None:
    """One collection: its folder, link, vectors, places and recent changes."""
    settings = _settings()

    async def main(store: Store) -> int:
        info = await store.knowledge.collection(name)
        if info is None:
            _ERR.print(f"error: no collection named {name!r}", style="bold red", markup=False)
            return 2
        places = [s.describe() for n, s in await store.knowledge.bindings(name) if n == name]
        synced = f"{info.synced_at:%Y-%m-%d %H:%M} UTC" if info.synced_at else "never"
        lines = [
            f"{info.name}: {info.description}" if info.description else info.name,
            f"  folder:    {info.path}",
            f"  link:      {info.link or '-'}",
            f"  documents: {info.documents}, passages: {info.chunks}",
            f"  embedded:  {info.embedded} passages",
            f"  vectors:   {info.embedding_model or 'none (keyword search only)'}",
            f"  synced:    {synced}",
            f"  searched:  {', '.join(places) or 'nowhere (bind it: knowledge use NAME)'}",
        ]
        typer.echo("\n".join(lines))
        return 0

    raise typer.Exit(_run(lambda: _with_store(settings, main)))


@knowledge_app.command("search")
def knowledge_search(
    query: Annotated[list[str], typer.Argument(help="The words to look for.")],
    collection: Annotated[
        list[str] | None, typer.Option(help="Search this collection (repeat; default: all).")
    ] = None,
    fake: Annotated[bool, typer.Option(help=_FAKE_HELP)] = False,
) -> None:
    """Search as the assistant's tool does, with each side's rank (keyword, vector)."""
    from bots.cli_knowledge import hits_table

    settings = _with_prompts(_settings())
    console = _output()

    async def main() -> int:
        async with _opened(settings, fake=fake) as runtime:
            every = await runtime.knowledge.store.collections()
            chosen = [c for c in every if not collection or c.name in collection]
            if collection and len(chosen) != len(set(collection)):
                missing = sorted(set(collection) - {c.name for c in chosen})
                _ERR.print(f"error: no collection named {', '.join(missing)}", style="bold red")
                return 2
            calls: list[CallRecord] = []
            outcome = await runtime.knowledge.search(
                " ".join(query), collections=chosen, account=calls.append
            )
            await runtime.knowledge.record(calls)
            if outcome.note:
                console.print(outcome.note, style="yellow", highlight=False, markup=False)
            if not outcome.hits:
                console.print("Nothing matches.")
                return 1
            console.print(hits_table(outcome))
            return 0

    raise typer.Exit(_run(main))


@knowledge_app.command("remove")
def knowledge_remove(
    name: Annotated[str, typer.Argument(help="The collection.")],
) -> None:
    """Remove a collection: its passages, vectors and bindings (the folder is left alone)."""
    settings = _settings()

    async def main(store: Store) -> int:
        removed = await store.knowledge.remove_collection(name, actor=_cli_actor(), surface="cli")
        if not removed:
            _ERR.print(f"error: no collection named {name!r}", style="bold red", markup=False)
            return 2
        typer.echo(f"removed collection {name} (its folder is untouched)")
        return 0

    raise typer.Exit(_run(lambda: _with_store(settings, main)))


@app.command()
def report(
    period: Annotated[str, typer.Argument(help="24h, 7d or 30d.")] = "24h",
    chart: Annotated[
        Path | None, typer.Option(help="Also write the chart (PNG) to this file.")
    ] = None,
    fake: Annotated[
        bool,
        typer.Option(help="Report on the traffic of the bundled fake model (chat --fake)."),
    ] = False,
) -> None:
    """Print what the assistant cost, how fast and how good it was over a period."""
    from assistant.reporting.figures import Period, build_report  # the commands that report
    from assistant.reporting.wording import report_text

    settings = _settings()
    if chart is not None:
        _require_folder("--chart", chart)

    async def build(store: Store) -> str:
        found = await build_report(
            store,
            Period.last(period, now=datetime.now(UTC)),
            daily_budget_usd=settings.daily_budget_usd,
            fake=fake,
        )
        if chart is not None:
            from assistant.reporting.chart import chart_png  # matplotlib: ~1 s to import

            chart.write_bytes(chart_png(found))
        return report_text(found)

    async def main() -> str:
        return await _with_store(settings, build)

    text = _run(main)
    if sys.stdout.isatty():
        from rich.markdown import Markdown  # and pygments: a terminal's report only

        Console(soft_wrap=True).print(Markdown(text))
    else:  # the Markdown itself: rendered, it is laid out (and padded) to a width
        typer.echo(text)


async def _with_store(settings: Settings, work: Callable[[Store], Awaitable[T]]) -> T:
    store = Store.connect(settings.database_url)
    try:
        await migrate.upgrade(store.engine)
        return await work(store)
    finally:
        await store.close()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration (alembic upgrade head)."""
    settings = _settings()

    async def main() -> None:
        store = Store.connect(settings.database_url)
        try:
            await migrate.upgrade(store.engine)
        finally:
            await store.close()

    _run(main)
    typer.echo("database is up to date")


@app.command()
def doctor(
    fake: Annotated[
        str | None,
        typer.Option(
            help=f"Examine the bundled fake server instead, behaving as one of: "
            f"{', '.join(PERSONALITIES)}.",
            callback=lambda like: like if like is None else _known_server(like),
        ),
    ] = None,
) -> None:
    """Probe the configured model server: what it supports, and what the assistant does about
    each gap. Exits 1 on a blocker, 2 when the server cannot be reached."""
    from assistant.testing import FakeLlm
    from bots.cli_doctor import examine  # this command's alone

    logging.basicConfig(level=logging.ERROR)  # what the probes run into, the table says
    settings = _settings()
    if fake is None and settings.openai_api_key is None and settings.openai_base_url is None:
        _ERR.print(NO_MODEL, style="yellow", highlight=False, markup=False)
        raise typer.Exit(2)
    settings = _with_prompts(settings)

    async def main() -> int:
        served = (settings.assistant_model,)  # and no other name, as most real servers do
        fake_server = FakeLlm(like=fake, models=served, strict_models=True) if fake else None
        server = await fake_server.start() if fake_server else None
        try:
            checkup = open_doctor(settings, base_url=server.base_url if server else None)
            return await examine(checkup, _output(), _ERR)
        finally:
            if server is not None:
                await server.stop()

    raise typer.Exit(_run(main))


def _known_server(like: str) -> str:
    if like not in PERSONALITIES:
        names = ", ".join(PERSONALITIES)
        raise typer.BadParameter(f"{like!r} is not a server the fake knows; choose one of: {names}")
    return like


@app.command("fake-llm")
def fake_llm(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 to listen on.")] = 8808,
    like: Annotated[
        str,
        typer.Option(
            help=f"Behave as this server does: {', '.join(PERSONALITIES)}.",
            callback=_known_server,
        ),
    ] = "openai",
    context_tokens: Annotated[
        int | None,
        typer.Option(help="Context window in tokens (default: that server's usual one).", min=1),
    ] = None,
) -> None:
    """Serve the fake OpenAI-compatible API (for demos and manual testing)."""
    from assistant.testing import FakeLlm

    async def main() -> None:
        fake = FakeLlm(like=like, context_tokens=context_tokens)
        try:
            server = await fake.start(port=port)
        except OSError as exc:  # the port is taken, or not ours to use
            await fake.stop()
            raise ValueError(
                f"--port {port}: cannot listen there ({exc.strerror or exc}); choose another"
            ) from None
        typer.echo(
            f"fake OpenAI-compatible API on {server.base_url}, behaving as {like} "
            f"({server.context_tokens}-token context; Ctrl-C to stop)"
        )
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    _run(main)
