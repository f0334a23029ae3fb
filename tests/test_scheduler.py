"""The scheduler: a missed run runs once at start; among processes sharing Postgres, exactly
one runs the jobs, and another takes over when it goes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from assistant.reporting.schedule import ScheduledJob, Scheduler, cron
from assistant.store import Store, migrate
from assistant.store.tables import JobRun

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


async def test_a_job_missed_while_down_runs_once_at_start_and_a_new_one_waits(db):
    ran: list[str] = []

    async def report() -> None:
        ran.append("report")

    async def evals() -> None:
        ran.append("evals")

    async with AsyncSession(
        db.engine
    ) as session:  # the report last ran three days ago: three misses
        session.add(JobRun(name="report", last_run_at=NOW - timedelta(days=3, hours=1)))
        await session.commit()
    jobs = [
        ScheduledJob(name="report", trigger=cron("0 9 * * *"), run=report),
        ScheduledJob(name="evals", trigger=cron("0 3 * * *"), run=evals),  # never ran
    ]
    scheduler = Scheduler(engine=db.engine, jobs=jobs, clock=lambda: NOW)
    await scheduler.start()
    await scheduler.caught_up()
    await scheduler.stop()

    assert ran == ["report"]
    async with AsyncSession(db.engine) as session:
        report_row = await session.get(JobRun, "report")
        evals_row = await session.get(JobRun, "evals")
    assert report_row is not None and report_row.last_run_at == NOW
    assert evals_row is not None and evals_row.status == "baseline"

    again = Scheduler(engine=db.engine, jobs=jobs, clock=lambda: NOW + timedelta(minutes=5))
    await again.start()
    await again.caught_up()
    await again.stop()
    assert ran == ["report"]  # nothing was missed since


async def test_a_job_run_at_start_runs_once_in_the_leader_however_much_it_missed(db):
    """The knowledge sync: the leader (one process of all) runs it as it starts leading, and
    not a second time for the runs it missed while nobody led."""
    ran: list[str] = []
    done = asyncio.Event()

    async def sync() -> None:
        ran.append("sync")
        done.set()

    async with AsyncSession(db.engine) as session:
        session.add(JobRun(name="knowledge", last_run_at=NOW - timedelta(days=1)))
        await session.commit()
    job = ScheduledJob(name="knowledge", trigger=cron("*/30 * * * *"), run=sync, at_start=True)
    scheduler = Scheduler(engine=db.engine, jobs=[job], clock=lambda: NOW)
    await scheduler.start()
    await scheduler.caught_up()
    await asyncio.wait_for(done.wait(), timeout=30)
    await scheduler.stop()

    assert ran == ["sync"]


async def test_stop_returns_once_a_job_under_way_has_ended(db):
    """The caller closes the database right after `stop`: a job still running then would hold
    a connection past the engine's disposal (and the lock, once released, would let a second
    process start the same job while this one still runs it)."""
    started, finished = asyncio.Event(), []

    async def report() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:  # a job's own cleanup still reaches the database
            async with AsyncSession(db.engine) as session:
                finished.append(await session.get(JobRun, "report"))

    jobs = [ScheduledJob(name="report", trigger=IntervalTrigger(seconds=0.05), run=report)]
    scheduler = Scheduler(engine=db.engine, jobs=jobs)
    await scheduler.start()
    await scheduler.caught_up()  # the job's baseline is recorded
    await asyncio.wait_for(started.wait(), 30)
    await scheduler.stop()

    assert len(finished) == 1
    async with AsyncSession(db.engine) as session:
        row = await session.get(JobRun, "report")
    assert row is not None and row.status == "baseline"  # cut short: not recorded as run


def test_a_malformed_schedule_is_refused_with_the_line():
    with pytest.raises(ValueError, match="not a cron schedule"):
        cron("every morning")


@asynccontextmanager
async def two_processes(database_url: str) -> AsyncIterator[tuple[list[Scheduler], dict[int, int]]]:
    """Two schedulers on their own connections, as two replicas would be; a job that counts
    which one ran it."""
    if not database_url.startswith("postgres"):
        pytest.skip("leadership is a Postgres advisory lock; SQLite serves one process")
    stores = [Store.connect(database_url) for _ in range(2)]
    await migrate.upgrade(stores[0].engine)
    runs = {0: 0, 1: 0}

    def job_for(index: int) -> ScheduledJob:
        async def tick() -> None:
            runs[index] += 1

        return ScheduledJob(name="tick", trigger=IntervalTrigger(seconds=0.1), run=tick)

    schedulers = [
        Scheduler(engine=store.engine, jobs=[job_for(i)], standby_retry=0.1)
        for i, store in enumerate(stores)
    ]
    try:
        for scheduler in schedulers:
            await scheduler.start()
        yield schedulers, runs
    finally:
        for scheduler in schedulers:
            await scheduler.stop()
        for store in stores:
            await store.close()


async def eventually(condition: Callable[[], bool], *, within: float = 30.0) -> None:
    """Until `condition` holds. `within` only bounds a hang: on a loaded machine the job ticks
    and lock retries (0.1 s apart) come late, but each step below does come."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s")
        await asyncio.sleep(0.02)


@pytest.mark.postgres
async def test_two_processes_on_postgres_run_a_job_once_and_the_other_takes_over(
    database_url,
):
    async with two_processes(database_url) as (schedulers, runs):
        assert [s.leader for s in schedulers] == [True, False]  # decided in start()
        await eventually(lambda: runs[0] > 0)
        assert runs[1] == 0 and not schedulers[1].leader

        await schedulers[0].stop()  # the leader goes, its job ended, and unlocks
        before = runs[0]
        await eventually(lambda: runs[1] > 0)
        assert schedulers[1].leader
        assert runs[0] == before


@pytest.mark.postgres
async def test_a_leader_that_loses_its_session_steps_down(database_url):
    async with two_processes(database_url) as (schedulers, runs):
        assert [s.leader for s in schedulers] == [True, False]
        engine = create_async_engine(database_url.replace("postgresql://", "postgresql+asyncpg://"))
        # the leader's session is killed; only in this test's database (suites run side by side)
        async with engine.connect() as admin:
            await admin.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND pid <> pg_backend_pid() AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())"
                )
            )
            await admin.commit()
        await engine.dispose()
        await eventually(lambda: [s.leader for s in schedulers] == [False, True])
        before = runs[0]  # the old leader's jobs ended when it stepped down
        await eventually(lambda: runs[1] > 0)
        assert runs[0] == before
