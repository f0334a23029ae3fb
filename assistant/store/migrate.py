"""Schema migrations (alembic), run on a connection we open so they work inside a running loop."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

# the top-level migrations/ folder, which the package ships as assistant.migrations
MIGRATIONS_DIR = str(resources.files("assistant.migrations"))


def _config(connection: Connection) -> Config:
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
        raise DatabaseUnreachable(f"DATABASE_URL: cannot use the database ({_why(exc)})") from None


def _why(exc: Exception) -> str:
    """The driver's own complaint, first line only (`database "x" does not exist`, `password
    authentication failed for user "y"`, `Connect call failed`)."""
    cause = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
    words = str(cause).strip().splitlines()
    return words[0][:200] if words else type(cause).__name__


async def _upgrade(engine: AsyncEngine, revision: str) -> None:
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
        elif connection.dialect.name == "sqlite":
            # another process may be migrating: wait for it as long as a migration takes
            await connection.exec_driver_sql(f"PRAGMA busy_timeout={_MIGRATION_WAIT_MS}")
            await connection.exec_driver_sql("BEGIN IMMEDIATE")
        await connection.run_sync(lambda sync: command.upgrade(_config(sync), revision))


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: command.downgrade(_config(sync), revision))


async def check(engine: AsyncEngine) -> None:
    """Raise when the tables and the migrations disagree (a model change without a migration)."""
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: command.check(_config(sync)))


async def revision(engine: AsyncEngine, message: str) -> None:
    """Autogenerate a migration against an up-to-date database (a developer's tool)."""
    async with engine.begin() as connection:
        await connection.run_sync(
            lambda sync: command.revision(_config(sync), message=message, autogenerate=True)
        )
