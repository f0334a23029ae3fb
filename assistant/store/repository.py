"""What the engine reads and writes, in short transactions (SQLite has one writer at a time)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import bindparam, delete, insert, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from assistant.records import CallRecord, NewMessage, PendingReply
from assistant.store.approval_store import ApprovalStore
from assistant.store.budget_store import BudgetStore
from assistant.store.database import WorkRunner, create_engine
from assistant.store.eval_store import EvalStore
from assistant.store.knowledge_store import KnowledgeStore
from assistant.store.open_turns import NOTE_REPLY, OpenTurns
from assistant.store.prompt_store import PromptStore
from assistant.store.rows import table_row
from assistant.store.tables import (
    LARGEST_ID,
    Conversation,
    LlmCall,
    Message,
    MessageSource,
    OpenTurn,
    ProcessedEvent,
    utcnow,
)
from assistant.store.vote_store import VoteStore
from assistant.turns import ConversationRef, Source

_PAGE = 128
_CONVERSATION_CACHE_SIZE = 100_000
_PRUNE_EVERY_SECONDS = 60.0
T = TypeVar("T")
_messages = Message.__table__.c  # type: ignore[attr-defined]
_conversations = Conversation.__table__.c  # type: ignore[attr-defined]


class HistoryEntry(NamedTuple):
    """The part of a stored message that context building needs. A tuple, not an ORM object:
    hundreds are read on every turn."""

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
        self._run = WorkRunner(engine)
        self._sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
        # A conversation's id never changes and rows are never deleted, so every replica may
        # keep this map: it saves a query on every turn and holds nothing another one needs.
        self._conversation_ids: dict[ConversationRef, int] = {}
        self._pruned_at = -_PRUNE_EVERY_SECONDS
        self.prompts = PromptStore(engine, run=self._run)
        self.open_turns = OpenTurns(engine, run=self._run)
        self.votes = VoteStore(engine)
        self.approvals = ApprovalStore(engine)
        self.budgets = BudgetStore(engine)
        self.evals = EvalStore(engine)
        self.knowledge = KnowledgeStore(engine, run=self._run)

    @classmethod
    def connect(cls, url: str) -> Store:
        return cls(create_engine(url))

    async def close(self) -> None:
        await self.engine.dispose()
        await asyncio.to_thread(self._run.dispose)  # waits for the SQLite thread to finish

    async def conversation(self, key: ConversationRef) -> Conversation:
        """Fetch or create the conversation's row."""
        conversation_id = await self.conversation_id(key)
        async with self._sessions() as session:
            row = await session.get(Conversation, conversation_id)
            assert row is not None  # conversations are never deleted
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

    async def conversation_with_message(
        self, platform: str, platform_message_id: str
    ) -> ConversationRef | None:
        """Where a user message with this platform id was said (a reply chain's conversation)."""
        statement = (
            select(Conversation)
            .join(Message, col(Message.conversation_id) == col(Conversation.id))
            .where(
                Conversation.platform == platform,
                Message.platform_message_id == platform_message_id,
            )
            .limit(1)
        )
        async with self._sessions() as session:
            found = (await session.exec(statement)).first()
        if found is None:
            return None
        return ConversationRef(
            platform=found.platform,
            workspace=found.workspace,
            channel=found.channel,
            thread=found.thread,
        )

    async def conversation_id(self, key: ConversationRef) -> int:
        """Fetch or create, on the turn's path (one unit of work, no ORM)."""
        if key not in self._conversation_ids:
            if len(self._conversation_ids) >= _CONVERSATION_CACHE_SIZE:
                self._conversation_ids.clear()  # cheap to refill: one indexed read each
            self._conversation_ids[key] = await self._run(lambda c: _conversation_id(c, key))
        return self._conversation_ids[key]

    async def begin_turn(
        self,
        conversation_id: int,
        message: NewMessage,
        *,
        prompt_version_id: int | None,
        token_limit: int,
        claim: Sequence[str] = (),
        keep: timedelta = timedelta(hours=24),
        pending: PendingReply | None = None,
        attachments: str | None = None,
    ) -> tuple[int, History] | None:
        """Claim the delivery (`claim`: its dedupe keys), store the user's message (with the
        JSON of what the model saw of its files, `attachments`) and the answer owed
        (`pending`) in one transaction, then read the conversation's history.
        Returns the message's id and the history; None when the delivery was claimed before
        (then nothing is stored).

        One transaction, so no crash can leave a claimed delivery without its message, or a
        message without the record that it still needs an answer.
        """
        row = _message_row(message, conversation_id, prompt_version_id)
        row["attachments"] = attachments
        claims, prune = self._claims(claim)

        def work(connection: Connection) -> tuple[int, History] | None:
            if claims and not _claim(connection, claims, prune=prune, keep=keep):
                return None
            message_id = _insert_message(connection, row)
            if pending is not None:
                connection.execute(_OPEN_TURN, _open_turn_row(message_id, pending))
            connection.commit()
            return message_id, _history(connection, conversation_id, token_limit)

        return await self._run(work)

    async def read_history(self, conversation_id: int, *, token_limit: int) -> History:
        """A conversation's summary state and newest messages (resuming a cut-short turn)."""
        return await self._run(lambda c: _history(c, conversation_id, token_limit))

    async def add_message(self, message: Message) -> Message:
        async with self._sessions() as session:
            session.add(message)
            await session.commit()
            return message

    async def newest_messages(
        self, conversation_id: int, *, after_id: int, token_limit: int
    ) -> list[HistoryEntry]:
        def work(connection: Connection) -> list[HistoryEntry]:
            found, _ = _newest(connection, conversation_id, after_id=after_id, limit=token_limit)
            return found

        return await self._run(work)

    async def oldest_messages(
        self, conversation_id: int, *, after_id: int, token_limit: int
    ) -> list[HistoryEntry]:
        """Oldest-first complete messages after `after_id`, up to about `token_limit` tokens:
        what summary folding takes when a long history was not read in full."""
        params = {"conversation_id": conversation_id, "after_id": after_id}

        def work(connection: Connection) -> list[HistoryEntry]:
            found: list[HistoryEntry] = []
            total = 0
            for row in connection.execute(_OLDEST_PAGE, params).all():
                entry = HistoryEntry._make(row)
                if found and total + entry.token_count > token_limit:
                    break
                found.append(entry)
                total += entry.token_count
            return found

        return await self._run(work)

    async def set_message_attachments(self, message_id: int, attachments: str | None) -> None:
        """Correct what a message's files record says the model saw (its server refused the
        images after the message was stored)."""
        async with self.engine.begin() as connection:
            await connection.execute(
                update(Message).where(_messages.id == message_id).values(attachments=attachments)
            )

    async def set_message_status(self, message_id: int, status: str) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(
                update(Message).where(_messages.id == message_id).values(status=status)
            )

    async def threads(self, platform: str, workspace: str, channel: str) -> list[tuple[str, int]]:
        """The conversations in one channel, newest first, with how many messages each holds
        (the terminal's `/list`)."""
        statement = (
            sa_select(col(Conversation.thread), func.count(col(Message.id)))
            .select_from(Conversation)
            .outerjoin(Message, col(Message.conversation_id) == col(Conversation.id))
            .where(
                col(Conversation.platform) == platform,
                col(Conversation.workspace) == workspace,
                col(Conversation.channel) == channel,
            )
            .group_by(col(Conversation.id), col(Conversation.thread))
            .order_by(col(Conversation.id).desc())
        )
        async with self.engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return [(str(thread), int(count)) for thread, count in rows]

    async def count_messages(self, conversation_id: int) -> int:
        async with self._sessions() as session:
            result = await session.exec(
                select(func.count()).where(Message.conversation_id == conversation_id)
            )
            return result.one()

    async def nth_user_message(self, author_id: str, *, since: datetime, n: int) -> datetime | None:
        """When `author_id` (`platform:user`) sent their `n`th newest message since `since`,
        or None when they sent fewer: what a rate limit asks (is it reached, and when does it
        lift), one row read from the (author_id, created_at) index, so every replica counts
        the same."""
        params = {"author_id": author_id, "since": since, "skip": n - 1}
        return await self._run(lambda c: c.execute(_NTH_BY_USER, params).scalar())

    async def nth_channel_message(
        self, ref: ConversationRef, *, since: datetime, n: int
    ) -> datetime | None:
        """When the `n`th newest user message in `ref`'s channel (any thread) since `since`
        was sent, or None when there were fewer."""
        params = {
            "platform": ref.platform,
            "workspace": ref.workspace,
            "channel": ref.channel,
            "since": since,
            "skip": n - 1,
        }
        return await self._run(lambda c: c.execute(_NTH_IN_CHANNEL, params).scalar())

    async def save_summary(
        self, conversation_id: int, *, summary: str, tokens: int, through_id: int
    ) -> bool:
        """Store a fold unless a concurrent turn already folded as far: a summary never moves
        backwards. Returns whether this one was kept."""
        statement = (
            update(Conversation)
            .where(
                _conversations.id == conversation_id,
                _conversations.summary_through_id < through_id,
            )
            .values(summary=summary, summary_tokens=tokens, summary_through_id=through_id)
        )
        async with self.engine.begin() as connection:
            result = await connection.execute(statement)
        return bool(result.rowcount)

    async def finish_turn(
        self,
        conversation_id: int,
        *,
        prompt_version_id: int | None,
        reply: NewMessage | None,
        calls: Sequence[CallRecord],
        user_message_id: int | None = None,
        sources: Sequence[Source] = (),
    ) -> int | None:
        """Store the reply with its calls and the sources it cites, together (a reply is never
        stored without its cost or its sources); with no reply, the calls are filed under the
        user's message. An owed turn notes its reply: a restart then shows the stored answer
        instead of asking the model again. Returns the reply's id."""
        reply_row = _message_row(reply, conversation_id, prompt_version_id) if reply else None
        answered = reply is not None and reply.status == "ok" and user_message_id is not None

        def work(connection: Connection) -> int | None:
            reply_id = _insert_message(connection, reply_row) if reply_row else None
            if calls:
                message_id = reply_id if reply_id is not None else user_message_id
                rows = [
                    _call_row(call, conversation_id, prompt_version_id, message_id)
                    for call in calls
                ]
                connection.execute(_INSERT_CALLS, rows)
            if reply_id is not None and sources:
                connection.execute(_INSERT_SOURCES, [_source_row(s, reply_id) for s in sources])
            if reply_id is not None and answered:
                connection.execute(NOTE_REPLY, {"question": user_message_id, "reply": reply_id})
            connection.commit()
            return reply_id

        return await self._run(work)

    async def record_calls(self, calls: Sequence[CallRecord]) -> None:
        """Model calls made outside any conversation (a knowledge sync's embeddings): what
        they cost counts in every report, like a turn's calls."""
        if not calls:
            return
        rows = [_call_row(call, None, None, None) for call in calls]

        def work(connection: Connection) -> None:
            connection.execute(_INSERT_CALLS, rows)
            connection.commit()

        await self._run(work)

    async def llm_calls(self, conversation_id: int) -> list[LlmCall]:
        async with self._sessions() as session:
            result = await session.exec(
                select(LlmCall)
                .where(LlmCall.conversation_id == conversation_id)
                .order_by(col(LlmCall.id))
            )
            return list(result.all())

    async def sources_of(self, message_id: int) -> list[Source]:
        """The sources an answer cited, as stored with it."""
        async with self._sessions() as session:
            result = await session.exec(
                select(MessageSource)
                .where(MessageSource.message_id == message_id)
                .order_by(col(MessageSource.number))
            )
            return [
                Source(
                    number=row.number,
                    collection=row.collection,
                    document=row.document,
                    title=row.title,
                    heading=row.heading,
                    link=row.link,
                )
                for row in result.all()
            ]

    async def messages(self, conversation_id: int) -> list[Message]:
        async with self._sessions() as session:
            result = await session.exec(
                select(Message)
                .where(Message.conversation_id == conversation_id)
                .order_by(col(Message.id))
            )
            return list(result.all())

    async def messages_before(self, message: Message) -> list[Message]:
        """The complete messages of a conversation up to (not including) `message`."""
        async with self._sessions() as session:
            result = await session.exec(
                select(Message)
                .where(
                    Message.conversation_id == message.conversation_id,
                    col(Message.id) < message.id,
                    Message.status == "ok",
                )
                .order_by(col(Message.id))
            )
            return list(result.all())

    async def claim_event(self, keys: Sequence[str], *, keep: timedelta) -> bool:
        """True when none of `keys` was seen before; records them all in one transaction.
        Keys older than `keep` are forgotten, at most once a minute per process."""
        claims, prune = self._claims(keys)

        def work(connection: Connection) -> bool:
            claimed = _claim(connection, claims, prune=prune, keep=keep)
            if claimed:
                connection.commit()
            return claimed

        return await self._run(work)

    def _claims(self, keys: Sequence[str]) -> tuple[list[dict[str, Any]], bool]:
        """The rows that claim `keys`, and whether this claim also forgets expired keys."""
        rows = [{"key": _event_key(key), "created_at": utcnow()} for key in dict.fromkeys(keys)]
        now = time.monotonic()
        prune = bool(rows) and now - self._pruned_at >= _PRUNE_EVERY_SECONDS
        if prune:
            self._pruned_at = now
        return rows, prune


# The statements of the hot path, built once: building a statement costs more than running it.
_STATE = sa_select(
    _conversations.summary, _conversations.summary_tokens, _conversations.summary_through_id
).where(_conversations.id == bindparam("conversation_id"))
_HISTORY = sa_select(
    _messages.id, _messages.role, _messages.text, _messages.token_count, _messages.author_name
).where(
    _messages.conversation_id == bindparam("conversation_id"),
    _messages.id > bindparam("after_id"),
    _messages.status == "ok",
)
_NEWEST_PAGE = (
    _HISTORY.where(_messages.id <= bindparam("up_to_id")).order_by(_messages.id.desc()).limit(_PAGE)
)
_OLDEST_PAGE = _HISTORY.order_by(_messages.id).limit(_PAGE)
_FIND_CONVERSATION = sa_select(_conversations.id).where(
    _conversations.platform == bindparam("platform"),
    _conversations.workspace == bindparam("workspace"),
    _conversations.channel == bindparam("channel"),
    _conversations.thread == bindparam("thread"),
)
_INSERT_CONVERSATION = insert(Conversation).returning(_conversations.id)
_NTH_BY_USER = (
    sa_select(_messages.created_at)
    .where(  # only user messages have an author: the (author_id, created_at) index alone
        _messages.author_id == bindparam("author_id"),
        _messages.created_at >= bindparam("since"),
    )
    .order_by(_messages.created_at.desc())
    .limit(1)
    .offset(bindparam("skip"))
)
# Messages carry no channel: each of the channel's conversations is read from the window's
# first message id (ids follow time), not from its start.
_FIRST_SINCE = (
    sa_select(_messages.id)
    .where(_messages.created_at >= bindparam("since"))
    .order_by(_messages.created_at)
    .limit(1)
    .scalar_subquery()
)
_NTH_IN_CHANNEL = (
    sa_select(_messages.created_at)
    .join(Conversation, _conversations.id == _messages.conversation_id)
    .where(
        _conversations.platform == bindparam("platform"),
        _conversations.workspace == bindparam("workspace"),
        _conversations.channel == bindparam("channel"),
        _messages.id >= _FIRST_SINCE,
        _messages.created_at >= bindparam("since"),
        _messages.role == "user",
    )
    .order_by(_messages.created_at.desc())
    .limit(1)
    .offset(bindparam("skip"))
)
_events = ProcessedEvent.__table__.c  # type: ignore[attr-defined]
_FORGET_EVENTS = delete(ProcessedEvent).where(_events.created_at < bindparam("before"))
_CLAIM_EVENT = insert(ProcessedEvent)
_INSERT_MESSAGE = insert(Message).returning(_messages.id)
_INSERT_CALLS = insert(LlmCall)
_INSERT_SOURCES = insert(MessageSource)
_OPEN_TURN = insert(OpenTurn)


def _conversation_id(connection: Connection, key: ConversationRef) -> int:
    """A concurrent creator (another replica) wins the unique constraint; we read its row."""
    where = {
        "platform": key.platform,
        "workspace": key.workspace,
        "channel": key.channel,
        "thread": key.thread,
    }
    found = connection.execute(_FIND_CONVERSATION, where).scalar()
    if found is not None:
        return int(found)
    row = table_row(
        Conversation,
        platform=key.platform,
        workspace=key.workspace,
        channel=key.channel,
        thread=key.thread,
    )
    try:
        created = connection.execute(_INSERT_CONVERSATION, row).scalar_one()
    except IntegrityError:
        connection.rollback()
        return int(connection.execute(_FIND_CONVERSATION, where).scalar_one())
    connection.commit()
    return int(created)


def _claim(
    connection: Connection, rows: list[dict[str, Any]], *, prune: bool, keep: timedelta
) -> bool:
    """Insert the claim rows; False (and the transaction rolled back) when any was taken."""
    if prune:
        connection.execute(_FORGET_EVENTS, {"before": utcnow() - keep})
    try:
        connection.execute(_CLAIM_EVENT, rows)
    except IntegrityError:
        connection.rollback()
        return False
    return True


def _open_turn_row(message_id: int, pending: PendingReply) -> dict[str, Any]:
    return table_row(
        OpenTurn,
        message_id=message_id,
        surface=pending.surface,
        place=storable(pending.place),
        owner=pending.owner,
    )


def storable(text: str) -> str:
    """`text` as every database keeps it: Postgres refuses NUL in text, and no database takes a
    lone surrogate (from a mangled emoji) in UTF-8; both become U+FFFD rather than fail."""
    if text.isascii() and "\x00" not in text:
        return text
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _insert_message(connection: Connection, row: dict[str, Any]) -> int:
    return int(connection.execute(_INSERT_MESSAGE, row).scalar_one())


def _message_row(
    message: NewMessage, conversation_id: int, prompt_version_id: int | None
) -> dict[str, Any]:
    fields = _fields(message)
    for name in ("text", "author_id", "author_name"):
        fields[name] = storable(fields[name])
    return table_row(
        Message, conversation_id=conversation_id, prompt_version_id=prompt_version_id, **fields
    )


def _source_row(source: Source, message_id: int) -> dict[str, Any]:
    return table_row(
        MessageSource,
        message_id=message_id,
        number=source.number,
        collection=source.collection[:64],
        document=source.document[:1024],
        title=source.title[:300],
        heading=source.heading[:500],
        link=source.link[:2048] if source.link else None,
    )


def _call_row(
    call: CallRecord,
    conversation_id: int | None,
    prompt_version_id: int | None,
    message_id: int | None,
) -> dict[str, Any]:
    fields = _fields(call)
    del fields["finish_reason"]  # for traces: the table keeps cut-offs in error_class
    return table_row(
        LlmCall,
        conversation_id=conversation_id,
        prompt_version_id=prompt_version_id,
        message_id=message_id,
        **fields,
    )


def _fields(record: Any) -> dict[str, Any]:
    """A flat dataclass's fields (`asdict` deep-copies every value, on every turn)."""
    return {field.name: getattr(record, field.name) for field in fields(record)}


def _history(connection: Connection, conversation_id: int, token_limit: int) -> History:
    row = connection.execute(_STATE, {"conversation_id": conversation_id}).one()
    state = ConversationState(
        id=conversation_id,
        summary=row.summary,
        summary_tokens=row.summary_tokens,
        summary_through_id=row.summary_through_id,
    )
    newest, complete = _newest(
        connection, conversation_id, after_id=state.summary_through_id, limit=token_limit
    )
    return History(state=state, newest=newest, complete=complete)


def _newest(
    connection: Connection, conversation_id: int, *, after_id: int, limit: int
) -> tuple[list[HistoryEntry], bool]:
    """Newest-first complete messages after `after_id`, until their tokens pass `limit`, and
    whether that read every one of them.

    Reads in pages from the newest end, so the cost depends on the budget, never on how long
    the conversation is.
    """
    found: list[HistoryEntry] = []
    total = 0
    up_to_id = LARGEST_ID
    while True:
        params = {"conversation_id": conversation_id, "after_id": after_id, "up_to_id": up_to_id}
        page = connection.execute(_NEWEST_PAGE, params).all()
        for index, row in enumerate(page):
            entry = HistoryEntry._make(row)
            found.append(entry)
            total += entry.token_count
            if total > limit:
                read_all = index == len(page) - 1 and len(page) < _PAGE
                return found, read_all
        if len(page) < _PAGE:
            return found, True
        up_to_id = page[-1][0] - 1


def _event_key(key: str) -> str:
    """Platform ids are short, but a key must never fail the column's 255-character limit."""
    if len(key) <= 255:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()
