"""Reports: figures from rows seeded into the store (SQLite, and Postgres when
ASSISTANT_TEST_POSTGRES_URL is set), and their renderings within each platform's limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from assistant.reporting.figures import (
    BucketFigures,
    Percentiles,
    Period,
    Report,
    VersionFigures,
    build_report,
)
from assistant.reporting.wording import report_text, summary_fields
from assistant.store import Store
from assistant.store.tables import (
    Conversation,
    EvalRun,
    Feedback,
    LlmCall,
    Message,
    PromptVersionRow,
)
from bots.discord_notices import (
    DISCORD_FIELDS,
    DISCORD_NAME_LIMIT,
    DISCORD_TOTAL_LIMIT,
    DISCORD_VALUE_LIMIT,
    discord_embed,
    discord_embed_size,
)
from bots.slack_notices import slack_blocks
from tests.conftest import migrated

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
WEEK = Period.last("7d", now=NOW)  # 2025-03-03 12:00 to 2025-03-10 12:00
START = WEEK.start


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Store]:
    """conftest's `db`, with Postgres sessions far from UTC (hours must still be UTC's)."""
    async with migrated(database_url) as store:
        if store.engine.dialect.name == "postgresql":
            await _far_from_utc(store)
        yield store


async def _far_from_utc(store: Store) -> None:
    """Sessions in UTC+14: a day cut at the session's zone instead of UTC would show."""
    async with store.engine.connect() as connection:
        name = (await connection.execute(text("SELECT current_database()"))).scalar_one()
        await connection.execute(text(f"ALTER DATABASE \"{name}\" SET TIME ZONE 'Etc/GMT-14'"))
        await connection.commit()
    await store.engine.dispose()  # new sessions take the setting


class Seed:
    """Rows written straight into the tables, with the timestamps a test chooses."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, row: SQLModel) -> int:
        async with AsyncSession(self.store.engine, expire_on_commit=False) as session:
            session.add(row)
            await session.commit()
            identity: int = row.id  # type: ignore[attr-defined]
            return identity

    async def version(self, name: str, number: int) -> int:
        return await self.add(
            PromptVersionRow(
                name=name, version=number, content_hash=f"{name}{number}", source_file="", body=""
            )
        )

    async def conversation(self, platform: str, thread: str) -> int:
        return await self.add(
            Conversation(platform=platform, workspace="W", channel="C", thread=thread)
        )

    async def message(
        self, conversation: int, role: str, at: datetime, version: int | None = None
    ) -> int:
        return await self.add(
            Message(
                conversation_id=conversation,
                role=role,
                text="hi",
                token_count=1,
                prompt_version_id=version,
                created_at=at,
            )
        )

    async def call(self, at: datetime, **fields: Any) -> None:
        """One model call; by default a priced-nothing reply of gpt-4o-mini in no conversation."""
        row: dict[str, Any] = {
            "purpose": "reply",
            "model": "gpt-4o-mini",
            "prompt_tokens": 100,
            "completion_tokens": 10,
            "cached_tokens": 5,
            "total_ms": 1.0,
            "status": "ok",
            "created_at": at,
            **fields,
        }
        await self.add(LlmCall(**row))

    async def vote(
        self, message: int, user: str, vote: int, *, version: int | None, at: datetime
    ) -> None:
        created = min(at, START - timedelta(days=2))
        await self.add(
            Feedback(
                message_id=message,
                prompt_version_id=version,
                user_id=user,
                vote=vote,
                created_at=created,
                updated_at=at,
            )
        )

    async def eval_run(
        self,
        version: tuple[str, int],
        pass_rate: float,
        *,
        finished: datetime | None,
        consistency: float | None = None,
    ) -> None:
        await self.add(
            EvalRun(
                prompt_name=version[0],
                version=version[1],
                model="gpt-4o-mini",
                pass_rate=pass_rate,
                consistency=consistency,
                started_at=(finished or NOW) - timedelta(minutes=5),
                finished_at=finished,
            )
        )


async def seed_week(store: Store) -> dict[str, int]:
    """A week of traffic whose every figure is known (the comments give the arithmetic)."""
    seed = Seed(store)
    v1, v2 = await seed.version("assistant", 1), await seed.version("assistant", 2)
    slack, discord = (
        await seed.conversation("slack", "T1"),
        await seed.conversation("discord", "T2"),
    )
    old, evals = await seed.conversation("slack", "T0"), await seed.conversation("eval", "case-1")

    # 20 answered replies, one an hour from the period's first instant; total 100..2000 ms,
    # first token 10..200 ms. The first two are v1 on an unpriced model; 18 are v2 at $0.01.
    for i in range(20):
        version, model, cost = (v1, "model-x", None) if i < 2 else (v2, "gpt-4o-mini", 0.01)
        await seed.call(
            START + timedelta(hours=i),
            conversation_id=slack,
            prompt_version_id=version,
            model=model,
            cost_usd=cost,
            ttft_ms=10.0 * (i + 1),
            total_ms=100.0 * (i + 1),
        )
    # Counted as calls, left out of latency: a cache hit, a failure, an abandoned reply, a summary.
    mid = START + timedelta(days=3)
    v2_call = {"conversation_id": slack, "prompt_version_id": v2}
    await seed.call(mid, **v2_call, cost_usd=0.0, cache_hit=True, total_ms=1.0)
    await seed.call(mid, **v2_call, cost_usd=None, status="error", total_ms=50_000.0)
    await seed.call(mid, **v2_call, cost_usd=0.002, status="cancelled", total_ms=30_000.0)
    await seed.call(mid, **v2_call, cost_usd=0.005, purpose="summary", total_ms=99_999.0)
    # Today (the UTC day of the period's end): $0.25 on v1, $0.003 outside any conversation.
    today = NOW.replace(hour=0)
    await seed.call(
        today,
        conversation_id=discord,
        prompt_version_id=v1,
        model="gpt-4o",
        cost_usd=0.25,
        purpose="summary",
    )
    await seed.call(NOW - timedelta(hours=1), purpose="summary", cost_usd=0.003)
    # Outside the period, on both sides, and eval turns inside it: none of these count.
    for at in (START - timedelta(microseconds=1), NOW):
        await seed.call(at, **v2_call, cost_usd=100.0, ttft_ms=1.0)
    for _ in range(3):
        await seed.call(
            START + timedelta(hours=2),
            conversation_id=evals,
            prompt_version_id=v2,
            cost_usd=0.5,
            ttft_ms=1.0,
        )
    await seed.call(START, conversation_id=evals, prompt_version_id=v2, model="model-y")

    # Messages: two production conversations in the period (6 messages), one only before it.
    await seed.message(slack, "user", START)
    answer_v2 = await seed.message(slack, "assistant", START, v2)
    await seed.message(slack, "user", START + timedelta(hours=1))
    answer_v1 = await seed.message(slack, "assistant", START + timedelta(hours=1), v1)
    await seed.message(discord, "user", NOW - timedelta(seconds=1))
    await seed.message(discord, "assistant", NOW - timedelta(seconds=1), v2)
    await seed.message(old, "user", START - timedelta(minutes=1))
    await seed.message(old, "assistant", NOW, v2)  # at the end: excluded
    eval_answer = await seed.message(evals, "assistant", START + timedelta(hours=2), v2)
    await seed.message(evals, "user", START + timedelta(hours=2))

    # Votes by when they were last changed: v2 gets 2 up, 1 down; v1 1 down.
    inside = START + timedelta(days=1)
    await seed.vote(answer_v2, "slack:U1", 1, version=v2, at=inside)
    await seed.vote(answer_v2, "slack:U2", -1, version=v2, at=inside)
    await seed.vote(answer_v2, "slack:U3", 1, version=v2, at=START - timedelta(hours=1))
    await seed.vote(answer_v2, "slack:U4", 1, version=v2, at=START)
    await seed.vote(answer_v1, "slack:U1", -1, version=v1, at=inside)
    await seed.vote(answer_v2, "slack:U5", 1, version=v2, at=NOW)
    await seed.vote(eval_answer, "eval:runner", 1, version=v2, at=inside)

    # Eval runs: v2 went 88% -> 92% (consistency 90% -> 85%); a run after the period's end and
    # an unfinished one do not count. v1 has a single run, so no change.
    await seed.eval_run(("assistant", 2), 0.88, finished=START - timedelta(days=1), consistency=0.9)
    await seed.eval_run(("assistant", 2), 0.92, finished=NOW - timedelta(hours=1), consistency=0.85)
    await seed.eval_run(("assistant", 2), 0.50, finished=NOW + timedelta(hours=1), consistency=0.1)
    await seed.eval_run(("assistant", 2), 0.10, finished=None)
    await seed.eval_run(("assistant", 1), 0.75, finished=START)
    await seed.eval_run(("other", 2), 0.10, finished=START)
    return {"v1": v1, "v2": v2}


async def test_the_figures_of_a_seeded_week(db: Store):
    await seed_week(db)

    report = await build_report(db, WEEK, daily_budget_usd=1.0)

    assert (report.conversations, report.messages) == (2, 6)
    assert report.calls == 26  # 20 replies, 4 other v2 calls, 2 today
    assert report.errors == 1
    assert report.error_rate == pytest.approx(1 / 26)
    assert report.cost_usd == pytest.approx(18 * 0.01 + 0.002 + 0.005 + 0.25 + 0.003)
    assert report.unpriced_calls == 2 and report.unpriced_models == ("model-x",)
    assert report.cost_by_model == pytest.approx({"gpt-4o": 0.25, "gpt-4o-mini": 0.19})
    assert list(report.cost_by_model) == ["gpt-4o", "gpt-4o-mini"]  # most expensive first
    assert report.eval_cost_usd == pytest.approx(1.5)
    assert report.eval_unpriced_calls == 1
    assert (report.prompt_tokens, report.completion_tokens, report.cached_tokens) == (
        2600,
        260,
        130,
    )
    # Nearest rank over 100..2000 ms: p95 is the 19th of 20 values (linear would say 1905).
    assert report.total_ms == Percentiles(p50=1000.0, p95=1900.0, p99=2000.0)
    assert report.ttft_ms == Percentiles(p50=100.0, p95=190.0, p99=200.0)
    assert report.budget_usd == 1.0
    assert report.budget_used == pytest.approx(0.253)


async def test_figures_per_prompt_version(db: Store):
    await seed_week(db)

    report = await build_report(db, WEEK)

    v1, v2, unversioned = report.by_version
    assert v1 == VersionFigures(
        label="assistant@1",
        calls=3,
        errors=0,
        cost_usd=pytest.approx(0.25),
        unpriced_calls=2,
        messages=1,
        thumbs_up=0,
        thumbs_down=1,
        eval_pass_rate=0.75,
        eval_pass_change=None,
        consistency=None,
        consistency_change=None,
    )
    assert (v2.label, v2.calls, v2.unpriced_calls, v2.messages) == ("assistant@2", 22, 0, 2)
    assert (v2.errors, v2.error_rate) == (1, pytest.approx(1 / 22))
    assert v2.cost_usd == pytest.approx(0.187)
    assert (v2.thumbs_up, v2.thumbs_down) == (2, 1)
    assert v2.eval_pass_rate == 0.92
    assert v2.eval_pass_change == pytest.approx(0.04)
    assert v2.consistency == 0.85
    assert v2.consistency_change == pytest.approx(-0.05)
    assert (unversioned.label, unversioned.calls) == ("unversioned", 1)
    assert unversioned.cost_usd == pytest.approx(0.003)
    assert report.budget_usd is None and report.budget_used is None


async def test_a_week_is_cut_into_utc_days(db: Store):
    await seed_week(db)

    report = await build_report(db, WEEK)

    days = [datetime(2025, 3, 3, tzinfo=UTC) + timedelta(days=n) for n in range(8)]
    assert [b.start for b in report.buckets] == days
    first, second = report.buckets[0], report.buckets[1]
    # 2025-03-03 12:00-23:00: replies 1..12 (two unpriced v1), total 100..1200 ms.
    assert first == BucketFigures(
        start=days[0],
        cost_usd=pytest.approx(0.10),
        cost_by_version={"assistant@1": 0.0, "assistant@2": pytest.approx(0.10)},
        calls=12,
        errors=0,
        ttft_ms=Percentiles(p50=60.0, p95=120.0, p99=120.0),
        total_ms=Percentiles(p50=600.0, p95=1200.0, p99=1200.0),
    )
    # 2025-03-04 00:00-07:00: replies 13..20, total 1300..2000 ms.
    assert second.cost_usd == pytest.approx(0.08) and second.calls == 8
    assert (second.total_ms.p50, second.total_ms.p95) == (1600.0, 2000.0)
    assert report.buckets[3].cost_usd == pytest.approx(0.007)
    assert (report.buckets[3].calls, report.buckets[3].errors) == (4, 1)
    assert report.buckets[3].total_ms == Percentiles()  # no answered reply that day
    today = report.buckets[7]
    assert today.cost_by_version == pytest.approx({"assistant@1": 0.25, "unversioned": 0.003})
    assert sum(b.cost_usd for b in report.buckets) == pytest.approx(report.cost_usd)
    assert sum(b.calls for b in report.buckets) == report.calls


async def test_a_day_is_cut_into_utc_hours(db: Store):
    await seed_week(db)
    day = Period(start=START, end=START + timedelta(hours=24))

    report = await build_report(db, day)

    hours = [START + timedelta(hours=n) for n in range(24)]
    assert [b.start for b in report.buckets] == hours
    # One reply an hour for the first 20 hours (the first two v1's, unpriced); eval calls at
    # hour 2 and the call just before the start count for nothing.
    assert [b.calls for b in report.buckets] == [1] * 20 + [0] * 4
    assert [b.cost_usd for b in report.buckets[:3]] == [0.0, 0.0, pytest.approx(0.01)]
    assert report.buckets[5].total_ms == Percentiles(p50=600.0, p95=600.0, p99=600.0)
    assert report.buckets[20].total_ms == Percentiles()
    # A period not on the hour touches one hour more: each partly.
    odd = await build_report(db, Period(start=START + timedelta(minutes=30), end=day.end))
    assert [b.start for b in odd.buckets] == hours
    assert odd.buckets[0].calls == 0 and odd.buckets[1].calls == 1


async def test_the_period_boundaries(db: Store):
    await seed_week(db)

    just_before = await build_report(db, Period(start=START - timedelta(hours=1), end=START))
    assert just_before.calls == 1 and just_before.cost_usd == pytest.approx(100.0)
    at_the_end = await build_report(db, Period(start=NOW, end=NOW + timedelta(hours=1)))
    assert at_the_end.calls == 1 and at_the_end.messages == 1 and at_the_end.conversations == 1
    assert at_the_end.by_version[0].thumbs_up == 1  # the vote changed at NOW
    # An eval run counts when it finished before the end of the period in question.
    [v2] = [v for v in at_the_end.by_version if v.label == "assistant@2"]
    assert v2.eval_pass_rate == 0.92


async def test_an_empty_period(db: Store):
    report = await build_report(db, WEEK, daily_budget_usd=5.0)

    assert (report.calls, report.errors, report.error_rate, report.cost_usd) == (0, 0, 0.0, 0.0)
    assert report.total_ms == Percentiles() and report.by_version == []
    assert report.cost_by_model == {} and report.unpriced_models == ()
    assert len(report.buckets) == 8 and report.budget_used == 0.0
    assert all(b.calls == 0 and b.cost_by_version == {} for b in report.buckets)
    assert "no replies" in report_text(report)


async def test_every_kind_of_call_is_in_the_cost_and_said_by_kind(db: Store):
    """A summary fold, a contract repair and a search's embedding cost money too: the report's
    cost counts them, and says what each kind came to."""
    seed = Seed(db)
    at = START + timedelta(hours=1)
    for purpose, cost in (("reply", 0.03), ("reply", 0.01), ("summary", 0.004), ("repair", 0.002)):
        await seed.call(at, purpose=purpose, cost_usd=cost)
    await seed.call(at, purpose="embedding", model="text-embedding-3-small", cost_usd=0.0001)

    report = await build_report(db, WEEK)

    assert report.cost_usd == pytest.approx(0.0461)
    assert {kind: calls for kind, (calls, _) in report.by_purpose.items()} == {
        "reply": 2, "summary": 1, "repair": 1, "embedding": 1,
    }  # fmt: skip
    assert report.by_purpose["summary"][1] == pytest.approx(0.004)
    [line] = [line for line in report_text(report).splitlines() if "by kind" in line]
    assert line == (
        "  - by kind: reply $0.0400 (2 calls), summary $0.0040 (1 call), repair $0.0020 (1 call), "
        "embedding $0.0001 (1 call)"
    )


async def test_fake_model_and_eval_traffic_are_left_out_and_said_so(db: Store):
    seed = Seed(db)
    v1 = await seed.version("assistant", 1)
    at = START + timedelta(hours=3)
    # `assistant chat --fake`: a conversation only the fake model answered, with a vote.
    terminal = await seed.conversation("terminal", "default")
    await seed.message(terminal, "user", at)
    fake_answer = await seed.message(terminal, "assistant", at, v1)
    fake = {"model": "fake", "prompt_version_id": v1, "cost_usd": 0.0, "ttft_ms": 1.0}
    await seed.call(at, conversation_id=terminal, **fake, total_ms=90_000.0)
    await seed.vote(fake_answer, "terminal:me", 1, version=v1, at=at)
    # A Slack thread that reached the real model and, on another run, the fake one: it is
    # production traffic, but the fake's call in it is not.
    slack = await seed.conversation("slack", "T1")
    await seed.message(slack, "user", at)
    real_answer = await seed.message(slack, "assistant", at, v1)
    await seed.call(at, conversation_id=slack, prompt_version_id=v1, cost_usd=0.02, ttft_ms=5.0)
    await seed.call(at, conversation_id=slack, **fake, total_ms=80_000.0)
    await seed.vote(real_answer, "slack:U1", -1, version=v1, at=at)
    # An eval turn against the fake model (`assistant eval run --fake`), and one against a real
    # model: only the real one is this report's eval spend.
    evals = await seed.conversation("eval", "case-1")
    await seed.call(at, conversation_id=evals, **fake)
    await seed.call(at, conversation_id=evals, prompt_version_id=v1, cost_usd=0.01)
    # A newer eval run against the fake model says nothing about v1's quality.
    await seed.eval_run(("assistant", 1), 0.8, finished=START)
    await seed.add(
        EvalRun(prompt_name="assistant", version=1, model="fake", pass_rate=0.1, finished_at=at)
    )

    report = await build_report(db, WEEK, daily_budget_usd=1.0)

    assert (report.calls, report.cost_usd) == (1, pytest.approx(0.02))
    assert (report.conversations, report.messages) == (1, 2)
    assert (report.fake_calls, report.fake_conversations, report.eval_calls) == (3, 1, 1)
    assert report.total_ms == Percentiles(p50=1.0, p95=1.0, p99=1.0)  # no fake latency
    assert report.cost_by_model == pytest.approx({"gpt-4o-mini": 0.02})
    [version_1] = report.by_version
    assert (version_1.calls, version_1.messages) == (1, 1)
    assert (version_1.thumbs_up, version_1.thumbs_down) == (0, 1)
    assert version_1.eval_pass_rate == 0.8
    assert sum(b.calls for b in report.buckets) == 1
    text = report_text(report)
    assert (
        "Production traffic only; left out:\n- 1 eval-run call ($0.0100)\n"
        "- 3 calls answered by the bundled fake model\n"
        "- 1 conversation only the fake model answered\n"
    ) in text
    fields = dict(summary_fields(report))
    assert fields["Fake model"] == "3 calls left out (--fake)"

    studied = await build_report(db, WEEK, daily_budget_usd=1.0, fake=True)  # `report --fake`
    assert (studied.calls, studied.conversations, studied.messages) == (2, 1, 2)
    assert (studied.eval_calls, studied.production_calls, studied.fake_calls) == (1, 1, 0)
    assert studied.budget_used is None  # a budget is production's
    [fake_version] = studied.by_version
    assert fake_version.eval_pass_rate == 0.1  # the fake's own run, not the real one


async def test_estimated_and_reasoning_tokens_are_counted_apart(db: Store):
    seed = Seed(db)
    slack, evals = await seed.conversation("slack", "T1"), await seed.conversation("eval", "c")
    at = START + timedelta(hours=1)
    await seed.call(at, conversation_id=slack)  # the server's: 100 prompt (5 cached), 10 out
    await seed.call(at, conversation_id=slack, completion_tokens=800, reasoning_tokens=500)
    estimate = {"conversation_id": slack, "cached_tokens": 0}
    await seed.call(
        at, **estimate, token_source="estimate:o200k_base", prompt_tokens=300, completion_tokens=40
    )
    await seed.call(
        at,
        **estimate,
        token_source="estimate:chars",
        prompt_tokens=50,
        completion_tokens=0,
        status="cancelled",
    )
    nothing = {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0}
    await seed.call(at, conversation_id=slack, status="error", token_source="none", **nothing)
    # Eval calls and calls outside the period count for nothing here either.
    await seed.call(at, conversation_id=evals, token_source="estimate:o200k_base")
    await seed.call(START - timedelta(hours=1), token_source="estimate:o200k_base")

    report = await build_report(db, WEEK)

    assert (report.prompt_tokens, report.cached_tokens, report.completion_tokens) == (550, 10, 850)
    assert report.reasoning_tokens == 500
    assert report.estimated_calls == 2
    assert (report.estimated_prompt_tokens, report.estimated_completion_tokens) == (350, 40)
    text = report_text(report)
    tokens = "550 prompt (10 cached, ~350 estimated), 850 completion (500 reasoning, ~40 estimated)"
    assert f"- tokens: {tokens}\n  - ~ estimated by our tokenizer (2 calls without usage" in text


async def test_latency_percentiles_are_the_nearest_rank_ones(db: Store):
    """The store's reply latency percentiles are `Percentiles.of` the very values, over the
    period and in each hour, ties and a lone value included."""
    seed = Seed(db)
    hours: dict[int, list[float]] = {0: [700.0], 1: [5.0, 5.0, 3.0], 2: [], 3: []}
    hours[2] = [float((n * 37) % 101) for n in range(1, 60)]
    hours[3] = [float(n % 7) for n in range(1, 23)]
    for hour, values in hours.items():
        for n, value in enumerate(values):
            at = START + timedelta(hours=hour, minutes=n % 60)
            await seed.call(at, total_ms=value, ttft_ms=value / 2 if n % 3 else None)
    await seed.call(START + timedelta(hours=2), total_ms=1e6, status="error")  # not an answer
    await seed.call(START + timedelta(hours=2), total_ms=1e6, cache_hit=True)  # nor the cache
    day = Period(start=START, end=START + timedelta(hours=24))

    report = await build_report(db, day)

    every = [value for values in hours.values() for value in values]
    assert report.total_ms == Percentiles.of(every)
    firsts = [v / 2 for values in hours.values() for n, v in enumerate(values) if n % 3]
    assert report.ttft_ms == Percentiles.of(firsts)
    for hour, values in hours.items():
        assert report.buckets[hour].total_ms == Percentiles.of(values)
        assert report.buckets[hour].ttft_ms == Percentiles.of(
            v / 2 for n, v in enumerate(values) if n % 3
        )
    assert report.buckets[4].total_ms == Percentiles()


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(20, 0, -1)]
    assert Percentiles.of(values) == Percentiles(p50=10.0, p95=19.0, p99=20.0)
    assert Percentiles.of([7.0]) == Percentiles(p50=7.0, p95=7.0, p99=7.0)
    assert Percentiles.of([]) == Percentiles(p50=None, p95=None, p99=None)
    hundred = [float(v) for v in range(1, 101)]
    assert Percentiles.of(hundred) == Percentiles(p50=50.0, p95=95.0, p99=99.0)


def test_periods():
    day = Period.last("24h", now=NOW)
    assert (day.start, day.end) == (NOW - timedelta(hours=24), NOW)
    assert Period.last("30d", now=NOW).start == NOW - timedelta(days=30)
    assert day.describe() == "24 hours to 2025-03-10 12:00 UTC"
    assert WEEK.describe() == "7 days to 2025-03-10 12:00 UTC"
    assert Period(start=NOW - timedelta(minutes=15), end=NOW).describe() == (
        "15 minutes to 2025-03-10 12:00 UTC"
    )
    odd = Period(start=NOW - timedelta(seconds=90), end=NOW)
    assert odd.describe() == "2025-03-10 11:58 to 2025-03-10 12:00 UTC"
    for spec in ("week", "7w", "0d", "", "400d", "-1h"):
        with pytest.raises(ValueError, match="such as 24h, 7d or 30d"):
            Period.last(spec, now=NOW)
    with pytest.raises(ValueError, match="time zone"):
        Period.last("7d", now=NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match="before it starts"):
        Period(start=NOW, end=NOW - timedelta(seconds=1))
    assert Period(start=NOW, end=NOW).buckets() == []
    assert day.bucket == timedelta(hours=1) and len(day.buckets()) == 24
    assert WEEK.bucket == timedelta(days=1) and len(WEEK.buckets()) == 8
    a_day_and_a_minute = Period(start=NOW - timedelta(hours=24, minutes=1), end=NOW)
    assert a_day_and_a_minute.bucket == timedelta(days=1)


# ---- renderings


def version(label: str = "assistant@2", **fields: Any) -> VersionFigures:
    figures: dict[str, Any] = {
        "label": label,
        "calls": 22,
        "errors": 0,
        "cost_usd": 0.187,
        "unpriced_calls": 0,
        "messages": 2,
        "thumbs_up": 2,
        "thumbs_down": 1,
        "eval_pass_rate": 0.92,
        "eval_pass_change": 0.04,
        "consistency": 0.85,
        "consistency_change": -0.05,
    }
    return VersionFigures(**{**figures, **fields})


def bucket(n: int, cost: float = 0.1, p50: float | None = 600.0) -> BucketFigures:
    """Day n of WEEK: `cost` all on assistant@2."""
    latency = Percentiles() if p50 is None else Percentiles(p50=p50, p95=p50 * 2, p99=p50 * 3)
    return BucketFigures(
        start=datetime(2025, 3, 3, tzinfo=UTC) + timedelta(days=n),
        cost_usd=cost,
        cost_by_version={"assistant@2": cost},
        calls=3,
        errors=0,
        ttft_ms=Percentiles(p50=None if p50 is None else p50 / 10),
        total_ms=latency,
    )


def a_report(**fields: Any) -> Report:
    figures: dict[str, Any] = {
        "period": WEEK,
        "conversations": 2,
        "messages": 6,
        "prompt_tokens": 2600,
        "completion_tokens": 260,
        "cached_tokens": 130,
        "cost_usd": 0.44,
        "unpriced_calls": 2,
        "unpriced_models": ("model-x",),
        "eval_cost_usd": 1.5,
        "eval_unpriced_calls": 0,
        "cost_by_model": {"gpt-4o": 0.25, "gpt-4o-mini": 0.19},
        "by_version": [version("assistant@1", eval_pass_change=None), version()],
        "ttft_ms": Percentiles(p50=100.0, p95=190.0, p99=200.0),
        "total_ms": Percentiles(p50=1000.0, p95=1900.0, p99=2000.0),
        "calls": 26,
        "errors": 1,
        "error_rate": 1 / 26,
        "buckets": [bucket(n) for n in range(8)],
        "budget_usd": 1.0,
        "budget_used": 0.253,
    }
    return Report(**{**figures, **fields})


def huge_report() -> Report:
    """Far more than any message may hold: long names, many models and versions."""
    models = tuple(f"vendor/very-long-model-name-{n:03d}-" + "x" * 80 for n in range(60))
    return a_report(
        unpriced_calls=600,
        unpriced_models=models,
        cost_by_model={model: 0.5 for model in models},
        by_version=[version(f"prompt-{n}-" + "y" * 300 + f"@{n}") for n in range(80)],
        buckets=[bucket(n) for n in range(31)],
    )


def slack_texts(blocks: list[dict[str, Any]]) -> list[str]:
    texts = []
    for block in blocks:
        if "text" in block:
            texts.append(block["text"]["text"])
        texts += [field["text"] for field in block.get("fields", [])]
        texts += [element["text"] for element in block.get("elements", [])]
    return texts


UNPRICED = "2 calls unpriced (model-x): cost is a lower bound"


def test_the_text_report_holds_the_key_figures():
    text = report_text(a_report())

    assert "7 days to 2025-03-10 12:00 UTC" in text
    assert "Production traffic only\n" in text  # nothing was left out
    assert UNPRICED in text
    assert "$0.4400 (lower bound)" in text and "eval runs $1.50" in text
    assert "gpt-4o: $0.2500" in text
    assert "26 model calls, 1 error (3.8%)" in text
    assert "p50 1,000 ms, p95 1,900 ms, p99 2,000 ms" in text
    assert "eval 92% (+4 pts), consistency 85% (-5 pts)" in text
    assert "assistant@1: 22 calls, $0.1870, 2 replies, 👍 2 👎 1" in text
    assert "eval 92%, consistency 85% (-5 pts)" in text  # no earlier run of v1
    assert "budget: $0.2530 of $1.00 today (25%)" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    quiet = report_text(a_report(unpriced_calls=0, budget_usd=None, budget_used=None))
    assert "unpriced" not in quiet and "budget" not in quiet
    failing = report_text(a_report(by_version=[version(errors=2)]))
    assert "assistant@2: 22 calls (2 errors, 9.1%), $0.1870" in failing


def test_no_change_reads_as_plus_minus_zero():
    text = report_text(a_report(by_version=[version(eval_pass_change=0.001)]))
    assert "eval 92% (±0 pts)" in text


def test_slack_blocks_hold_the_key_figures():
    blocks = slack_blocks(a_report())
    text = "\n".join(slack_texts(blocks))

    assert blocks[0]["type"] == "header"
    assert blocks[-1]["type"] == "context"
    assert UNPRICED in text
    assert "$0.4400 (lower bound)" in text and "*Budget*\n$0.2530 of $1.00 today (25%)" in text
    assert "92% (+4 pts)" in text and "p95 1,900 ms" in text


@pytest.mark.parametrize("report", [a_report(), huge_report()], ids=["week", "huge"])
def test_slack_blocks_stay_within_slack_limits(report: Report):
    blocks = slack_blocks(report)

    assert len(blocks) <= 50
    assert len(blocks[0]["text"]["text"]) <= 150
    for block in blocks:
        if block["type"] == "section" and "text" in block:
            assert len(block["text"]["text"]) <= 3000
        if "fields" in block:
            assert len(block["fields"]) <= 10
            assert all(len(field["text"]) <= 2000 for field in block["fields"])
    assert f"{report.unpriced_calls} calls unpriced" in "\n".join(slack_texts(blocks))


def test_estimates_are_marked_in_every_rendering():
    estimated = a_report(estimated_calls=3, estimated_prompt_tokens=400, reasoning_tokens=50)
    tokens = "2,600 prompt (130 cached, ~400 estimated)\n260 completion (50 reasoning)"
    legend = "~ estimated by our tokenizer (3 calls without usage from the server)"

    assert f"- tokens: {tokens.replace(chr(10), ', ')}\n  - {legend}" in report_text(estimated)
    assert f"*Tokens*\n{tokens}\n{legend}" in slack_texts(slack_blocks(estimated))
    fields = {f["name"]: f["value"] for f in discord_embed(estimated)["fields"]}
    assert fields["Tokens"] == f"{tokens}\n{legend}"
    exact = a_report()
    assert "2,600 prompt (130 cached), 260 completion\n" in report_text(exact)
    assert "~" not in report_text(exact)
    assert "~" not in "\n".join(slack_texts(slack_blocks(exact)))
    assert "~" not in str(discord_embed(exact))


def test_slack_text_is_escaped():
    report = a_report(unpriced_models=("<!channel>",), cost_by_model={"a&b": 1.0})
    text = "\n".join(slack_texts(slack_blocks(report)))
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text and "a&amp;b" in text


def test_the_discord_embed_holds_the_key_figures():
    embed = discord_embed(a_report())
    values = {field["name"]: field["value"] for field in embed["fields"]}

    assert embed["title"] == "Assistant report, 7 days to 2025-03-10 12:00 UTC"
    assert UNPRICED in embed["description"]
    assert values["Cost"] == "$0.4400 (lower bound)"
    assert values["Budget"] == "$0.2530 of $1.00 today (25%)"
    assert "eval 92% (+4 pts), consistency 85% (-5 pts)" in values["assistant@2"]
    assert embed["color"] == 0xE8A33D  # unpriced calls: amber
    assert discord_embed(a_report(unpriced_calls=0))["color"] == 0x2EA043
    assert discord_embed(a_report(budget_used=1.2))["color"] == 0xD93F3F


@pytest.mark.parametrize("report", [a_report(), huge_report()], ids=["week", "huge"])
def test_the_discord_embed_stays_within_discord_limits(report: Report):
    embed = discord_embed(report)

    assert len(embed["title"]) <= 256 and len(embed["description"]) <= 4096
    assert len(embed["fields"]) <= DISCORD_FIELDS
    for field in embed["fields"]:
        assert 0 < len(field["name"]) <= DISCORD_NAME_LIMIT
        assert 0 < len(field["value"]) <= DISCORD_VALUE_LIMIT
    assert discord_embed_size(embed) <= DISCORD_TOTAL_LIMIT
    assert "calls unpriced" in embed["description"]


def test_the_huge_discord_embed_says_what_it_left_out():
    embed = discord_embed(huge_report())
    assert embed["fields"][-1]["name"].endswith("more versions")
