"""Rows for Core inserts, built without the ORM: constructing a SQLModel table object costs
more than the INSERT it feeds (pydantic's construction and SQLAlchemy's instrumentation), and a
turn writes several."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from pydantic_core import PydanticUndefined
from sqlmodel import SQLModel

_Default = tuple[str, Any, Callable[[], Any] | None]


def table_row(table: type[SQLModel], /, **values: Any) -> dict[str, Any]:
    """The row `table(**values).model_dump()` gives, less an id left to the database: the
    values given, and each other column's default (its factory called, as for `created_at`)."""
    row = dict(values)
    for name, default, factory in _defaults(table):
        if name not in row:
            row[name] = factory() if factory is not None else default
    return row


@cache
def _defaults(model: type[SQLModel]) -> tuple[_Default, ...]:
    found: list[_Default] = []
    for name, field in model.model_fields.items():
        if name == "id" and field.default is None:  # the database numbers the row
            continue
        if field.default_factory is not None:
            found.append((name, None, field.default_factory))  # type: ignore[arg-type]
        elif field.default is not PydanticUndefined:
            found.append((name, field.default, None))
    return tuple(found)
