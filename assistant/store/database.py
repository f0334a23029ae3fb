"""Connecting: the URL forms users write, the async drivers, SQLite tuned for concurrent use."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
T = TypeVar("T")
_ACCEPTED = "expected sqlite:///path/to/file.db or postgresql://user:pass@host:5432/dbname"


def async_database_url(url: str) -> URL:
    """Map the plain forms (`sqlite:///x.db`, `postgres://…`) to the async driver we ship."""
    try:
        parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    except ArgumentError:  # not even a URL: never echo it, it may hold a password
        raise ValueError(f"{_ACCEPTED}; the value given is not a URL") from None
    backend = parsed.get_backend_name()
    if backend not in _ASYNC_DRIVERS:
        raise ValueError(f"{_ACCEPTED}, got a {backend!r} URL")
    if backend == "sqlite" and not parsed.database:
        raise ValueError(f"{_ACCEPTED}: the SQLite URL names no file")
    if backend == "sqlite" and parsed.database == ":memory:":  # each connection its own database
        raise ValueError(f"{_ACCEPTED}: an in-memory SQLite database cannot be shared; name a file")
    return parsed.set(drivername=_ASYNC_DRIVERS[backend])


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers proceed during a write; the busy timeout turns lock contention into waiting.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=5000")
    _use_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _use_wal(cursor: Any) -> None:
    """Switch a new database to WAL. Processes opening it together can each be refused at
    once (SQLite skips the busy handler where waiting could deadlock), so try a few times."""
    for attempt in range(50):
        try:
            cursor.execute("PRAGMA journal_mode")
            if str(cursor.fetchone()[0]).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:  # the driver's OperationalError: "database is locked"
            if "locked" not in str(exc) or attempt == 49:
                raise
            time.sleep(0.05 + 0.01 * attempt)


class WorkRunner:
    """Runs one unit of SQL work (a sync function of a Connection that commits what it writes).

    On SQLite the unit goes through the sync driver in one thread hop: through aiosqlite every
    statement is a hop of its own, and the hops cost more than the SQL. Elsewhere it runs on
    the async engine's connection. The hot path of a turn is written this way; the rest uses
    the async ORM session.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sqlite: Engine | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._connection: Connection | None = None  # the SQLite thread's own
        if engine.dialect.name == "sqlite":
            self._sqlite = sqlalchemy.create_engine(
                engine.url.set(drivername="sqlite+pysqlite"),
                connect_args={"check_same_thread": False},
            )
            event.listen(self._sqlite, "connect", _tune_sqlite)
            # One thread: SQLite has one writer at a time, and units queued here take turns
            # in order, where units on several threads would sleep in SQLite's busy handler
            # (its back-off reaches 100 ms a try: seconds per turn at 200 conversations).
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")

    async def __call__(self, work: Callable[[Connection], T]) -> T:
        if self._sqlite is not None:
            if self._thread is None:
                raise RuntimeError("the store is closed")
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._thread, self._on_thread, work)
        async with self._engine.connect() as connection:
            return await connection.run_sync(work)

    def dispose(self) -> None:
        thread, self._thread = self._thread, None  # a second dispose has nothing left to do
        if thread is not None:
            thread.submit(self._close).result()
            thread.shutdown(wait=True)
        if self._sqlite is not None:
            self._sqlite.dispose()

    def _on_thread(self, work: Callable[[Connection], T]) -> T:
        """Run `work` on the thread's own connection, kept open: checking one out of the pool
        and back for each unit cost almost as much as the unit's SQL. A unit ends what it
        began: whatever it left open (a read) is rolled back, so no snapshot is held."""
        assert self._sqlite is not None
        if self._connection is None or self._connection.invalidated:
            self._connection = self._sqlite.connect()
        connection = self._connection
        try:
            return work(connection)
        except BaseException:
            self._close()  # a broken connection is not reused; the next unit opens another
            raise
        finally:
            if self._connection is not None and self._connection.in_transaction():
                self._connection.rollback()

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def create_engine(url: str) -> AsyncEngine:
    """An async engine for `url`; creates the SQLite file's folder so a fresh checkout just runs."""
    async_url = async_database_url(url)
    if async_url.get_backend_name() == "sqlite":
        database = async_url.database or ""
        if database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(async_url)
        event.listen(engine.sync_engine, "connect", _tune_sqlite)
        return engine
    return create_async_engine(async_url, pool_pre_ping=True)
