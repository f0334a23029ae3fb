"""Settings from the environment and `.env`, and the database URL forms users write."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from assistant.config import (
    ConfigError,
    Settings,
    database_location,
    find_prompts,
    load_settings,
    shipped_prompts,
)
from assistant.store.database import async_database_url


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the machine running the tests, and no stray `.env` is read."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.database_url == "sqlite:///./data/assistant.db"
    assert settings.assistant_model == "gpt-4o-mini"
    assert settings.prompts_dir == Path("./prompts")
    assert settings.default_prompt == "assistant"
    assert settings.admin_users == ()
    assert settings.slack_port == 3000
    assert settings.report_cron == "0 9 * * *"
    assert settings.eval_cron == "0 3 * * *"
    assert settings.openai_api_key is None
    assert settings.daily_budget_usd is None


def test_environment_variables_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://bot:pw@db:5432/assistant")
    monkeypatch.setenv("ASSISTANT_MODEL", "gpt-4.1-mini")
    monkeypatch.setenv("PROMPTS_DIR", "/srv/prompts")
    monkeypatch.setenv("DEFAULT_PROMPT", "support")
    monkeypatch.setenv("SLACK_PORT", "8080")
    monkeypatch.setenv("REPORT_CRON", "30 8 * * 1-5")
    monkeypatch.setenv("EVAL_CRON", "0 4 * * *")
    monkeypatch.setenv("DAILY_BUDGET_USD", "12.5")
    settings = load_settings()
    assert settings.database_url == "postgresql://bot:pw@db:5432/assistant"
    assert settings.assistant_model == "gpt-4.1-mini"
    assert settings.prompts_dir == Path("/srv/prompts")
    assert settings.default_prompt == "support"
    assert settings.slack_port == 8080
    assert settings.report_cron == "30 8 * * 1-5"
    assert settings.eval_cron == "0 4 * * *"
    assert settings.daily_budget_usd == 12.5


def test_admin_users_parse_to_a_tuple(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_USERS", "slack:U0123, discord:81234")
    assert load_settings().admin_users == ("slack:U0123", "discord:81234")


def test_dotenv_in_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "ASSISTANT_MODEL=gpt-4o\nSLACK_PORT=4000\nADMIN_USERS=slack:U9\n", encoding="utf-8"
    )
    settings = load_settings()
    assert settings.assistant_model == "gpt-4o"
    assert settings.slack_port == 4000
    assert settings.admin_users == ("slack:U9",)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SLACK_PORT", "abc"),
        ("ADMIN_USERS", "nocolon"),
        ("DATABASE_URL", "mysql://x"),
        ("DAILY_BUDGET_USD", "-1"),
    ],
)
def test_malformed_value_names_the_setting_on_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as excinfo:
        load_settings()
    message = str(excinfo.value)
    assert message.startswith(f"{name}:")
    assert "\n" not in message


def test_api_key_never_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-value")
    settings = load_settings()
    assert isinstance(settings.openai_api_key, SecretStr)
    assert settings.openai_api_key.get_secret_value() == "sk-very-secret-value"
    assert "sk-very-secret-value" not in repr(settings)
    assert "sk-very-secret-value" not in str(settings)


def test_sqlite_url_uses_aiosqlite() -> None:
    url = async_database_url("sqlite:///x.db")
    assert url.drivername == "sqlite+aiosqlite"
    assert url.database == "x.db"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_urls_use_asyncpg_and_keep_their_parts(scheme: str) -> None:
    url = async_database_url(f"{scheme}://bot:s3cret@db.internal:5433/assistant")
    assert url.drivername == "postgresql+asyncpg"
    assert (url.username, url.password) == ("bot", "s3cret")
    assert (url.host, url.port, url.database) == ("db.internal", 5433, "assistant")
    assert url.render_as_string(hide_password=False) == (
        "postgresql+asyncpg://bot:s3cret@db.internal:5433/assistant"
    )


@pytest.mark.parametrize("url", ["mysql://x", "sqlite://", "not a url", "sqlite:///:memory:"])
def test_unsupported_database_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="expected sqlite:///"):
        async_database_url(url)


def test_prompts_dir_unset_and_no_prompts_here_means_the_shipped_examples(tmp_path: Path) -> None:
    found = find_prompts(load_settings())
    assert found.shipped
    assert found.path == shipped_prompts()
    assert sorted(found.path.glob("*/*.yaml"))


def test_prompts_here_are_read_when_prompts_dir_is_unset(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    found = find_prompts(load_settings())
    assert (found.path, found.shipped) == (tmp_path / "prompts", False)


def test_a_relative_prompts_dir_is_made_absolute_from_the_current_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "mine").mkdir()
    monkeypatch.setenv("PROMPTS_DIR", "mine")
    found = find_prompts(load_settings())
    assert (found.path, found.shipped) == (tmp_path / "mine", False)


def test_a_missing_relative_prompts_dir_names_the_absolute_folder_and_the_current_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROMPTS_DIR", "prompts")  # set: never replaced by the examples
    with pytest.raises(ConfigError) as excinfo:
        find_prompts(load_settings())
    assert str(excinfo.value) == (
        f"PROMPTS_DIR: no such folder: {tmp_path}/prompts "
        f"('prompts' is relative to the current folder, {tmp_path})"
    )


def test_a_missing_absolute_prompts_dir_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROMPTS_DIR", str(tmp_path / "gone"))
    with pytest.raises(ConfigError, match=r"^PROMPTS_DIR: no such folder: /\S+/gone$"):
        find_prompts(load_settings())


def test_a_prompts_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "prompts").write_text("not a folder", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^PROMPTS_DIR: not a folder: .*relative to the current"):
        find_prompts(load_settings())


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:///./data/assistant.db", "{here}/data/assistant.db"),
        ("sqlite:///x.db", "{here}/x.db"),
        ("sqlite:////srv/assistant.db", "/srv/assistant.db"),
        (
            "postgresql://bot:s3cret@db.internal:5433/assistant",
            "postgresql://db.internal:5433/assistant",
        ),
        ("postgres://bot:s3cret@db/assistant?password=s3cret", "postgresql://db/assistant"),
    ],
)
def test_the_database_is_shown_as_a_path_or_without_credentials(
    tmp_path: Path, url: str, shown: str
) -> None:
    assert database_location(url) == shown.format(here=tmp_path)
