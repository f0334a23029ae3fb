"""Team knowledge in the database: collections of the team's documents, their passages, where
each may be searched, and the search itself.

Keywords go through the database's own full-text search (SQLite FTS5, a Postgres tsvector);
vectors through sqlite-vec or pgvector, one table per vector size. A passage's vector is stored
with the passage and is the source of truth: the vector tables are derived from it, written in
the same transaction as the passages, and can be rebuilt without asking a model again. Where
vectors cannot work (no extension), search runs on keywords and says why.

Every search is confined to the collections it is given, on both sides and once more when the
passages are read: what a place may see is decided by its bindings, never by the question.
"""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote

from sqlalchemy import and_, bindparam, delete, func, insert, text, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from assistant.knowledge.catalog import check_name
from assistant.prompts.bindings import SCOPE_KINDS, Scope, scopes_for
from assistant.store.database import SqliteDriver, WorkRunner, engine_sqlite_driver
from assistant.store.places import applies_here
from assistant.store.rows import table_row
from assistant.store.tables import (
    KnowledgeAudit,
    KnowledgeBinding,
    KnowledgeChunk,
    KnowledgeCollection,
    KnowledgeDocument,
    utcnow,
)
from assistant.turns import ConversationRef

RRF_K = 60  # Reciprocal Rank Fusion's constant: rank 1 scores 1/61, rank 50 scores 1/110
_MAX_WORDS = 16  # a keyword query uses at most this many distinct words
# A word in more passages than this says little about any of them (its IDF is low), and ranking
# every passage that holds it costs about 2 µs each: the keyword side ranks the rarer words'
# passages, at most _RANKED of them, so a search costs the same at any size.
_COMMON = 4_000
_RANKED = 8_000
_MAX_DIMENSIONS = 16_000  # pgvector's limit; no embedding model comes near it
_HNSW_MAX_DIMENSIONS = 2_000  # pgvector's HNSW index takes no more; larger sizes scan exactly
_PAGE = 500

_collections = KnowledgeCollection.__table__.c  # type: ignore[attr-defined]
_documents = KnowledgeDocument.__table__.c  # type: ignore[attr-defined]
_chunks = KnowledgeChunk.__table__.c  # type: ignore[attr-defined]
_bindings = KnowledgeBinding.__table__.c  # type: ignore[attr-defined]
_audit = KnowledgeAudit.__table__.c  # type: ignore[attr-defined]
_AnyRow = Row[*tuple[Any, ...]]


@dataclass(frozen=True, kw_only=True)
class CollectionInfo:
    id: int
    name: str
    path: str
    link: str | None
    description: str
    origin: str
    embedding_model: str | None
    dimensions: int | None
    synced_at: datetime | None
    documents: int
    chunks: int
    embedded: int  # chunks with a vector


@dataclass(frozen=True, kw_only=True)
class ChunkData:
    """A passage as a sync hands it over; `embedding` is float32 little-endian bytes."""

    position: int
    heading: str
    anchor: str
    text: str
    token_count: int
    content_hash: str
    embedding: bytes | None


@dataclass(frozen=True, kw_only=True)
class Hit:
    chunk_id: int
    collection: str
    document: str  # its path inside the collection
    title: str
    heading: str
    anchor: str
    link: str | None  # the collection's link joined with the document (and #anchor); or None
    text: str
    score: float  # fused: the sum of 1/(RRF_K + rank) over the sides that found it
    keyword_rank: int | None  # 1 = best; None when the keyword side did not find it
    vector_rank: int | None


@dataclass(frozen=True, kw_only=True)
class SearchOutcome:
    hits: list[Hit]
    mode: str  # "hybrid" | "keywords" | "vectors": the sides that ran
    note: str | None  # why vectors were not used (or not for every collection), when not


@dataclass(frozen=True, kw_only=True)
class KnowledgeChange:
    """One line of the audit: who changed what the assistant may read, where, and how."""

    at: datetime
    actor: str
    surface: str
    action: str  # add | remove | use | drop
    collection: str
    scope: Scope | None  # for use and drop


class KnowledgeStore:
    """Collections, their passages and bindings, and search over them."""

    def __init__(self, engine: AsyncEngine, *, run: WorkRunner | None = None) -> None:
        self._run = run or WorkRunner(engine)
        self._index: _Index = (
            _SqliteIndex(engine_sqlite_driver(engine))
            if engine.dialect.name == "sqlite"
            else _PostgresIndex()
        )
        self._vector_problem: str | None = None
        self._vectors_checked = False
        self._checking = asyncio.Lock()

    async def add_collection(
        self,
        name: str,
        path: str,
        *,
        link: str | None,
        description: str,
        origin: str,
        actor: str,
        surface: str,
    ) -> CollectionInfo:
        """Create the collection, or point an existing one at `path`, `link`, `description`
        (its bindings and passages stay). Only a new one is audited."""
        check_name(name)
        values = {"path": path, "link": link, "description": description}
        change = _change("add", name, actor=actor, surface=surface)

        def work(connection: Connection) -> int:
            found = _collection_id(connection, name)
            if found is not None:
                connection.execute(_update_collection(found), values)
                connection.commit()
                return found
            row = table_row(KnowledgeCollection, name=name, origin=origin, **values)
            try:
                created = connection.execute(_INSERT_COLLECTION, row).scalar_one()
            except IntegrityError:  # created concurrently: theirs, with our values
                connection.rollback()
                return work(connection)
            connection.execute(insert(KnowledgeAudit), change)
            connection.commit()
            return int(created)

        collection_id = await self._run(work)
        infos = await self._run(lambda c: _infos(c, [collection_id]))
        return infos[0]

    async def collection(self, name: str) -> CollectionInfo | None:
        def work(connection: Connection) -> list[CollectionInfo]:
            found = _collection_id(connection, name)
            return _infos(connection, [found]) if found is not None else []

        infos = await self._run(work)
        return infos[0] if infos else None

    async def collections(self) -> list[CollectionInfo]:
        return await self._run(lambda c: _infos(c, None))

    async def remove_collection(self, name: str, *, actor: str, surface: str) -> bool:
        """Remove the collection with everything of it: documents, passages, vectors, bindings.
        False when there was no such collection."""
        change = _change("remove", name, actor=actor, surface=surface)

        def work(connection: Connection) -> bool:
            found = _collection_id(connection, name)
            if found is None:
                return False
            _remove_chunks(connection, self._index, _chunks.collection_id == found)
            connection.execute(delete(KnowledgeDocument).where(_documents.collection_id == found))
            connection.execute(delete(KnowledgeBinding).where(_bindings.collection_id == found))
            connection.execute(delete(KnowledgeCollection).where(_collections.id == found))
            connection.execute(insert(KnowledgeAudit), change)
            connection.commit()
            return True

        return await self._run(work)

    async def document_hashes(self, collection_id: int) -> dict[str, str]:
        """Each synced document's path and content hash: what a sync compares the folder with."""
        query = sa_select(_documents.path, _documents.content_hash).where(
            _documents.collection_id == collection_id
        )
        rows = await self._run(lambda c: c.execute(query).all())
        return {str(path): str(content_hash) for path, content_hash in rows}

    async def without_vectors(self, collection_id: int) -> set[str]:
        """The documents some of whose passages have no vector (indexed while the embeddings
        server was missing or down): a sync that can embed must not take them as done."""
        query = sa_select(_documents.path).where(
            _documents.collection_id == collection_id, _documents.embedded < _documents.chunks
        )
        return set(await self._run(lambda c: list(c.execute(query).scalars())))

    async def known_embeddings(
        self, collection_id: int, hashes: Collection[str], model: str
    ) -> dict[str, bytes]:
        """The vectors this collection already holds from `model`, by passage hash: a passage
        that did not change (or only moved to another document) is never embedded again."""
        wanted = sorted(set(hashes))

        def work(connection: Connection) -> dict[str, bytes]:
            found: dict[str, bytes] = {}
            for start in range(0, len(wanted), _PAGE):
                params = {
                    "collection_id": collection_id,
                    "model": model,
                    "hashes": wanted[start : start + _PAGE],
                }
                found.update((h, bytes(v)) for h, v in connection.execute(_KNOWN, params))
            return found

        return await self._run(work) if wanted else {}

    async def replace_document(
        self,
        collection_id: int,
        *,
        path: str,
        title: str,
        content_hash: str,
        chunks: Sequence[ChunkData],
        model: str | None,
        dimensions: int | None,
    ) -> None:
        """Replace a document's passages (and their vectors) in one transaction; with `model`,
        the collection's vectors are now that model's.

        A change of model (or size) drops the collection's other vectors and marks their
        documents changed: vectors of two models are never searched together, and the next
        sync embeds those documents again, even after a sync that stopped half-way.
        """
        _check_vectors(chunks, model, dimensions)
        document = _DocumentData(
            collection_id=collection_id, path=path, title=title, content_hash=content_hash
        )
        indexed = model is not None and dimensions is not None and await self._indexable()
        if indexed:
            assert dimensions is not None
            await self._ensure_table(dimensions)

        def work(connection: Connection) -> None:
            try:
                _replace(connection, self._index, document, chunks, model, dimensions, indexed)
            except IntegrityError:  # another sync inserted the document first: replace theirs
                connection.rollback()
                _replace(connection, self._index, document, chunks, model, dimensions, indexed)
            connection.commit()

        await self._run(work)

    async def remove_documents(self, collection_id: int, paths: Collection[str]) -> int:
        """Remove documents gone from the folder, with their passages; returns how many were."""
        wanted = sorted(set(paths))

        def work(connection: Connection) -> int:
            removed = 0
            for start in range(0, len(wanted), _PAGE):
                page = wanted[start : start + _PAGE]
                ids = connection.execute(_DOCUMENTS_AT, {"id": collection_id, "paths": page})
                removed += _remove_documents(connection, self._index, list(ids.scalars()))
            connection.commit()
            return removed

        return await self._run(work) if wanted else 0

    async def finish_sync(self, collection_id: int) -> None:
        statement = _update_collection(collection_id).values(synced_at=utcnow())

        def work(connection: Connection) -> None:
            connection.execute(statement)
            connection.commit()

        await self._run(work)

    async def rebuild_vectors(self, collection_id: int) -> int:
        """Write the collection's vector rows again from its passages' stored vectors (after
        the index was lost, or written by a process that could not load the extension).
        Returns how many were written: 0 where vectors cannot work here."""
        infos = await self._run(lambda c: _infos(c, [collection_id]))
        if not infos or infos[0].dimensions is None or not await self._indexable():
            return 0
        dimensions = infos[0].dimensions
        await self._ensure_table(dimensions)

        def work(connection: Connection) -> int:
            where = _chunks.collection_id == collection_id
            ids = list(connection.execute(sa_select(_chunks.id).where(where)).scalars())
            self._index.drop(connection, ids)
            written = _copy_vectors(connection, self._index, dimensions, where)
            connection.commit()
            return written

        return await self._run(work)

    async def bind(self, name: str, scope: Scope, *, actor: str, surface: str) -> bool:
        """Let `scope` search the collection; False when it already could."""
        change = _change("use", name, actor=actor, surface=surface, scope=scope)

        def work(connection: Connection) -> bool:
            collection_id = _existing(connection, name)
            row = table_row(
                KnowledgeBinding,
                collection_id=collection_id,
                scope=scope.kind,
                platform=scope.platform,
                workspace=scope.workspace,
                channel=scope.channel,
                updated_by=actor[:160],
            )
            try:
                connection.execute(insert(KnowledgeBinding), row)
            except IntegrityError:
                connection.rollback()
                return False
            connection.execute(insert(KnowledgeAudit), change)
            connection.commit()
            return True

        return await self._run(work)

    async def drop(self, name: str, scope: Scope, *, actor: str, surface: str) -> bool:
        """Stop `scope` searching the collection; False when it was not bound there."""
        change = _change("drop", name, actor=actor, surface=surface, scope=scope)

        def work(connection: Connection) -> bool:
            collection_id = _existing(connection, name)
            statement = delete(KnowledgeBinding).where(
                _bindings.collection_id == collection_id, _at(scope)
            )
            if not connection.execute(statement).rowcount:
                return False
            connection.execute(insert(KnowledgeAudit), change)
            connection.commit()
            return True

        return await self._run(work)

    async def bindings(self, name: str | None = None) -> list[tuple[str, Scope]]:
        """Where each collection (or only `name`) is searched: by name, most specific first."""
        query = sa_select(
            _collections.name,
            _bindings.scope,
            _bindings.platform,
            _bindings.workspace,
            _bindings.channel,
        ).join_from(
            KnowledgeBinding, KnowledgeCollection, _collections.id == _bindings.collection_id
        )
        if name is not None:
            query = query.where(_collections.name == name)
        rows = await self._run(lambda c: c.execute(query).all())
        found = [(str(row[0]), _scope(row)) for row in rows]
        return sorted(found, key=lambda f: (f[0], *_place_order(f[1])))

    async def bound_to(self, ref: ConversationRef) -> list[CollectionInfo]:
        """What a conversation may search: the collections bound to its channel, its workspace
        or globally, most specific first, each once."""
        params = {"platform": ref.platform, "workspace": ref.workspace, "channel": ref.channel}
        kinds = [scope.kind for scope in scopes_for(ref)]

        def work(connection: Connection) -> list[CollectionInfo]:
            rows = sorted(
                connection.execute(_BOUND_TO, params),
                key=lambda row: (kinds.index(row.scope), row.name),
            )
            ordered = list(dict.fromkeys(int(row.collection_id) for row in rows))
            infos = {info.id: info for info in _infos(connection, ordered)} if ordered else {}
            return [infos[i] for i in ordered if i in infos]

        return await self._run(work)

    async def search(
        self,
        collection_ids: Sequence[int],
        *,
        text: str,
        vector: Sequence[float] | None,
        limit: int = 5,
        candidates: int = 50,
    ) -> SearchOutcome:
        """The best passages of `collection_ids` for `text` (and its `vector`, when the query
        was embedded): up to `candidates` from each side, fused by Reciprocal Rank Fusion.
        Nothing outside `collection_ids` is ever returned. Without `vector` the search is
        keywords only, and the note is None: the caller knows why it has no vector."""
        ids = sorted(set(collection_ids))
        if not ids:
            return SearchOutcome(hits=[], mode="keywords", note=None)
        problem = await self.vector_support() if vector is not None else None
        plan = _SearchPlan(
            collection_ids=ids,
            words=search_words(text),
            vector=list(vector) if vector is not None and problem is None else None,
            limit=limit,
            candidates=candidates,
        )

        def work(connection: Connection) -> SearchOutcome:
            outcome = _search(connection, self._index, plan)
            if problem is not None:
                return SearchOutcome(hits=outcome.hits, mode=outcome.mode, note=problem)
            return outcome

        return await self._run(work)

    async def vector_support(self) -> str | None:
        """None when vector search works on this database; else why not, in words an operator
        can act on. Asked once per process (on Postgres it may create the extension)."""
        async with self._checking:
            if not self._vectors_checked:
                self._vector_problem = await self._run(self._index.prepare)
                if self._vector_problem is None:
                    await self._index_every_size()
                self._vectors_checked = True
        return self._vector_problem

    async def audit(self, limit: int = 50) -> list[KnowledgeChange]:
        """The newest changes first."""
        query = sa_select(KnowledgeAudit).order_by(_audit.id.desc()).limit(limit)
        rows = await self._run(lambda c: c.execute(query).all())
        return [_knowledge_change(row) for row in rows]

    async def _indexable(self) -> bool:
        return await self.vector_support() is None

    async def _index_every_size(self) -> None:
        """A table for each vector size the collections have, filled from their passages:
        vectors stored while the extension was missing become searchable once it is there."""
        query = sa_select(_collections.dimensions).where(_collections.dimensions.is_not(None))
        sizes = await self._run(lambda c: set(c.execute(query.distinct()).scalars()))
        for dimensions in sorted(sizes):
            await self._ensure_table(int(dimensions))

    async def _ensure_table(self, dimensions: int) -> None:
        """Create the vector table of this size, filled from the stored vectors, in its own
        transaction: on Postgres two processes creating it together make one of them fail,
        and that one then finds the other's table."""

        def work(connection: Connection) -> None:
            if dimensions in self._index.tables(connection):
                return
            try:
                self._index.create(connection, dimensions)
                _copy_vectors(connection, self._index, dimensions, None)
                connection.commit()
            except DBAPIError:
                connection.rollback()
                if dimensions not in self._index.tables(connection):
                    raise

        await self._run(work)


# Postgres's English stop words: dropped from every keyword query, so both databases treat a
# question alike, and a query of only such words finds nothing instead of everything.
_STOP_WORDS = """a about above after again against all am an and any are as at be because been
    before being below between both but by can did do does doing don down during each few for
    from further had has have having he her here hers herself him himself his how i if in into
    is it its itself just me more most my myself no nor not now of off on once only or other our
    ours ourselves out over own same she should so some such t than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with you your yours yourself yourselves s"""
STOP_WORDS = frozenset(_STOP_WORDS.split())
_WORD = re.compile(r"[^\W_]+")


def search_words(text: str) -> list[str]:
    """The words of a question that a keyword search may use: letters and digits only, so no
    quote, `*`, `NEAR`, `-` or `:` ever reaches FTS5 or to_tsquery as syntax."""
    words: list[str] = []
    for word in _WORD.findall(text.casefold()):
        if word not in STOP_WORDS and len(word) <= 64 and word not in words:
            words.append(word)
    return words[:_MAX_WORDS]


def fuse(
    keyword: Sequence[int], vector: Sequence[int]
) -> list[tuple[int, float, int | None, int | None]]:
    """Reciprocal Rank Fusion: each side adds 1/(RRF_K + rank); best first, as (chunk id,
    score, keyword rank, vector rank). Ties go to the keyword side's order, then the id."""
    keyword_rank = {chunk: rank for rank, chunk in enumerate(keyword, 1)}
    vector_rank = {chunk: rank for rank, chunk in enumerate(vector, 1)}
    fused = []
    for chunk in keyword_rank.keys() | vector_rank.keys():
        k, v = keyword_rank.get(chunk), vector_rank.get(chunk)
        score = sum(1 / (RRF_K + rank) for rank in (k, v) if rank is not None)
        fused.append((chunk, score, k, v))
    fused.sort(key=lambda f: (-f[1], f[2] if f[2] is not None else len(keyword) + 1, f[0]))
    return fused


def pack_vector(vector: Sequence[float]) -> bytes:
    """float32, little-endian: how passages keep their vectors, and what sqlite-vec reads."""
    return struct.pack(f"<{len(vector)}f", *vector)


def unpack_vector(blob: bytes) -> tuple[float, ...]:
    return struct.unpack(f"<{len(blob) // 4}f", blob)


class _Index(Protocol):
    """One database's keyword and vector search, and its vector tables."""

    def prepare(self, connection: Connection) -> str | None:
        """None when vectors work here; else why not."""

    def tables(self, connection: Connection) -> set[int]:
        """The sizes that have a vector table."""

    def create(self, connection: Connection, dimensions: int) -> None: ...

    def add(self, connection: Connection, dimensions: int, rows: Sequence[_VectorRow]) -> None: ...

    def drop(self, connection: Connection, chunk_ids: Sequence[int]) -> None:
        """Remove these passages' vectors from every vector table."""

    def matches(
        self, connection: Connection, collection_ids: Sequence[int], word: str, cap: int
    ) -> int:
        """How many passages hold `word`, counted up to `cap`."""

    def keyword_ranks(
        self, connection: Connection, collection_ids: Sequence[int], query: _Words, limit: int
    ) -> list[int]:
        """The best `limit` passages for `query`, ranked among its first _RANKED matches."""

    def vector_ranks(
        self,
        connection: Connection,
        collection_ids: Sequence[int],
        vector: Sequence[float],
        limit: int,
    ) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class _VectorRow:
    chunk_id: int
    collection_id: int
    embedding: bytes


class _SqliteIndex:
    """FTS5 (bm25, the heading weighted above the text) and sqlite-vec's vec0 tables, whose
    partition key keeps each collection's vectors apart, so a KNN reads only the collections
    asked for."""

    def __init__(self, driver: SqliteDriver) -> None:
        self._driver = driver

    def prepare(self, connection: Connection) -> str | None:
        return None if self._driver.vectors else self._driver.reason

    def tables(self, connection: Connection) -> set[int]:
        if not self._driver.vectors:  # a vec0 table cannot even be read without the extension
            return set()
        return {_size(name) for name in connection.execute(_SQLITE_VECTOR_TABLES).scalars()}

    def create(self, connection: Connection, dimensions: int) -> None:
        connection.exec_driver_sql(_vector_sql(_SQLITE_CREATE, dimensions))

    def add(self, connection: Connection, dimensions: int, rows: Sequence[_VectorRow]) -> None:
        statement = text(_vector_sql(_SQLITE_ADD, dimensions))
        params = [
            {"chunk_id": r.chunk_id, "collection_id": r.collection_id, "embedding": r.embedding}
            for r in rows
        ]
        if params:
            connection.execute(statement, params)

    def drop(self, connection: Connection, chunk_ids: Sequence[int]) -> None:
        if not chunk_ids:
            return
        for dimensions in self.tables(connection):  # vec0 deletes one primary key at a time
            statement = text(_vector_sql(_SQLITE_DROP, dimensions))
            connection.execute(statement, [{"id": i} for i in chunk_ids])

    def matches(
        self, connection: Connection, collection_ids: Sequence[int], word: str, cap: int
    ) -> int:
        query = _fts_query(_Words(words=(word,), every=False), collection_ids)
        return int(connection.execute(_SQLITE_MATCHES, {"query": query, "cap": cap}).scalar_one())

    def keyword_ranks(
        self, connection: Connection, collection_ids: Sequence[int], query: _Words, limit: int
    ) -> list[int]:
        params = {"query": _fts_query(query, collection_ids), "ranked": _RANKED, "limit": limit}
        return [int(i) for i in connection.execute(_SQLITE_KEYWORDS, params).scalars()]

    def vector_ranks(
        self,
        connection: Connection,
        collection_ids: Sequence[int],
        vector: Sequence[float],
        limit: int,
    ) -> list[int]:
        statement = text(_vector_sql(_SQLITE_KNN, len(vector)))
        statement = statement.bindparams(bindparam("ids", expanding=True))
        params = {"vector": pack_vector(vector), "limit": limit, "ids": list(collection_ids)}
        return [int(i) for i in connection.execute(statement, params).scalars()]


class _PostgresIndex:
    """Full text over a stored tsvector (ts_rank_cd; the heading weighted A, the text B) and
    pgvector tables with an HNSW cosine index, searched with iterative scans (pgvector 0.8)
    so a filter to a few collections still finds its `limit` nearest."""

    def __init__(self) -> None:
        self._iterative = False

    def prepare(self, connection: Connection) -> str | None:
        version = connection.execute(_PGVECTOR_VERSION).scalar()
        if version is None:
            try:
                connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
                connection.commit()
            except DBAPIError as exc:
                connection.rollback()
                version = connection.execute(_PGVECTOR_VERSION).scalar()  # made concurrently?
                if version is None:
                    return _why_no_pgvector(exc)
            version = connection.execute(_PGVECTOR_VERSION).scalar()
        self._iterative = _version(str(version)) >= (0, 8)
        return None

    def tables(self, connection: Connection) -> set[int]:
        return {_size(name) for name in connection.execute(_POSTGRES_VECTOR_TABLES).scalars()}

    def create(self, connection: Connection, dimensions: int) -> None:
        for template in _POSTGRES_CREATE:
            connection.exec_driver_sql(_vector_sql(template, dimensions))
        if dimensions <= _HNSW_MAX_DIMENSIONS:
            connection.exec_driver_sql(_vector_sql(_POSTGRES_HNSW, dimensions))

    def add(self, connection: Connection, dimensions: int, rows: Sequence[_VectorRow]) -> None:
        statement = text(_vector_sql(_POSTGRES_ADD, dimensions))
        params = [
            {
                "chunk_id": r.chunk_id,
                "collection_id": r.collection_id,
                "embedding": _vector_literal(unpack_vector(r.embedding)),
            }
            for r in rows
        ]
        if params:
            connection.execute(statement, params)

    def drop(self, connection: Connection, chunk_ids: Sequence[int]) -> None:
        if not chunk_ids:
            return
        for dimensions in self.tables(connection):
            statement = text(_vector_sql(_POSTGRES_DROP, dimensions))
            connection.execute(statement, {"ids": list(chunk_ids)})

    def matches(
        self, connection: Connection, collection_ids: Sequence[int], word: str, cap: int
    ) -> int:
        params = {"query": word, "ids": list(collection_ids), "cap": cap}
        return int(connection.execute(_POSTGRES_MATCHES, params).scalar_one())

    def keyword_ranks(
        self, connection: Connection, collection_ids: Sequence[int], query: _Words, limit: int
    ) -> list[int]:
        words = (" & " if query.every else " | ").join(query.words)  # letters and digits only
        params = {"query": words, "ids": list(collection_ids), "ranked": _RANKED, "limit": limit}
        return [int(i) for i in connection.execute(_POSTGRES_KEYWORDS, params).scalars()]

    def vector_ranks(
        self,
        connection: Connection,
        collection_ids: Sequence[int],
        vector: Sequence[float],
        limit: int,
    ) -> list[int]:
        if self._iterative:  # keep scanning the index until `limit` rows pass the filter
            connection.exec_driver_sql("SET LOCAL hnsw.iterative_scan = strict_order")
            connection.exec_driver_sql(f"SET LOCAL hnsw.ef_search = {max(40, min(limit, 1000))}")
        statement = text(_vector_sql(_POSTGRES_KNN, len(vector)))
        params = {"vector": _vector_literal(vector), "ids": list(collection_ids), "limit": limit}
        return [int(i) for i in connection.execute(statement, params).scalars()]


@dataclass(frozen=True, kw_only=True)
class _SearchPlan:
    collection_ids: list[int]
    words: list[str]
    vector: list[float] | None  # None: keywords only
    limit: int
    candidates: int


@dataclass(frozen=True, kw_only=True)
class _Words:
    """A keyword query: words that are only letters and digits, all required or any."""

    words: tuple[str, ...]
    every: bool = False


@dataclass(frozen=True, kw_only=True)
class _DocumentData:
    collection_id: int
    path: str
    title: str
    content_hash: str


def _search(connection: Connection, index: _Index, plan: _SearchPlan) -> SearchOutcome:
    searchable, note = _vector_collections(connection, index, plan)
    keyword = _keyword_side(connection, index, plan) if plan.words else []
    vector: list[int] = []
    if searchable and plan.vector is not None:
        vector = index.vector_ranks(connection, searchable, plan.vector, plan.candidates)
    mode = "keywords" if not searchable else ("hybrid" if plan.words else "vectors")
    best = fuse(keyword, vector)[: plan.limit]
    hits = _hits(connection, best, plan.collection_ids)
    return SearchOutcome(hits=hits, mode=mode, note=note)


def _keyword_side(connection: Connection, index: _Index, plan: _SearchPlan) -> list[int]:
    """Rank by the question's rarer words (rarest first, while their passages stay within
    _RANKED); a question of only common words ranks the passages holding all of them, else
    any of them, among the first _RANKED found."""
    ids = plan.collection_ids
    counts = {word: index.matches(connection, ids, word, _COMMON) for word in plan.words}
    found = sorted((w for w in plan.words if counts[w]), key=lambda w: counts[w])
    rare: list[str] = []
    for word in found:
        if counts[word] >= _COMMON or sum(counts[w] for w in rare) + counts[word] > _RANKED:
            break
        rare.append(word)
    if rare:
        return index.keyword_ranks(connection, ids, _Words(words=tuple(rare)), plan.candidates)
    if not found:
        return []
    every = index.keyword_ranks(
        connection, ids, _Words(words=tuple(found), every=True), plan.candidates
    )
    return every or index.keyword_ranks(
        connection, ids, _Words(words=tuple(found)), plan.candidates
    )


def _fts_query(query: _Words, collection_ids: Sequence[int]) -> str:
    """An FTS5 query of quoted words (letters and digits: no syntax) in the heading and text,
    within the collections: FTS5 ranks only their passages."""
    joined = (" AND " if query.every else " OR ").join(f'"{word}"' for word in query.words)
    collections = " OR ".join(f'"{int(i)}"' for i in collection_ids)
    return f"{{heading text}} : ({joined}) AND collection_id : ({collections})"


def _vector_collections(
    connection: Connection, index: _Index, plan: _SearchPlan
) -> tuple[list[int], str | None]:
    """The collections whose vectors compare with the query's, and why the others' do not."""
    if plan.vector is None:
        return [], None
    size = len(plan.vector)
    query = sa_select(_collections.id, _collections.name, _collections.dimensions).where(
        _collections.id.in_(plan.collection_ids)
    )
    searchable, reasons = [], []
    for row in connection.execute(query.order_by(_collections.name)):
        if row.dimensions == size:
            searchable.append(int(row.id))
        elif row.dimensions is None:
            reasons.append(f"{row.name} has no vectors (never synced with an embedding model)")
        else:
            reasons.append(
                f"{row.name} holds vectors of {row.dimensions} dimensions and the query's have "
                f"{size} (the embedding model changed?): sync it again to re-embed it "
                f"(`assistant knowledge sync {row.name}`)"
            )
    if searchable and size not in index.tables(connection):
        searchable = []
        reasons.append(f"the index of {size}-dimension vectors is missing: restart to rebuild it")
    return searchable, "; ".join(reasons) + "; keywords only there" if reasons else None


def _hits(
    connection: Connection,
    best: Sequence[tuple[int, float, int | None, int | None]],
    collection_ids: Sequence[int],
) -> list[Hit]:
    """The passages of the fused ranking, read once more within `collection_ids`."""
    if not best:
        return []
    params = {"ids": [b[0] for b in best], "collections": list(collection_ids)}
    rows = {row.id: row for row in connection.execute(_PASSAGES, params)}
    return [
        _hit(rows[chunk], score, keyword, vector)
        for chunk, score, keyword, vector in best
        if chunk in rows
    ]


def _hit(row: _AnyRow, score: float, keyword: int | None, vector: int | None) -> Hit:
    return Hit(
        chunk_id=int(row.id),
        collection=row.collection,
        document=row.path,
        title=row.title,
        heading=row.heading,
        anchor=row.anchor,
        link=document_link(row.link, row.path, row.anchor),
        text=row.text,
        score=score,
        keyword_rank=keyword,
        vector_rank=vector,
    )


def document_link(base: str | None, path: str, anchor: str) -> str | None:
    """Where a reader opens the passage: the collection's link, the document's path (each
    part URL-quoted) and the section's #anchor."""
    if not base:
        return None
    link = base.rstrip("/") + "/" + quote(path.lstrip("/"))
    return f"{link}#{anchor}" if anchor else link


def _replace(
    connection: Connection,
    index: _Index,
    document: _DocumentData,
    chunks: Sequence[ChunkData],
    model: str | None,
    dimensions: int | None,
    indexed: bool,
) -> None:
    collection = connection.execute(_COLLECTION, {"id": document.collection_id}).one_or_none()
    if collection is None:
        raise LookupError(f"no knowledge collection has id {document.collection_id}")
    embedded_by = (model, dimensions) if model is not None and dimensions is not None else None
    was = (collection.embedding_model, collection.dimensions)
    if embedded_by is not None and was[0] is not None and was != embedded_by:
        _forget_vectors(connection, index, document.collection_id)
    document_id = _document_id(connection, document, chunks)
    _remove_chunks(connection, index, _chunks.document_id == document_id)
    rows = [_chunk_row(document.collection_id, document_id, chunk) for chunk in chunks]
    ids = list(connection.execute(_INSERT_CHUNKS, rows).scalars()) if rows else []
    if indexed and dimensions is not None:
        vectors = [
            _VectorRow(chunk_id=i, collection_id=document.collection_id, embedding=c.embedding)
            for i, c in zip(ids, chunks, strict=True)
            if c.embedding is not None
        ]
        index.add(connection, dimensions, vectors)
    if embedded_by is not None:
        model_values = {"embedding_model": model, "dimensions": dimensions}
        connection.execute(_update_collection(document.collection_id), model_values)


def _forget_vectors(connection: Connection, index: _Index, collection_id: int) -> None:
    """Another model's vectors go, and their documents count as changed."""
    ids = connection.execute(sa_select(_chunks.id).where(_chunks.collection_id == collection_id))
    index.drop(connection, list(ids.scalars()))
    connection.execute(
        update(KnowledgeChunk).where(_chunks.collection_id == collection_id).values(embedding=None)
    )
    connection.execute(
        update(KnowledgeDocument)
        .where(_documents.collection_id == collection_id)
        .values(content_hash="", embedded=0)
    )


def _document_id(
    connection: Connection, document: _DocumentData, chunks: Sequence[ChunkData]
) -> int:
    values = {
        "title": document.title[:300],
        "content_hash": document.content_hash,
        "synced_at": utcnow(),
        "chunks": len(chunks),
        "embedded": sum(1 for chunk in chunks if chunk.embedding is not None),
    }
    found = connection.execute(
        _DOCUMENT_AT, {"id": document.collection_id, "path": document.path}
    ).scalar()
    if found is not None:
        connection.execute(update(KnowledgeDocument).where(_documents.id == found), values)
        return int(found)
    row = table_row(
        KnowledgeDocument, collection_id=document.collection_id, path=document.path, **values
    )
    return int(connection.execute(_INSERT_DOCUMENT, row).scalar_one())


def _chunk_row(collection_id: int, document_id: int, chunk: ChunkData) -> dict[str, Any]:
    return {
        "collection_id": collection_id,
        "document_id": document_id,
        "position": chunk.position,
        "heading": chunk.heading[:500],
        "anchor": chunk.anchor[:200],
        "text": chunk.text,
        "token_count": chunk.token_count,
        "content_hash": chunk.content_hash,
        "embedding": chunk.embedding,
    }


def _remove_chunks(connection: Connection, index: _Index, where: Any) -> None:
    """Passages and their vectors, together: a vector never outlives its passage."""
    ids = list(connection.execute(sa_select(_chunks.id).where(where)).scalars())
    if ids:
        index.drop(connection, ids)
        connection.execute(delete(KnowledgeChunk).where(where))


def _remove_documents(connection: Connection, index: _Index, document_ids: list[int]) -> int:
    if not document_ids:
        return 0
    _remove_chunks(connection, index, _chunks.document_id.in_(document_ids))
    connection.execute(delete(KnowledgeDocument).where(_documents.id.in_(document_ids)))
    return len(document_ids)


def _copy_vectors(connection: Connection, index: _Index, dimensions: int, where: Any) -> int:
    """Write the stored vectors of this size (of the passages `where` picks, else all) into
    the size's table, a page at a time."""
    query = (
        sa_select(_chunks.id, _chunks.collection_id, _chunks.embedding)
        .where(_chunks.embedding.is_not(None), func.length(_chunks.embedding) == 4 * dimensions)
        .order_by(_chunks.id)
        .limit(_PAGE)
    )
    if where is not None:
        query = query.where(where)
    written, after = 0, 0
    while True:
        page = connection.execute(query.where(_chunks.id > after)).all()
        if not page:
            return written
        index.add(
            connection, dimensions, [_VectorRow(int(i), int(c), bytes(e)) for i, c, e in page]
        )
        written += len(page)
        after = int(page[-1][0])


def _check_vectors(chunks: Sequence[ChunkData], model: str | None, dimensions: int | None) -> None:
    """A sync's vectors must say which model made them and all be of its size."""
    if not any(chunk.embedding is not None for chunk in chunks):
        return
    if model is None or dimensions is None:
        raise ValueError("passages with vectors need the model and the dimensions they came from")
    if not 0 < dimensions <= _MAX_DIMENSIONS:
        raise ValueError(f"{dimensions} dimensions: a vector has 1 to {_MAX_DIMENSIONS}")
    for chunk in chunks:
        if chunk.embedding is not None and len(chunk.embedding) != 4 * dimensions:
            raise ValueError(
                f"passage {chunk.position}: {len(chunk.embedding)} bytes is no vector of "
                f"{dimensions} float32 dimensions"
            )


def _infos(connection: Connection, ids: Sequence[int] | None) -> list[CollectionInfo]:
    query = _INFOS if ids is None else _INFOS.where(_collections.id.in_(ids))
    return [_info(row) for row in connection.execute(query)]


def _info(row: _AnyRow) -> CollectionInfo:
    return CollectionInfo(
        id=int(row.id),
        name=row.name,
        path=row.path,
        link=row.link,
        description=row.description,
        origin=row.origin,
        embedding_model=row.embedding_model,
        dimensions=row.dimensions,
        synced_at=row.synced_at,
        documents=int(row.documents),
        chunks=int(row.chunks),
        embedded=int(row.embedded),
    )


def _collection_id(connection: Connection, name: str) -> int | None:
    found = connection.execute(_COLLECTION_NAMED, {"name": name}).scalar()
    return int(found) if found is not None else None


def _existing(connection: Connection, name: str) -> int:
    found = _collection_id(connection, name)
    if found is None:
        raise LookupError(f"no knowledge collection named {name!r}")
    return found


def _update_collection(collection_id: int) -> Any:
    return update(KnowledgeCollection).where(_collections.id == collection_id)


def _at(scope: Scope) -> Any:
    return and_(
        _bindings.scope == scope.kind,
        _bindings.platform == scope.platform,
        _bindings.workspace == scope.workspace,
        _bindings.channel == scope.channel,
    )


def _scope(row: _AnyRow) -> Scope:
    return Scope(
        kind=row.scope, platform=row.platform, workspace=row.workspace, channel=row.channel
    )


def _place_order(scope: Scope) -> tuple[int, str, str, str]:
    return (SCOPE_KINDS.index(scope.kind), scope.platform, scope.workspace, scope.channel)


def _change(
    action: str, name: str, *, actor: str, surface: str, scope: Scope | None = None
) -> dict[str, Any]:
    place = scope or Scope(kind="global")
    return table_row(
        KnowledgeAudit,
        actor=actor[:160],
        surface=surface[:32],
        action=action,
        collection=name[:64],
        scope=scope.kind if scope else "",
        platform=place.platform,
        workspace=place.workspace,
        channel=place.channel,
    )


def _knowledge_change(row: _AnyRow) -> KnowledgeChange:
    return KnowledgeChange(
        at=row.at,
        actor=row.actor,
        surface=row.surface,
        action=row.action,
        collection=row.collection,
        scope=_scope(row) if row.scope else None,
    )


def _table(dimensions: int) -> str:
    return f"knowledge_vec_{int(dimensions)}"


def _vector_sql(template: str, dimensions: int) -> str:
    """A vector table's statement: the only text put into it is made from an int."""
    return template.format(table=_table(dimensions), dimensions=int(dimensions))


def _size(table: str) -> int:
    return int(table.rsplit("_", 1)[1])


def _vector_literal(vector: Sequence[float]) -> str:
    """pgvector's text form; 9 significant digits give every float32 back exactly."""
    return "[" + ",".join(format(x, ".9g") for x in vector) + "]"


def _version(text_version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text_version)[:3])


def _why_no_pgvector(exc: DBAPIError) -> str:
    words = str(exc.orig if exc.orig is not None else exc)
    first = words.strip().splitlines()[0] if words.strip() else type(exc).__name__
    after = "then restart the assistant; until then knowledge search uses keywords only"
    if "control file" in words or "not available" in words:
        return (
            "pgvector is not installed on this Postgres server: install it (the "
            "postgresql-<version>-pgvector package, or build it from "
            f"https://github.com/pgvector/pgvector), {after}"
        )
    if "permission denied" in words or "must be" in words.lower():
        return (
            "this database user may not create the pgvector extension: have an administrator "
            f"run `CREATE EXTENSION vector;` in this database once, {after}"
        )
    return f"`CREATE EXTENSION vector` failed ({first[:200]}): {after}"


_COLLECTION = sa_select(_collections.embedding_model, _collections.dimensions).where(
    _collections.id == bindparam("id")
)
_COLLECTION_NAMED = sa_select(_collections.id).where(_collections.name == bindparam("name"))
_INSERT_COLLECTION = insert(KnowledgeCollection).returning(_collections.id)
_INSERT_DOCUMENT = insert(KnowledgeDocument).returning(_documents.id)
_INSERT_CHUNKS = insert(KnowledgeChunk).returning(_chunks.id, sort_by_parameter_order=True)
_DOCUMENT_AT = sa_select(_documents.id).where(
    _documents.collection_id == bindparam("id"), _documents.path == bindparam("path")
)
_DOCUMENTS_AT = sa_select(_documents.id).where(
    _documents.collection_id == bindparam("id"),
    _documents.path.in_(bindparam("paths", expanding=True)),
)
_KNOWN = (
    sa_select(_chunks.content_hash, _chunks.embedding)
    .join_from(KnowledgeChunk, KnowledgeCollection, _collections.id == _chunks.collection_id)
    .where(
        _chunks.collection_id == bindparam("collection_id"),
        _collections.embedding_model == bindparam("model"),
        _chunks.embedding.is_not(None),
        func.length(_chunks.embedding) == 4 * _collections.dimensions,
        _chunks.content_hash.in_(bindparam("hashes", expanding=True)),
    )
)
_PER_COLLECTION = (
    sa_select(
        _documents.collection_id,
        func.count().label("documents"),
        func.coalesce(func.sum(_documents.chunks), 0).label("chunks"),
        func.coalesce(func.sum(_documents.embedded), 0).label("embedded"),
    )
    .group_by(_documents.collection_id)
    .subquery()
)
_INFOS = (
    sa_select(
        _collections.id,
        _collections.name,
        _collections.path,
        _collections.link,
        _collections.description,
        _collections.origin,
        _collections.embedding_model,
        _collections.dimensions,
        _collections.synced_at,
        func.coalesce(_PER_COLLECTION.c.documents, 0).label("documents"),
        func.coalesce(_PER_COLLECTION.c.chunks, 0).label("chunks"),
        func.coalesce(_PER_COLLECTION.c.embedded, 0).label("embedded"),
    )
    .outerjoin(_PER_COLLECTION, _PER_COLLECTION.c.collection_id == _collections.id)
    .order_by(_collections.name)
)
_BOUND_TO = (
    sa_select(_bindings.collection_id, _bindings.scope, _collections.name)
    .join_from(KnowledgeBinding, KnowledgeCollection, _collections.id == _bindings.collection_id)
    .where(applies_here(_bindings))
)
_PASSAGES = text(
    "SELECT c.id, k.name AS collection, d.path, d.title, c.heading, c.anchor, k.link, c.text "
    "FROM knowledge_chunks AS c "
    "JOIN knowledge_documents AS d ON d.id = c.document_id "
    "JOIN knowledge_collections AS k ON k.id = c.collection_id "
    "WHERE c.id IN :ids AND c.collection_id IN :collections"
).bindparams(bindparam("ids", expanding=True), bindparam("collections", expanding=True))
# FTS5 first, always (joined to the passages, SQLite would run the MATCH once per passage)
_SQLITE_MATCHES = text(
    "SELECT count(*) FROM (SELECT 1 FROM knowledge_fts WHERE knowledge_fts MATCH :query LIMIT :cap)"
)
_SQLITE_KEYWORDS = text(
    "WITH found AS MATERIALIZED (SELECT rowid AS id, bm25(knowledge_fts, 2.0, 1.0, 0.0) AS score "
    "FROM knowledge_fts WHERE knowledge_fts MATCH :query LIMIT :ranked) "
    "SELECT id FROM found ORDER BY score, id LIMIT :limit"
)
_POSTGRES_MATCHES = text(
    "SELECT count(*) FROM (SELECT 1 FROM knowledge_chunks WHERE collection_id = ANY(:ids) "
    "AND search_vector @@ to_tsquery('english', :query) LIMIT :cap) AS found"
)
_POSTGRES_KEYWORDS = text(
    "WITH found AS MATERIALIZED (SELECT c.id, ts_rank_cd(c.search_vector, query) AS score "
    "FROM knowledge_chunks AS c, to_tsquery('english', :query) AS query "
    "WHERE c.collection_id = ANY(:ids) AND c.search_vector @@ query LIMIT :ranked) "
    "SELECT id FROM found ORDER BY score DESC, id LIMIT :limit"
)
_SQLITE_VECTOR_TABLES = text(
    "SELECT name FROM sqlite_master WHERE type = 'table' "
    "AND name GLOB 'knowledge_vec_[0-9]*' AND name NOT GLOB 'knowledge_vec_*_*' "
    "AND sql LIKE 'CREATE VIRTUAL TABLE%'"
)
_POSTGRES_VECTOR_TABLES = text(
    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
    "AND tablename ~ '^knowledge_vec_[0-9]+$'"
)
_PGVECTOR_VERSION = text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")

# The vector tables' statements, one table per size ({table} is knowledge_vec_{dimensions}).
# Unit vectors under L2 distance: the order cosine gives, and a third cheaper to compute (vec0
# brute-forces every vector of the collections asked for; the wheel has no SIMD).
_SQLITE_CREATE = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS {table} USING vec0(chunk_id integer primary key, "
    "collection_id integer partition key, embedding float[{dimensions}] distance_metric=l2)"
)
_SQLITE_ADD = (
    "INSERT INTO {table} (chunk_id, collection_id, embedding) "
    "VALUES (:chunk_id, :collection_id, vec_normalize(:embedding))"
)
_SQLITE_DROP = "DELETE FROM {table} WHERE chunk_id = :id"
# vec0 answers `collection_id IN (…)` with k rows per collection: the outer query keeps the k
# nearest of them all, and only passages that still exist within the collections asked for
_SQLITE_KNN = (
    "WITH knn AS MATERIALIZED (SELECT chunk_id, distance FROM {table} "
    "WHERE embedding MATCH vec_normalize(:vector) AND k = :limit AND collection_id IN :ids) "
    "SELECT knn.chunk_id FROM knn JOIN knowledge_chunks AS c ON c.id = knn.chunk_id "
    "WHERE c.collection_id IN :ids ORDER BY knn.distance LIMIT :limit"
)
_POSTGRES_CREATE = (
    "CREATE TABLE IF NOT EXISTS {table} ("
    "chunk_id integer PRIMARY KEY REFERENCES knowledge_chunks (id) ON DELETE CASCADE, "
    "collection_id integer NOT NULL, embedding vector({dimensions}) NOT NULL)",
    "CREATE INDEX IF NOT EXISTS {table}_collection ON {table} (collection_id)",
)
_POSTGRES_HNSW = (
    "CREATE INDEX IF NOT EXISTS {table}_hnsw ON {table} USING hnsw (embedding vector_cosine_ops)"
)
_POSTGRES_ADD = (
    "INSERT INTO {table} (chunk_id, collection_id, embedding) "
    "VALUES (:chunk_id, :collection_id, CAST(CAST(:embedding AS text) AS vector))"
)
_POSTGRES_DROP = "DELETE FROM {table} WHERE chunk_id = ANY(:ids)"
_POSTGRES_KNN = (
    "SELECT knn.chunk_id FROM (SELECT chunk_id, "
    "embedding <=> CAST(CAST(:vector AS text) AS vector) AS distance FROM {table} "
    "WHERE collection_id = ANY(:ids) ORDER BY distance LIMIT :limit) AS knn "
    "JOIN knowledge_chunks AS c ON c.id = knn.chunk_id "
    "WHERE c.collection_id = ANY(:ids) ORDER BY knn.distance"
)
