"""A collection's folder → the store, embedding only what changed.

A file whose bytes hash as last time is skipped unread by the index. A changed file is cut into
passages again; each passage is content-hashed, and a passage whose hash already has a vector
from the same model (anywhere in the collection: a paragraph moved between files) reuses it.
So editing one paragraph of one file embeds the passages holding that paragraph, and nothing
else. A file that is gone takes its passages with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from assistant.knowledge.catalog import DeclaredCollection
from assistant.knowledge.chunks import Chunk, chunk_document
from assistant.knowledge.documents import Document, DocumentError, read_folder
from assistant.knowledge.embeddings import Embedder, EmbeddingsUnsupported
from assistant.prompts.bindings import Scope
from assistant.records import CallRecord
from assistant.store import Store
from assistant.store.knowledge_store import ChunkData, CollectionInfo, pack_vector

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (passages embedded so far, passages to embed)


class SyncError(ValueError):
    """The collection could not be synced; the message says what to fix."""


@dataclass(frozen=True, kw_only=True)
class SyncReport:
    """What a sync did, in the figures an operator checks: did it embed only what changed?"""

    collection: str
    documents: int  # supported files in the folder
    changed: int  # files indexed again (new or edited)
    removed: int  # files gone from the folder, and from the index
    chunks: int  # passages written for the changed files
    embedded: int  # passages sent to the embeddings endpoint
    reused: int  # passages whose vector was already stored
    problems: tuple[str, ...]  # files that could not be read, each with its reason
    keywords_only: str | None  # why this collection has no vectors, when it has none


@dataclass(frozen=True, kw_only=True)
class _Changed:
    document: Document
    chunks: list[Chunk]


class Syncer:
    """Syncs collections into the store; `embedder` None indexes keywords only."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder | None,
        count: Callable[[str], int],
        *,
        max_tokens: int = 350,
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._count = count
        self._max_tokens = max_tokens

    async def sync(
        self,
        collection: CollectionInfo,
        *,
        account: Callable[[CallRecord], None],
        progress: Progress | None = None,
    ) -> SyncReport:
        folder = Path(collection.path)
        if not await asyncio.to_thread(folder.is_dir):
            fix = (
                "fix its path in knowledge.yaml"
                if collection.origin == "file"
                else f"fix the path with `assistant knowledge add {collection.name} PATH`"
            )
            raise SyncError(f"collection {collection.name}: {folder} is not a folder; {fix}")
        knowledge = self._store.knowledge
        stored = await knowledge.document_hashes(collection.id)
        found = await asyncio.to_thread(self._read, folder)
        documents = [d for d in found if isinstance(d, Document)]
        problems = tuple(str(p) for p in found if isinstance(p, DocumentError))
        model = self._embedder.model if self._embedder is not None else None
        model_changed = model is not None and collection.embedding_model not in (None, model)
        # indexed without vectors before (no embedder then, or the server was down): now
        # they can have them, though their text did not change
        unembedded = await knowledge.without_vectors(collection.id) if model else set()
        changed = [
            _Changed(document=d, chunks=self._chunks(d))
            for d in documents
            if model_changed or stored.get(d.path) != d.content_hash or d.path in unembedded
        ]
        vectors, embedded, reused, note = await self._vectors(
            collection, changed, account=account, progress=progress
        )
        dimensions = len(next(iter(vectors.values()))) // 4 if vectors else None
        for item in changed:
            await knowledge.replace_document(
                collection.id,
                path=item.document.path,
                title=item.document.title,
                content_hash=item.document.content_hash,
                chunks=[_data(chunk, vectors.get(chunk.content_hash)) for chunk in item.chunks],
                model=model if vectors else None,
                dimensions=dimensions,
            )
        gone = _gone(stored, documents, [p.path for p in found if isinstance(p, DocumentError)])
        removed = await knowledge.remove_documents(collection.id, gone) if gone else 0
        await knowledge.finish_sync(collection.id)
        return SyncReport(
            collection=collection.name,
            documents=len(documents),
            changed=len(changed),
            removed=removed,
            chunks=sum(len(item.chunks) for item in changed),
            embedded=embedded,
            reused=reused,
            problems=problems,
            keywords_only=note,
        )

    def _read(self, folder: Path) -> list[Document | DocumentError]:
        try:
            return list(read_folder(folder))
        except DocumentError as exc:  # the folder itself cannot be listed
            raise SyncError(f"cannot read the collection's folder: {exc}") from None

    def _chunks(self, document: Document) -> list[Chunk]:
        return chunk_document(document, count=self._count, max_tokens=self._max_tokens)

    async def _vectors(
        self,
        collection: CollectionInfo,
        changed: list[_Changed],
        *,
        account: Callable[[CallRecord], None],
        progress: Progress | None,
    ) -> tuple[dict[str, bytes], int, int, str | None]:
        """The vector of every changed passage, by hash: reused when the same model already
        embedded that text, else asked for. Returns (vectors, embedded, reused, why none)."""
        if self._embedder is None:
            return {}, 0, 0, "no EMBEDDING_MODEL is set: keyword search only"
        texts = {c.content_hash: c.embedding_text for item in changed for c in item.chunks}
        if not texts:
            return {}, 0, 0, None
        known = await self._store.knowledge.known_embeddings(
            collection.id, set(texts), self._embedder.model
        )
        missing = [h for h in texts if h not in known]
        if progress is not None:
            progress(0, len(missing))
        done = 0

        def batch_done(count: int) -> None:
            nonlocal done
            done += count
            if progress is not None:
                progress(done, len(missing))

        try:
            embedded = await self._embedder.embed(
                [texts[h] for h in missing], account=account, on_batch=batch_done
            )
        except EmbeddingsUnsupported as exc:
            log.warning("collection %s: %s; keyword search only", collection.name, exc)
            return {}, 0, 0, str(exc)
        vectors = dict(known)
        vectors.update((h, pack_vector(v)) for h, v in zip(missing, embedded.vectors, strict=True))
        return vectors, len(missing), len(texts) - len(missing), None


def _gone(stored: dict[str, str], documents: list[Document], unreadable: list[str]) -> set[str]:
    """The stored documents no longer in the folder. One that could not be read this time
    (a file, or every file under a folder that could not be listed: its path ends in "/")
    keeps what it had: a permission slip must not empty the index."""
    present = {d.path for d in documents}
    folders = tuple(path for path in unreadable if path.endswith("/"))
    return {
        path
        for path in stored
        if path not in present and path not in unreadable and not path.startswith(folders)
    }


def _data(chunk: Chunk, embedding: bytes | None) -> ChunkData:
    return ChunkData(
        position=chunk.position,
        heading=chunk.heading,
        anchor=chunk.anchor,
        text=chunk.text,
        token_count=chunk.token_count,
        content_hash=chunk.content_hash,
        embedding=embedding,
    )


async def adopt_declared(
    store: Store, declared: Sequence[DeclaredCollection], *, actor: str
) -> list[CollectionInfo]:
    """The collections `knowledge.yaml` declares, in the store: a new one is created and bound
    where the file says; one that exists keeps its bindings (admins may have moved it since)
    and takes the file's path, link and description."""
    knowledge = store.knowledge
    adopted = []
    for entry in declared:
        is_new = await knowledge.collection(entry.name) is None
        info = await knowledge.add_collection(
            entry.name,
            str(entry.folder),
            link=entry.link,
            description=entry.description,
            origin="file",
            actor=actor,
            surface="file",
        )
        if is_new:
            for place in entry.bind:
                await knowledge.bind(entry.name, scope_of(place), actor=actor, surface="file")
        adopted.append(info)
    return adopted


def scope_of(place: str) -> Scope:
    """A place as `knowledge.yaml` writes it ("global", "workspace:slack/T1",
    "channel:slack/T1/C1") as a binding scope."""
    kind, _, where = place.partition(":")
    parts = where.split("/")
    if kind == "workspace":
        return Scope(kind="workspace", platform=parts[0], workspace=parts[1])
    if kind == "channel":
        return Scope(kind="channel", platform=parts[0], workspace=parts[1], channel=parts[2])
    return Scope(kind="global")
