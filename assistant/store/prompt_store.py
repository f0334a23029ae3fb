"""Prompt versions, their bindings to scopes, the audit log, A/B assignments and the reply cache.

Read fresh on every turn, never cached in memory: a change made by one replica answers the very
next turn in all of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select as sa_select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from assistant.prompts.bindings import Binding, Scope, scopes_for
from assistant.store.database import WorkRunner
from assistant.store.places import applies_here
from assistant.store.tables import (
    CachedResponse,
    LlmCall,
    PromptAssignment,
    PromptAudit,
    PromptBinding,
    PromptVersionRow,
    utcnow,
)
from assistant.turns import ConversationRef

_bindings = PromptBinding.__table__.c  # type: ignore[attr-defined]
# Built once (statement building costs more than the query): the bindings of one place.
_BINDINGS_FOR = sa_select(
    _bindings.scope, _bindings.prompt_name, _bindings.version, _bindings.split
).where(applies_here(_bindings))


class PromptVersionConflict(Exception):
    """A released prompt version came back with different content."""


@dataclass(frozen=True, kw_only=True)
class VersionUsage:
    calls: int
    contract_violations: int
    cache_hits: int


@dataclass(frozen=True, kw_only=True)
class BindingChange:
    """What a change did, for the answer to the admin and the audit log."""

    audit_id: int
    before: Binding | None
    after: Binding | None


class PromptStore:
    def __init__(self, engine: AsyncEngine, *, run: WorkRunner | None = None) -> None:
        self._sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
        self._run = run or WorkRunner(engine)

    async def save_version(self, row: PromptVersionRow) -> PromptVersionRow:
        """Insert a version once; the same content again is a no-op, other content is refused."""
        async with self._sessions() as session:
            existing = await _version(session, row.name, row.version)
            if existing is not None:
                if existing.content_hash != row.content_hash:
                    raise PromptVersionConflict(
                        f"{row.source_file}: {row.name} version {row.version} was already "
                        f"released with other content; add a new version file instead of "
                        f"editing this one"
                    )
                return existing
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:  # another replica saved it first: compare with theirs
                await session.rollback()
                return await self.save_version(
                    PromptVersionRow.model_validate(row.model_dump(exclude={"id"}))
                )
            return row

    async def usage(self, prompt_version_id: int) -> VersionUsage:
        """How a version has done in production: replies, contract violations, cache hits."""
        replies = col(LlmCall.purpose).in_(("reply", "repair"))  # a repair breaks it too
        query = select(
            func.count(),
            func.count().filter(col(LlmCall.contract_error).is_not(None)),
            func.count().filter(col(LlmCall.cache_hit)),
        ).where(col(LlmCall.prompt_version_id) == prompt_version_id, replies)
        async with self._sessions() as session:
            calls, violations, hits = (await session.exec(query)).one()
        return VersionUsage(calls=calls, contract_violations=violations, cache_hits=hits)

    async def versions(self, name: str | None = None) -> list[PromptVersionRow]:
        async with self._sessions() as session:
            query = select(PromptVersionRow).order_by(
                col(PromptVersionRow.name), col(PromptVersionRow.version)
            )
            if name is not None:
                query = query.where(PromptVersionRow.name == name)
            return list((await session.exec(query)).all())

    async def version(self, name: str, version: int) -> PromptVersionRow | None:
        async with self._sessions() as session:
            return await _version(session, name, version)

    async def bindings_for(self, ref: ConversationRef) -> list[tuple[Scope, Binding]]:
        """The bindings that apply to a conversation, most specific first."""
        scopes = scopes_for(ref)
        params = {"platform": ref.platform, "workspace": ref.workspace, "channel": ref.channel}

        def work(connection: Connection) -> dict[str, Binding]:  # read on every turn: Core
            rows = connection.execute(_BINDINGS_FOR, params).all()
            return {kind: _binding_of(name, version, split) for kind, name, version, split in rows}

        by_kind = await self._run(work)
        return [(scope, by_kind[scope.kind]) for scope in scopes if scope.kind in by_kind]

    async def bindings(self) -> list[tuple[Scope, Binding]]:
        async with self._sessions() as session:
            rows = (await session.exec(select(PromptBinding).order_by(col(PromptBinding.id)))).all()
        return [(_scope(row), _binding(row)) for row in rows]

    async def binding(self, scope: Scope) -> Binding | None:
        async with self._sessions() as session:
            row = (await session.exec(select(PromptBinding).where(_matches(scope)))).first()
        return _binding(row) if row else None

    async def change_binding(
        self,
        scope: Scope,
        after: Binding | None,
        *,
        actor: str,
        surface: str,
        action: str,
        forced: bool = False,
        undoes: int | None = None,
    ) -> BindingChange:
        """Set (or clear) a scope's binding and write the audit row, in one transaction.

        Two admins binding a new scope at once collide on its unique key; the loser retries
        and records the winner's binding as its `before`.
        """
        for attempt in (1, 2):
            audit = _audit_row(scope, after, actor=actor, surface=surface, action=action)
            audit.forced = forced
            async with self._sessions() as session:
                try:
                    before = await _write_binding(session, scope, after, actor)
                    await _audit(session, audit, after or before, before, undoes)
                    await session.commit()
                except IntegrityError:  # the insert (flush) or the commit lost the race
                    if attempt == 2:
                        raise
                    await session.rollback()
                    continue
                assert audit.id is not None
                return BindingChange(audit_id=audit.id, before=before, after=after)
        raise AssertionError("unreachable")

    async def last_change(self, scope: Scope) -> PromptAudit | None:
        """The newest change of this scope's binding that no rollback has undone yet."""
        async with self._sessions() as session:
            query = (
                select(PromptAudit)
                .where(
                    PromptAudit.scope == scope.kind,
                    PromptAudit.platform == scope.platform,
                    PromptAudit.workspace == scope.workspace,
                    PromptAudit.channel == scope.channel,
                    col(PromptAudit.action).in_(("use", "ab")),
                    col(PromptAudit.undone_by).is_(None),
                )
                .order_by(col(PromptAudit.id).desc())
            )
            return (await session.exec(query)).first()

    async def history(self, prompt_name: str, *, limit: int = 20) -> list[PromptAudit]:
        async with self._sessions() as session:
            query = (
                select(PromptAudit)
                .where(PromptAudit.prompt_name == prompt_name)
                .order_by(col(PromptAudit.id).desc())
                .limit(limit)
            )
            return list((await session.exec(query)).all())

    async def assignment(self, conversation_id: int, prompt_name: str) -> int | None:
        async with self._sessions() as session:
            row = await session.get(PromptAssignment, (conversation_id, prompt_name))
            return row.version if row else None

    async def assign(self, conversation_id: int, prompt_name: str, version: int) -> int:
        """Record a conversation's version; if another replica assigned one first, theirs wins."""
        async with self._sessions() as session:
            row = await session.get(PromptAssignment, (conversation_id, prompt_name))
            if row is not None:
                row.version = version  # the split no longer offers the old version
            else:
                session.add(
                    PromptAssignment(
                        conversation_id=conversation_id, prompt_name=prompt_name, version=version
                    )
                )
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                existing = await self.assignment(conversation_id, prompt_name)
                assert existing is not None
                return existing
            return version

    async def cached_reply(self, key: str, *, max_age: timedelta) -> str | None:
        async with self._sessions() as session:
            row = await session.get(CachedResponse, key)
            if row is None or row.created_at < utcnow() - max_age:
                return None
            return row.text

    async def cache_reply(self, key: str, prompt_version_id: int, text: str) -> None:
        async with self._sessions() as session:
            await session.merge(  # replaces an expired entry
                CachedResponse(key=key, prompt_version_id=prompt_version_id, text=text)
            )
            try:
                await session.commit()
            except IntegrityError:  # the same context was answered and cached concurrently
                await session.rollback()


async def _audit(
    session: AsyncSession,
    audit: PromptAudit,
    named: Binding | None,
    before: Binding | None,
    undoes: int | None,
) -> None:
    """Add the audit row of a change, marking the change it undoes (a rollback)."""
    audit.prompt_name = named.prompt if named else ""
    audit.before = before.to_json() if before else None
    session.add(audit)
    await session.flush()
    if undoes is not None:
        undone = await session.get(PromptAudit, undoes)
        assert undone is not None
        undone.undone_by = audit.id


async def _write_binding(
    session: AsyncSession, scope: Scope, after: Binding | None, actor: str
) -> Binding | None:
    """Make the scope's binding `after` (None clears it); returns what it was."""
    row = (await session.exec(select(PromptBinding).where(_matches(scope)))).first()
    before = _binding(row) if row else None
    if after is None:
        if row is not None:
            await session.delete(row)
        return before
    row = row or PromptBinding(
        scope=scope.kind,
        platform=scope.platform,
        workspace=scope.workspace,
        channel=scope.channel,
        prompt_name=after.prompt,
        updated_by=actor,
    )
    row.prompt_name, row.version = after.prompt, after.version
    row.split = json.dumps(after.split) if after.split else None
    row.updated_at, row.updated_by = utcnow(), actor
    session.add(row)
    return before


async def _version(session: AsyncSession, name: str, version: int) -> PromptVersionRow | None:
    query = select(PromptVersionRow).where(
        PromptVersionRow.name == name, PromptVersionRow.version == version
    )
    return (await session.exec(query)).first()


def _matches(scope: Scope) -> ColumnElement[bool]:
    return (
        (col(PromptBinding.scope) == scope.kind)
        & (col(PromptBinding.platform) == scope.platform)
        & (col(PromptBinding.workspace) == scope.workspace)
        & (col(PromptBinding.channel) == scope.channel)
    )


def _binding(row: PromptBinding) -> Binding:
    return _binding_of(row.prompt_name, row.version, row.split)


def _binding_of(prompt: str, version: int | None, split_json: str | None) -> Binding:
    split = tuple((int(v), int(w)) for v, w in json.loads(split_json)) if split_json else ()
    return Binding(prompt=prompt, version=version, split=split)


def _scope(row: PromptBinding) -> Scope:
    return Scope(
        kind=row.scope,  # type: ignore[arg-type]
        platform=row.platform,
        workspace=row.workspace,
        channel=row.channel,
    )


def _audit_row(
    scope: Scope, after: Binding | None, *, actor: str, surface: str, action: str
) -> PromptAudit:
    """The audit row of a change, before the transaction names its prompt and `before`."""
    return PromptAudit(
        actor=actor,
        surface=surface,
        action=action,
        prompt_name="",
        scope=scope.kind,
        platform=scope.platform,
        workspace=scope.workspace,
        channel=scope.channel,
        after=after.to_json() if after else None,
    )
