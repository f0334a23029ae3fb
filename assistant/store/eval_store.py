"""Eval runs and their per-case results: what the `prompt use` gate, drift alerts and reports
compare."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from assistant.store.tables import EvalResult, EvalRun, utcnow


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

    async def latest_run(self, prompt_name: str, version: int) -> EvalRun | None:
        """The newest finished run of a version (on any model)."""
        runs = await self.runs(prompt_name, version=version, limit=1)
        return runs[0] if runs else None

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
