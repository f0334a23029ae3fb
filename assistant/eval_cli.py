"""`assistant eval run` on a terminal: which suites and versions, a progress bar, a table per
run, and the comparison that decides the exit code."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from assistant.bindings import Scope
from assistant.bootstrap import Runtime
from assistant.eval_runner import EvalRunner, RunOutcome
from assistant.evals import EvalSuite
from assistant.store.tables import EvalResult, EvalRun


@dataclass(frozen=True, kw_only=True)
class PlannedRun:
    suite: EvalSuite
    version: int
    compare: int | None  # a version to compare with; None: the version's own previous run


def eval_plan(
    runtime: Runtime, name: str | None, version: int | None, compare: int | None
) -> list[PlannedRun]:
    """What to run: one suite (or all), at a version (default its latest)."""
    suites = runtime.suites
    if name is not None and name not in suites:
        known = ", ".join(sorted(suites)) or "none"
        raise ValueError(
            f"no eval suite for {name!r}: add prompts/{name}/evals.yaml (suites: {known})"
        )
    chosen = [suites[name]] if name is not None else [suites[n] for n in sorted(suites)]
    catalog = runtime.assistant.versions.catalog
    return [
        PlannedRun(
            suite=suite,
            version=version
            if version is not None
            else catalog.latest(suite.prompt).version.version,
            compare=compare,
        )
        for suite in chosen
    ]


async def run_plan(
    runner: EvalRunner, runtime: Runtime, plan: list[PlannedRun], console: Console
) -> list[RunOutcome]:
    return [await _run_one(runner, runtime, planned, console) for planned in plan]


async def _run_one(
    runner: EvalRunner, runtime: Runtime, planned: PlannedRun, console: Console
) -> RunOutcome:
    compared = await _baseline(runtime, planned)
    with Progress(
        TextColumn(f"{planned.suite.prompt}@{planned.version}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("cases", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        run = await runner.run(planned.suite, planned.version, progress=advance)
    assert run.id is not None
    outcome = RunOutcome(
        run=run, results=await runtime.store.evals.results(run.id), compared=compared
    )
    console.print(result_table(outcome))
    console.print(summary_line(outcome), highlight=False, markup=False)
    return outcome


async def _baseline(runtime: Runtime, planned: PlannedRun) -> EvalRun | None:
    """The run to beat: the compared version's latest; by default the latest run of the
    version in use (bound globally, else the latest), which for the version in use itself
    is its previous run: drift."""
    prompt = planned.suite.prompt
    compare = planned.compare
    if compare is None:
        bound = await runtime.store.prompts.binding(Scope(kind="global"))
        in_use = bound.version if bound is not None and bound.prompt == prompt else None
        compare = in_use or runtime.assistant.versions.catalog.latest(prompt).version.version
    return await runtime.store.evals.latest_run(prompt, compare)


def result_table(outcome: RunOutcome) -> Table:
    run = outcome.run
    table = Table(title=f"{run.prompt_name}@{run.version} on {run.model} (run #{run.id})")
    for column in ("kind", "case", "", "why not", "cost", "latency"):
        table.add_column(column)
    for result in outcome.results:
        table.add_row(*_row(result))
    return table


def _row(result: EvalResult) -> tuple[str, ...]:
    case = result.case if result.attempt == 1 else f"{result.case} #{result.attempt}"
    cost = f"${result.cost_usd:.5f}" if result.cost_usd is not None else "-"
    latency = f"{result.latency_ms:.0f} ms" if result.latency_ms else "-"
    mark = "[green]pass[/]" if result.passed else "[red]FAIL[/]"
    why = escape(result.failures.replace("\n", "; "))
    return result.kind, escape(case), mark, why, cost, latency


def summary_line(outcome: RunOutcome) -> str:
    run = outcome.run
    parts = [f"pass rate {run.pass_rate:.0%} ({run.passed}/{run.cases} cases)"]
    parts.append(f"threshold {run.threshold:.0%}")
    if run.consistency is not None:
        parts.append(f"consistency {run.consistency:.0%}")
    if run.self_check_rate is not None:
        parts.append(f"few-shot self-check {run.self_check_rate:.0%}")
    if run.tool_cases:
        parts.append(f"tools {run.tool_passed}/{run.tool_cases}")
    parts.append(f"cost ${run.cost_usd:.4f}" if run.cost_usd is not None else "cost unpriced")
    if outcome.compared is not None:
        before = outcome.compared
        parts.append(
            f"vs {before.prompt_name}@{before.version} run #{before.id}: {before.pass_rate:.0%}"
        )
    verdict = (
        "REGRESSION"
        if outcome.regressed
        else "BELOW THRESHOLD"
        if outcome.below_threshold
        else "ok"
    )
    return f"{verdict}: " + ", ".join(parts)
