"""What request parameters each model takes: one prompt file, sent in each model's own terms.

OpenAI's reasoning models refuse `max_tokens` and any temperature but the default; local servers
know only `max_tokens`. A version says what it wants once; `ModelTraits.adapt` turns that into
what the model named in the request accepts, from a shipped table an operator can extend.
"""

from __future__ import annotations

import fnmatch
import importlib.resources
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assistant.file_errors import parse_yaml, read_setting_file

log = logging.getLogger(__name__)

SAMPLING_PARAMS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")


class ModelTraits(BaseModel):
    """One family's answers; the defaults are those of OpenAI's chat models."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    match: tuple[str, ...] = Field(min_length=1)
    token_limit: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"  # noqa: S105
    sampling: bool = True
    seed: bool = True
    reasoning_effort: bool = False
    stream_tools: bool = True
    # takes images in user messages; False for a name the table does not know, so an image is
    # never sent to a model that might guess at it (MODELS_FILE says otherwise)
    vision: bool = False

    def matches(self, model: str) -> bool:
        """By the whole name, or by the name after a provider prefix (LiteLLM's and
        OpenRouter's `openai/o3-mini`, `azure/gpt-5`)."""
        names = {model.lower(), model.lower().rsplit("/", 1)[-1]}
        return any(
            fnmatch.fnmatchcase(name, pattern.lower()) for name in names for pattern in self.match
        )

    def adapt(self, params: dict[str, Any]) -> dict[str, Any]:
        """`params` as this model takes them: renamed, or dropped when it would refuse them."""
        adapted = dict(params)
        if "max_tokens" in adapted and self.token_limit != "max_tokens":  # noqa: S105
            adapted[self.token_limit] = adapted.pop("max_tokens")
        dropped = [name for name in self._refused() if name in adapted]
        for name in dropped:
            del adapted[name]
        if dropped:
            log.debug("not sent to a model that refuses them: %s", ", ".join(dropped))
        return adapted

    def _refused(self) -> tuple[str, ...]:
        refused: tuple[str, ...] = () if self.sampling else SAMPLING_PARAMS
        if not self.seed:
            refused += ("seed",)
        if not self.reasoning_effort:
            refused += ("reasoning_effort",)
        return refused


class ModelTable:
    """The families in order; the first that matches a model answers for it."""

    def __init__(self, families: list[ModelTraits]) -> None:
        self._families = families
        self._default = ModelTraits(match=("*",))

    @classmethod
    def load(cls, override: Path | None = None) -> ModelTable:
        """The bundled table, with an operator's entries checked first."""
        bundled = importlib.resources.files("assistant") / "data" / "models.yaml"
        families = _parse(bundled.read_text(encoding="utf-8"), Path("assistant/data/models.yaml"))
        if override is not None:
            text = read_setting_file(override, "MODELS_FILE")
            families = _parse(text, override) + families
        return cls(families)

    def without_streamed_tools(self) -> ModelTable:
        """The same table, every model's tool rounds sent unstreamed (what `doctor` probes)."""
        families = [*self._families, self._default]
        return ModelTable([f.model_copy(update={"stream_tools": False}) for f in families])

    def traits(self, model: str) -> ModelTraits:
        for family in self._families:
            if family.matches(model):
                return family
        return self._default


def _parse(text: str, source: Path) -> list[ModelTraits]:
    raw = parse_yaml(text, source, error=ValueError) or []
    if not isinstance(raw, list):
        raise ValueError(f"{source}: expected a list of entries, each with `match: [patterns]`")
    families = []
    for number, entry in enumerate(raw, start=1):
        if isinstance(entry, dict) and isinstance(entry.get("match"), str):
            entry = {**entry, "match": [entry["match"]]}
        try:
            families.append(ModelTraits.model_validate(entry))
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "entry"
            raise ValueError(f"{source}: entry {number}, field {field!r}: {first['msg']}") from None
    return families
