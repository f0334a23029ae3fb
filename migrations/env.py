"""Alembic environment.

`assistant db upgrade` hands in a live connection (config.attributes["connection"]); the plain
`alembic` command (alembic.ini at the repository root) connects to DATABASE_URL itself.
"""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from assistant.config import load_settings
from assistant.store import tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from assistant.store.database import create_engine


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
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
