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
    """One row per case: a case asked several times (consistency) shows how many of its
    attempts passed, each distinct reason once, the cost of them all and the slowest."""
    run = outcome.run
    table = Table(title=f"{run.prompt_name}@{run.version} on {run.model} (run #{run.id})")
    for column in ("kind", "case", "", "why not", "cost", "latency"):
        table.add_column(column)
    attempts: dict[tuple[str, str], list[EvalResult]] = {}
    for result in outcome.results:
        attempts.setdefault((result.kind, result.case), []).append(result)
    for (kind, case), results in attempts.items():
        table.add_row(kind, escape(case), *_figures(results))
    return table


def _figures(results: list[EvalResult]) -> tuple[str, ...]:
    passed = sum(r.passed for r in results)
    if len(results) == 1:
        mark = "[green]pass[/]" if passed else "[red]FAIL[/]"
    else:
        colour = "green" if passed == len(results) else "red"
        mark = f"[{colour}]{passed}/{len(results)}[/]"
    reasons = sorted({line for r in results for line in r.failures.splitlines() if line})
    costs = [r.cost_usd for r in results]
    cost = f"${sum(c for c in costs if c is not None):.5f}" if None not in costs else "-"
    slowest = max((r.latency_ms or 0.0) for r in results)
    latency = f"{slowest:.0f} ms" if slowest else "-"
    return mark, escape("; ".join(reasons)), cost, latency
