"""The eval gate: a binding change may only bring in versions whose evals say they are fit.

Fit means a finished run on a real model (a run on the bundled fake model proves the suite
runs, not that the answers are good), at or above the suite's threshold with every tool case
passing, and no worse than the version answering in that scope now. `--force` switches anyway;
the caller audits it as forced, and the answer still shows what was overridden.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from assistant.admin.grammar import CommandError
from assistant.evals.suite import EvalSuite
from assistant.store.eval_store import EvalStore
from assistant.store.tables import EvalRun

FORCE_HINT = "Add --force to switch anyway (the change is recorded as forced)."


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """What the gate lets through: the figures to show, and whether `--force` overrode a
    refusal (only then is the change audited as forced)."""

    figures: str
    overridden: bool = False


@dataclass(frozen=True, kw_only=True)
class EvalGate:
    evals: EvalStore | None
    suites: Mapping[str, EvalSuite]

    async def check(
        self, name: str, incoming: Sequence[int], current: int | None, *, force: bool
    ) -> Verdict:
        """The figures to show with the change; raises CommandError naming every reason a
        version is unfit, unless `force`."""
        suite = self.suites.get(name)
        if self.evals is None or suite is None:
            return Verdict(figures=f"(Not eval-gated: {name} has no eval suite.)")
        now = await self.evals.latest_run(name, current) if current is not None else None
        figures: list[str] = []
        problems: list[str] = []
        for version in incoming:
            run = await self.evals.latest_run(name, version)
            if run is None:
                problems.append(await self._unevaluated(name, version))
                continue
            figures.append(_figure(name, version, run))
            problems += _shortfalls(name, version, run, suite)
            if now is not None and current != version and run.pass_rate < now.pass_rate:
                problems.append(
                    f"{name}@{version} passes fewer cases ({run.pass_rate:.0%}) than "
                    f"{name}@{current}, which answers here now ({now.pass_rate:.0%})"
                )
        if now is not None and current not in incoming:
            figures.append("now " + _figure(name, current, now))
        shown = f"Evals: {'; '.join(figures)}; threshold {suite.threshold:.0%}." if figures else ""
        if not problems:
            return Verdict(figures=shown)
        overridden = "; ".join(problems)
        if force:
            forced = "\n".join(filter(None, [shown, f"Forced past: {overridden}."]))
            return Verdict(figures=forced, overridden=True)
        refusal = [f"Not switched: {overridden}.", shown, FORCE_HINT]
        raise CommandError("\n".join(line for line in refusal if line))

    async def _unevaluated(self, name: str, version: int) -> str:
        assert self.evals is not None
        rehearsal = await self.evals.latest_run(name, version, fake=True)
        run_it = f"run `eval run {name} {version}` against a real model"
        if rehearsal is None:
            return f"{name}@{version} has no eval run; {run_it}"
        return (
            f"{name}@{version} was evaluated only on the fake model ({rehearsal.pass_rate:.0%}, "
            f"run #{rehearsal.id}), which shows the suite runs, not that the answers are good; "
            f"{run_it}"
        )


def _shortfalls(name: str, version: int, run: EvalRun, suite: EvalSuite) -> list[str]:
    found = []
    if not suite.passes(run.pass_rate):
        found.append(
            f"{name}@{version} passed {run.pass_rate:.0%}, below its suite's threshold of "
            f"{suite.threshold:.0%}"
        )
    if run.tool_passed < run.tool_cases:
        failed = run.tool_cases - run.tool_passed
        found.append(f"{name}@{version} failed {failed} of its {run.tool_cases} tool cases")
    return found


def _figure(name: str, version: int | None, run: EvalRun) -> str:
    return f"{name}@{version} passed {run.pass_rate:.0%} (run #{run.id}, {run.model})"
