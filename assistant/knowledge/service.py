"""Searching the team's knowledge for a conversation, and the `search_knowledge` tool.

A conversation searches only the collections bound to its channel, its workspace or globally:
the place decides, never the question, so a document bound to one channel cannot reach an
answer in another. The query is embedded (an accounted model call of the turn) when the
server can; without embeddings the search runs on keywords alone, and the process says so once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from assistant.knowledge.catalog import load_catalog
from assistant.knowledge.embeddings import Embedder, EmbeddingError
from assistant.knowledge.sync import Progress, Syncer, SyncError, SyncReport, adopt_declared
from assistant.observe import NO_OBSERVER, Observer, Retrieval, tell_calls
from assistant.records import CallRecord
from assistant.store import Store
from assistant.store.knowledge_store import CollectionInfo, Hit, KnowledgeStore, SearchOutcome
from assistant.tokens import TokenCounter
from assistant.tools import ToolContext
from assistant.turns import ConversationRef, Source

log = logging.getLogger(__name__)

TOOL_NAME = "search_knowledge"
PASSAGES = 5  # passages a search hands the model: enough to answer, few enough to read
_PASSAGE_CHARS = 1_500  # a passage longer than this is cut: the tool result must fit the context


@dataclass(frozen=True, kw_only=True)
class Found:
    """A search's outcome for one place: the passages, and what was searched."""

    collections: list[CollectionInfo]
    outcome: SearchOutcome


class Knowledge:
    """The search every surface shares: the tool in a turn, `knowledge search` in a command."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder | None,
        *,
        query_embedder: Embedder | None = None,
        limit: int = PASSAGES,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self._store = store
        self._observer = observer  # a sync's embeddings are traced and counted too
        self._query_embedder = query_embedder or embedder
        self._limit = limit
        self._said_keywords_only = False
        counter = TokenCounter(embedder.model if embedder else "text-embedding-3-small")
        self._syncer = Syncer(store, embedder, counter.count)

    @property
    def store(self) -> KnowledgeStore:
        return self._store.knowledge

    async def record(self, calls: Sequence[CallRecord]) -> None:
        """Account calls made outside a turn (a search from a command, a sync)."""
        await self._store.record_calls(calls)
        tell_calls(self._observer, calls, surface="knowledge")

    async def sync(
        self, collection: CollectionInfo, *, progress: Progress | None = None
    ) -> SyncReport:
        """Sync one collection; what its embeddings cost is accounted even when it fails."""
        calls: list[CallRecord] = []
        try:
            return await self._syncer.sync(collection, account=calls.append, progress=progress)
        finally:
            await self.record(calls)

    async def sync_all(self, prompts_dir: Path, *, actor: str) -> list[SyncReport | SyncError]:
        """Create what `knowledge.yaml` declares, then sync every collection (only changes
        are embedded); a collection that cannot be synced (its folder gone) is reported in
        place of its report and the others go on."""
        await adopt_declared(self._store, load_catalog(prompts_dir), actor=actor)
        done: list[SyncReport | SyncError] = []
        for collection in await self._store.knowledge.collections():
            try:
                done.append(await self.sync(collection))
            except SyncError as exc:
                done.append(exc)
        return done

    async def search(
        self,
        query: str,
        *,
        collections: Sequence[CollectionInfo],
        account: Callable[[CallRecord], None],
        limit: int | None = None,
    ) -> SearchOutcome:
        """The best passages of `collections` for `query`: keywords and meaning, fused."""
        ids = [c.id for c in collections]
        vector = await self._query_vector(query, account) if ids else None
        outcome = await self._store.knowledge.search(
            ids, text=query, vector=vector, limit=limit or self._limit
        )
        if outcome.note and not self._said_keywords_only:
            self._said_keywords_only = True
            log.warning("knowledge search: %s", outcome.note)
        return outcome

    async def search_here(
        self, ref: ConversationRef, query: str, *, account: Callable[[CallRecord], None]
    ) -> Found:
        """`search` over what `ref`'s place may see."""
        collections = await self._store.knowledge.bound_to(ref)
        outcome = await self.search(query, collections=collections, account=account)
        return Found(collections=collections, outcome=outcome)

    async def search_knowledge(self, query: str, context: ToolContext) -> str:
        """Search the team's own documents (handbooks, runbooks, product docs) for passages
        about `query`. Returns numbered passages; cite the ones you use by number, like [1]."""
        started = time.time_ns()
        found = await self.search_here(context.ref, query, account=context.account)
        context.watch.retrieval(
            Retrieval(
                query=query,
                collections=tuple(c.name for c in found.collections),
                hits=len(found.outcome.hits),
                mode=found.outcome.mode,
                started_ns=started,
                ended_ns=time.time_ns(),
            )
        )
        if not found.collections:
            return "No knowledge collection is available in this conversation."
        if not found.outcome.hits:
            names = ", ".join(c.name for c in found.collections)
            return f"Nothing in {names} matches {query!r}."
        return passages_text(found.outcome.hits, context.cite)

    async def _query_vector(
        self, query: str, account: Callable[[CallRecord], None]
    ) -> list[float] | None:
        if self._query_embedder is None:
            if not self._said_keywords_only:
                self._said_keywords_only = True
                log.warning("knowledge search: no EMBEDDING_MODEL is set: keyword search only")
            return None
        try:
            embedded = await self._query_embedder.embed([query], account=account)
        except EmbeddingError as exc:
            log.warning(
                "knowledge search: the query could not be embedded (%s); keywords only", exc
            )
            return None
        return embedded.vectors[0]


def source_of(hit: Hit) -> Source:
    """The source a hit is cited as (numbered by the turn that cites it)."""
    return Source(
        number=0,
        collection=hit.collection,
        document=hit.document,
        title=hit.title,
        heading=hit.heading,
        link=hit.link,
    )


def passages_text(hits: Sequence[Hit], cite: Callable[[Source], Source]) -> str:
    """The passages as the model reads them: each under its number and where it comes from."""
    parts = []
    for hit in hits:
        source = cite(source_of(hit))
        text = hit.text if len(hit.text) <= _PASSAGE_CHARS else hit.text[:_PASSAGE_CHARS] + " …"
        parts.append(
            f"[{source.number}] {source.label()} ({hit.collection}: {hit.document})\n{text}"
        )
    parts.append("Cite the passages you use by their numbers, like [1].")
    return "\n\n".join(parts)
