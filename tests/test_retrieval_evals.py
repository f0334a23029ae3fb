"""Retrieval evals: a suite's `retrieval:` cases read (and refused naming the file and field),
searched over a real synced collection with no model, scored as recall@k and MRR per run and
per collection, stored (SQLite and Postgres), compared, reported; an emptied collection drops
recall and the scheduled evals post the drift alert. And `cites`, graded on the sources a real
turn's answer cites."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text

from assistant.builtin_tools import builtin_registry
from assistant.evals.assertions import (
    Assertion,
    CheckContext,
    Cites,
    ExpectedSource,
    Observed,
)
from assistant.evals.retrieval import RetrievalCase, describe, latest, score
from assistant.evals.runner import EvalRunner
from assistant.evals.suite import EvalFileError, EvalSuite, load_suite, load_suites
from assistant.knowledge.service import Knowledge
from assistant.llm import OpenAIChatModel
from assistant.prompts.bindings import Scope
from assistant.reporting.duties import Duties, DutySettings
from assistant.reporting.figures import Period, build_report
from assistant.reporting.notices import Notice
from assistant.reporting.wording import quality, report_text
from assistant.store import Store, migrate
from assistant.testing import FakeLlm, Reply
from assistant.turns import Source
from tests.conftest import build_assistant, collect, inbound, write_prompt

VPN = """# VPN

## Rotating the keys

To rotate the VPN keys, run `vpnctl rotate --all` from the bastion host.

## Who to call

The network team is on call for VPN outages.
"""

HOLIDAYS = """# Holidays

Everyone gets 25 days of paid holiday a year. Ask your manager before booking.
"""

RETRIEVAL = [
    {"name": "vpn-keys", "query": "rotate the VPN keys", "expect": ["vpn.md#Rotating the keys"]},
    {"name": "holidays", "query": "paid holiday days", "expect": ["holidays.md"], "k": 3},
]
TOOLS = ["current_time", "calculator", "search_knowledge"]


# --- the file --------------------------------------------------------------------------------


def write_suite(prompts: Path, spec: dict[str, Any]) -> Path:
    path = prompts / "assistant" / "evals.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def test_retrieval_cases_load_with_their_defaults(tmp_path: Path) -> None:
    spec = {
        "retrieval_k": 4,
        "retrieval_drop": 0.3,
        "retrieval": [
            *RETRIEVAL,
            {
                "name": "named",
                "query": "q",
                "expect": ["a.md", "b.md# Some  heading "],
                "collections": ["handbook", "handbook", "docs"],
            },
        ],
    }
    suite = load_suite(write_suite(tmp_path, spec), prompt="assistant", known_tools=TOOLS)
    vpn, holidays, named = suite.retrieval
    assert vpn == RetrievalCase(
        name="vpn-keys",
        query="rotate the VPN keys",
        expect=(ExpectedSource(document="vpn.md", heading="Rotating the keys"),),
        collections=(),
        k=4,
    )
    assert holidays.k == 3
    assert [str(e) for e in named.expect] == ["a.md", "b.md#Some  heading"]
    assert named.collections == ("handbook", "docs")
    assert suite.retrieval_drop == 0.3
    assert (suite.cases, suite.tool_cases) == ((), ())

    plain = load_suite(
        write_suite(tmp_path, {"retrieval": RETRIEVAL[:1]}), prompt="assistant", known_tools=[]
    )
    assert (plain.retrieval[0].k, plain.retrieval_drop) == (5, 0.2)


def case(**fields: Any) -> dict[str, Any]:
    return {"retrieval": [{**RETRIEVAL[0], **fields}]}


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        pytest.param(case(expect=[]), "retrieval.0.expect", "at least one source", id="no-expect"),
        pytest.param(
            case(expect=["#Keys"]), "retrieval.0.expect.0", "name a document", id="no-doc"
        ),
        pytest.param(case(expect=["vpn.md#"]), "retrieval.0.expect.0", "after '#'", id="no-words"),
        pytest.param(case(expect=[3]), "retrieval.0.expect.0", "valid string", id="not-text"),
        pytest.param(
            case(collections=["Hand Book"]),
            "retrieval.0.collections.0",
            "is not a collection name",
            id="collection-name",
        ),
        pytest.param(case(k=0), "retrieval.0.k", "greater than or equal to 1", id="k-zero"),
        pytest.param(case(k=51), "retrieval.0.k", "less than or equal to 50", id="k-large"),
        pytest.param(case(qurey="x"), "retrieval.0.qurey", "did you mean 'query'?", id="typo"),
        pytest.param(case(query=None), "retrieval.0.query", "valid string", id="no-query"),
        pytest.param(case(name="VPN keys"), "retrieval.0.name", "pattern", id="bad-name"),
        pytest.param(
            {"retrieval": [RETRIEVAL[0], RETRIEVAL[0]]},
            "retrieval.1.name",
            "duplicate case name 'vpn-keys' (also retrieval.0)",
            id="duplicate",
        ),
        pytest.param({"retrieval_k": 0}, "retrieval_k", "greater than or equal", id="suite-k"),
        pytest.param({"retrieval_drop": 0}, "retrieval_drop", "greater than 0", id="drop-zero"),
        pytest.param({"retrival": []}, "retrival", "did you mean 'retrieval'?", id="section"),
    ],
)
def test_a_bad_retrieval_case_is_refused_naming_the_file_and_field(
    tmp_path: Path, spec: dict[str, Any], field: str, words: str
) -> None:
    path = write_suite(tmp_path, spec)
    with pytest.raises(EvalFileError) as caught:
        load_suite(path, prompt="assistant", known_tools=TOOLS)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and f"field '{field}':" in message
    assert words in message


# --- scoring ---------------------------------------------------------------------------------


def test_recall_at_k_and_the_reciprocal_rank_of_the_first_expected_source() -> None:
    expected = (ExpectedSource.read("vpn.md#rotating"), ExpectedSource.read("holidays.md"))
    wanted = RetrievalCase(name="c", query="q", expect=expected, collections=(), k=3)
    ranked = [
        ("faq.md", "FAQ"),
        ("vpn.md", "VPN > Who to call"),  # the right document, not the right section
        ("vpn.md", "VPN > Rotating  the KEYS"),
        ("holidays.md", "Holidays"),  # found, but below k
    ]
    scored = score(wanted, ranked)
    assert (scored.recall, scored.reciprocal_rank) == (0.5, 1 / 3)
    assert scored.missing == (expected[1],)
    assert score(wanted, []).recall == 0.0 and score(wanted, []).reciprocal_rank == 0.0
    wider = RetrievalCase(name="c", query="q", expect=expected, collections=(), k=4)
    assert score(wider, ranked).recall == 1.0


# --- cites -----------------------------------------------------------------------------------

SOURCES = (
    Source(number=1, collection="handbook", document="vpn.md", title="VPN", heading="VPN > Keys"),
    Source(number=2, collection="handbook", document="holidays.md", title="Holidays"),
)


@pytest.mark.parametrize(
    ("written", "sources", "held", "reason"),
    [
        ("holidays.md", SOURCES, True, "answer cites holidays.md as [2]"),
        ("vpn.md#keys", SOURCES, True, "answer cites vpn.md#keys as [1]"),
        (
            "vpn.md#Who to call",
            SOURCES,
            False,
            "answer does not cite vpn.md#Who to call (cites [1] vpn.md#VPN > Keys, "
            "[2] holidays.md)",
        ),
        ("faq.md", (), False, "answer does not cite faq.md (cites nothing)"),
    ],
)
async def test_cites_holds_when_the_answer_cites_the_source_and_negates(
    written: str, sources: tuple[Source, ...], held: bool, reason: str
) -> None:
    seen = Observed(text="x", tool_calls=(), cost_usd=0.0, latency_ms=1.0, sources=sources)
    context = CheckContext(question="q", judge=None)
    statement = Cites(source=ExpectedSource.read(written))
    plain = await Assertion(statement=statement).check(seen, context)
    negated = await Assertion(statement=statement, negated=True).check(seen, context)
    assert (plain.passed, plain.reason) == (held, reason)
    assert (negated.passed, negated.reason) == (not held, reason)
    assert negated.assertion.describe() == f"not cites {written!r}"


# --- runs against a real collection ----------------------------------------------------------


class Recorder:
    """A Notifier that keeps what it is asked to post."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, Notice]] = []

    async def post(self, channel: str, notice: Notice) -> None:
        self.posted.append((channel, notice))


def folder(tmp_path: Path, name: str, files: dict[str, str]) -> Path:
    path = tmp_path / name
    path.mkdir()
    for file, content in files.items():
        (path / file).write_text(content, encoding="utf-8")
    return path


async def add(knowledge: Knowledge, name: str, path: Path, *places: Scope) -> None:
    info = await knowledge.store.add_collection(
        name, str(path), link=None, description="", origin="cli", actor="cli:t", surface="cli"
    )
    for place in places:
        await knowledge.store.bind(name, place, actor="cli:t", surface="cli")
    await knowledge.sync(info)


def remove_files(path: Path) -> None:
    for file in path.iterdir():
        file.unlink()


async def empty(knowledge: Knowledge, name: str, path: Path) -> None:
    """A broken index: the collection's files gone, and synced so."""
    await asyncio.to_thread(remove_files, path)
    info = await knowledge.store.collection(name)
    assert info is not None
    await knowledge.sync(info)


@pytest.fixture
def knowledge(db: Store) -> Knowledge:
    return Knowledge(db, None)  # keyword search only: no embedding model needed


async def runner_on(
    db: Store, model: OpenAIChatModel, knowledge: Knowledge, prompts: Path
) -> EvalRunner:
    tools = builtin_registry(knowledge.search_knowledge)
    assistant = await build_assistant(db, model, prompts, tools)
    return EvalRunner(
        assistant=assistant,
        store=db,
        model=model,
        tools=tools,
        judge_model="gpt-4o-mini",
        knowledge=knowledge,
    )


def prompts_with(tmp_path: Path, suite: dict[str, Any], **prompt: Any) -> Path:
    prompts = tmp_path / "prompts"
    write_prompt(prompts, **{"tools": TOOLS, "examples": [], **prompt})
    write_suite(prompts, suite)
    return prompts


def suites_in(prompts: Path) -> dict[str, EvalSuite]:
    return load_suites(prompts, known_tools=TOOLS)


def duties(runner: EvalRunner, db: Store, suites: dict[str, EvalSuite]) -> tuple[Duties, Recorder]:
    recorder = Recorder()
    settings = DutySettings(
        channels=["slack:C0REPORTS"],
        eval_cron="0 3 * * *",
        report_cron="0 9 * * *",
        daily_budget_usd=None,
    )
    made = Duties(store=db, runner=runner, suites=suites, notifier=recorder, settings=settings)
    return made, recorder


async def test_an_emptied_collection_drops_recall_and_the_drift_alert_fires(
    db: Store,
    model: OpenAIChatModel,
    knowledge: Knowledge,
    fake_llm: FakeLlm,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    handbook = folder(tmp_path, "handbook", {"vpn.md": VPN, "holidays.md": HOLIDAYS})
    await add(knowledge, "handbook", handbook, Scope(kind="global"))
    prompts = prompts_with(tmp_path, {"retrieval": RETRIEVAL})
    runner = await runner_on(db, model, knowledge, prompts)
    scheduled, recorder = duties(runner, db, suites_in(prompts))

    [healthy] = await scheduled.run_evals()
    assert (healthy.retrieval_cases, healthy.retrieval_recall, healthy.retrieval_mrr) == (2, 1, 1)
    assert healthy.retrieval_k is None and healthy.pass_rate == 1.0  # k 5 and 3; all found
    assert recorder.posted == [] and fake_llm.requests == []  # no model was asked
    assert healthy.id is not None
    stored = {r.case: r for r in await db.evals.results(healthy.id)}
    vpn = stored["vpn-keys"]
    assert (vpn.kind, vpn.passed, vpn.recall, vpn.reciprocal_rank) == ("retrieval", True, 1, 1)
    assert vpn.collections == "handbook"
    assert vpn.answer.startswith("1. handbook: vpn.md > VPN > Rotating the keys")

    await empty(knowledge, "handbook", handbook)
    with caplog.at_level(logging.INFO, logger="assistant.reporting.duties"):
        [broken] = await scheduled.run_evals()

    assert (broken.retrieval_recall, broken.retrieval_mrr, broken.pass_rate) == (0, 0, 0)
    assert broken.id is not None
    failures = {r.case: r.failures for r in await db.evals.results(broken.id)}
    assert failures["vpn-keys"] == "not in the top 5: vpn.md#Rotating the keys"
    [(channel, alert)] = recorder.posted
    assert channel == "slack:C0REPORTS" and alert.title == "Retrieval drift in assistant@1"
    assert alert.text == (
        "⚠️ Retrieval drift: the knowledge search of assistant@1 finds less of what its evals "
        f"expect (run #{broken.id} against run #{healthy.id}): recall@k 100% → 0%, "
        "MRR 1.00 → 0.00. The prompt did not change: the index did (a collection emptied, "
        "moved or unbound?)."
    )
    shown = await latest(db.evals, "assistant", 1)  # what `prompt show` can print
    assert shown is not None and shown.run_id == broken.id
    assert describe(shown) == "recall@k 0%, MRR 0.00 (2 cases)"
    [summary] = [r.getMessage() for r in caplog.records if "scheduled evals" in r.message]
    print(summary)
    assert summary.startswith(
        "scheduled evals: assistant@1 REGRESSION: pass rate 0% (0/2 retrieval"
    )
    assert "retrieval recall@k 0%, MRR 0.00 (2 cases)" in summary
    assert summary.endswith("retrieval fell: recall@k 100% → 0%, MRR 1.00 → 0.00")


async def test_per_collection_figures_show_which_index_broke(
    db: Store, model: OpenAIChatModel, knowledge: Knowledge, fake_llm: FakeLlm, tmp_path: Path
) -> None:
    handbook = folder(tmp_path, "handbook", {"vpn.md": VPN})
    people = folder(tmp_path, "people", {"holidays.md": HOLIDAYS})
    await add(knowledge, "handbook", handbook)
    await add(knowledge, "people", people)
    named = [
        {**RETRIEVAL[0], "collections": ["handbook"]},
        {**RETRIEVAL[1], "collections": ["people"]},
        {
            **RETRIEVAL[0],
            "name": "both",
            "expect": ["vpn.md"],
            "collections": ["handbook", "people"],
        },
    ]
    prompts = prompts_with(tmp_path, {"retrieval_k": 3, "retrieval": named})
    runner = await runner_on(db, model, knowledge, prompts)
    suite = suites_in(prompts)["assistant"]
    fake_llm.script(Reply(text="hello"))
    serving = await build_assistant(db, model, prompts, builtin_registry())
    await collect(serving.respond(inbound("hi")))  # traffic: the report lists assistant@1

    first = await runner.run_and_compare(suite, 1)
    assert first.retrieval is not None
    assert first.retrieval.by_collection["people"].recall == 1.0
    await empty(knowledge, "people", people)
    second = await runner.run_and_compare(suite, 1)

    assert second.retrieval is not None and second.retrieval.k == 3
    figures = {n: (f.cases, f.recall, f.mrr) for n, f in second.retrieval.by_collection.items()}
    assert figures == {"handbook": (2, 1.0, 1.0), "people": (2, 0.5, 0.5)}
    assert second.regressed  # `eval run` exits 1
    assert second.retrieval_drops == [
        "recall@3 100% → 67%",
        "MRR 1.00 → 0.67",
        "people recall@3 100% → 50%",
        "people MRR 1.00 → 0.50",
    ]
    print(second.summary())

    report = await build_report(
        db, Period.last("24h", now=datetime.now(UTC) + timedelta(minutes=1))
    )
    [version] = report.by_version
    assert quality(version) == (
        "eval 67% (-33 pts); retrieval recall@3 67% (-33 pts), MRR 0.67 (-0.33) "
        "(handbook 100%/1.00, people 50%/0.50)"
    )
    print(report_text(report))
    assert "retrieval recall@3 67%" in report_text(report)


async def test_a_missing_collection_fails_its_case_and_a_version_that_cannot_search_skips(
    db: Store, model: OpenAIChatModel, knowledge: Knowledge, tmp_path: Path
) -> None:
    spec = {"retrieval": [{**RETRIEVAL[0], "collections": ["gone"]}]}
    prompts = prompts_with(tmp_path, spec)
    write_prompt(prompts, version=2, tools=["calculator"])
    runner = await runner_on(db, model, knowledge, prompts)
    suite = suites_in(prompts)["assistant"]

    searched = await runner.run_and_compare(suite, 1)
    [result] = searched.results
    assert not result.passed and result.collections == "gone"
    assert result.failures == "no collection named gone\nnot in the top 5: vpn.md#Rotating the keys"

    skipped = await runner.run_and_compare(suite, 2)
    assert skipped.run.retrieval_cases == 0 and skipped.results == []
    assert "retrieval cases not run: assistant@2 does not offer search_knowledge" in (
        skipped.summary()
    )


async def test_with_nothing_bound_globally_a_case_says_so(
    db: Store, model: OpenAIChatModel, knowledge: Knowledge, tmp_path: Path
) -> None:
    await add(knowledge, "handbook", folder(tmp_path, "handbook", {"vpn.md": VPN}))
    prompts = prompts_with(tmp_path, {"retrieval": RETRIEVAL[:1]})
    runner = await runner_on(db, model, knowledge, prompts)
    run = await runner.run(suites_in(prompts)["assistant"], 1)
    assert run.id is not None
    [result] = await db.evals.results(run.id)
    assert result.failures.startswith("no collection is bound globally, and the case names none")


async def test_cites_is_graded_on_the_sources_of_a_real_answer(
    db: Store, model: OpenAIChatModel, knowledge: Knowledge, tmp_path: Path
) -> None:
    handbook = folder(tmp_path, "handbook", {"vpn.md": VPN, "holidays.md": HOLIDAYS})
    await add(knowledge, "handbook", handbook, Scope(kind="global"))
    question = "How do I rotate the VPN keys?"
    expect = [{"cites": "vpn.md#Rotating"}, {"not_cites": "holidays.md"}]
    wrong = [{"cites": "holidays.md"}]
    spec = {
        "cases": [
            {"name": "right", "input": question, "expect": expect},
            {"name": "wrong", "input": question, "expect": wrong},
        ]
    }
    prompts = prompts_with(tmp_path, spec)
    runner = await runner_on(db, model, knowledge, prompts)
    run = await runner.run(suites_in(prompts)["assistant"], 1)
    assert run.id is not None
    results = {r.case: r for r in await db.evals.results(run.id)}
    assert results["right"].passed, results["right"].failures
    assert not results["wrong"].passed
    assert results["wrong"].failures.startswith(
        "answer does not cite holidays.md (cites [1] vpn.md#VPN > Rotating the keys"
    )


async def test_the_retrieval_migration_keeps_the_runs_it_finds(database_url: str) -> None:
    """0010 on SQLite and Postgres: runs stored before it read as having no retrieval case;
    down and up again, they stay, and the models and the migrations agree."""
    insert = text(
        "INSERT INTO eval_runs (prompt_name, version, model, trigger, cases, passed, pass_rate,"
        " threshold, tool_cases, tool_passed, failed_turns, started_at, finished_at)"
        " VALUES ('assistant', 1, 'm', 'cli', 1, 1, 1.0, 1.0, 0, 0, 0, CURRENT_TIMESTAMP,"
        " CURRENT_TIMESTAMP)"
    )
    store = Store.connect(database_url)
    try:
        await migrate.upgrade(store.engine, "0009")
        async with store.engine.begin() as connection:
            await connection.execute(insert)
        await migrate.upgrade(store.engine, "0010")
        [run] = await store.evals.runs()
        assert (run.retrieval_cases, run.retrieval_recall, run.retrieval_k) == (0, None, None)

        await migrate.downgrade(store.engine, "0009")
        await migrate.upgrade(store.engine)
        await migrate.check(store.engine)
        assert len(await store.evals.runs()) == 1
    finally:
        await store.close()
