"""Which bindings apply to a place: the one rule prompt bindings and knowledge bindings share."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, bindparam, or_
from sqlalchemy.sql.elements import ColumnElement


def applies_here(columns: Any) -> ColumnElement[bool]:
    """A binding (a table with scope, platform, workspace and channel columns) that applies to
    the place given as the `platform`, `workspace` and `channel` parameters: a global one, one
    of its workspace, or one of its very channel."""
    return or_(
        columns.scope == "global",
        and_(
            columns.scope == "workspace",
            columns.platform == bindparam("platform"),
            columns.workspace == bindparam("workspace"),
        ),
        and_(
            columns.scope == "channel",
            columns.platform == bindparam("platform"),
            columns.workspace == bindparam("workspace"),
            columns.channel == bindparam("channel"),
        ),
    )
