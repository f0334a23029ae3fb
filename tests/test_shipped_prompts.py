"""The prompts and eval suites that ship in `prompts/`, run through the real engine against the
demo model that `--fake` uses: each version shows the failure its successor fixes, so a newcomer
sees versions, evals and the gate do their work before writing a file."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from assistant.builtin_tools import builtin_registry
from assistant.evals.runner import EvalRunner
from assistant.evals.suite import EvalSuite, load_suites
from assistant.knowledge.embeddings import Embedder
from assistant.knowledge.service import Knowledge
from assistant.llm import OpenAIChatModel
from assistant.pricing import PriceTable
from assistant.prompts.files import PromptCatalog, load_prompts_dir
from assistant.store import Store
from assistant.store.tables import EvalResult, EvalRun
from assistant.tools import ToolRegistry
from tests.conftest import build_assistant

SHIPPED = Path(__file__).resolve().parent.parent / "prompts"
NOW = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)


@pytest.fixture
def prompts_dir(tmp_path: Path) -> Path:
    """The shipped folder, as the engine fixtures read it."""
    return Path(shutil.copytree(SHIPPED, tmp_path / "prompts"))


@pytest.fixture
def suites(tools: ToolRegistry) -> dict[str, EvalSuite]:
    return load_suites(SHIPPED, known_tools=tools.names())


async def run_suite(
    runner_for, store: Store, suite: EvalSuite, version: int
) -> tuple[EvalRun, dict[str, list[EvalResult]]]:
    run = await (await runner_for()).run(suite, version)
    assert run.id is not None
    by_case: dict[str, list[EvalResult]] = {}
    for result in await store.evals.results(run.id):
        by_case.setdefault(result.case, []).append(result)
    return run, by_case


def passed(results: list[EvalResult]) -> list[bool]:
    return [r.passed for r in sorted(results, key=lambda r: r.attempt)]


def test_every_shipped_version_loads_renders_and_has_a_suite(tools: ToolRegistry) -> None:
    files = load_prompts_dir(SHIPPED, known_tools=tools.names())
    catalog = PromptCatalog(files, default_prompt="assistant")
    assert {f.version.label for f in files} == {
        "assistant@1",
        "assistant@2",
        "assistant@3",
        "assistant@4",
        "triage@1",
        "triage@2",
    }
    latest = catalog.latest("assistant").version
    system = latest.render_system(now=NOW, platform="slack", user_name="Alice")
    assert "talking with Alice on slack" in system and "Today is 2025-03-14" in system
    assert catalog.latest("triage").version.response_schema is not None
    assert set(load_suites(SHIPPED, known_tools=tools.names())) == {"assistant", "triage"}


async def test_the_assistant_suite_shows_examples_then_pinned_sampling_winning(
    runner_for, store, suites
):
    suite = suites["assistant"]
    first, cases = await run_suite(runner_for, store, suite, 1)
    assert first.pass_rate < suite.threshold  # no examples: it cannot answer the team's questions
    assert passed(cases["arithmetic-uses-the-calculator"]) == [True] * 3
    assert "does not contain 'ADMIN_USERS'" in cases["who-may-switch"][0].failures
    assert (first.tool_cases, first.tool_passed) == (4, 4)

    second, cases = await run_suite(runner_for, store, suite, 2)
    assert second.pass_rate > first.pass_rate  # the examples taught it
    switching = passed(cases["how-to-switch-versions"])
    assert True in switching and False in switching  # unseeded: asked again, answered otherwise
    assert second.consistency is not None and second.consistency < 1
    assert second.pass_rate < suite.threshold  # a case passes only when every attempt does

    third, _ = await run_suite(runner_for, store, suite, 3)
    assert (third.pass_rate, third.consistency, third.self_check_rate) == (1.0, 1.0, 1.0)


async def test_version_four_answers_from_the_shipped_docs_and_cites_them(
    store: Store, model: OpenAIChatModel, prompts_dir: Path, suites
):
    """Version 4 drops the examples that answered questions about the assistant: it searches
    the product's own docs (knowledge.yaml's collection) and cites what it found."""
    embedder = Embedder(model.client, model="fake-embedding", prices=PriceTable.load())
    knowledge = Knowledge(store, embedder)
    [synced] = await knowledge.sync_all(SHIPPED, actor="file")
    assert not isinstance(synced, Exception)
    assert (synced.collection, synced.problems) == ("product-docs", ())
    tools = builtin_registry(knowledge.search_knowledge)
    assistant = await build_assistant(store, model, prompts_dir, tools)
    runner = EvalRunner(
        assistant=assistant,
        store=store,
        model=model,
        tools=tools,
        judge_model="gpt-4o-mini",
        knowledge=knowledge,
    )

    run = await runner.run(suites["assistant"], 4)

    assert (run.pass_rate, run.consistency) == (1.0, 1.0)
    assert (run.retrieval_cases, run.retrieval_recall) == (5, 1.0)
    answered = [
        r for r in await store.evals.results(run.id or 0) if r.case == "how-to-switch-versions"
    ]
    assert answered and all("prompt use" in r.answer and "[" in r.answer for r in answered)


async def test_the_triage_suite_catches_broken_json_and_a_label_that_changes(
    runner_for, store, suites
):
    suite = suites["triage"]
    first, cases = await run_suite(runner_for, store, suite, 1)
    assert passed(cases["vpn"]) == [True] * 3  # near one of its two examples
    site_down = cases["site-down"][0]
    assert "broke the output contract, even repaired: not JSON" in site_down.failures
    assert first.failed_turns == 0  # a broken contract is the prompt's failure, not an outage
    label = cases["same-request-same-label"]
    assert all("gave 2 different answers" in r.failures for r in label)
    assert len({r.answer for r in label}) == 2 and first.cost_usd is not None

    second, _ = await run_suite(runner_for, store, suite, 2)
    assert (second.pass_rate, second.consistency) == (1.0, 1.0)
