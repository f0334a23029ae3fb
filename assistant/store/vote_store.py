"""Votes on answers (👍/👎), each carrying the prompt version that gave the answer: what reports
break down by version, and what from-feedback cases and fine-tuning exports are made of."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from assistant.store.tables import Conversation, Feedback, Message, PromptVersionRow, utcnow
from assistant.turns import ConversationRef


class VoteStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)

    async def record(self, message_id: int, user_id: str, vote: int) -> bool:
        """Store or change `user_id`'s vote on an assistant message; False when there is no
        such answer. The vote carries the answer's prompt version."""
        async with self._sessions() as session:
            message = await session.get(Message, message_id)
            if message is None or message.role != "assistant":
                return False
            vote_row = Feedback(
                message_id=message_id,
                prompt_version_id=message.prompt_version_id,
                user_id=user_id,
                vote=vote,
            )
            for _ in range(2):  # a concurrent first vote by the same user wins the insert
                if await _save_vote(session, vote_row):
                    return True
            return False

    async def rated_answers(
        self, *, liked: bool, prompt_name: str | None = None
    ) -> list[tuple[Message, PromptVersionRow | None]]:
        """Answers whose votes lean one way (more 👍 than 👎, or the reverse), with the
        version that gave them; oldest first."""
        net = func.sum(Feedback.vote)
        statement = (
            select(Message, PromptVersionRow)
            .join(Feedback, col(Feedback.message_id) == col(Message.id))
            .outerjoin(PromptVersionRow, col(PromptVersionRow.id) == col(Message.prompt_version_id))
            .group_by(col(Message.id), col(PromptVersionRow.id))
            .having(net > 0 if liked else net < 0)
            .order_by(col(Message.id))
        )
        if prompt_name is not None:
            statement = statement.where(PromptVersionRow.name == prompt_name)
        async with self._sessions() as session:
            return [(message, version) for message, version in (await session.exec(statement))]

    async def of(self, message_id: int) -> list[Feedback]:
        """The votes on one answer, oldest first."""
        async with self._sessions() as session:
            result = await session.exec(
                select(Feedback).where(Feedback.message_id == message_id).order_by(col(Feedback.id))
            )
            return list(result.all())

    async def answer_place(self, message_id: int) -> ConversationRef | None:
        """Where an answer was given (a vote is taken only there); None when it is no answer."""
        async with self._sessions() as session:
            found = await session.exec(
                select(Conversation)
                .join(Message, col(Message.conversation_id) == col(Conversation.id))
                .where(Message.id == message_id, Message.role == "assistant")
            )
            row = found.first()
        if row is None:
            return None
        return ConversationRef(
            platform=row.platform, workspace=row.workspace, channel=row.channel, thread=row.thread
        )


async def _save_vote(session: AsyncSession, vote: Feedback) -> bool:
    """Insert the vote, or change the one this user already gave; False on losing a race."""
    existing = await session.exec(
        select(Feedback).where(
            Feedback.message_id == vote.message_id, Feedback.user_id == vote.user_id
        )
    )
    row = existing.first()
    if row is None:
        row = Feedback.model_validate(vote.model_dump())
    else:
        row.vote, row.updated_at = vote.vote, utcnow()
    session.add(row)
    try:
        await session.commit()
        return True
    except IntegrityError:
        await session.rollback()
        return False
