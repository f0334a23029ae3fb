"""The `assistant` command as a user runs it: a real process, input through a pipe."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.config import SHIPPED_PROMPTS_NOTE
from tests.conftest import write_prompt

REPO = Path(__file__).resolve().parents[1]
ASSISTANT = [str(Path(sys.executable).parent / "assistant")]  # the installed command


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A clean environment: no API key, a fresh database, the shipped prompts."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SLACK_"))}
    clean.update(
        DATABASE_URL=f"sqlite:///{tmp_path}/chat.db",
        PROMPTS_DIR=str(REPO / "prompts"),
    )
    return clean


def assistant(
    *args: str, env: dict[str, str], stdin: str = "", cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ASSISTANT, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_fake_chat_answers_uses_tools_and_shows_cost(env, tmp_path):
    result = assistant(
        "chat", "--fake", env=env, cwd=tmp_path, stdin="hello there\nwhat is 6*7?\n/cost\n"
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "New conversation 'default'" in out
    assert "You said: hello there" in out
    assert "[calculator" in out and "42" in out
    *_, cost_line, _ = out.splitlines()  # /cost answers; then the prompt that met end of input
    assert cost_line.startswith("you> ")
    assert "prompt" in cost_line and "$" in cost_line and "assistant@4 on fake" in cost_line
    assert "Traceback" not in result.stderr


def test_chat_resumes_the_same_conversation_on_the_next_run(env, tmp_path):
    assistant("chat", "--fake", env=env, cwd=tmp_path, stdin="remember the llama\n")
    again = assistant("chat", "--fake", env=env, cwd=tmp_path, stdin="what did I say?\n")
    assert "Resuming conversation 'default' (2 messages)" in again.stdout
    other = assistant("chat", "--fake", "--conversation", "other", env=env, cwd=tmp_path)
    assert "New conversation 'other'" in other.stdout


def test_show_cost_prints_figures_after_each_reply(env, tmp_path):
    result = assistant("chat", "--fake", "--show-cost", env=env, cwd=tmp_path, stdin="a\nb\n")
    assert result.stdout.count("completion tokens") == 2


def test_without_a_model_it_explains_how_to_configure_one(env, tmp_path):
    result = assistant("chat", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "OPENAI_API_KEY" in result.stderr and "OPENAI_BASE_URL" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2
    assert "Traceback" not in result.stderr


def test_a_malformed_prompt_file_names_the_file_and_field(env, tmp_path):
    prompts = tmp_path / "prompts"
    path = write_prompt(prompts, params={"temperature": "hot"})
    env["PROMPTS_DIR"] = str(prompts)
    result = assistant("chat", "--fake", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert str(path) in result.stderr and "params.temperature" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_prompts_dir_names_the_folder_it_looked_for(env, tmp_path):
    env["PROMPTS_DIR"] = "my-prompts"  # relative: to the folder the command runs in
    result = assistant("chat", "--fake", env=env, cwd=tmp_path)
    line = one_line_error(result, "error: PROMPTS_DIR: no such folder: ")
    assert line.endswith(
        f"{tmp_path}/my-prompts ('my-prompts' is relative to the current folder, {tmp_path})"
    )


def test_chat_from_any_folder_says_which_prompts_and_database_it_uses(env, tmp_path):
    """The installed command (this checkout, installed editable) in a folder with no prompts/
    and no settings: the checkout's prompts answer, the database is ./data of this folder."""
    del env["PROMPTS_DIR"], env["DATABASE_URL"]
    result = assistant("chat", "--fake", env=env, cwd=tmp_path, stdin="hello there\n")
    assert result.returncode == 0, result.stderr
    assert "You said: hello there" in result.stdout
    database = tmp_path / "data" / "assistant.db"
    assert result.stderr.splitlines()[:2] == [SHIPPED_PROMPTS_NOTE, f"database: {database}"]
    assert database.stat().st_size > 0
    synced = assistant("prompts", "sync", env=env, cwd=tmp_path)
    assert f"prompt versions in {REPO / 'prompts'} are in the store" in synced.stdout


def test_piped_output_is_neither_wrapped_nor_cut(env, tmp_path):
    name = "a-prompt-name-that-takes-most-of-a-line-of-eighty-columns"
    write_prompt(tmp_path / "prompts", name=name)
    env["PROMPTS_DIR"] = str(tmp_path / "prompts")
    assistant("chat", "--fake", env=env, cwd=tmp_path, stdin="hello\n")
    result = assistant("report", "--fake", env=env, cwd=tmp_path)  # stdout is a pipe
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if name in line]
    assert line.startswith(f"- {name}@1: 1 call, ") and len(line) > 80  # whole, on one line
    assert all(line == line.rstrip() for line in result.stdout.splitlines())


def test_a_malformed_setting_is_named(env, tmp_path):
    env["DATABASE_URL"] = "mysql://root@localhost/db"
    result = assistant("db", "upgrade", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: DATABASE_URL:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_db_upgrade_creates_the_database(env, tmp_path):
    env["DATABASE_URL"] = f"sqlite:///{tmp_path}/nested/dir/new.db"
    result = assistant("db", "upgrade", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "nested" / "dir" / "new.db").exists()


POSTGRES = os.environ.get("ASSISTANT_TEST_POSTGRES_URL")


def one_line_error(result: subprocess.CompletedProcess[str], starts: str) -> str:
    """What a mistake in a setting or an option gets: exit 2 and one line, no traceback."""
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(starts), line
    return line


@pytest.mark.skipif(POSTGRES is None, reason="set ASSISTANT_TEST_POSTGRES_URL")
@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda url: url.rsplit("/", 1)[0] + "/no_such_database", 'database "no_such_database"'),
        (lambda url: url.replace("postgres@", "no_such_role:secret@"), 'role "no_such_role"'),
        (lambda url: url.replace(":5432", ":1"), "Connect call failed"),
    ],
    ids=["unknown database", "unknown role", "refused"],
)
def test_a_database_that_cannot_be_used_is_one_line_naming_the_setting(env, tmp_path, change, says):
    assert POSTGRES is not None
    env["DATABASE_URL"] = change(POSTGRES)
    result = assistant("db", "upgrade", env=env, cwd=tmp_path)
    line = one_line_error(result, "error: DATABASE_URL: cannot use the database (")
    assert says in line and "secret" not in line


def test_a_base_url_that_is_not_a_url_is_refused_at_start(env, tmp_path):
    env["OPENAI_BASE_URL"] = "notaurl"
    one_line_error(assistant("chat", env=env, cwd=tmp_path), "error: OPENAI_BASE_URL: expected")


def test_fake_llm_on_a_port_in_use_says_so(env, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = assistant("fake-llm", "--port", str(port), env=env, cwd=tmp_path)
    one_line_error(result, f"error: --port {port}: cannot listen there")


def test_export_into_a_missing_folder_says_which(env, tmp_path):
    result = assistant(
        "export",
        "finetune",
        "--output",
        str(tmp_path / "nowhere" / "x.jsonl"),
        env=env,
        cwd=tmp_path,
    )
    one_line_error(result, f"error: --output {tmp_path}/nowhere/x.jsonl: the folder")


def test_a_report_chart_into_a_missing_folder_says_which(env, tmp_path):
    chart = tmp_path / "nowhere" / "report.png"
    result = assistant("report", "--chart", str(chart), env=env, cwd=tmp_path)
    one_line_error(result, f"error: --chart {chart}: the folder {chart.parent} does not exist")


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["chat"],
        ["run"],
        ["prompts"],
        ["eval"],
        ["eval", "run"],
        ["eval", "from-feedback"],
        ["export", "finetune"],
        ["report"],
        ["db", "upgrade"],
        ["fake-llm"],
        ["doctor"],
    ],
    ids=lambda words: " ".join(words) or "assistant",
)
def test_every_command_explains_itself_with_help_and_no_setup(env, tmp_path, command):
    env["PROMPTS_DIR"] = str(tmp_path / "no-prompts-here")  # help needs no configuration
    result = assistant(*command, "--help", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_prompts_help_lists_every_action_including_sync(env, tmp_path):
    result = assistant("prompts", "help", env=env, cwd=tmp_path)
    assert result.returncode == 0
    actions = ["sync", "list", "show", "diff", "use", "rollback", "ab", "history"]
    assert all(f"  prompts {action}" in result.stdout for action in actions)
