"""`knowledge.yaml`: the collections an installation declares, beside its prompts.

```yaml
collections:
  handbook:
    path: ../handbook            # a folder, relative to this file
    link: https://wiki.example.com/handbook/   # optional: where its documents can be read
    description: how we work
    bind: [global]               # optional: where it may be searched once created
```

A collection's place (`bind`) applies when the collection is first created from the file;
after that, admins move it with `knowledge use|drop`, and a re-sync never undoes their choice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from assistant.file_errors import describe, parse_yaml, read_text

FILE_NAME = "knowledge.yaml"
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
NAME_RULE = "1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit"
# where a collection may be bound from the file: global, workspace:PLATFORM/ID,
# channel:PLATFORM/WORKSPACE/CHANNEL (a DM's workspace is empty: channel:slack//D123)
PLACE = re.compile(r"global|workspace:[a-z]+/[^/\s]+|channel:[a-z]+/[^/\s]*/[^/\s]+")
PLACE_RULE = (
    "global, workspace:PLATFORM/ID (workspace:slack/T0123) or "
    "channel:PLATFORM/WORKSPACE/CHANNEL (channel:discord/81234/98765)"
)


class KnowledgeFileError(ValueError):
    """`knowledge.yaml` is malformed: the message names the file and the field."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1)
    link: str | None = None
    description: str = ""
    bind: list[str] = []

    @field_validator("bind")
    @classmethod
    def _check_places(cls, value: list[str]) -> list[str]:
        for place in value:
            if not PLACE.fullmatch(place):
                raise ValueError(f"{place!r} is not a place: write {PLACE_RULE}")
        return value

    @field_validator("link")
    @classmethod
    def _check_link(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://\S+$", value):
            raise ValueError("expected an http(s) URL, like https://wiki.example.com/handbook/")
        return value


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collections: dict[str, _Entry] = {}

    @field_validator("collections")
    @classmethod
    def _check_names(cls, value: dict[str, _Entry]) -> dict[str, _Entry]:
        for name in value:
            if not NAME.fullmatch(name):
                raise ValueError(f"collections: {name!r} is not a collection name: {NAME_RULE}")
        return value


@dataclass(frozen=True, kw_only=True)
class DeclaredCollection:
    name: str
    folder: Path  # resolved against the file's folder
    link: str | None
    description: str
    bind: tuple[str, ...]  # places, as written: "global", "channel:slack/T1/C1"


def load_catalog(prompts_dir: Path) -> list[DeclaredCollection]:
    """The collections `PROMPTS_DIR/knowledge.yaml` declares; none when there is no file."""
    path = prompts_dir / FILE_NAME
    if not path.exists():
        return []
    text = read_text(path, max_bytes=1_000_000, error=KnowledgeFileError)
    raw = parse_yaml(text, path, error=KnowledgeFileError)
    if raw is None:
        return []
    try:
        parsed = _File.model_validate(raw)
    except ValidationError as exc:
        raise KnowledgeFileError(describe(path, exc, _File)) from None
    return [
        DeclaredCollection(
            name=name,
            folder=(path.parent / entry.path).resolve(),
            link=entry.link,
            description=entry.description,
            bind=tuple(entry.bind),
        )
        for name, entry in parsed.collections.items()
    ]


def check_name(name: str) -> str:
    """`name` when it can name a collection; else ValueError saying what a name may hold."""
    if not NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a collection name: {NAME_RULE}")
    return name
