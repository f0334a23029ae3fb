"""Alembic environment.

`assistant db upgrade` hands in a live connection (config.attributes["connection"]); the plain
`alembic` command (alembic.ini at the repository root) connects to DATABASE_URL itself.
"""

import asyncio
from collections.abc import MutableMapping
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from assistant.config import load_settings
from assistant.store import tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from assistant.store.database import create_engine

# Written by hand (migrations 0009) or at run time, in forms alembic cannot describe: knowledge
# search's FTS5 index and vector tables (each with the shadow tables SQLite makes for it), and
# the Postgres tsvector column with its index. Left out of autogenerate and `alembic check`.
_HAND_MADE_PREFIXES = ("knowledge_fts", "knowledge_vec_")
_HAND_MADE = {("column", "search_vector"), ("index", "ix_knowledge_chunks_search")}


def include_name(name: str | None, type_: str, _parents: MutableMapping[Any, str | None]) -> bool:
    """Decided by name, before anything is reflected: a vector table is not even readable
    without its extension."""
    if name is None:
        return True
    return not name.startswith(_HAND_MADE_PREFIXES) and (type_, name) not in _HAND_MADE


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_from_settings() -> None:
    engine = create_engine(load_settings().database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run)
    finally:
        await engine.dispose()


given = context.config.attributes.get("connection")
if given is not None:
    run(given)
else:
    asyncio.run(run_from_settings())
