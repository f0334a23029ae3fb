"""Budgets set from chat, their audit, and what was spent under each: in SQL both SQLite and
Postgres run, every replica reading the same rows (a raise on one is seen by all at once)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, or_, true
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from assistant.store.places import applies_here
from assistant.store.tables import BudgetAudit, BudgetRow, Conversation, LlmCall, utcnow
from assistant.turns import ConversationRef

_budgets = BudgetRow.__table__.c  # type: ignore[attr-defined]
# Built once (building a statement costs more than running it): read on every turn.
_APPLYING = sa_select(BudgetRow.__table__).where(applies_here(_budgets))  # type: ignore[attr-defined]


@dataclass(frozen=True, kw_only=True)
class Place:
    """Where a budget applies, as the budgets table stores it ("" where a scope has none)."""

    scope: str  # global | workspace | channel
    platform: str = ""
    workspace: str = ""
    channel: str = ""


@dataclass(frozen=True, kw_only=True)
class Measured:
    """What to sum: the calls made in `place` since `since`."""

    place: Place
    since: datetime


@dataclass(frozen=True, kw_only=True)
class Spent:
    usd: float  # priced calls only
    unpriced: int  # billed calls with no price for their model: their cost is unknown


@dataclass(frozen=True, kw_only=True)
class BudgetChange:
    before: float | None  # None: no budget was set there for that period
    after: float


class BudgetStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)

    async def applying(self, ref: ConversationRef) -> list[BudgetRow]:
        """The budgets that apply to a conversation in `ref`: global, its workspace's and its
        channel's (a small table, read through the prompt bindings' own place rule)."""
        params = {"platform": ref.platform, "workspace": ref.workspace, "channel": ref.channel}
        async with self._engine.connect() as connection:
            rows = (await connection.execute(_APPLYING, params)).all()
        return [BudgetRow(**row._mapping) for row in rows]

    async def all(self) -> list[BudgetRow]:
        async with self._sessions() as session:
            return list((await session.exec(select(BudgetRow).order_by(col(BudgetRow.id)))).all())

    async def set(
        self, place: Place, period: str, usd: float, *, actor: str, surface: str
    ) -> BudgetChange:
        """Set a budget and write its audit row, in one transaction. Two admins setting a new
        one at once collide on its unique key; the loser retries and records the winner's
        figure as its `before`."""
        for attempt in (1, 2):
            async with self._sessions() as session:
                try:
                    before = await _write(session, place, period, usd, actor)
                    session.add(_audit(place, period, before, usd, actor, surface))
                    await session.commit()
                except IntegrityError:
                    if attempt == 2:
                        raise
                    await session.rollback()
                    continue
                return BudgetChange(before=before, after=usd)
        raise AssertionError("unreachable")

    async def history(self, *, limit: int = 20) -> list[BudgetAudit]:
        async with self._sessions() as session:
            query = select(BudgetAudit).order_by(col(BudgetAudit.id).desc()).limit(limit)
            return list((await session.exec(query)).all())

    async def spent(self, measured: Sequence[Measured]) -> list[Spent]:
        """What was spent under each of `measured`, in one statement: every call of the
        place's conversations since its start (a global place: every call, an eval's, a
        judge's and a knowledge sync's too). A failed call cost nothing; a billed one with no
        price is counted apart, never as $0."""
        if not measured:
            return []
        cost, status = col(LlmCall.cost_usd), col(LlmCall.status)
        unpriced = and_(cost.is_(None), status != "error")
        columns: list[Any] = []
        for n, item in enumerate(measured):
            here = and_(_in_place(item.place), col(LlmCall.created_at) >= item.since)
            columns.append(func.sum(case((here, cost), else_=literal(0.0))).label(f"usd{n}"))
            columns.append(func.sum(case((and_(here, unpriced), 1), else_=0)).label(f"unp{n}"))
        earliest = min(item.since for item in measured)
        statement = sa_select(*columns).where(col(LlmCall.created_at) >= earliest)
        if any(item.place.scope != "global" for item in measured):  # else no place to join
            statement = statement.select_from(LlmCall).outerjoin(
                Conversation, col(LlmCall.conversation_id) == col(Conversation.id)
            )
            statement = statement.where(or_(*(_in_place(item.place) for item in measured)))
        async with self._engine.connect() as connection:
            row = (await connection.execute(statement)).one()
        return [
            Spent(usd=float(row[2 * n] or 0.0), unpriced=int(row[2 * n + 1] or 0))
            for n in range(len(measured))
        ]


def _in_place(place: Place) -> ColumnElement[bool]:
    """A call made in `place`: anywhere for global (calls outside any conversation too)."""
    if place.scope == "global":
        return true()
    same = [
        col(Conversation.platform) == place.platform,
        col(Conversation.workspace) == place.workspace,
    ]
    if place.scope == "channel":
        same.append(col(Conversation.channel) == place.channel)
    return and_(*same)


async def _write(
    session: AsyncSession, place: Place, period: str, usd: float, actor: str
) -> float | None:
    query = select(BudgetRow).where(
        col(BudgetRow.scope) == place.scope,
        col(BudgetRow.platform) == place.platform,
        col(BudgetRow.workspace) == place.workspace,
        col(BudgetRow.channel) == place.channel,
        col(BudgetRow.period) == period,
    )
    row = (await session.exec(query)).first()
    if row is None:
        session.add(
            BudgetRow(
                scope=place.scope,
                platform=place.platform,
                workspace=place.workspace,
                channel=place.channel,
                period=period,
                usd=usd,
                set_by=actor,
            )
        )
        await session.flush()  # a concurrent insert of the same budget fails here
        return None
    before: float = row.usd
    row.usd, row.set_by, row.set_at = usd, actor, utcnow()
    session.add(row)
    return before


def _audit(
    place: Place, period: str, before: float | None, after: float, actor: str, surface: str
) -> BudgetAudit:
    return BudgetAudit(
        actor=actor,
        surface=surface,
        scope=place.scope,
        platform=place.platform,
        workspace=place.workspace,
        channel=place.channel,
        period=period,
        before_usd=before,
        after_usd=after,
    )
