"""`tools.yaml`: the MCP servers an installation declares, beside its prompts.

```yaml
servers:
  files:                                   # its tools are named files.TOOL
    command: [npx, -y, "@modelcontextprotocol/server-filesystem", /srv/shared]
    env: {LOG_LEVEL: info}
    timeout: 20                            # seconds per call; default TOOL_TIMEOUT
    confirm: [write_file, move_file]       # these ask the user first
  tracker:
    url: https://mcp.example.com/mcp       # streamable HTTP
    headers: {Authorization: "Bearer ${TRACKER_TOKEN}"}
    confirm: true                          # every tool asks first
```

`${NAME}` in an env or header value is read from the process environment when the file is
loaded, so a token is never written in the file; those values never reach a log or an error.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from assistant.file_errors import describe, parse_yaml, read_text

FILE_NAME = "tools.yaml"
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
NAME_RULE = "1-32 lowercase letters, digits, '-' or '_', starting with a letter or digit"
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ToolsFileError(ValueError):
    """`tools.yaml` is malformed: the message names the file and the field."""


class _Server(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: list[str] | str | None = None
    args: list[str] = []
    env: dict[str, str] = {}
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = {}
    timeout: float | None = Field(default=None, gt=0, le=3600)
    confirm: bool | list[str] | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://\S+$", value):
            raise ValueError("expected an http(s) URL, like https://mcp.example.com/mcp")
        return value

    @model_validator(mode="after")
    def _one_transport(self) -> _Server:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either command (stdio) or url (streamable HTTP), not both")
        if self.url is not None and (self.args or self.env or self.cwd):
            raise ValueError("args, env and cwd are for a command; a url server takes headers")
        if self.command is not None and self.headers:
            raise ValueError("headers are for a url server; a command takes env")
        if self.command is not None and not _words(self.command):
            raise ValueError("the command is empty; name the program to run")
        return self


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    servers: dict[str, _Server] = {}

    @field_validator("servers")
    @classmethod
    def _check_names(cls, value: dict[str, _Server]) -> dict[str, _Server]:
        for name in value:
            if not NAME.fullmatch(name):
                raise ValueError(f"servers: {name!r} is not a server name: {NAME_RULE}")
        return value


@dataclass(frozen=True, kw_only=True)
class DeclaredServer:
    """One server as the file declares it, `${NAME}` references resolved (never printed)."""

    name: str
    command: tuple[str, ...] = ()  # program and arguments; empty for a URL server
    env: dict[str, str] = field(default_factory=dict, repr=False)
    cwd: Path | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    timeout: float | None = None  # None: TOOL_TIMEOUT
    confirm_all: bool | None = None  # `confirm: true|false`; None: each tool's annotations
    confirm_tools: frozenset[str] = frozenset()  # `confirm: [tool, ...]`

    @property
    def transport(self) -> str:
        return "stdio" if self.command else "streamable HTTP"

    @property
    def target(self) -> str:
        """Where it runs, fit for a log line: the program, or the URL without its query."""
        if self.command:
            return self.command[0]
        return (self.url or "").split("?", 1)[0]


def load_servers(prompts_dir: Path) -> list[DeclaredServer]:
    """The servers `PROMPTS_DIR/tools.yaml` declares; none when there is no file."""
    path = prompts_dir / FILE_NAME
    if not path.exists():
        return []
    text = read_text(path, max_bytes=1_000_000, error=ToolsFileError)
    raw = parse_yaml(text, path, error=ToolsFileError)
    if raw is None:
        return []
    try:
        parsed = _File.model_validate(raw)
    except ValidationError as exc:
        raise ToolsFileError(describe(path, exc, _File)) from None
    return [_declared(path, name, entry) for name, entry in parsed.servers.items()]


def tool_patterns(servers: Iterable[DeclaredServer]) -> list[str]:
    """`server.*` for each server: the names a prompt version or eval suite may use before
    the server has said which tools it has (`assistant.prompts.files.is_known_tool`)."""
    return [f"{server.name}.*" for server in servers]


def _declared(path: Path, name: str, entry: _Server) -> DeclaredServer:
    where = f"servers.{name}"
    confirm = entry.confirm
    return DeclaredServer(
        name=name,
        command=(*_words(entry.command), *entry.args) if entry.command is not None else (),
        env=_resolved(path, f"{where}.env", entry.env),
        cwd=(path.parent / entry.cwd).resolve() if entry.cwd else None,
        url=entry.url,
        headers=_resolved(path, f"{where}.headers", entry.headers),
        timeout=entry.timeout,
        confirm_all=confirm if isinstance(confirm, bool) else None,
        confirm_tools=_confirmed(path, name, confirm) if isinstance(confirm, list) else frozenset(),
    )


def _confirmed(path: Path, server: str, tools: list[str]) -> frozenset[str]:
    """The tools of `server` a `confirm:` list names, each as the server calls it: `write_file`
    or `files.write_file` alike (a name the list misreads would silently not ask)."""
    names = set()
    for tool in tools:
        owner, dot, remote = tool.rpartition(".")
        if dot and owner != server:
            raise ToolsFileError(
                f"{path}: field 'servers.{server}.confirm': {tool!r} is not a tool of server "
                f"{server}; write its name as {server}.TOOL or TOOL"
            )
        names.add(remote if dot else tool)
    return frozenset(names)


def _words(command: list[str] | str) -> list[str]:
    """A command as written: a list is taken as is, a string split the way a shell would."""
    if isinstance(command, list):
        return command
    try:
        return shlex.split(command)
    except ValueError:  # an unclosed quote: the whole string is the program
        return [command]


def _resolved(path: Path, where: str, values: dict[str, str]) -> dict[str, str]:
    """`values` with each `${NAME}` read from the environment. A missing variable is named
    (its value would be a secret; its name is not)."""
    resolved = {}
    for key, value in values.items():
        for variable in _REFERENCE.findall(value):
            if variable not in os.environ:
                raise ToolsFileError(
                    f"{path}: field '{where}.{key}': the environment has no {variable} "
                    f"(the value reads ${{{variable}}}); set it before starting"
                )
        resolved[key] = _REFERENCE.sub(lambda match: os.environ[match.group(1)], value)
    return resolved
