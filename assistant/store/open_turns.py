"""Answers owed, and the processes owing them: what lets a restart finish what a crash cut short.

An open turn is written with the user's message (`Store.begin_turn`) and deleted with the reply
(`Store.finish_turn`). Each serving process says it is alive every few seconds; the open turns
of one that went silent (killed, or stopped before it could finish them) are adopted by another
with a compare-and-set on the owner, so exactly one process answers each.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Table, and_, bindparam, delete, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from assistant.records import OrphanedTurn
from assistant.store.batches import GroupWrite
from assistant.store.tables import Conversation, Message, OpenTurn, Worker, utcnow

T = TypeVar("T")
Run = Callable[[Callable[[Connection], T]], Any]
_TURNS: Table = OpenTurn.__table__  # type: ignore[attr-defined]
_WORKERS: Table = Worker.__table__  # type: ignore[attr-defined]
_MESSAGES: Table = Message.__table__  # type: ignore[attr-defined]
_CONVERSATIONS: Table = Conversation.__table__  # type: ignore[attr-defined]
_turns, _workers, _messages = _TURNS.c, _WORKERS.c, _MESSAGES.c
_conversations = _CONVERSATIONS.c
_replies = _MESSAGES.alias("replies")


class OpenTurns:
    """The open turns and the workers' heartbeats, in short transactions."""

    def __init__(self, engine: AsyncEngine, *, run: Run[Any]) -> None:
        self._engine = engine
        self._run = run
        self._shown = GroupWrite[dict[str, Any]](self._mark_shown)
        self._settled = GroupWrite[dict[str, Any]](self._settle)

    async def mark_shown(self, message_id: int, shown: str) -> None:
        """Remember what the platform shows of the answer (a stream, a placeholder), so a
        restart can close it instead of leaving it streaming forever."""
        await self._shown.add({"question": message_id, "now_shown": shown})

    async def heartbeat(self, worker: str) -> None:
        """`worker` is alive now."""
        now = utcnow()

        def work(connection: Connection) -> None:
            updated = connection.execute(
                update(Worker).where(_workers.id == worker).values(seen_at=now)
            )
            if not updated.rowcount:
                try:
                    connection.execute(insert(Worker).values(id=worker, seen_at=now))
                except IntegrityError:  # a concurrent first beat of the same worker
                    connection.rollback()
                    return
            connection.commit()

        await self._run(work)

    async def retire(self, worker: str) -> None:
        """`worker` stops: what it leaves open may be adopted at once."""
        await self._write(lambda c: c.execute(delete(Worker).where(_workers.id == worker)))

    async def orphaned(self, surface: str, *, silent_since: datetime) -> list[OrphanedTurn]:
        """Open turns of `surface` whose owner is gone or has been silent since `silent_since`,
        oldest first, with what answering them needs."""
        statement = (
            select(
                _turns.message_id,
                _messages.conversation_id,
                _turns.surface,
                _turns.place,
                _turns.shown,
                _turns.owner,
                _conversations.platform,
                _conversations.workspace,
                _conversations.channel,
                _conversations.thread,
                _messages.author_id,
                _messages.author_name,
                _messages.text,
                _messages.token_count,
                _turns.created_at,
                _turns.reply_id,
                _replies.c.text.label("reply_text"),
            )
            .select_from(_TURNS)
            .join(_MESSAGES, _messages.id == _turns.message_id)
            .join(_CONVERSATIONS, _conversations.id == _messages.conversation_id)
            .outerjoin(_WORKERS, _workers.id == _turns.owner)
            .outerjoin(_replies, _replies.c.id == _turns.reply_id)
            .where(
                _turns.surface == surface,
                or_(_workers.id.is_(None), _workers.seen_at < silent_since),
            )
            .order_by(_turns.message_id)
        )
        rows = await self._run(lambda c: c.execute(statement).all())
        return [OrphanedTurn(**row._asdict()) for row in rows]

    async def adopt(self, message_id: int, *, previous: str, owner: str) -> bool:
        """Take over a turn; False when another process took it first."""
        statement = (
            update(OpenTurn)
            .where(and_(_turns.message_id == message_id, _turns.owner == previous))
            .values(owner=owner, shown=None)
        )

        def work(connection: Connection) -> bool:
            taken = bool(connection.execute(statement).rowcount)
            connection.commit()
            return taken

        return bool(await self._run(work))

    async def settle(self, message_id: int) -> None:
        """Nobody owes this turn an answer any more: the user has heard back."""
        await self._settled.add({"message_id": message_id})

    async def _mark_shown(self, rows: list[dict[str, Any]]) -> None:
        await self._write(lambda c: c.execute(_MARK_SHOWN, rows))

    async def _settle(self, rows: list[dict[str, Any]]) -> None:
        await self._write(lambda c: c.execute(SETTLE_TURN, rows))

    async def _write(self, statement: Callable[[Connection], object]) -> None:
        def work(connection: Connection) -> None:
            statement(connection)
            connection.commit()

        await self._run(work)


SETTLE_TURN = delete(OpenTurn).where(_turns.message_id == bindparam("message_id"))
_MARK_SHOWN = (  # bound names apart from the columns': an update reserves those
    update(OpenTurn)
    .where(_turns.message_id == bindparam("question"))
    .values(shown=bindparam("now_shown"))
)
NOTE_REPLY = (  # bound names apart from the columns': an update reserves those
    update(OpenTurn)
    .where(_turns.message_id == bindparam("question"))
    .values(reply_id=bindparam("reply"))
)
