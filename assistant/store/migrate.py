"""Schema migrations (alembic), run on a connection we open so they work inside a running loop."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config

# the top-level migrations/ folder, which the package ships as assistant.migrations
MIGRATIONS_DIR = str(resources.files("assistant.migrations"))
_REVISION_LINE = re.compile(r"^(down_revision|revision)\b[^=]*=\s*(.+?)\s*$", re.MULTILINE)


def _alembic() -> ModuleType:
    """alembic's commands, imported when there is work for them."""
    from alembic import command

    return command


def _config(connection: Connection) -> Config:
    from alembic.config import Config  # alembic's machinery: only when there is work for it

    config = Config()
    config.set_main_option("script_location", MIGRATIONS_DIR)
    config.attributes["connection"] = connection
    return config


# Any constant: replicas starting together on Postgres take turns instead of racing on DDL.
_MIGRATION_LOCK = 0x61737369  # "assi"
_MIGRATION_WAIT_MS = 120_000


class DatabaseUnreachable(Exception):
    """The database named by DATABASE_URL cannot be used; the message says why in one line
    (never the URL itself: it may hold a password)."""


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply migrations. Processes starting together take turns: on Postgres through an
    advisory lock, on SQLite by taking the write lock before alembic looks at the schema.
    This is every command's first use of the database, so a database that cannot be reached
    is reported here, as `DatabaseUnreachable`."""
    try:
        await _upgrade(engine, revision)
    except (sa_exc.DBAPIError, OSError) as exc:
        raise DatabaseUnreachable(f"DATABASE_URL: cannot use the database ({why(exc)})") from None


def why(exc: Exception) -> str:
    """The driver's own complaint, first line only (`database "x" does not exist`, `password
    authentication failed for user "y"`, `Connect call failed`)."""
    cause = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
    words = str(cause).strip().splitlines()
    return words[0][:200] if words else type(cause).__name__


async def _upgrade(engine: AsyncEngine, revision: str) -> None:
    if revision == "head" and await _at_head(engine):
        return  # every start after the first: no lock, no alembic
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
        elif connection.dialect.name == "sqlite":
            # another process may be migrating: wait for it as long as a migration takes
            await connection.exec_driver_sql(f"PRAGMA busy_timeout={_MIGRATION_WAIT_MS}")
            await connection.exec_driver_sql("BEGIN IMMEDIATE")
        await connection.run_sync(lambda sync: _alembic().upgrade(_config(sync), revision))


async def _at_head(engine: AsyncEngine) -> bool:
    """Whether the database is already at the newest migration, read with one plain query
    (importing alembic and loading its scripts costs more than the rest of a chat's start)."""
    head = head_revision()
    if head is None:
        return False
    async with engine.connect() as connection:
        return await _stored_revisions(connection) == {head}


async def _stored_revisions(connection: AsyncConnection) -> set[str]:
    try:
        rows = await connection.exec_driver_sql("SELECT version_num FROM alembic_version")
    except sa_exc.ProgrammingError:  # Postgres: no such table (a new database)
        return set()
    except sa_exc.OperationalError as exc:  # SQLite: no such table, or a real problem
        if "no such table" in str(exc):
            return set()
        raise
    return {str(row[0]) for row in rows}


def head_revision(folder: Path | None = None) -> str | None:
    """The newest revision of the shipped migrations, read from their files as alembic reads
    `revision` and `down_revision`; None when that is not one clear head (alembic decides)."""
    graph = _graph(folder)
    if graph is None:
        return None
    heads = set(graph) - {parent for parent in graph.values() if parent is not None}
    return heads.pop() if len(heads) == 1 else None


def known_revisions(folder: Path | None = None) -> frozenset[str]:
    """Every revision this build ships: a database at one it does not know was migrated by a
    newer build."""
    return frozenset(_graph(folder) or {})


def _graph(folder: Path | None) -> dict[str, str | None] | None:
    """Each shipped revision and its parent; None when one cannot be read plainly."""
    graph: dict[str, str | None] = {}
    for script in sorted((folder or Path(MIGRATIONS_DIR) / "versions").glob("*.py")):
        found = dict(_REVISION_LINE.findall(script.read_text(encoding="utf-8")))
        if "revision" not in found:
            continue  # not a migration (__init__.py)
        revision, parent = _literal(found["revision"]), _literal(found.get("down_revision", ""))
        if revision is None or parent is _UNREADABLE:
            return None
        graph[revision] = parent
    return graph


_UNREADABLE = "\0"


def _literal(source: str) -> str | None:
    """A quoted revision id, None for `None`; `_UNREADABLE` for anything else (a tuple of
    parents, a merge): then alembic works it out."""
    quoted = re.fullmatch(r"""(['"])([^'"]+)\1""", source)
    if quoted:
        return quoted[2]
    return None if source == "None" else _UNREADABLE


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: _alembic().downgrade(_config(sync), revision))


async def check(engine: AsyncEngine) -> None:
    """Raise when the tables and the migrations disagree (a model change without a migration)."""
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: _alembic().check(_config(sync)))


async def revision(engine: AsyncEngine, message: str) -> None:
    """Autogenerate a migration against an up-to-date database (a developer's tool)."""
    async with engine.begin() as connection:
        await connection.run_sync(
            lambda sync: _alembic().revision(_config(sync), message=message, autogenerate=True)
        )
