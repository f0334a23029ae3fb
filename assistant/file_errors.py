"""One line per malformed file: `path: field 'x.y': what is wrong`, with a "did you mean"
for a misspelt key. Prompt files and eval suites are read by the same rules, from opening the
file (only a regular file, bounded in size) to its YAML (bounded in depth and values)."""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError


def describe(path: Path, exc: ValidationError, model: type[BaseModel], *, under: str = "") -> str:
    """`exc` from validating `model` (found at `under` in the file, if nested): every problem,
    the first three spelt out (one fix at a time would take as many reloads)."""
    # A misspelt key shows up twice (unknown key, missing field): name the misspelling first.
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    said = "; ".join(_one(error, model, under) for error in errors[:_SPELT_OUT])
    extra = f" (and {len(errors) - _SPELT_OUT} more)" if len(errors) > _SPELT_OUT else ""
    return f"{path}: {said}{extra}"


_SPELT_OUT = 3


def _one(error: Any, model: type[BaseModel], under: str) -> str:
    field = ".".join([*([under] if under else []), *(str(part) for part in error["loc"])])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        known = _fields_at(model, error["loc"][:-1])
        close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        message = "unknown field" + (f" (did you mean '{close[0]}'?)" if close else "")
    if not field and ": " in message:  # model-level checks name their field themselves
        field, message = message.split(": ", 1)
    return f"field '{field}': {message}"


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


# --- reading a file, before its fields ------------------------------------------------------------

MAX_DEPTH = 50  # nesting levels of a YAML document; real files use fewer than ten
# A file within those bounds whose content still recursed too deep while being checked.
TOO_INTRICATE = "too deeply nested to check (a pattern, template or schema in it); simplify it"
MAX_VALUES = 100_000  # values in a document, each use of a YAML alias counted again
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def read_text(path: Path, *, max_bytes: int, error: type[ValueError]) -> str:
    """The file's text, or `error` saying why not. Anything but a regular file is refused before
    it is opened (reading a FIFO would wait forever), and so is a file over `max_bytes`."""
    try:
        _check_regular(path, os.stat(path), max_bytes, error)
        # O_NONBLOCK: should the path become a FIFO after the check, opening it still returns
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise error(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    try:
        _check_regular(path, os.fstat(fd), max_bytes, error)
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise error(f"{path}: {_too_large(max_bytes)}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: cannot read the file (not UTF-8 text: {exc})") from None


def read_setting_file(path: Path, setting: str, *, max_bytes: int = 1_000_000) -> str:
    """The text of a file a setting names (PRICING_FILE, MODELS_FILE), or ValueError naming
    the setting and the file; read by the same rules as a prompt file."""
    try:
        return read_text(path, max_bytes=max_bytes, error=ValueError)
    except ValueError as exc:
        raise ValueError(f"{setting} {exc}") from None


def _check_regular(
    path: Path, info: os.stat_result, max_bytes: int, error: type[ValueError]
) -> None:
    for is_kind, kind in _KINDS:
        if is_kind(info.st_mode):
            raise error(f"{path}: is {kind}, not a regular file; put a plain YAML file here")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path}: not a regular file; put a plain YAML file here")
    if info.st_size > max_bytes:
        raise error(f"{path}: {_too_large(max_bytes)}")


def _too_large(max_bytes: int) -> str:
    return f"larger than {max_bytes:,} bytes, the most a file here may hold; shorten it"


def parse_yaml(text: str, path: Path, *, error: type[ValueError]) -> Any:
    """The YAML document in `text`, no deeper than MAX_DEPTH and no larger than MAX_VALUES (so
    that nothing reading it later recurses without end or expands aliases without bound)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
    except RecursionError:
        raise error(f"{path}: {_too_deep('')}") from None
    except (ValueError, OverflowError) as exc:  # PyYAML's own readers of dates and numbers
        raise error(f"{path}: not valid YAML (a value cannot be read: {exc})") from None
    problem = _shape_problem(raw)
    if problem:
        raise error(f"{path}: {problem}")
    return raw


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's complaint on one line: where, then what."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark and exc.problem:
        mark = exc.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    return " ".join(str(exc).split())


def _shape_problem(raw: Any) -> str | None:
    """What makes the document too deep or too large, walked without recursion (an alias may
    make it contain itself)."""
    stack: list[tuple[Any, int, str]] = [(raw, 0, "")]
    seen = 0
    while stack:
        value, depth, field = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            return (
                f"more than {MAX_VALUES:,} values (each use of a YAML alias counts again); "
                "shorten it"
            )
        if depth > MAX_DEPTH:
            return _too_deep(field)
        children: Iterable[tuple[Any, Any]] = ()
        if isinstance(value, dict):
            children = value.items()
        elif isinstance(value, list):
            children = enumerate(value)
        for key, child in children:
            stack.append((child, depth + 1, field or str(key)))
    return None


def _too_deep(field: str) -> str:
    where = f"field '{field}': " if field else ""
    return f"{where}nested more than {MAX_DEPTH} levels deep; flatten it"
