"""What the engine reads and writes, in short transactions (SQLite has one writer at a time)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Select, delete, insert, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from assistant.store.database import create_engine
from assistant.store.prompt_store import PromptStore
from assistant.store.tables import (
    Conversation,
    LlmCall,
    Message,
    ProcessedEvent,
    utcnow,
)
from assistant.turns import ConversationRef

_PAGE = 128
_messages = Message.__table__.c  # type: ignore[attr-defined]
_conversations = Conversation.__table__.c  # type: ignore[attr-defined]


@dataclass(frozen=True, kw_only=True)
class HistoryEntry:
    """The part of a stored message that context building needs; plain, no ORM state."""

    id: int
    role: str
    text: str
    token_count: int
    author_name: str = ""


@dataclass(frozen=True, kw_only=True)
class ConversationState:
    """A conversation's id and rolling summary, as of the start of a turn."""

    id: int
    summary: str = ""
    summary_tokens: int = 0
    summary_through_id: int = 0


@dataclass(frozen=True, kw_only=True)
class History:
    """What a turn knows of its conversation: the summary state and the newest messages."""

    state: ConversationState
    newest: list[HistoryEntry]  # newest first, after state.summary_through_id
    complete: bool  # False when older unsummarized messages were left unread


class Store:
    """The engine's only way to the database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
        # A conversation's id never changes and rows are never deleted, so every replica may
        # keep this map: it saves a query on every turn and holds nothing another one needs.
        self._conversation_ids: dict[ConversationRef, int] = {}
        self.prompts = PromptStore(engine)

    @classmethod
    def connect(cls, url: str) -> Store:
        return cls(create_engine(url))

    async def close(self) -> None:
        await self.engine.dispose()

    async def conversation(self, key: ConversationRef) -> Conversation:
        """Fetch or create; a concurrent creator wins the unique constraint and we read its row."""
        async with self._sessions() as session:
            found = await self._find_conversation(session, key)
            if found is not None:
                return found
            row = Conversation(
                platform=key.platform,
                workspace=key.workspace,
                channel=key.channel,
                thread=key.thread,
            )
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                found = await self._find_conversation(session, key)
                assert found is not None
                return found
            return row

    async def find_conversation(self, key: ConversationRef) -> Conversation | None:
        async with self._sessions() as session:
            return await self._find_conversation(session, key)

    @staticmethod
    async def _find_conversation(
        session: AsyncSession, key: ConversationRef
    ) -> Conversation | None:
        result = await session.exec(
            select(Conversation).where(
                Conversation.platform == key.platform,
                Conversation.workspace == key.workspace,
                Conversation.channel == key.channel,
                Conversation.thread == key.thread,
            )
        )
        return result.first()

    async def conversation_id(self, key: ConversationRef) -> int:
        if key not in self._conversation_ids:
            conversation = await self.conversation(key)
            assert conversation.id is not None
            self._conversation_ids[key] = conversation.id
        return self._conversation_ids[key]

    async def begin_turn(
        self, key: ConversationRef, message: Message, *, token_limit: int
    ) -> History:
        """Store the user's message (creating its conversation if new), then read its history.

        The message is committed before the history is read, so it is safe whatever happens
        next; one connection serves both because this runs on every turn.
        """
        message.conversation_id = await self.conversation_id(key)
        async with self.engine.connect() as connection:
            message.id = await _insert_message(connection, message)
            await connection.commit()
            return await _history(connection, message.conversation_id, token_limit)

    async def add_message(self, message: Message) -> Message:
        async with self._sessions() as session:
            session.add(message)
            await session.commit()
            return message

    async def newest_messages(
        self, conversation_id: int, *, after_id: int, token_limit: int
    ) -> list[HistoryEntry]:
        async with self.engine.connect() as connection:
            found, _ = await _newest(
                connection, conversation_id, after_id=after_id, limit=token_limit
            )
            return found

    async def oldest_messages(
        self, conversation_id: int, *, after_id: int, token_limit: int
    ) -> list[HistoryEntry]:
        """Oldest-first complete messages after `after_id`, up to about `token_limit` tokens:
        what summary folding takes when a long history was not read in full."""
        query = _history_query(conversation_id, after_id).order_by(_messages.id).limit(_PAGE)
        found: list[HistoryEntry] = []
        total = 0
        async with self.engine.connect() as connection:
            for ident, role, text, tokens, author in (await connection.execute(query)).all():
                if found and total + tokens > token_limit:
                    break
                found.append(
                    HistoryEntry(
                        id=ident, role=role, text=text, token_count=tokens, author_name=author
                    )
                )
                total += tokens
        return found

    async def set_message_status(self, message_id: int, status: str) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(
                update(Message).where(_messages.id == message_id).values(status=status)
            )

    async def count_messages(self, conversation_id: int) -> int:
        async with self._sessions() as session:
            result = await session.exec(
                select(func.count()).where(Message.conversation_id == conversation_id)
            )
            return result.one()

    async def save_summary(
        self, conversation_id: int, *, summary: str, tokens: int, through_id: int
    ) -> None:
        async with self._sessions() as session:
            row = await session.get(Conversation, conversation_id)
            assert row is not None
            row.summary = summary
            row.summary_tokens = tokens
            row.summary_through_id = through_id
            await session.commit()

    async def finish_turn(self, reply: Message | None, calls: Sequence[LlmCall]) -> None:
        """Store the reply and its calls together: a reply is never stored without its cost."""
        async with self.engine.begin() as connection:
            if reply is not None:
                reply.id = await _insert_message(connection, reply)
                for call in calls:
                    call.message_id = reply.id
            if calls:
                rows = [call.model_dump(exclude={"id"}) for call in calls]
                await connection.execute(insert(LlmCall), rows)

    async def llm_calls(self, conversation_id: int) -> list[LlmCall]:
        async with self._sessions() as session:
            result = await session.exec(
                select(LlmCall)
                .where(LlmCall.conversation_id == conversation_id)
                .order_by(col(LlmCall.id))
            )
            return list(result.all())

    async def messages(self, conversation_id: int) -> list[Message]:
        async with self._sessions() as session:
            result = await session.exec(
                select(Message)
                .where(Message.conversation_id == conversation_id)
                .order_by(col(Message.id))
            )
            return list(result.all())

    async def claim_event(self, keys: Sequence[str], *, keep: timedelta) -> bool:
        """True when none of `keys` was seen before; records them all in one transaction."""
        async with self._sessions() as session:
            await session.exec(
                delete(ProcessedEvent).where(col(ProcessedEvent.created_at) < utcnow() - keep)
            )
            session.add_all(ProcessedEvent(key=_event_key(key)) for key in dict.fromkeys(keys))
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                return False
            return True


async def _insert_message(connection: AsyncConnection, message: Message) -> int:
    values = message.model_dump(exclude={"id"})
    result = await connection.execute(insert(Message).values(**values).returning(_messages.id))
    return int(result.scalar_one())


async def _history(connection: AsyncConnection, conversation_id: int, token_limit: int) -> History:
    table = _conversations
    query = sa_select(table.summary, table.summary_tokens, table.summary_through_id).where(
        table.id == conversation_id
    )
    row = (await connection.execute(query)).one()
    state = ConversationState(
        id=conversation_id,
        summary=row.summary,
        summary_tokens=row.summary_tokens,
        summary_through_id=row.summary_through_id,
    )
    newest, complete = await _newest(
        connection, conversation_id, after_id=state.summary_through_id, limit=token_limit
    )
    return History(state=state, newest=newest, complete=complete)


def _history_query(conversation_id: int, after_id: int) -> Select[Any]:
    """The complete messages of a conversation after `after_id`: what history is made of."""
    table = _messages
    return sa_select(table.id, table.role, table.text, table.token_count, table.author_name).where(
        table.conversation_id == conversation_id, table.id > after_id, table.status == "ok"
    )


async def _newest(
    connection: AsyncConnection, conversation_id: int, *, after_id: int, limit: int
) -> tuple[list[HistoryEntry], bool]:
    """Newest-first complete messages after `after_id`, until their tokens pass `limit`, and
    whether that read every one of them.

    Reads in pages from the newest end, so the cost depends on the budget, never on how long
    the conversation is.
    """
    table = _messages
    found: list[HistoryEntry] = []
    total = 0
    before_id: int | None = None
    while True:
        query = _history_query(conversation_id, after_id).order_by(table.id.desc()).limit(_PAGE)
        if before_id is not None:
            query = query.where(table.id < before_id)
        page = (await connection.execute(query)).all()
        for index, (ident, role, text, tokens, author) in enumerate(page):
            found.append(
                HistoryEntry(id=ident, role=role, text=text, token_count=tokens, author_name=author)
            )
            total += tokens
            if total > limit:
                read_all = index == len(page) - 1 and len(page) < _PAGE
                return found, read_all
        if len(page) < _PAGE:
            return found, True
        before_id = page[-1][0]


def _event_key(key: str) -> str:
    """Platform ids are short, but a key must never fail the column's 255-character limit."""
    if len(key) <= 255:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()
