"""Eval runs through the real engine against a fake model that answers by question: stored
results, consistency, the few-shot self-check, tool cases, the judge, and the `prompt use`
gate."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text

from assistant.admin.commands import AdminCommands, CommandContext
from assistant.evals.runner import JUDGE_INSTRUCTIONS
from assistant.evals.suite import EvalSuite, load_suite
from assistant.store import Store
from assistant.store.tables import EvalRun
from assistant.testing import CallTools, Fail, FakeLlm, Reply
from assistant.turns import Actor
from tests.conftest import REF, write_prompt
from tests.test_cli import assistant as cli

ANSWERS: dict[str, list[str]] = {}  # question -> answers to give, in turn (the last repeats)


def answer_by_question(body: dict[str, Any]) -> Reply | CallTools:
    messages = body["messages"]
    if messages[0]["content"] == JUDGE_INSTRUCTIONS:
        if "garbled" in messages[-1]["content"]:
            return Reply(text="I would rather not say.")
        verdict = "blue" in messages[-1]["content"].split("Answer:")[-1]
        return Reply(text=json.dumps({"pass": verdict, "reason": "looked for blue"}))
    if messages[-1]["role"] == "tool":
        return Reply(text=f"The result is {messages[-1]['content']}.")
    question = messages[-1]["content"]
    if question == "add two and three":
        return CallTools(calls=(("calculator", {"expression": "2+3"}),))
    queue = ANSWERS.get(question, ["I do not know."])
    return Reply(text=queue.pop(0) if len(queue) > 1 else queue[0])


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeLlm]:
    ANSWERS.clear()
    async with FakeLlm(responder=answer_by_question) as server:
        yield server


def write_suite(prompts_dir: Path, suite: dict[str, Any], name: str = "assistant") -> Path:
    path = prompts_dir / name / "evals.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    return path


def suite_from(prompts_dir: Path, spec: dict[str, Any]) -> EvalSuite:
    return load_suite(
        write_suite(prompts_dir, spec), prompt="assistant", known_tools=["calculator"]
    )


SUITE = {
    "threshold": 0.6,
    "cases": [
        {"name": "colour", "input": "favourite colour?", "expect": [{"contains": "blue"}]},
        {
            "name": "polite",
            "input": "say hi",
            "weight": 3,
            "expect": [{"not_contains": "sorry"}, {"regex": "^Hi"}],
        },
        {
            "name": "adds",
            "input": "add two and three",
            "expect": [{"tool_called": {"name": "calculator", "args": {"expression": "2+3"}}}],
        },
        {"name": "judged", "input": "sky?", "expect": [{"judge": "Says the sky is blue."}]},
    ],
    "tools": {"calculator": [{"input": {"expression": "2+3"}, "expected": "5"}]},
}


async def test_a_run_stores_each_case_with_its_outcome_cost_and_latency(
    prompts_dir, runner_for, store
):
    ANSWERS.update({"favourite colour?": ["Red."], "say hi": ["Hi there!"], "sky?": ["Blue."]})
    suite = load_suite(
        write_suite(prompts_dir, SUITE), prompt="assistant", known_tools=["calculator"]
    )
    run = await (await runner_for()).run(suite, 1)

    assert (run.cases, run.passed) == (4, 2)  # colour fails; the judge wants "blue": "Blue." fails
    assert run.pass_rate == pytest.approx((3 + 1) / (1 + 3 + 1 + 1))
    assert run.cost_usd is not None and run.cost_usd > 0
    results = {r.case: r for r in await store.evals.results(run.id)}
    assert not results["colour"].passed and "blue" in results["colour"].failures
    assert results["polite"].passed and results["polite"].answer == "Hi there!"
    assert results["adds"].passed and results["adds"].latency_ms > 0
    assert results['calculator({"expression": "2+3"})'].passed
    assert (run.tool_cases, run.tool_passed) == (1, 1)
    assert await store.evals.latest_run("assistant", 1) == run


async def test_the_judge_grades_with_the_rubric(prompts_dir, runner_for, store):
    ANSWERS["sky?"] = ["It is blue today."]
    suite_spec = {"cases": [SUITE["cases"][3]]}
    suite = suite_from(prompts_dir, suite_spec)
    run = await (await runner_for()).run(suite, 1)
    assert run.pass_rate == 1.0
    async with store.engine.connect() as connection:  # the judge's call is accounted too
        judged = (
            await connection.execute(
                text("SELECT model, status, prompt_tokens FROM llm_calls WHERE purpose = 'judge'")
            )
        ).all()
    [(model, status, tokens)] = judged
    assert (model, status) == ("gpt-4o-mini", "ok") and tokens > 0


async def test_consistency_is_below_one_when_the_model_varies(prompts_dir, runner_for):
    ANSWERS["pick one"] = ["A", "B", "A"]
    spec = {
        "consistency": {"runs": 3},
        "cases": [{"name": "pick", "input": "pick one", "expect": [{"regex": "^[AB]$"}]}],
    }
    suite = suite_from(prompts_dir, spec)
    run = await (await runner_for()).run(suite, 1)
    assert run.consistency == pytest.approx(2 / 3)
    assert run.pass_rate == 1.0


async def test_the_self_check_catches_examples_that_contradict_the_prompt(prompts_dir, runner_for):
    examples = [
        {"user": "VPN drops", "assistant": "category: network"},
        {"user": "printer jams", "assistant": "category: hardware"},
    ]
    write_prompt(prompts_dir, version=2, examples=examples)
    ANSWERS.update({"VPN drops": ["category: network"], "printer jams": ["category: network"]})
    spec = {"cases": [{"name": "x", "input": "VPN drops", "expect": [{"contains": "network"}]}]}
    suite = suite_from(prompts_dir, spec)
    run = await (await runner_for()).run(suite, 2)
    assert run.self_check_rate == 0.5


async def test_tool_cases_need_no_model(prompts_dir, runner_for, fake_llm):
    spec = {
        "cases": [],
        "tools": {
            "calculator": [
                {"input": {"expression": "2+3"}, "expected": "5"},
                {"input": {"expression": "1/0"}, "error": True},
                {"input": {"expression": "2*3"}, "expected": "7"},
            ]
        },
    }
    suite = load_suite(
        write_suite(prompts_dir, spec), prompt="assistant", known_tools=["calculator"]
    )
    run = await (await runner_for()).run(suite, 1)
    assert (run.tool_cases, run.tool_passed) == (3, 2)
    assert fake_llm.requests == []


# ---- the gate on `prompt use`

ADMIN = Actor(platform="test", user_id="ADMIN1")


async def gated_commands(
    make_assistant, store: Store, prompts_dir: Path, threshold: float = 0.5
) -> AdminCommands:
    write_prompt(prompts_dir, version=2, system="Version two.")
    case = {"name": "c", "input": "hi", "expect": [{"contains": "hi"}]}
    spec = {"threshold": threshold, "cases": [case]}
    assistant = await make_assistant()
    return AdminCommands(
        prompts=store.prompts,
        versions=assistant.versions,
        admins=["test:ADMIN1"],
        evals=store.evals,
        suites={"assistant": suite_from(prompts_dir, spec)},
    )


async def record_run(
    store: Store,
    version: int,
    pass_rate: float,
    *,
    model: str = "m",
    tools: tuple[int, int] = (0, 0),
) -> EvalRun:
    run = EvalRun(
        prompt_name="assistant",
        version=version,
        model=model,
        pass_rate=pass_rate,
        tool_cases=tools[0],
        tool_passed=tools[1],
    )
    return await store.evals.save_run(run, [])


async def use(commands: AdminCommands, text: str):
    return await commands.run(text, CommandContext(actor=ADMIN, surface="test", ref=REF))


async def test_a_version_never_evaluated_is_refused_unless_forced(
    make_assistant, store, prompts_dir
):
    commands = await gated_commands(make_assistant, store, prompts_dir)
    refused = await use(commands, "prompt use assistant 1")
    assert not refused.ok
    assert "assistant@1 has no eval run" in refused.text and "--force" in refused.text

    forced = await use(commands, "prompt use assistant 1 --force")
    assert forced.ok and "Forced past: assistant@1 has no eval run" in forced.text
    [audit] = await store.prompts.history("assistant")
    assert audit.forced


async def test_a_run_on_the_fake_model_does_not_count_and_the_refusal_says_why(
    make_assistant, store, prompts_dir
):
    commands = await gated_commands(make_assistant, store, prompts_dir)
    rehearsal = await record_run(store, 1, 0.67, model="fake")
    refused = await use(commands, "prompt use assistant 1")
    assert not refused.ok
    assert f"evaluated only on the fake model (67%, run #{rehearsal.id})" in refused.text
    assert "against a real model" in refused.text


async def test_a_version_below_its_suites_threshold_is_refused(make_assistant, store, prompts_dir):
    commands = await gated_commands(make_assistant, store, prompts_dir, threshold=0.8)
    await record_run(store, 1, 0.7)  # better than version 2, which never ran, but below 80%
    refused = await use(commands, "prompt use assistant 1")
    assert not refused.ok
    assert "assistant@1 passed 70%, below its suite's threshold of 80%" in refused.text

    await record_run(store, 1, 1.0, tools=(3, 2))
    refused = await use(commands, "prompt use assistant 1")
    assert not refused.ok and "failed 1 of its 3 tool cases" in refused.text


async def test_an_ab_split_is_gated_like_use_and_forcing_it_is_audited(
    make_assistant, store, prompts_dir
):
    commands = await gated_commands(make_assistant, store, prompts_dir)
    await record_run(store, 2, 0.9)  # version 2 answers now; the split brings in version 1
    refused = await use(commands, "prompt ab assistant 2=90 1=10")
    assert not refused.ok and "assistant@1 has no eval run" in refused.text
    assert await store.prompts.history("assistant") == []

    forced = await use(commands, "prompt ab assistant 2=90 1=10 --force")
    assert forced.ok and "Forced past" in forced.text
    newest = (await store.prompts.history("assistant"))[0]
    assert (newest.action, newest.forced) == ("ab", True)


async def test_force_is_audited_only_when_it_overrode_the_gate(make_assistant, store, prompts_dir):
    commands = await gated_commands(make_assistant, store, prompts_dir)
    await record_run(store, 1, 0.9)
    passing = await use(commands, "prompt use assistant 1 --force")  # nothing to override
    assert passing.ok and "Forced past" not in passing.text
    [audit] = await store.prompts.history("assistant")
    assert not audit.forced


async def test_a_tied_split_is_compared_with_its_newest_version(make_assistant, store, prompts_dir):
    write_prompt(prompts_dir, version=3, system="Version three.")
    commands = await gated_commands(make_assistant, store, prompts_dir)
    await record_run(store, 1, 0.4)
    await record_run(store, 3, 1.0)
    assert (await use(commands, "prompt ab assistant 1=50 3=50 --force")).ok
    await record_run(store, 2, 0.6)  # better than version 1, worse than version 3
    refused = await use(commands, "prompt use assistant 2")
    assert not refused.ok and "than assistant@3, which answers here now (100%)" in refused.text


async def test_a_version_that_passes_less_is_refused_showing_both_figures(
    make_assistant, store, prompts_dir
):
    commands = await gated_commands(make_assistant, store, prompts_dir)
    await record_run(store, 2, 0.9)  # the version in use: the latest, 2
    await record_run(store, 1, 0.5)
    refused = await use(commands, "prompt use assistant 1")
    assert not refused.ok
    assert "assistant@1 passed 50%" in refused.text and "assistant@2 passed 90%" in refused.text

    await record_run(store, 1, 0.95)
    accepted = await use(commands, "prompt use assistant 1")
    assert accepted.ok and "assistant@1 passed 95%" in accepted.text


async def test_a_prompt_without_a_suite_is_not_gated(make_assistant, store, prompts_dir):
    write_prompt(prompts_dir, version=2)
    assistant = await make_assistant()
    commands = AdminCommands(
        prompts=store.prompts,
        versions=assistant.versions,
        admins=["test:ADMIN1"],
        evals=store.evals,
    )
    done = await use(commands, "prompt use assistant 1")
    assert done.ok and "Not eval-gated" in done.text


# ---- `assistant eval run` as CI would call it


def cli_env(tmp_path: Path, prompts: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SLACK_"))}
    clean.update(DATABASE_URL=f"sqlite:///{tmp_path}/evals.db", PROMPTS_DIR=str(prompts))
    return clean


def test_eval_run_prints_a_table_and_gates_on_threshold_and_regression(prompts_dir, tmp_path):
    write_prompt(prompts_dir, version=2)
    spec = {"threshold": 1.0, "cases": [{"name": "echo", "input": "hello", "expect": []}]}
    spec["cases"][0]["expect"] = [{"contains": "You said: hello"}]
    write_suite(prompts_dir, spec)
    env = cli_env(tmp_path, prompts_dir)

    passing = cli("eval", "run", "assistant", "--fake", env=env, cwd=tmp_path)
    assert passing.returncode == 0, passing.stderr
    assert "assistant@2" in passing.stdout and "echo" in passing.stdout
    assert "ok: pass rate 100%" in passing.stdout

    spec["cases"][0]["expect"] = [{"contains": "something the fake never says"}]
    write_suite(prompts_dir, spec)
    failing = cli("eval", "run", "assistant", "--fake", env=env, cwd=tmp_path)
    assert failing.returncode == 1
    assert "REGRESSION: pass rate 0%" in failing.stdout
    assert "vs assistant@2 run #1: 100%" in failing.stdout

    gated = cli("prompts", "use", "assistant", "1", env=env, cwd=tmp_path)
    assert gated.returncode == 1
    assert "assistant@1 has no eval run" in gated.stderr


def test_a_malformed_suite_names_the_file_and_field(prompts_dir, tmp_path):
    write_suite(prompts_dir, {"cases": [{"name": "x", "input": "hi", "expect": [{"contans": 1}]}]})
    result = cli("eval", "run", "--fake", env=cli_env(tmp_path, prompts_dir), cwd=tmp_path)
    assert result.returncode == 2
    assert "evals.yaml" in result.stderr and "contains" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_judge_that_cannot_tell_fails_even_a_negated_rubric(prompts_dir, runner_for):
    ANSWERS["be rude"] = ["You idiot."]
    rubric = {"not_judge": "garbled: the answer insults the user"}
    spec = {"cases": [{"name": "rude", "input": "be rude", "expect": [rubric]}]}
    run = await (await runner_for()).run(suite_from(prompts_dir, spec), 1)
    assert run.pass_rate == 0.0


async def test_a_run_with_failed_turns_is_kept_but_never_compared(
    prompts_dir, runner_for, store, fake_llm
):
    spec = {"cases": [{"name": "c", "input": "colour?", "expect": [{"contains": "blue"}]}]}
    fake_llm.script(Fail(status=401, message="bad key"))
    run = await (await runner_for()).run(suite_from(prompts_dir, spec), 1)
    assert run.failed_turns == 1
    assert await store.evals.latest_run("assistant", 1) is None


async def test_the_gate_compares_with_what_answers_in_that_channel(
    make_assistant, store, prompts_dir
):
    commands = await gated_commands(make_assistant, store, prompts_dir)
    bound = await use(commands, "prompt use assistant 1 --scope global --force")
    assert bound.ok
    await record_run(store, 1, 0.95)
    await record_run(store, 2, 0.2)  # the newest version passes far less
    refused = await use(commands, "prompt use assistant 2")  # in a channel, under the global
    assert not refused.ok
    assert "assistant@2 passed 20%" in refused.text and "assistant@1 passed 95%" in refused.text


def test_report_prints_the_figures_and_writes_the_chart(prompts_dir, tmp_path):
    env = cli_env(tmp_path, prompts_dir)
    chart = tmp_path / "report.png"
    result = cli("report", "7d", "--chart", str(chart), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Assistant report, 7 days" in result.stdout and "Prompt versions" in result.stdout
    assert chart.read_bytes().startswith(b"\x89PNG")

    wrong = cli("report", "1y", env=env, cwd=tmp_path)
    assert wrong.returncode == 2 and "24h, 7d or 30d" in wrong.stderr
