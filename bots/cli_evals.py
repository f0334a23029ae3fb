"""`assistant eval run` on a terminal: which suites and versions, a progress bar, a table per
run, and the comparison that decides the exit code."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from assistant.evals.runner import EvalRunner, RunOutcome
from assistant.evals.suite import EvalSuite
from assistant.runtime import Runtime
from assistant.store.tables import EvalResult


@dataclass(frozen=True, kw_only=True)
class PlannedRun:
    suite: EvalSuite
    version: int
    compare: int | None  # a version to compare with; None: the version in use


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

        outcome = await runner.run_and_compare(
            planned.suite, planned.version, compare=planned.compare, progress=advance
        )
    console.print(result_table(outcome))
    console.print(outcome.summary(), highlight=False, markup=False)
    return outcome


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
