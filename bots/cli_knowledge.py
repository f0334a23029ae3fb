"""`assistant knowledge …` on a terminal: a progress bar while passages are embedded, a line
per sync that says what was embedded and what was reused, and tables to read collections by."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from assistant.knowledge.embeddings import EmbeddingError
from assistant.knowledge.service import Knowledge, source_of
from assistant.knowledge.sync import SyncError, SyncReport
from assistant.store.knowledge_store import CollectionInfo, SearchOutcome


async def sync_with_progress(
    knowledge: Knowledge, collections: Sequence[CollectionInfo], console: Console
) -> list[SyncReport | Exception]:
    """Each collection synced in turn; one that fails (its folder gone, the embeddings server
    down) is said in red and the others go on."""
    reports: list[SyncReport | Exception] = []
    for collection in collections:
        with Progress(
            TextColumn(f"{escape(collection.name)}: embedding"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        ) as bar:
            task = bar.add_task("embed", total=None)

            def advance(done: int, total: int, task_id: TaskID = task) -> None:
                bar.update(task_id, completed=done, total=total)

            try:
                report = await knowledge.sync(collection, progress=advance)
            except (SyncError, EmbeddingError) as exc:
                console.print(f"error: {exc}", style="bold red", highlight=False, markup=False)
                reports.append(exc)
                continue
        console.print(sync_line(report), highlight=False, markup=False)
        for problem in report.problems:
            console.print(f"  skipped {problem}", style="yellow", highlight=False, markup=False)
        reports.append(report)
    return reports


def sync_line(report: SyncReport) -> str:
    """One line an operator can check a sync by: how much changed, and what it embedded."""
    said = (
        f"{report.collection}: {report.documents} documents, {report.changed} changed, "
        f"{report.removed} removed; {report.chunks} passages written, {report.embedded} embedded, "
        f"{report.reused} reused"
    )
    return f"{said} ({report.keywords_only})" if report.keywords_only else said


def collections_table(collections: Sequence[CollectionInfo], places: dict[str, list[str]]) -> Table:
    table = Table("collection", "documents", "passages", "vectors", "searched in", "synced")
    for c in collections:
        synced = f"{c.synced_at:%Y-%m-%d %H:%M}" if c.synced_at else "never"
        vectors = f"{c.embedded} ({c.embedding_model})" if c.embedding_model else "none"
        table.add_row(
            escape(c.name),
            str(c.documents),
            str(c.chunks),
            escape(vectors),
            escape(", ".join(places.get(c.name, [])) or "nowhere"),
            synced,
        )
    return table


def hits_table(outcome: SearchOutcome) -> Table:
    table = Table("#", "source", "score", "keyword", "vector", "passage")
    for n, hit in enumerate(outcome.hits, 1):
        where = f"{source_of(hit).label()}\n{hit.collection}: {hit.document}"
        if hit.link:
            where += f"\n{hit.link}"
        table.add_row(
            str(n),
            escape(where),
            f"{hit.score:.4f}",
            str(hit.keyword_rank or "-"),
            str(hit.vector_rank or "-"),
            escape(_preview(hit.text)),
        )
    return table


def _preview(text: str, size: int = 100) -> str:
    """The passage's start on one line: enough to recognise it."""
    flat = " ".join(text.split())
    return flat if len(flat) <= size else flat[: size - 1] + "…"
