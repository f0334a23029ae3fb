"""One line per malformed file: `path: field 'x.y': what is wrong`, with a "did you mean"
for a misspelt key. Prompt files and eval suites are read by the same rules."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError


def describe(path: Path, exc: ValidationError, model: type[BaseModel], *, under: str = "") -> str:
    """`exc` from validating `model` (found at `under` in the file, if nested)."""
    # A misspelt key shows up twice (unknown key, missing field): name the misspelling first.
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    field = ".".join([*([under] if under else []), *(str(part) for part in first["loc"])])
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        known = _fields_at(model, first["loc"][:-1])
        close = difflib.get_close_matches(str(first["loc"][-1]), known, n=1)
        message = "unknown field" + (f" (did you mean '{close[0]}'?)" if close else "")
    if not field and ": " in message:  # model-level checks name their field themselves
        field, message = message.split(": ", 1)
    extra = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{path}: field '{field}': {message}{extra}"


def _fields_at(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The field names of the model found by following `loc` down from `model`."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return []
        field = current.model_fields.get(str(part))
        if field is not None:  # list indexes and dict keys leave the model unchanged
            current = _inner_model(field.annotation)
    return list(current.model_fields) if current else []


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
