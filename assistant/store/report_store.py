"""The report's SQL: a period's calls, messages, votes and eval runs, aggregated in the database
where that is easy, in statements SQLite and Postgres both run."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Row,
    Select,
    and_,
    bindparam,
    case,
    exists,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, aliased
from sqlalchemy.sql import Executable
from sqlmodel import col

from assistant.records import ESTIMATE_PREFIX, JUDGE
from assistant.store.eval_store import FAKE_MODEL
from assistant.store.tables import (
    Conversation,
    EvalRun,
    Feedback,
    LlmCall,
    Message,
    PromptVersionRow,
)

EVAL_PLATFORM = "eval"  # the eval runner's conversations: not production traffic
_EVAL_RUNS_PER_VERSION = 2  # the latest, and the one before it to compare with
PERCENTS = (50, 95, 99)  # the latency percentiles a report shows
AnyRow = Row[*tuple[Any, ...]]
Traffic = Literal["production", "eval", "fake", "fake_eval"]


@dataclass(frozen=True, kw_only=True)
class CallTotals:
    """The calls of one UTC hour (or day), model, prompt version and platform."""

    start: datetime  # the start of the hour (or day), UTC
    model: str
    prompt_version_id: int | None
    platform: str | None  # None: a call made outside any conversation
    calls: int
    errors: int
    unpriced: int  # no cost although the call was billed (it did not fail)
    cost_usd: float  # priced calls only
    prompt_tokens: int
    completion_tokens: int  # reasoning tokens included
    cached_tokens: int
    reasoning_tokens: int
    estimated_calls: int  # whose tokens our tokenizer counted: the server sent no usage
    estimated_prompt_tokens: int  # the part of prompt_tokens those calls make up
    estimated_completion_tokens: int
    fallback_answers: int  # calls a fallback model answered for the version's own
    purpose: str = "reply"  # reply, summary, repair, embedding, judge

    @property
    def traffic(self) -> Traffic:
        """Eval turns are eval traffic, the fake model's (`eval run --fake`) apart from real
        models'; any other call the bundled fake model answered (`--fake`) is fake traffic;
        the rest is production."""
        fake = self.model == FAKE_MODEL
        if self.platform == EVAL_PLATFORM:
            return "fake_eval" if fake else "eval"
        return "fake" if fake else "production"


Ranks = dict[int, float]  # percent (PERCENTS) -> the latency at that nearest rank


@dataclass(frozen=True, kw_only=True)
class ReplyLatency:
    """Nearest-rank percentiles of the answered reply calls' latency: over the whole period,
    and per UTC hour (or day) that had one. The p-th
    percentile of n values is the value at rank ceil(p/100 * n) of the sorted values, so it
    is always a latency that was actually seen."""

    ttft_ms: Ranks  # empty: no reply reported a first token
    total_ms: Ranks
    ttft_by_bucket: dict[datetime, Ranks]
    total_by_bucket: dict[datetime, Ranks]


@dataclass(frozen=True, kw_only=True)
class MessageCounts:
    conversations: int
    messages: int  # user and assistant
    replies_by_version: dict[int | None, int]


@dataclass(frozen=True, kw_only=True)
class Votes:
    up: int
    down: int


@dataclass(frozen=True, kw_only=True)
class EvalPoint:
    """What one eval run measured."""

    pass_rate: float
    consistency: float | None


class ReportQueries:
    """Read-only aggregates over [start, end) of production traffic: eval turns and the calls
    the bundled fake model answered are left out, or told apart where they are returned. With
    `fake`, the other way round: the fake model's traffic is studied (`assistant report
    --fake`, for trying the report offline) and production is left out.

    A conversation counts as fake traffic when every model call it made in the period was the
    fake's (`assistant chat --fake`); one that also reached a real model counts as production.
    """

    def __init__(self, engine: AsyncEngine, *, fake: bool = False) -> None:
        self._engine = engine
        self._fake = fake
        self._fake_ids: dict[tuple[datetime, datetime], list[int]] = {}

    async def call_totals(
        self, start: datetime, end: datetime, *, by_day: bool = False
    ) -> list[CallTotals]:
        """Every call in the period (eval and fake ones too: see `CallTotals.traffic`), grouped
        by UTC hour (or day, `by_day`), so a report can fold them into its buckets."""
        bucket = self._utc_bucket(col(LlmCall.created_at), by_day=by_day)
        platform = _platform_of_call()
        cost, status = col(LlmCall.cost_usd), col(LlmCall.status)
        estimated = col(LlmCall.token_source).startswith(ESTIMATE_PREFIX, autoescape=True)
        # Group by the raw platform, not by an "is eval" test: a bound parameter in GROUP BY
        # is a different expression to Postgres than the same one in the SELECT list.
        statement = (
            select(
                bucket.label("bucket"),
                col(LlmCall.model),
                col(LlmCall.prompt_version_id),
                platform.label("platform"),
                col(LlmCall.purpose),
                func.count().label("calls"),
                _count_where(status == "error").label("errors"),
                _count_where(and_(cost.is_(None), status != "error")).label("unpriced"),
                func.sum(cost).label("cost_usd"),
                func.sum(col(LlmCall.prompt_tokens)).label("prompt_tokens"),
                func.sum(col(LlmCall.completion_tokens)).label("completion_tokens"),
                func.sum(col(LlmCall.cached_tokens)).label("cached_tokens"),
                func.sum(col(LlmCall.reasoning_tokens)).label("reasoning_tokens"),
                _count_where(estimated).label("estimated_calls"),
                _sum_where(estimated, col(LlmCall.prompt_tokens)).label("estimated_prompt"),
                _sum_where(estimated, col(LlmCall.completion_tokens)).label("estimated_completion"),
                _count_where(and_(col(LlmCall.fallback_for).is_not(None), status == "ok")).label(
                    "fallback_answers"
                ),
            )
            .select_from(LlmCall)
            .outerjoin(Conversation, col(LlmCall.conversation_id) == col(Conversation.id))
            .where(_within(col(LlmCall.created_at), start, end))
            .group_by(
                bucket,
                col(LlmCall.model),
                col(LlmCall.prompt_version_id),
                platform,
                col(LlmCall.purpose),
            )
        )
        starts = _BucketStarts()
        return [_call_totals(row, starts(row.bucket)) for row in await self._rows(statement)]

    async def priced_cost(self, start: datetime, end: datetime) -> float:
        """Production spend in the period, priced calls only."""
        statement = (
            select(func.sum(col(LlmCall.cost_usd)))
            .select_from(LlmCall)
            .outerjoin(Conversation, col(LlmCall.conversation_id) == col(Conversation.id))
            .where(_within(col(LlmCall.created_at), start, end), _studied_call(self._fake))
        )
        [row] = await self._rows(statement)
        return float(row[0] or 0.0)

    async def reply_latency(
        self, start: datetime, end: datetime, *, by_day: bool = False
    ) -> ReplyLatency:
        """Production reply calls that reached the model and answered (what latency means):
        their percentiles over the period and per UTC hour (or day, `by_day`).

        One read of the replies' (bucket, ttft, total), ranked here: a window ranking in SQL
        sorts the period's rows again for each figure and each grouping (four passes), where
        this reads them once and sorts plain floats (a 30-day month of a million-call
        quarter: 1.4 s against 0.35 s at 100,000 calls on SQLite)."""
        statement = (
            select(
                self._utc_bucket(col(LlmCall.created_at), by_day=by_day),
                col(LlmCall.ttft_ms),
                col(LlmCall.total_ms),
            )
            .select_from(LlmCall)
            .outerjoin(Conversation, col(LlmCall.conversation_id) == col(Conversation.id))
            .where(
                _within(col(LlmCall.created_at), start, end),
                _studied_call(self._fake),
                col(LlmCall.purpose) == "reply",
                col(LlmCall.status) == "ok",
                col(LlmCall.cache_hit).is_(False),
            )
        )
        ttft: dict[str, list[float]] = {}
        total: dict[str, list[float]] = {}
        for bucket, first, whole in await self._rows(statement):
            if first is not None:
                ttft.setdefault(bucket, []).append(first)
            total.setdefault(bucket, []).append(whole)
        starts = _BucketStarts()
        return ReplyLatency(
            ttft_ms=_ranks([value for values in ttft.values() for value in values]),
            total_ms=_ranks([value for values in total.values() for value in values]),
            ttft_by_bucket={starts(bucket): _ranks(values) for bucket, values in ttft.items()},
            total_by_bucket={starts(bucket): _ranks(values) for bucket, values in total.items()},
        )

    async def message_counts(self, start: datetime, end: datetime) -> MessageCounts:
        where = (
            _within(col(Message.created_at), start, end),
            col(Message.role).in_(("user", "assistant")),
            col(Conversation.platform) != EVAL_PLATFORM,
            await self._studied_conversation(start, end),
        )
        joined = (
            select()
            .select_from(Message)
            .join(Conversation, col(Message.conversation_id) == col(Conversation.id))
        )
        by_role = joined.add_columns(
            col(Message.role), col(Message.prompt_version_id), func.count()
        ).where(*where)
        by_role = by_role.group_by(col(Message.role), col(Message.prompt_version_id))
        distinct = joined.add_columns(func.count(col(Message.conversation_id).distinct()))
        rows = await self._rows(by_role)
        [conversations] = await self._rows(distinct.where(*where))
        return MessageCounts(
            conversations=int(conversations[0]),
            messages=sum(int(row[2]) for row in rows),
            replies_by_version={row[1]: int(row[2]) for row in rows if row[0] == "assistant"},
        )

    async def votes(self, start: datetime, end: datetime) -> dict[int | None, Votes]:
        """Votes cast or changed in the period, per the answer's prompt version."""
        vote = col(Feedback.vote)
        statement = (
            select(col(Feedback.prompt_version_id), _count_where(vote > 0), _count_where(vote < 0))
            .select_from(Feedback)
            .join(Message, col(Feedback.message_id) == col(Message.id))
            .join(Conversation, col(Message.conversation_id) == col(Conversation.id))
            .where(
                _within(col(Feedback.updated_at), start, end),
                col(Conversation.platform) != EVAL_PLATFORM,
                await self._studied_conversation(start, end),
            )
            .group_by(col(Feedback.prompt_version_id))
        )
        return {
            row[0]: Votes(up=int(row[1]), down=int(row[2])) for row in await self._rows(statement)
        }

    async def version_labels(self, ids: Collection[int]) -> dict[int, tuple[str, int]]:
        """Prompt version id -> (name, version)."""
        if not ids:
            return {}
        statement = select(
            col(PromptVersionRow.id), col(PromptVersionRow.name), col(PromptVersionRow.version)
        ).where(col(PromptVersionRow.id).in_(sorted(ids)))
        return {row[0]: (row[1], row[2]) for row in await self._rows(statement)}

    async def fake_conversations(self, start: datetime, end: datetime) -> int:
        """How many conversations only the bundled fake model answered in the period."""
        return len(await self._fake_conversation_ids(start, end))

    async def eval_history(
        self, versions: Collection[tuple[str, int]], *, before: datetime
    ) -> dict[tuple[str, int], list[EvalPoint]]:
        """The newest two runs of each version finished before `before`, newest first; runs
        against the bundled fake model say nothing about a version's quality and are skipped."""
        if not versions:
            return {}
        recency = (
            func.row_number()
            .over(
                partition_by=(col(EvalRun.prompt_name), col(EvalRun.version)),
                order_by=(col(EvalRun.finished_at).desc(), col(EvalRun.id).desc()),
            )
            .label("recency")
        )
        ranked = (
            select(
                col(EvalRun.prompt_name),
                col(EvalRun.version),
                col(EvalRun.pass_rate),
                col(EvalRun.consistency),
                recency,
            )
            .where(
                col(EvalRun.finished_at) < before,
                col(EvalRun.prompt_name).in_(sorted({name for name, _ in versions})),
                (col(EvalRun.model) == FAKE_MODEL)
                if self._fake
                else (col(EvalRun.model) != FAKE_MODEL),
            )
            .subquery()
        )
        statement = (
            select(ranked)
            .where(ranked.c.recency <= _EVAL_RUNS_PER_VERSION)
            .order_by(ranked.c.prompt_name, ranked.c.version, ranked.c.recency)
        )
        history: dict[tuple[str, int], list[EvalPoint]] = {}
        for row in await self._rows(statement):
            if (row.prompt_name, row.version) in versions:
                point = EvalPoint(pass_rate=row.pass_rate, consistency=row.consistency)
                history.setdefault((row.prompt_name, row.version), []).append(point)
        return history

    async def _studied_conversation(self, start: datetime, end: datetime) -> ColumnElement[bool]:
        """The fake model's conversations (or all but them), by id: read once per period and
        written into the statement. As a NOT IN subquery Postgres misjudged it (one row) and
        compared every conversation with every fake one: 30 s a query at a million calls."""
        ids: BindParameter[list[int]] = bindparam(
            "fake_conversations",
            await self._fake_conversation_ids(start, end),
            expanding=True,
            literal_execute=True,  # integers, as many as there are: no bound-parameter limit
        )
        return col(Conversation.id).in_(ids) if self._fake else col(Conversation.id).not_in(ids)

    async def _fake_conversation_ids(self, start: datetime, end: datetime) -> list[int]:
        found = self._fake_ids.get((start, end))
        if found is None:
            rows = await self._rows(_fake_conversations(start, end))
            found = self._fake_ids[(start, end)] = sorted(int(row[0]) for row in rows)
        return found

    def _utc_bucket(self, column: Mapped[datetime], *, by_day: bool) -> ColumnElement[Any]:
        """The UTC hour ("2025-03-10 09") or day ("2025-03-10") of a timestamp, as text.
        SQLite stores UTC text ("2025-03-10 09:41:07.123456"), whose prefix is the hour: cut
        it rather than parse it (strftime costs twice as much over a month of calls);
        Postgres's timestamptz would otherwise be cut at the session's time zone. No bound
        parameters: the expression also appears in GROUP BY."""
        if self._engine.dialect.name == "postgresql":
            utc = func.timezone(literal_column("'UTC'"), column)
            pattern = "'YYYY-MM-DD'" if by_day else "'YYYY-MM-DD HH24'"
            return func.to_char(utc, literal_column(pattern))
        return func.substr(column, literal_column("1"), literal_column("10" if by_day else "13"))

    async def _rows(self, statement: Executable) -> Sequence[AnyRow]:
        async with self._engine.connect() as connection:
            return (await connection.execute(statement)).all()


def _within(column: Mapped[datetime], start: datetime, end: datetime) -> ColumnElement[bool]:
    return and_(column >= start, column < end)


def _studied_call(fake: bool) -> ColumnElement[bool]:
    """A call in a conversation that is not an eval's (or in none, but for an eval's judge)
    that the bundled fake model did not answer (or, `fake`, did)."""
    platform = col(Conversation.platform)
    model = col(LlmCall.model)
    answered = (model == FAKE_MODEL) if fake else (model != FAKE_MODEL)
    judged = col(LlmCall.purpose) == JUDGE
    return and_(or_(platform.is_(None), platform != EVAL_PLATFORM), ~judged, answered)


def _platform_of_call() -> ColumnElement[Any]:
    """The platform a call counts under: its conversation's, and the eval platform for an
    eval's judge (made in no conversation). Literals, not bound parameters: the expression
    is grouped by too."""
    judged = col(LlmCall.purpose) == literal_column(f"'{JUDGE}'")
    return case((judged, literal_column(f"'{EVAL_PLATFORM}'")), else_=col(Conversation.platform))


def _fake_conversations(start: datetime, end: datetime) -> Select[int | None]:
    """The conversations, evals' aside, whose every model call in [start, end) the fake model
    answered: one fake call in the period, and no other. Read from the fake model's calls
    (few) through the (model, created_at) index; each one's other calls through the
    (conversation_id, created_at) one."""
    real = aliased(LlmCall)
    real_call = exists().where(
        col(real.conversation_id) == col(LlmCall.conversation_id),
        col(real.model) != FAKE_MODEL,
        _within(col(real.created_at), start, end),
    )
    eval_conversation = exists().where(
        col(Conversation.id) == col(LlmCall.conversation_id),
        col(Conversation.platform) == EVAL_PLATFORM,
    )
    return (
        select(col(LlmCall.conversation_id))
        .distinct()
        .where(
            col(LlmCall.model) == FAKE_MODEL,
            _within(col(LlmCall.created_at), start, end),
            col(LlmCall.conversation_id).is_not(None),
            ~eval_conversation,
            ~real_call,
        )
    )


def _count_where(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.sum(case((condition, 1), else_=0))


def _sum_where(condition: ColumnElement[bool], column: Mapped[int]) -> ColumnElement[Any]:
    return func.sum(case((condition, column), else_=0))


def _ranks(values: list[float]) -> Ranks:
    """The PERCENTS of `values` at their nearest ranks: the value at rank ceil(p/100 * n) of
    the n sorted values (ceil in integers: no float rounding at the edge). Sorts in place."""
    values.sort()
    count = len(values)
    return {p: values[-(-p * count // 100) - 1] for p in PERCENTS} if count else {}


class _BucketStarts:
    """Bucket text ("2025-03-10 09" or "2025-03-10") -> its UTC start, each parsed once."""

    def __init__(self) -> None:
        self._seen: dict[str, datetime] = {}

    def __call__(self, text: str) -> datetime:
        found = self._seen.get(text)
        if found is None:
            shape = "%Y-%m-%d %H" if len(text) > 10 else "%Y-%m-%d"
            found = self._seen[text] = datetime.strptime(text, shape).replace(tzinfo=UTC)
        return found


def _call_totals(row: AnyRow, start: datetime) -> CallTotals:
    return CallTotals(
        start=start,
        model=row.model,
        prompt_version_id=row.prompt_version_id,
        platform=row.platform,
        calls=int(row.calls),
        errors=int(row.errors),
        unpriced=int(row.unpriced),
        cost_usd=float(row.cost_usd or 0.0),
        prompt_tokens=int(row.prompt_tokens),
        completion_tokens=int(row.completion_tokens),
        cached_tokens=int(row.cached_tokens),
        reasoning_tokens=int(row.reasoning_tokens),
        estimated_calls=int(row.estimated_calls),
        estimated_prompt_tokens=int(row.estimated_prompt),
        estimated_completion_tokens=int(row.estimated_completion),
        fallback_answers=int(row.fallback_answers),
        purpose=row.purpose,
    )
