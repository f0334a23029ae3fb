"""Eval runs and their per-case results: what the `prompt use` gate, drift alerts and reports
compare."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from assistant.store.tables import EvalResult, EvalRun, utcnow

FAKE_MODEL = "fake"  # runs against the bundled fake model never stand in for real ones
RETRIEVAL = "retrieval"  # the kind of a retrieval case's result


class EvalStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)

    async def save_run(self, run: EvalRun, results: Sequence[EvalResult]) -> EvalRun:
        """Store a finished run with its results, in one transaction."""
        async with self._sessions() as session:
            run.finished_at = run.finished_at or utcnow()
            session.add(run)
            await session.flush()
            assert run.id is not None
            for result in results:
                result.run_id = run.id
                session.add(result)
            await session.commit()
            return run

    async def latest_run(
        self, prompt_name: str, version: int, *, fake: bool = False
    ) -> EvalRun | None:
        """The newest run of a version fit to compare: finished, with no failed turn (an
        outage is not the prompt's fault), against a real model (or only the fake one)."""
        statement = (
            select(EvalRun)
            .where(
                EvalRun.prompt_name == prompt_name,
                EvalRun.version == version,
                col(EvalRun.finished_at).is_not(None),
                EvalRun.failed_turns == 0,
                (EvalRun.model == FAKE_MODEL) if fake else (EvalRun.model != FAKE_MODEL),
            )
            .order_by(col(EvalRun.id).desc())
            .limit(1)
        )
        async with self._sessions() as session:
            return (await session.exec(statement)).first()

    async def runs(
        self, prompt_name: str | None = None, *, version: int | None = None, limit: int = 50
    ) -> list[EvalRun]:
        """Finished runs, newest first."""
        statement = select(EvalRun).where(col(EvalRun.finished_at).is_not(None))
        if prompt_name is not None:
            statement = statement.where(EvalRun.prompt_name == prompt_name)
        if version is not None:
            statement = statement.where(EvalRun.version == version)
        async with self._sessions() as session:
            result = await session.exec(statement.order_by(col(EvalRun.id).desc()).limit(limit))
            return list(result.all())

    async def results(self, run_id: int) -> list[EvalResult]:
        async with self._sessions() as session:
            result = await session.exec(
                select(EvalResult).where(EvalResult.run_id == run_id).order_by(col(EvalResult.id))
            )
            return list(result.all())

    async def retrieval_history(
        self,
        versions: Collection[tuple[str, int]],
        *,
        before: datetime,
        fake: bool | None = False,
        per_version: int = 2,
    ) -> dict[tuple[str, int], list[tuple[EvalRun, list[EvalResult]]]]:
        """The newest runs of each version that ran retrieval cases, finished before `before`,
        newest first, each with its retrieval results: what a report's retrieval line and its
        change read. Runs of the fake model stand apart, as in `latest_run` (`fake` None:
        whichever is newer, for showing what was last measured)."""
        history: dict[tuple[str, int], list[tuple[EvalRun, list[EvalResult]]]] = {}
        async with self._sessions() as session:
            for name, version in sorted(set(versions)):
                statement = (
                    select(EvalRun)
                    .where(
                        EvalRun.prompt_name == name,
                        EvalRun.version == version,
                        col(EvalRun.retrieval_cases) > 0,
                        col(EvalRun.finished_at) < before,
                        *_model_filter(fake),
                    )
                    .order_by(col(EvalRun.finished_at).desc(), col(EvalRun.id).desc())
                    .limit(per_version)
                )
                runs = list((await session.exec(statement)).all())
                if runs:
                    history[(name, version)] = [
                        (run, await self._retrieval_results(session, run)) for run in runs
                    ]
        return history

    async def _retrieval_results(self, session: AsyncSession, run: EvalRun) -> list[EvalResult]:
        statement = (
            select(EvalResult)
            .where(EvalResult.run_id == run.id, EvalResult.kind == RETRIEVAL)
            .order_by(col(EvalResult.id))
        )
        return list((await session.exec(statement)).all())


def _model_filter(fake: bool | None) -> list[ColumnElement[bool]]:
    if fake is None:
        return []
    return [col(EvalRun.model) == FAKE_MODEL if fake else col(EvalRun.model) != FAKE_MODEL]
