"""Approvals of tools that act on a user's behalf: each ask is a row, and a decision is one
conditional UPDATE of it. Every replica reads and writes the same rows, so a click that lands on
another replica than the turn's still decides it, and two clicks (or a click and the timeout)
cannot both win."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from assistant.store.tables import ToolApproval, utcnow

PENDING = "pending"
APPROVED = "approved"
DECLINED = "declined"
EXPIRED = "expired"
UNASKED = "unasked"  # nobody could be asked (an eval): the tool did not run


@dataclass(frozen=True, kw_only=True)
class Ask:
    message_id: int  # the user message whose turn asks
    call_id: str
    tool: str
    arguments: str
    requester: str  # platform:user_id, the only one who may decide
    expires_at: datetime


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """What a click did: `applied` when it decided the ask; otherwise the ask as it stands
    (someone else's, decided already, expired, or unknown when `status` is None)."""

    applied: bool
    status: str | None
    tool: str = ""
    requester: str = ""


class ApprovalStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)

    async def ask(self, ask: Ask, *, status: str = PENDING) -> int:
        row = ToolApproval(
            message_id=ask.message_id,
            call_id=ask.call_id[:255],  # ids are the server's: any length
            tool=ask.tool[:255],
            arguments=ask.arguments,
            requester=ask.requester,
            status=status,
            expires_at=ask.expires_at,
            decided_at=None if status == PENDING else utcnow(),
        )
        async with self._sessions() as session:
            session.add(row)
            await session.commit()
            assert row.id is not None
            return row.id

    async def decide(self, approval_id: int, actor: str, *, approve: bool) -> Verdict:
        """`actor`'s click: it decides the ask only when it is theirs, still pending and not
        past its time."""
        now = utcnow()
        status = APPROVED if approve else DECLINED
        statement = (
            update(ToolApproval)
            .where(
                col(ToolApproval.id) == approval_id,
                col(ToolApproval.status) == PENDING,
                col(ToolApproval.requester) == actor,
                col(ToolApproval.expires_at) > now,
            )
            .values(status=status, decided_by=actor, decided_at=now)
        )
        async with self._sessions() as session:
            applied = (await session.exec(statement)).rowcount == 1
            await session.commit()
            row = await session.get(ToolApproval, approval_id)
        if row is None:
            return Verdict(applied=False, status=None)
        shown = EXPIRED if row.status == PENDING and row.expires_at <= now else row.status
        return Verdict(applied=applied, status=shown, tool=row.tool, requester=row.requester)

    async def status(self, approval_id: int) -> str:
        async with self._sessions() as session:
            row = await session.get(ToolApproval, approval_id)
        assert row is not None, f"approval {approval_id} was never asked"
        return row.status

    async def expire(self, approval_id: int) -> ToolApproval:
        """Close an ask nobody answered in time; a decision that came first stands."""
        statement = (
            update(ToolApproval)
            .where(col(ToolApproval.id) == approval_id, col(ToolApproval.status) == PENDING)
            .values(status=EXPIRED, decided_at=utcnow())
        )
        async with self._sessions() as session:
            await session.exec(statement)
            await session.commit()
            row = await session.get(ToolApproval, approval_id)
        assert row is not None
        return row

    async def expire_open(self, message_id: int) -> int:
        """Expire every open ask of a turn (its process stopped); how many there were."""
        statement = (
            update(ToolApproval)
            .where(col(ToolApproval.message_id) == message_id, col(ToolApproval.status) == PENDING)
            .values(status=EXPIRED, decided_at=utcnow())
        )
        async with self._sessions() as session:
            expired = (await session.exec(statement)).rowcount
            await session.commit()
        return int(expired)

    async def get(self, approval_id: int) -> ToolApproval | None:
        async with self._sessions() as session:
            return await session.get(ToolApproval, approval_id)

    async def of_message(self, message_id: int) -> list[ToolApproval]:
        """The asks of one turn, in the order asked."""
        async with self._sessions() as session:
            result = await session.exec(
                select(ToolApproval)
                .where(ToolApproval.message_id == message_id)
                .order_by(col(ToolApproval.id))
            )
            return list(result)
