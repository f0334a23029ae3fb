"""Scheduled jobs (evals, reports, alert checks), run by exactly one process.

APScheduler 3 fires the jobs; it is not told to persist them, because its job store would run
every job once per process sharing it and needs a sync database driver. What must survive a
restart is kept here instead: when each job last ran (`job_runs`). A job whose next fire time
after its last run has passed while the process was down runs once at start, not once per
miss. Among replicas on Postgres, the one holding an advisory lock is the leader and the only
one that schedules; the others retry, and take over when the leader's connection goes. Among
processes sharing a SQLite file (`assistant run --workers N`), the leader holds a lock on a
file beside the database, which the kernel drops when the process ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from assistant.store.tables import JobRun

if sys.platform != "win32":
    import fcntl

log = logging.getLogger(__name__)

_LEADER_LOCK = 0x73636864  # "schd"
STANDBY_RETRY_SECONDS = 30.0
Clock = Callable[[], datetime]


def cron(expression: str) -> BaseTrigger:
    """A crontab line (UTC); ValueError naming what is wrong."""
    try:
        return CronTrigger.from_crontab(expression, timezone=UTC)
    except ValueError as exc:
        raise ValueError(f"not a cron schedule ({expression!r}): {exc}") from None


@dataclass(frozen=True, kw_only=True)
class ScheduledJob:
    name: str
    trigger: BaseTrigger
    run: Callable[[], Awaitable[object]]
    at_start: bool = False  # also once whenever a process becomes the leader


class LeaderLock:
    """Who may schedule: on Postgres whoever holds the advisory lock on its own connection;
    on SQLite whoever holds the file lock beside the database (see `SqliteLeaderFile`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: AsyncConnection | None = None
        self._file = SqliteLeaderFile.beside(engine)

    async def acquire(self) -> bool:
        """Try once; a database that cannot be reached means not now (try again later)."""
        if self._file is not None:
            return self._file.acquire()
        if self._engine.dialect.name != "postgresql":
            return True
        try:
            if self._connection is None:
                self._connection = await self._engine.connect()
            result = await self._connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": _LEADER_LOCK}
            )
            held = bool(result.scalar())
            await self._connection.commit()  # the lock is the session's, not the transaction's
            return held
        except Exception as exc:
            log.warning("could not ask for the scheduler lock (%s); will try again", exc)
            await self._drop()
            return False

    async def still_held(self) -> bool:
        """The lock lives as long as its session: a session that answers still holds it."""
        if self._file is not None:
            return self._file.held
        if self._engine.dialect.name != "postgresql":
            return True
        if self._connection is None:
            return False
        try:
            await self._connection.execute(text("SELECT 1"))
            await self._connection.commit()
            return True
        except Exception:
            await self._drop()
            return False

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with suppress(Exception):
                await connection.invalidate()

    async def release(self) -> None:
        """Unlock explicitly: closing only returns the connection to the pool, session (and
        lock) alive. A process that dies loses its connection, and the lock with it."""
        if self._file is not None:
            self._file.release()
        connection, self._connection = self._connection, None
        if connection is None:
            return
        with suppress(Exception):
            await connection.execute(text("SELECT pg_advisory_unlock_all()"))
            await connection.commit()
        await connection.invalidate()  # never reuse a session that held the lock


class SqliteLeaderFile:
    """The scheduler's lock among processes sharing one SQLite file: an exclusive `flock` on
    `<database>-leader`. Like Postgres's advisory lock it belongs to the holder's open file and
    ends with the process however it ends (a SIGKILL too), so a standby takes over at its next
    try. A lock row in the database could not tell a dead holder from a slow one."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None

    @classmethod
    def beside(cls, engine: AsyncEngine) -> SqliteLeaderFile | None:
        """The lock for `engine`'s SQLite file; None for Postgres, or where `flock` is not."""
        database = engine.url.database or ""
        if engine.dialect.name != "sqlite" or sys.platform == "win32":
            return None
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        return cls(f"{os.path.abspath(database)}-leader")

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        if sys.platform == "win32" or self._fd is not None:
            return True
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:  # not ours to open (another user's): nobody here leads
            log.error("cannot open the scheduler's lock %s (%s)", self._path, exc.strerror)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another process leads
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor of the open file drops its lock


class Scheduler:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        jobs: Sequence[ScheduledJob],
        clock: Clock = lambda: datetime.now(UTC),
        standby_retry: float = STANDBY_RETRY_SECONDS,
    ) -> None:
        """`standby_retry`: how often a standby asks for the lock, and the leader checks it
        still holds it."""
        self._engine = engine
        self._jobs = list(jobs)
        self._clock = clock
        self._standby_retry = standby_retry
        self._lock = LeaderLock(engine)
        self._aps: AsyncIOScheduler | None = None
        self._waiting: asyncio.Task[None] | None = None  # standing by, or leading and watching
        self._catching_up: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()  # the catch-up and each job under way
        self.leader = False

    async def start(self) -> None:
        """Lead now if no one else does (missed runs catch up in the background); otherwise
        stand by, in the background."""
        if await self._lock.acquire():
            await self._lead()
        else:
            log.info("another process runs the scheduled jobs; this one stands by")
        self._waiting = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        """Stop standing by or leading. Returns once no job of this scheduler runs any more,
        so the caller may close the database, and before the lock goes to another process."""
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
        await self._step_down()
        await self._lock.release()

    async def _watch(self) -> None:
        """Standing by: ask for the lock now and then. Leading: make sure it is still ours;
        a leader whose session was lost steps down at once, so two never lead."""
        while True:
            await asyncio.sleep(self._standby_retry)
            if self.leader and not await self._lock.still_held():
                log.warning("the scheduler lock was lost; standing by")
                await self._step_down()
            elif not self.leader and await self._lock.acquire():
                await self._lead()

    async def _step_down(self) -> None:
        """Start no job any more, and end the ones under way: a run cut short is not recorded,
        so whoever leads next catches it up.

        APScheduler's shutdown alone is not enough: on asyncio it takes effect on the loop's
        next turn, and it only asks the running jobs to stop, without waiting for them; a job
        then still holds a database connection when its caller closes the engine."""
        aps, self._aps = self._aps, None
        self.leader = False
        if aps is not None:
            aps.pause()  # at once: no job starts from here on
        while self._running:  # a job submitted just before the pause is ended too
            running = list(self._running)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        if aps is not None:
            aps.shutdown(wait=False)  # after the jobs ended: its own cancel would cut their cleanup

    async def _lead(self) -> None:
        self.leader = True
        self._aps = AsyncIOScheduler(timezone=UTC)
        for job in self._jobs:
            self._aps.add_job(
                self._fire,
                job.trigger,
                args=[job],
                id=job.name,
                coalesce=True,  # runs missed while busy become one run
                max_instances=1,
                misfire_grace_time=3600,
            )
        for job in self._jobs:
            if job.at_start:  # no trigger: APScheduler runs it now, once
                self._aps.add_job(self._fire, args=[job], id=f"{job.name}-at-start")
        self._aps.start()
        self._catching_up = asyncio.create_task(self._catch_up())
        self._track(self._catching_up)
        log.info("scheduled jobs: %s", ", ".join(job.name for job in self._jobs))

    def _track(self, task: asyncio.Task[None]) -> None:
        """Count `task` among the runs under way until it ends (`_step_down` waits for them)."""
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _fire(self, job: ScheduledJob) -> None:
        """What APScheduler runs at a job's time: the job, on a task `_step_down` can end."""
        if not self.leader:  # handed over just before stepping down, started after
            return
        task = asyncio.current_task()
        assert task is not None
        self._track(task)
        try:
            await self.run_job(job)
        except asyncio.CancelledError:  # stepping down; APScheduler would log it as a failure
            log.info("scheduled job %s was stopped before it finished", job.name)

    async def caught_up(self) -> None:
        """Wait until the missed runs found at start have run (or were stopped); a waiter
        cancelled does not stop them."""
        if self._catching_up is not None:
            await asyncio.wait([self._catching_up])

    async def _catch_up(self) -> None:
        """Run once each job that should have run while no process was leading."""
        try:
            await self._run_missed()
        except Exception:
            log.exception("could not check for missed scheduled runs")

    async def _run_missed(self) -> None:
        now = self._clock()
        for job in self._jobs:
            if job.at_start:  # its run at start stands for whatever it missed
                continue
            last = await self._last_run(job.name)
            if last is None:  # a new job: count from now, do not fire at once
                await self._record(job.name, now, status="baseline")
                continue
            due = job.trigger.get_next_fire_time(None, last)
            if due is not None and due <= now:
                log.info("job %s missed its run at %s; running it once now", job.name, due)
                await self.run_job(job)

    async def run_job(self, job: ScheduledJob) -> None:
        started = self._clock()
        try:
            await job.run()
        except Exception as exc:
            log.exception("scheduled job %s failed", job.name)
            await self._record(job.name, started, status="error", error=str(exc)[:500])
            return
        await self._record(job.name, started, status="ok")

    async def _last_run(self, name: str) -> datetime | None:
        async with AsyncSession(self._engine) as session:
            row = await session.get(JobRun, name)
            return row.last_run_at if row is not None else None

    async def _record(
        self, name: str, at: datetime, *, status: str, error: str | None = None
    ) -> None:
        async with AsyncSession(self._engine) as session:
            row = await session.get(JobRun, name)
            if row is None:
                row = JobRun(name=name, last_run_at=at)
            row.last_run_at, row.status, row.error = at, status, error
            session.add(row)
            await session.commit()
