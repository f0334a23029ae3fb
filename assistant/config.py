"""Settings read from the environment and `.env`, under the names of the interface contract."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL

from assistant.access import AccessPolicy, RateLimit, check_ids
from assistant.store.database import async_database_url

DEFAULT_DATABASE_URL = "sqlite:///./data/assistant.db"
DEFAULT_PROMPTS_DIR = Path("./prompts")
SHIPPED_PROMPTS_NOTE = (
    "prompts: the examples shipped with the package (set PROMPTS_DIR to use your own)"
)


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it and says what is expected."""


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _platform_ids(value: tuple[str, ...]) -> tuple[str, ...]:
    for item in value:
        platform, _, ident = item.partition(":")
        if not platform or not ident:
            raise ValueError(f"expected platform:id pairs like 'slack:U0123', got {item!r}")
    return value


_ACCESS_LISTS = (
    "allowed_users",
    "blocked_users",
    "allowed_roles",
    "blocked_roles",
    "allowed_channels",
    "blocked_channels",
)


class Settings(BaseSettings):
    """Every knob an operator can turn; secrets are SecretStr so they never print."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, env_ignore_empty=True
    )

    database_url: str = DEFAULT_DATABASE_URL
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    assistant_model: str = "gpt-4o-mini"
    # knowledge collections' vectors (`/v1/embeddings`); unset: keyword search only
    embedding_model: str | None = None
    prompts_dir: Path = DEFAULT_PROMPTS_DIR
    default_prompt: str = "assistant"
    admin_users: Annotated[tuple[str, ...], NoDecode] = ()
    # who may talk to the assistant (see docs/operations.md, "Who may talk to it")
    allowed_users: Annotated[tuple[str, ...], NoDecode] = ()
    blocked_users: Annotated[tuple[str, ...], NoDecode] = ()
    allowed_roles: Annotated[tuple[str, ...], NoDecode] = ()  # Discord's alone
    blocked_roles: Annotated[tuple[str, ...], NoDecode] = ()
    allowed_channels: Annotated[tuple[str, ...], NoDecode] = ()
    blocked_channels: Annotated[tuple[str, ...], NoDecode] = ()
    allow_dms: bool = True
    user_rate_limit: str | None = None  # "20/hour"; unset: none
    channel_rate_limit: str | None = None

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_port: int = Field(default=3000, ge=1, le=65535)
    slack_api_url: str = "https://slack.com/api/"
    # /metrics, /healthz, /readyz on a port of their own; unset: on SLACK_PORT in HTTP mode,
    # nowhere otherwise (docs/operations.md, "Metrics")
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    discord_token: SecretStr | None = None
    discord_api_url: str | None = None
    discord_gateway_url: str | None = None
    discord_guild_id: int | None = Field(default=None, gt=0)
    discord_sharded: bool = False

    report_channels: Annotated[tuple[str, ...], NoDecode] = ()
    report_cron: str = "0 9 * * *"
    eval_cron: str = "0 3 * * *"
    knowledge_cron: str = "*/30 * * * *"  # knowledge.yaml's collections re-synced (the leader)
    daily_budget_usd: float | None = Field(default=None, ge=0)

    pricing_file: Path | None = None
    models_file: Path | None = None  # which parameters each model takes, over the bundled table
    # model calls at once per process (queued beyond): 1 for a single-slot server (llama.cpp
    # cuts the running request when another arrives)
    llm_max_concurrency: int | None = Field(default=None, ge=1, le=10_000)
    eval_concurrency: int = Field(default=4, ge=1, le=256)
    llm_first_token_timeout: float = Field(default=30.0, gt=0)
    llm_idle_timeout: float = Field(default=30.0, gt=0)
    llm_total_timeout: float = Field(default=180.0, gt=0)
    llm_max_retries: int = Field(default=2, ge=0, le=10)
    tool_timeout: float = Field(default=15.0, gt=0)
    # files a user sends with a message (docs/attachments.md): the largest one fetched (5 MiB:
    # every major provider's per-image limit, Anthropic's the lowest) and how many per message
    attachment_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)
    attachment_max_count: int = Field(default=4, ge=0, le=20)
    # how long a tool that acts for the user waits for their Approve; no answer is a no
    approval_timeout: float = Field(default=120.0, gt=0, le=3600)
    max_tool_rounds: int = Field(default=5, ge=1, le=20)
    # how often a serving process says it is alive; three missed beats and another process
    # takes over the answers it owed
    worker_heartbeat_seconds: float = Field(default=10.0, ge=0.1, le=600)
    # `assistant run`'s processes sharing the HTTP port (`--workers` wins); unset: one per
    # usable core when Slack is served over HTTP, else one
    workers: int | None = Field(default=None, ge=1, le=256)
    # messages (the user's, the answer, a search's query) in trace spans; OpenTelemetry's own
    # OTEL_* settings are read by its SDK (docs/operations.md, "Traces")
    otel_capture_content: bool = False

    @field_validator("admin_users", "report_channels", *_ACCESS_LISTS, mode="before")
    @classmethod
    def _parse_csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator(*_ACCESS_LISTS)
    @classmethod
    def _check_access_ids(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        roles = info.field_name in ("allowed_roles", "blocked_roles")
        check_ids(value, platforms=("discord",) if roles else ("slack", "discord"))
        return value

    @field_validator("user_rate_limit", "channel_rate_limit")
    @classmethod
    def _check_rate(cls, value: str | None) -> str | None:
        if value is not None:
            RateLimit.parse(value)  # raises ValueError showing the expected form
        return value

    @model_validator(mode="after")
    def _check_metrics_port(self) -> Settings:
        """METRICS_PORT apart from SLACK_PORT when Slack's HTTP mode takes that one."""
        slack_http = self.slack_bot_token is not None and self.slack_app_token is None
        if slack_http and self.metrics_port == self.slack_port:
            raise ValueError(
                f"METRICS_PORT and SLACK_PORT are both {self.slack_port}; leave METRICS_PORT "
                "unset to serve /metrics on Slack's port, or choose another"
            )
        return self

    @model_validator(mode="after")
    def _check_access_overlaps(self) -> Settings:
        """An id both allowed and blocked, or an admin blocked, is a mistake to say at start:
        the rules would quietly pick one."""
        pairs = (
            ("ADMIN_USERS", self.admin_users, "BLOCKED_USERS", self.blocked_users),
            ("ALLOWED_USERS", self.allowed_users, "BLOCKED_USERS", self.blocked_users),
            ("ALLOWED_ROLES", self.allowed_roles, "BLOCKED_ROLES", self.blocked_roles),
            ("ALLOWED_CHANNELS", self.allowed_channels, "BLOCKED_CHANNELS", self.blocked_channels),
        )
        for first, ones, second, others in pairs:
            both = sorted(set(ones) & set(others))
            if both:
                raise ValueError(
                    f"{', '.join(both)} in both {first} and {second}; name each id in one"
                )
        return self

    def access_policy(self) -> AccessPolicy:
        """The rules the engine applies to every chat message."""
        return AccessPolicy(
            allowed_users=frozenset(self.allowed_users),
            blocked_users=frozenset(self.blocked_users),
            allowed_roles=frozenset(self.allowed_roles),
            blocked_roles=frozenset(self.blocked_roles),
            allowed_channels=frozenset(self.allowed_channels),
            blocked_channels=frozenset(self.blocked_channels),
            allow_dms=self.allow_dms,
            user_rate=RateLimit.parse(self.user_rate_limit) if self.user_rate_limit else None,
            channel_rate=(
                RateLimit.parse(self.channel_rate_limit) if self.channel_rate_limit else None
            ),
            admins=frozenset(self.admin_users),
        )

    @field_validator("admin_users", "report_channels")
    @classmethod
    def _check_platform_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _platform_ids(value)

    @field_validator("eval_cron", "report_cron", "knowledge_cron")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        from assistant.reporting.schedule import cron  # APScheduler: only when a cron is set

        cron(value)  # raises ValueError quoting the line
        return value

    @field_validator("openai_base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                "expected the server's URL, like http://localhost:11434/v1 or "
                "https://api.openai.com/v1"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        async_database_url(value)  # raises ValueError naming the accepted forms
        return value


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning pydantic's report into one line per bad setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = str(error["loc"][0]).upper() if error["loc"] else "settings"
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"{name}: {message}")
        raise ConfigError("; ".join(lines)) from None


@dataclass(frozen=True, kw_only=True)
class PromptsFolder:
    """The prompt folder a process reads, found once at start: a relative PROMPTS_DIR means
    the current folder's, and the operator is told when the package's examples stand in."""

    path: Path  # absolute
    shipped: bool  # the package's examples: PROMPTS_DIR unset and no ./prompts here


def shipped_prompts() -> Path | None:
    """The example prompts this installation carries: inside the package when installed from a
    wheel (the top-level prompts/ folder ships as assistant/example_prompts), the checkout's own
    prompts/ folder when it runs from one (an editable install: setuptools' editable finder
    cannot map a data folder that has no __init__.py)."""
    package = Path(__file__).resolve().parent
    if (package / "example_prompts").is_dir():
        return package / "example_prompts"
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "prompts").is_dir():
        return checkout / "prompts"
    return None


def find_prompts(settings: Settings) -> PromptsFolder:
    """The folder PROMPTS_DIR names, as an absolute path; the shipped examples when the setting
    is unset and the current folder has no `prompts`. ConfigError when there is no such folder,
    naming the absolute path it looked at."""
    chosen = settings.prompts_dir.expanduser()
    path = Path(os.path.abspath(chosen))
    if "prompts_dir" not in settings.model_fields_set and not os.path.lexists(path):
        examples = shipped_prompts()
        if examples is not None:
            return PromptsFolder(path=examples, shipped=True)
    if not path.is_dir():
        raise ConfigError(f"PROMPTS_DIR: {_prompts_problem(chosen, path)}")
    return PromptsFolder(path=path, shipped=False)


def _prompts_problem(chosen: Path, path: Path) -> str:
    """Why `path` cannot be read as the prompt folder, saying where a relative one was sought."""
    problem = "not a folder" if path.exists() else "no such folder"
    if chosen.is_absolute():
        return f"{problem}: {path}"
    return f"{problem}: {path} ('{chosen}' is relative to the current folder, {Path.cwd()})"


def database_location(url: str) -> str:
    """Where DATABASE_URL points, as it may be shown at start: a SQLite file as an absolute
    path (a relative one lives in the current folder), a server without user, password or
    query (which may hold a password too)."""
    parsed = async_database_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        return database if database.startswith("file:") else os.path.abspath(database)
    shown = URL.create(backend, host=parsed.host, port=parsed.port, database=parsed.database)
    return shown.render_as_string(hide_password=True)
