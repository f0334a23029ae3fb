"""Retrieval cases: a question put to the knowledge search alone, without the model, and the
sources it should find; and the figures that say how well they were found (recall@k, MRR),
for a run, per collection, and against an earlier run.

A broken index (a collection emptied, moved, embedded by another model) still lets every turn
answer fluently; these figures are where it shows first, and cheaply: no model call is made
but the query's embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from assistant.evals.assertions import ExpectedSource
from assistant.store.eval_store import RETRIEVAL, EvalStore
from assistant.store.tables import EvalResult, EvalRun

KIND = RETRIEVAL  # the kind of a retrieval case's EvalResult
DEFAULT_K = 5  # the passages a search hands the model (knowledge.service.PASSAGES)
MAX_K = 50
DEFAULT_DROP = 0.2  # recall@k or MRR falling this much since the previous run is drift
_EPSILON = 1e-9  # 1.0 - 0.8 is 0.19999999999999996: a drop of exactly the limit counts


@dataclass(frozen=True, kw_only=True)
class RetrievalCase:
    """A question and the sources a search for it should put in its top `k` passages."""

    name: str
    query: str
    expect: tuple[ExpectedSource, ...]
    collections: tuple[str, ...]  # () searches every collection bound globally
    k: int


@dataclass(frozen=True, kw_only=True)
class Retrieved:
    """How one search fared: the share of expected sources in the top k, and 1/rank of the
    first passage that is one of them (0 when none is)."""

    recall: float
    reciprocal_rank: float
    missing: tuple[ExpectedSource, ...]


def score(case: RetrievalCase, ranked: Sequence[tuple[str, str]]) -> Retrieved:
    """Grade the passages a search returned, best first, each as (document, heading)."""
    top = list(ranked[: case.k])
    found = [e for e in case.expect if any(e.matches(d, h) for d, h in top)]
    first = next(
        (rank for rank, (d, h) in enumerate(top, 1) if any(e.matches(d, h) for e in case.expect)),
        None,
    )
    return Retrieved(
        recall=len(found) / len(case.expect) if case.expect else 0.0,
        reciprocal_rank=1 / first if first else 0.0,
        missing=tuple(e for e in case.expect if e not in found),
    )


# --- a run's figures -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RetrievalFigures:
    cases: int
    recall: float  # mean recall@k
    mrr: float  # mean reciprocal rank


@dataclass(frozen=True, kw_only=True)
class RetrievalSummary:
    """A run's retrieval figures: overall, and per collection searched (a case that searched
    several counts toward each of them)."""

    run_id: int | None
    model: str  # what the run's turns were answered by ("fake": the bundled fake model)
    k: int | None  # None when the cases used different k
    overall: RetrievalFigures
    by_collection: dict[str, RetrievalFigures]

    @property
    def at(self) -> str:
        return f"recall@{self.k if self.k is not None else 'k'}"


def summarize(run: EvalRun, results: Sequence[EvalResult]) -> RetrievalSummary | None:
    """The figures of `run`'s retrieval rows; None when it ran no retrieval case."""
    rows = [r for r in results if r.kind == KIND and r.recall is not None]
    if not rows:
        return None
    groups: dict[str, list[EvalResult]] = {}
    for row in rows:
        for name in filter(None, row.collections.split(",")):
            groups.setdefault(name, []).append(row)
    return RetrievalSummary(
        run_id=run.id,
        model=run.model,
        k=run.retrieval_k,
        overall=_figures(rows),
        by_collection={name: _figures(group) for name, group in sorted(groups.items())},
    )


def _figures(rows: Sequence[EvalResult]) -> RetrievalFigures:
    return RetrievalFigures(
        cases=len(rows),
        recall=sum(r.recall or 0.0 for r in rows) / len(rows),
        mrr=sum(r.reciprocal_rank or 0.0 for r in rows) / len(rows),
    )


def dropped(before: RetrievalSummary, now: RetrievalSummary, *, by: float) -> list[str]:
    """Each figure that fell by `by` or more since `before`, worded "recall@5 100% → 40%":
    overall, then each collection both runs searched (one emptied collection among many
    barely moves the overall figure)."""
    falls = _falls(now.at, before.overall, now.overall, by)
    for name, figures in now.by_collection.items():
        earlier = before.by_collection.get(name)
        if earlier is not None and len(now.by_collection) > 1:
            falls += [f"{name} {fall}" for fall in _falls(now.at, earlier, figures, by)]
    return falls


def _falls(at: str, before: RetrievalFigures, now: RetrievalFigures, by: float) -> list[str]:
    falls = []
    if before.recall - now.recall >= by - _EPSILON:
        falls.append(f"{at} {before.recall:.0%} → {now.recall:.0%}")
    if before.mrr - now.mrr >= by - _EPSILON:
        falls.append(f"MRR {before.mrr:.2f} → {now.mrr:.2f}")
    return falls


def describe(summary: RetrievalSummary) -> str:
    """ "recall@5 80%, MRR 0.70 (4 cases; handbook 50%/0.50, product-docs 100%/0.90)": the
    collections are named when there are several."""
    overall = summary.overall
    text = f"{summary.at} {overall.recall:.0%}, MRR {overall.mrr:.2f}"
    cases = f"{overall.cases} case{'' if overall.cases == 1 else 's'}"
    if len(summary.by_collection) > 1:
        parts = [f"{n} {f.recall:.0%}/{f.mrr:.2f}" for n, f in summary.by_collection.items()]
        return f"{text} ({cases}; {', '.join(parts)})"
    return f"{text} ({cases})"


async def latest(evals: EvalStore, name: str, version: int) -> RetrievalSummary | None:
    """The newest retrieval figures of a version, on a real model or the fake one: what
    `prompt show` can print under the version, with `describe`."""
    history = await evals.retrieval_history(
        [(name, version)], before=datetime.now(UTC), fake=None, per_version=1
    )
    runs = history.get((name, version), [])
    return summarize(*runs[0]) if runs else None
