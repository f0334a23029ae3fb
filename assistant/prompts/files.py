"""Prompt files become immutable, content-hashed versions; a bad file is refused by name, field."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import yaml
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from assistant.contracts import check_schema
from assistant.file_errors import describe

# The variables a system prompt may use; anything else is refused when the file loads.
TEMPLATE_VARIABLES = frozenset({"today", "now", "platform", "user_name"})
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_jinja = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


class PromptFileError(ValueError):
    """A prompt file that cannot be used; the message names the file and the field."""


class Params(BaseModel):
    """Sampling parameters pinned per version, so a version answers the same way every time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)

    def request_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class Example(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    user: str = Field(min_length=1)
    assistant: str = Field(min_length=1)


class MemoryPolicy(BaseModel):
    """How much history goes to the model, and when older turns are folded into a summary."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    context_tokens: int = Field(default=6000, ge=256)
    summarize_over_tokens: int = Field(default=4000, ge=0, description="0 turns folding off")


class PromptVersion(BaseModel):
    """One released version of a prompt, exactly as its file says."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_NAME.pattern)
    version: int = Field(ge=1)
    description: str = ""
    model: str | None = None
    params: Params = Params()
    system: str = Field(min_length=1)
    examples: tuple[Example, ...] = ()
    tools: tuple[str, ...] = ()
    response_schema: dict[str, Any] | None = None
    memory: MemoryPolicy = MemoryPolicy()
    cache: bool = False

    _template: jinja2.Template = PrivateAttr()

    @model_validator(mode="after")
    def _compile_system(self) -> PromptVersion:
        try:
            parsed = _jinja.parse(self.system)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(
                f"system: template error on line {exc.lineno}: {exc.message}"
            ) from None
        if self.response_schema is not None:
            problem = check_schema(self.response_schema)
            if problem:
                raise ValueError(f"response_schema: not a valid JSON schema ({problem})")
        unknown = jinja2.meta.find_undeclared_variables(parsed) - TEMPLATE_VARIABLES
        if unknown:
            allowed = ", ".join(sorted(TEMPLATE_VARIABLES))
            raise ValueError(
                f"system: unknown variable {sorted(unknown)[0]!r} (allowed: {allowed})"
            )
        self._template = _jinja.from_string(self.system)
        return self

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    def render_system(self, *, now: datetime, platform: str, user_name: str) -> str:
        return self._template.render(
            today=now.date().isoformat(),
            now=now.isoformat(timespec="minutes"),
            platform=platform,
            user_name=user_name,
        )


@dataclass(frozen=True, kw_only=True)
class PromptFile:
    """A version together with where it came from and its content hash."""

    version: PromptVersion
    path: Path
    content_hash: str
    text: str


def load_prompt_file(path: Path, *, known_tools: Iterable[str] = ()) -> PromptFile:
    """Parse and validate one file; errors read `path: field 'x.y': what is wrong`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptFileError(f"{path}: cannot read the file ({exc})") from None
    prompt_file = parse_prompt(text, path)
    _check_placement(path, prompt_file.version)
    _check_tools(path, prompt_file.version, set(known_tools))
    return prompt_file


def parse_prompt(text: str, path: Path) -> PromptFile:
    """A version from its text; `path` names it in errors (also for versions read back from
    the store after their file was deleted)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PromptFileError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise PromptFileError(f"{path}: expected a mapping with name, version, system, …")
    try:
        version = PromptVersion.model_validate(raw)
    except ValidationError as exc:
        raise PromptFileError(describe(path, exc, PromptVersion)) from None
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return PromptFile(version=version, path=path, content_hash=digest, text=text)


def _check_placement(path: Path, version: PromptVersion) -> None:
    if path.stem != str(version.version):
        raise PromptFileError(
            f"{path}: field 'version': is {version.version} but the file is named {path.name}; "
            f"name it {version.version}{path.suffix}"
        )
    if path.parent.name != version.name:
        raise PromptFileError(
            f"{path}: field 'name': is {version.name!r} but the folder is {path.parent.name!r}"
        )


def _check_tools(path: Path, version: PromptVersion, known: set[str]) -> None:
    for tool in version.tools:
        if tool not in known:
            available = ", ".join(sorted(known)) or "none"
            raise PromptFileError(
                f"{path}: field 'tools': unknown tool {tool!r} (available: {available})"
            )


def load_prompts_dir(directory: Path, *, known_tools: Iterable[str] = ()) -> list[PromptFile]:
    """Every `NAME/VERSION.yaml` under `directory`, sorted by name then version."""
    if not directory.is_dir():
        raise PromptFileError(f"PROMPTS_DIR {directory}: no such folder")
    tools = list(known_tools)
    files = [
        load_prompt_file(path, known_tools=tools)
        for path in sorted(directory.glob("*/*.yaml"))
        if path.stem.isdigit()
    ]
    return sorted(files, key=lambda f: (f.version.name, f.version.version))


class PromptCatalog:
    """The loaded versions, and which one answers when nothing else is bound."""

    def __init__(self, files: Iterable[PromptFile], *, default_prompt: str) -> None:
        self._by_name: dict[str, dict[int, PromptFile]] = {}
        for prompt_file in files:
            self._by_name.setdefault(prompt_file.version.name, {})[prompt_file.version.version] = (
                prompt_file
            )
        self.default_name = self._pick_default(default_prompt)

    def _pick_default(self, wanted: str) -> str:
        if wanted in self._by_name:
            return wanted
        if len(self._by_name) == 1:
            return next(iter(self._by_name))
        found = ", ".join(sorted(self._by_name)) or "none"
        raise PromptFileError(
            f"DEFAULT_PROMPT: no prompt named {wanted!r} in PROMPTS_DIR (found: {found})"
        )

    @property
    def files(self) -> list[PromptFile]:
        return [f for versions in self._by_name.values() for f in versions.values()]

    def add(self, prompt_file: PromptFile) -> None:
        """Learn a version this process did not load from disk (released by another replica,
        or whose file was deleted)."""
        self._by_name.setdefault(prompt_file.version.name, {})[prompt_file.version.version] = (
            prompt_file
        )

    def find(self, name: str, version: int) -> PromptFile | None:
        return self._by_name.get(name, {}).get(version)

    def latest(self, name: str) -> PromptFile:
        versions = self._by_name[name]
        return versions[max(versions)]

    def get(self, name: str, version: int) -> PromptFile:
        return self._by_name[name][version]

    def names(self) -> Mapping[str, list[int]]:
        return {name: sorted(versions) for name, versions in sorted(self._by_name.items())}
