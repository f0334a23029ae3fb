"""Connecting: the URL forms users write, the async drivers, SQLite tuned for concurrent use."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import aiosqlite
import sqlalchemy
from sqlalchemy import event
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

log = logging.getLogger(__name__)

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


@dataclass(frozen=True, kw_only=True)
class SqliteDriver:
    """The SQLite library every SQLite connection of this process goes through.

    One per process, for every engine: two SQLite libraries (Python's and pysqlite3's own
    copy) must never open the same file in one process. POSIX locks belong to the process, so
    one library closing its descriptor silently drops the other's locks, and the file can be
    corrupted.
    """

    name: str  # "sqlite3" (Python's own) or "pysqlite3"
    module: ModuleType  # its DB-API module
    vectors: bool  # whether sqlite-vec loads into its connections
    reason: str  # why this one, in words for `assistant doctor` and the log

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        """A DB-API connection with sqlite-vec loaded when it can be: loaded here, on the
        thread that opens it, since aiosqlite's connections are only usable on their own."""
        connection = self.module.connect(*args, **kwargs)
        if self.vectors:
            _load_sqlite_vec(connection)
        return connection


@cache
def sqlite_driver() -> SqliteDriver:
    """This process's choice: Python's sqlite3 when it can load extensions (sqlite-vec), else
    pysqlite3 (its own SQLite, built to load them) when installed, else Python's sqlite3
    without vectors: knowledge search then uses keywords only, and says why."""
    vec = _sqlite_vec_version()
    if vec is None:
        why = "sqlite-vec is not installed; knowledge search on SQLite uses keywords only"
        return _stdlib_driver(vectors=False, why=why)
    if _loads_sqlite_vec(sqlite3):
        return _stdlib_driver(vectors=True, why=f"it loads sqlite-vec {vec}")
    found = _pysqlite3()
    if found is not None and _loads_sqlite_vec(found):
        driver = SqliteDriver(
            name="pysqlite3",
            module=found,
            vectors=True,
            reason=(
                f"pysqlite3 (SQLite {found.sqlite_version}) with sqlite-vec {vec}: this "
                f"Python's sqlite3 (SQLite {sqlite3.sqlite_version}) cannot load extensions"
            ),
        )
        log.info("SQLite: %s", driver.reason)
        return driver
    return _stdlib_driver(
        vectors=False,
        why=(
            "it cannot load extensions (a Python built without them, as pyenv and macOS "
            "builds are) and pysqlite3 is not installed (`pip install pysqlite3-binary`, "
            "Linux x86_64); knowledge search on SQLite uses keywords only"
        ),
    )


def _stdlib_driver(*, vectors: bool, why: str) -> SqliteDriver:
    reason = f"Python's sqlite3 (SQLite {sqlite3.sqlite_version}): {why}"
    if not vectors:
        log.info("SQLite: %s", reason)
    return SqliteDriver(name="sqlite3", module=sqlite3, vectors=vectors, reason=reason)


def _sqlite_vec_version() -> str | None:
    try:
        return str(importlib.import_module("sqlite_vec").__version__)
    except ImportError:
        return None


def _pysqlite3() -> ModuleType | None:
    try:
        return importlib.import_module("pysqlite3.dbapi2")
    except ImportError:
        return None


def _loads_sqlite_vec(module: ModuleType) -> bool:
    connection = module.connect(":memory:")
    try:
        _load_sqlite_vec(connection)
        connection.execute("SELECT vec_version()")
    except (AttributeError, module.Error):  # no enable_load_extension, or a failed load
        return False
    finally:
        connection.close()
    return True


def _load_sqlite_vec(connection: Any) -> None:
    """Load sqlite-vec, then switch loading off again: SQL may then load nothing."""
    path = importlib.import_module("sqlite_vec").loadable_path()
    connection.enable_load_extension(True)
    try:
        connection.load_extension(path)
    finally:
        connection.enable_load_extension(False)


def engine_sqlite_driver(engine: AsyncEngine) -> SqliteDriver:
    """The SQLite library `engine` uses: the one `create_engine` gave it; Python's own for an
    engine made elsewhere (SQLAlchemy's aiosqlite default)."""
    driver = getattr(engine.dialect.loaded_dbapi, "sqlite_driver", None)
    if isinstance(driver, SqliteDriver):
        return driver
    return SqliteDriver(
        name="sqlite3",
        module=sqlite3,
        vectors=False,
        reason="Python's sqlite3, without sqlite-vec: this engine was not made by create_engine",
    )


class _AsyncSqlite(AsyncAdapt_aiosqlite_dbapi):
    """SQLAlchemy's aiosqlite adapter over the chosen driver: aiosqlite runs any DB-API
    connection on its thread, and SQLAlchemy recognises the driver's own exception classes
    (an IntegrityError of pysqlite3 is no sqlite3.IntegrityError)."""

    def __init__(self, driver: SqliteDriver) -> None:
        self.sqlite_driver = driver
        super().__init__(aiosqlite, driver.module)

    def _init_dbapi_attributes(self) -> None:
        super()._init_dbapi_attributes()
        for name in (
            "DatabaseError",
            "Error",
            "IntegrityError",
            "NotSupportedError",
            "OperationalError",
            "ProgrammingError",
            "sqlite_version",
            "sqlite_version_info",
        ):
            setattr(self, name, getattr(self.sqlite, name))

    def connect(self, *args: Any, **kwargs: Any) -> AsyncAdapt_aiosqlite_connection:
        kwargs["async_creator_fn"] = self._open
        return super().connect(*args, **kwargs)

    def _open(self, *args: Any, **kwargs: Any) -> aiosqlite.Connection:
        connection = aiosqlite.Connection(partial(self.sqlite_driver.connect, *args, **kwargs), 64)
        connection._thread.daemon = True  # as SQLAlchemy's: never holds the process open
        return connection


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers proceed during a write; the busy timeout turns lock contention into waiting.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=5000")
    _use_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Reads straight from the file's pages, not copies in SQLite's cache: a vector search reads
    # every vector of its collections (100 MB at 100,000 passages of 256 dimensions).
    cursor.execute("PRAGMA mmap_size=1073741824")
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
            driver = engine_sqlite_driver(engine)  # the async engine's: never a second library
            self._sqlite = sqlalchemy.create_engine(
                engine.url.set(drivername="sqlite+pysqlite"),
                module=driver.module,
                connect_args={"check_same_thread": False},
            )
            event.listen(self._sqlite, "do_connect", partial(_open_sqlite, driver))
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


def _open_sqlite(
    driver: SqliteDriver, _dialect: Any, _record: Any, args: list[Any], kwargs: dict[str, Any]
) -> Any:
    return driver.connect(*args, **kwargs)


def create_engine(url: str, *, sqlite: SqliteDriver | None = None) -> AsyncEngine:
    """An async engine for `url`; creates the SQLite file's folder so a fresh checkout just runs.
    SQLite goes through the library `sqlite` names when given, else `sqlite_driver()`'s."""
    async_url = async_database_url(url)
    if async_url.get_backend_name() == "sqlite":
        database = async_url.database or ""
        if database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(async_url, module=_AsyncSqlite(sqlite or sqlite_driver()))
        event.listen(engine.sync_engine, "connect", _tune_sqlite)
        return engine
    return create_async_engine(async_url, pool_pre_ping=True)
