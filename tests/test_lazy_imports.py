"""Each process loads only the libraries of what it serves: a chart's matplotlib, Discord's and
Slack's clients stay out of a process that does not use them (tens of MB each, and seconds)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.store import Store, migrate
from tests.conftest import write_prompt
from tests.test_cli import ASSISTANT, REPO, one_line_error

SURFACES = ("matplotlib", "discord", "slack_bolt", "slack_sdk")


def loaded_after(code: str, *, cwd: Path, stdin: str = "") -> set[str]:
    """The top-level packages a fresh interpreter holds after running `code`."""
    listing = "print('MODULES', *sorted({m.split('.')[0] for m in sys.modules}))"
    probe = f"{code}\nimport sys\nprint()\n{listing}"  # after the chat's prompt, a line of its own
    result = subprocess.run(
        [sys.executable, "-c", probe],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        check=True,
    )
    [line] = [line for line in result.stdout.splitlines() if line.startswith("MODULES ")]
    return set(line.split()[1:])


def test_the_terminal_chat_loads_no_platform_and_no_chart(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/chat.db")
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROMPTS_DIR", str(REPO / "prompts"))
    chat = (
        "import sys\nfrom bots.cli import app\n"
        "try:\n    app(['chat', '--fake'], prog_name='assistant')\nexcept SystemExit:\n    pass"
    )
    loaded = loaded_after(chat, cwd=tmp_path, stdin="hello\n/quit\n")
    assert "openai" in loaded  # it did start and answer
    assert not loaded & set(SURFACES)
    assert "opentelemetry" not in loaded  # no OTLP endpoint: tracing's SDK stays unloaded


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("bots.cli", SURFACES),
        ("bots.services", SURFACES),  # `run`: each platform's module only once it is served
        ("bots.slack_app", ("discord", "matplotlib")),
        ("bots.discord_app", ("slack_bolt", "slack_sdk", "matplotlib")),
        ("assistant.runtime", (*SURFACES, "assistant.doctor", "opentelemetry")),
    ],
)
def test_importing_a_module_loads_none_of_what_it_does_not_use(module, absent, tmp_path):
    probe = (
        f"import {module}, sys\nprint(' '.join(m for m in {list(absent)!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    assert result.stdout.split() == []


def test_the_chart_module_leaves_matplotlib_until_it_draws(tmp_path):
    probe = "import sys\nimport assistant.reporting.chart\nprint('matplotlib' in sys.modules)\n"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    assert result.stdout.strip() == "False"


# What `assistant chat` needs only once a line is typed: it loads while the prompt waits.
DEFERRED = (
    "openai",
    "aiohttp",
    "alembic",
    "tiktoken",
    "jsonschema",
    "assistant.engine",
    "assistant.llm",
)


def test_the_chat_prompt_shows_before_the_model_client_and_the_tokenizer_load(tmp_path):
    """The greeting and the prompt come from the store alone (the database at the newest
    migration, as on every start after the first); the rest is imported behind the prompt."""
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/chat.db", "PROMPTS_DIR": str(REPO / "prompts")}
    first = subprocess.run(
        [*ASSISTANT, "chat", "--fake"],
        input="hello\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**_clean_env(), **env},
        timeout=300,
        check=True,
    )
    assert "You said: hello" in first.stdout
    names = f"m for m in sys.modules if m.split('.')[0] in {DEFERRED!r} or m in {DEFERRED!r}"
    listing = f"print('MODULES', *sorted({names}))"
    probe = (
        "import asyncio, sys\n"
        "from bots.cli import _chat_opening, _settings, _with_prompts\n"
        "from bots.terminal import TerminalChat\n"
        "from rich.console import Console\n"
        "from assistant.turns import Actor, ConversationRef\n"
        "async def main():\n"
        "    async with _chat_opening(_with_prompts(_settings()), fake=True) as opening:\n"
        "        ref = ConversationRef(platform='terminal', channel='x', thread='default')\n"
        "        print('GREETING', await opening.history_length(ref))\n"
        f"        {listing}\n"
        "        await opening.start()\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**_clean_env(), **env},
        timeout=300,
        check=True,
    )
    [line] = [line for line in result.stdout.splitlines() if line.startswith("MODULES")]
    assert line.split()[1:] == []
    assert "GREETING 0" in result.stdout


def test_a_bad_prompt_file_found_behind_the_prompt_is_still_one_line(tmp_path):
    """The prompts load while the prompt waits: a bad file ends the chat with one red line
    naming it and exit code 2, whether the user typed something, quit, or closed the input."""
    prompts = tmp_path / "prompts"
    write_prompt(prompts, params={"temperature": "hot"})
    env = {
        **_clean_env(),
        "DATABASE_URL": f"sqlite:///{tmp_path}/c.db",
        "PROMPTS_DIR": str(prompts),
    }
    for typed in ("", "/quit\n", "hello\n"):
        result = subprocess.run(
            [*ASSISTANT, "chat", "--fake"],
            input=typed,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=300,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        database, error = result.stderr.strip().splitlines()
        assert database.startswith("database: ")
        assert error.startswith("error: ") and "params.temperature" in error
        assert "Traceback" not in result.stderr


def test_a_database_that_cannot_be_opened_is_said_before_the_prompt(tmp_path):
    env = {
        **_clean_env(),
        "DATABASE_URL": f"sqlite:///{tmp_path}",  # a folder: SQLite cannot open it
        "PROMPTS_DIR": str(REPO / "prompts"),
    }
    result = subprocess.run(
        [*ASSISTANT, "chat", "--fake"],
        input="hello\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
        check=False,
    )
    assert "you> " not in result.stdout
    result.stderr = "\n".join(result.stderr.splitlines()[1:])  # after the database line
    one_line_error(result, "error: DATABASE_URL: cannot use the database (")


def test_the_head_revision_read_from_the_files_is_alembics():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", migrate.MIGRATIONS_DIR)
    assert [migrate.head_revision()] == list(ScriptDirectory.from_config(config).get_heads())


def test_a_database_at_head_is_not_migrated_again_and_alembic_stays_unloaded(tmp_path):
    url = f"sqlite:///{tmp_path}/m.db"
    asyncio.run(_upgrade_twice(url))
    probe = (
        "import asyncio, sys\n"
        "from assistant.store import Store, migrate\n"
        f"store = Store.connect({url!r})\n"
        "async def main():\n"
        "    await migrate.upgrade(store.engine)\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
        "print('alembic' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    assert result.stdout.strip() == "False"


async def _upgrade_twice(url: str) -> None:
    store = Store.connect(url)
    try:
        await migrate.upgrade(store.engine)  # a new database: alembic creates the tables
        await migrate.upgrade(store.engine)  # at head: one query
        await migrate.check(store.engine)
    finally:
        await store.close()


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SLACK_"))}
