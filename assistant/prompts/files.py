"""Prompt files become immutable, content-hashed versions; a bad file is refused by name, field."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from assistant.file_errors import TOO_INTRICATE, describe, parse_yaml, read_text
from assistant.tokens import TokenCounter, most_tokens

# The variables a system prompt may use; anything else is refused when the file loads.
TEMPLATE_VARIABLES = frozenset({"today", "now", "platform", "user_name"})
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_VERSION = 2**31 - 1  # versions are stored as INTEGER (Postgres: 32 bits, signed)
MAX_FILE_BYTES = 1_000_000  # a prompt file; the biggest real one is a few kilobytes
# What the test render at load passes, with the names a turn passes (see `render_system`).
_SAMPLE_NOW = datetime(2025, 1, 31, 9, 30, tzinfo=UTC)
_SAMPLE_PLATFORM = "slack"
_SAMPLE_USER = "a user"
_MAX_PRODUCT = 1_000_000  # items a template's `*` may make of a text or list
_MAX_POWER_BITS = 100_000  # bits of an integer a template's `**` may make


class _PromptSandbox(SandboxedEnvironment):
    """Jinja's sandbox, with `*` and `**` bounded: `{{ 'ab' * 10**9 }}` or `{{ 9**(9**9) }}`
    would otherwise be folded into a constant while the template compiles, hanging the loader
    (an intercepted operator is never folded; it is computed here, at render time)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and _power_too_big(left, right):
            raise SecurityError(f"'**' would make a number of more than {_MAX_POWER_BITS:,} bits")
        if operator == "*" and _product_too_long(left, right):
            raise SecurityError(f"'*' would make more than {_MAX_PRODUCT:,} characters or items")
        return super().call_binop(context, operator, left, right)


def _power_too_big(base: Any, exponent: Any) -> bool:
    if not isinstance(base, int) or not isinstance(exponent, int) or abs(base) < 2:
        return False
    return exponent * (abs(base).bit_length() - 1) > _MAX_POWER_BITS  # bits, at least


def _product_too_long(left: Any, right: Any) -> bool:
    for items, times in ((left, right), (right, left)):
        if isinstance(items, (str, list, tuple)) and isinstance(times, int):
            return len(items) * times > _MAX_PRODUCT
    return False


_jinja = _PromptSandbox(undefined=jinja2.StrictUndefined, autoescape=False)
# Tags that read another template: prompts have no template folder, so each would fail to render.
_OTHER_TEMPLATES = (
    jinja2.nodes.Extends,
    jinja2.nodes.Include,
    jinja2.nodes.Import,
    jinja2.nodes.FromImport,
)


class PromptFileError(ValueError):
    """A prompt file that cannot be used; the message names the file and the field."""


class Params(BaseModel):
    """Sampling parameters pinned per version, so a version answers the same way every time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)  # what the API takes
    max_tokens: int | None = Field(default=None, gt=0)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    # sent only to reasoning models (see assistant/data/models.yaml); others never see it
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None

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

    @property
    def history_tokens(self) -> int:
        """How much of the newest history a turn reads: enough to fill the context, and to
        decide whether to fold."""
        return max(self.summarize_over_tokens, self.context_tokens)


# Slack shows at most four suggested prompts in an assistant thread
# (docs.slack.dev, assistant.threads.setSuggestedPrompts)
MAX_SUGGESTED_PROMPTS = 4


class SuggestedPrompt(BaseModel):
    """A prompt a chat surface offers when a conversation opens: `title` is what the user
    sees, `message` what clicking it sends."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: str = Field(min_length=1)
    message: str = Field(min_length=1)


class PromptVersion(BaseModel):
    """One released version of a prompt, exactly as its file says."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN.pattern)
    version: int = Field(ge=1, le=MAX_VERSION)
    description: str = ""
    model: str | None = None
    # answer with these, in order, when the model is unavailable before any text was shown
    fallback_models: tuple[str, ...] = ()
    params: Params = Params()
    system: str = Field(min_length=1)
    examples: tuple[Example, ...] = ()
    tools: tuple[str, ...] = ()
    tool_choice: str = "auto"  # auto | required | none | one of `tools` (the first round only)
    response_schema: dict[str, Any] | None = None
    memory: MemoryPolicy = MemoryPolicy()
    cache: bool = False
    # what a surface says when a user opens a conversation (Slack's assistant thread); a
    # version without them gets the surface's own
    greeting: str | None = Field(default=None, min_length=1)
    suggested_prompts: tuple[SuggestedPrompt, ...] = Field(
        default=(), max_length=MAX_SUGGESTED_PROMPTS
    )

    _template: jinja2.Template = PrivateAttr()

    @model_validator(mode="after")
    def _check_whole(self) -> PromptVersion:
        """Everything a turn will do with the version, done once now: a version that loads is
        one that can answer (each check raises `ValueError("field: what is wrong")`)."""
        self._template = _compile(self.system)
        self._check_tool_choice()
        self._check_fallbacks()
        if self.response_schema is not None:
            from assistant.contracts import check_schema  # jsonschema: for the versions using it

            problem = check_schema(self.response_schema)
            if problem:
                raise ValueError(f"response_schema: {problem}")
        system = self._sample_render()
        self._check_fixed_size(system)
        return self

    def _check_tool_choice(self) -> None:
        choice = self.tool_choice
        if choice in ("auto", "none"):
            return
        if not self.tools:
            raise ValueError(f"tool_choice: is {choice!r}, but the version lists no tools")
        if choice != "required" and choice not in self.tools:
            listed = ", ".join(self.tools)
            raise ValueError(
                f"tool_choice: {choice!r} is not one of auto, required, none or the version's "
                f"tools ({listed})"
            )

    def _check_fallbacks(self) -> None:
        seen: set[str] = set()
        for name in self.fallback_models:
            if not name.strip():
                raise ValueError("fallback_models: a model name is empty")
            if name == self.model:
                raise ValueError(f"fallback_models: {name!r} is the version's own model")
            if name in seen:
                raise ValueError(f"fallback_models: {name!r} is listed twice")
            seen.add(name)

    def _sample_render(self) -> str:
        """The system prompt rendered as a turn would render it: a template that compiles may
        still fail when rendered (`{{ 1/0 }}`, `{{ today.nope() }}`, a macro calling itself)."""
        try:
            return self.render_system(
                now=_SAMPLE_NOW, platform=_SAMPLE_PLATFORM, user_name=_SAMPLE_USER
            )
        except Exception as exc:  # whatever a template raises, the file is what to fix
            raise ValueError(f"system: the template fails when rendered ({_why(exc)})") from None

    def _check_fixed_size(self, system: str) -> None:
        """Refuse a version whose system prompt and examples leave no room for a message: every
        turn would be refused as too long."""
        messages = [{"role": "system", "content": system}]
        for example in self.examples:
            messages += [
                {"role": "user", "content": example.user},
                {"role": "assistant", "content": example.assistant},
            ]
        limit = self.memory.context_tokens
        if most_tokens(messages) < limit:
            return  # fits however it is counted: no tokenizer needed to know (a quick start)
        fixed = TokenCounter(self.model or "").count_request(messages)
        if fixed >= limit:
            raise ValueError(
                f"memory.context_tokens: is {limit}, but the system prompt and examples alone "
                f"take {fixed} tokens, leaving no room for a message; raise it or shorten them"
            )

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


def _compile(system: str) -> jinja2.Template:
    """The system template, refused if it does not compile (a syntax error, a filter that does
    not exist) or names a variable a turn does not pass."""
    try:
        parsed = _jinja.parse(system)
        unknown = jinja2.meta.find_undeclared_variables(parsed) - TEMPLATE_VARIABLES
        template = _jinja.from_string(parsed)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"system: template error on line {exc.lineno}: {exc.message}") from None
    except RecursionError:
        raise ValueError("system: the template is nested too deeply to compile") from None
    if unknown:
        allowed = ", ".join(sorted(TEMPLATE_VARIABLES))
        raise ValueError(f"system: unknown variable {sorted(unknown)[0]!r} (allowed: {allowed})")
    for node in parsed.find_all(_OTHER_TEMPLATES):
        tag = type(node).__name__.lower().replace("fromimport", "from … import")
        raise ValueError(f"system: {{% {tag} %}} is not available; a prompt is one file")
    return template


def _why(exc: Exception) -> str:
    """An exception in a few words: its kind and, when it says one, its message."""
    if isinstance(exc, RecursionError):
        return "it calls itself without end"
    message = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


@dataclass(frozen=True, kw_only=True)
class PromptFile:
    """A version together with where it came from and its content hash."""

    version: PromptVersion
    path: Path
    content_hash: str
    text: str


def load_prompt_file(path: Path, *, known_tools: Iterable[str] = ()) -> PromptFile:
    """Parse and validate one file; errors read `path: field 'x.y': what is wrong`."""
    text = read_text(path, max_bytes=MAX_FILE_BYTES, error=PromptFileError)
    prompt_file = parse_prompt(text, path)
    _check_placement(path, prompt_file.version)
    _check_tools(path, prompt_file.version, set(known_tools))
    return prompt_file


def parse_prompt(text: str, path: Path) -> PromptFile:
    """A version from its text; `path` names it in errors (also for versions read back from
    the store after their file was deleted)."""
    raw = parse_yaml(text, path, error=PromptFileError)
    if not isinstance(raw, dict):
        raise PromptFileError(f"{path}: expected a mapping with name, version, system, …")
    try:
        version = PromptVersion.model_validate(raw)
    except ValidationError as exc:
        raise PromptFileError(describe(path, exc, PromptVersion)) from None
    except RecursionError:
        raise PromptFileError(f"{path}: {TOO_INTRICATE}") from None
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


def is_known_tool(name: str, known: Collection[str]) -> bool:
    """`name` is in `known`, or is `server.tool` and `known` holds `server.*`: an MCP server's
    tools are learnt once it connects, after the prompts load (assistant.mcp_servers)."""
    if "*" in name:  # a pattern stands for tools not yet known, never for a tool
        return False
    server, dot, _ = name.partition(".")
    return name in known or (bool(dot) and f"{server}.*" in known)


def _check_tools(path: Path, version: PromptVersion, known: set[str]) -> None:
    for tool in version.tools:
        if "*" in tool:
            raise PromptFileError(
                f"{path}: field 'tools': {tool!r} is a pattern; name each tool the version may "
                "use (server.TOOL), so a tool a server adds later is not offered unasked"
            )
        if not is_known_tool(tool, known):
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
        for path in sorted(directory.glob("*/*.y*ml"))
        if _is_version_file(path)
    ]
    return sorted(files, key=lambda f: (f.version.name, f.version.version))


def _is_version_file(path: Path) -> bool:
    """Whether `path` is a version (`3.yaml`), `evals.yaml`, or not YAML at all; a YAML file
    named anything else would otherwise be skipped without a word."""
    if path.suffix == ".yaml" and path.stem.isdigit():
        return True
    if path.suffix not in (".yaml", ".yml") or path.name == "evals.yaml":
        return False
    named = path.stem if path.stem.isdigit() or path.stem == "evals" else "VERSION"
    raise PromptFileError(
        f"{path}: not a name PROMPTS_DIR reads: name it {named}.yaml (a version, like "
        "1.yaml, or evals.yaml), or move it out of the folder"
    )


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
