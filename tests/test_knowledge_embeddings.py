"""Embeddings against the fake server on loopback, through the real openai SDK and HTTP: the
vectors, batching, retries, halving, what each server says when it cannot embed, accounting."""

from __future__ import annotations

import asyncio
import base64
import math
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable

import openai
import pytest

from assistant.knowledge.embeddings import (
    Embedded,
    Embedder,
    EmbeddingError,
    EmbeddingsUnsupported,
)
from assistant.pricing import PriceTable
from assistant.records import NO_TOKENS, SERVER_TOKENS, CallRecord
from assistant.testing import Cut, Fail, FakeLlm, Hang, Reply
from assistant.testing.fake_llm import Vectors, fake_embedding
from assistant.tokens import TokenCounter

SECRET = "sk-test-very-secret-0123456789"
PRICED = "text-embedding-3-small"  # $0.02 per million input tokens
UNPRICED = "nomic-embed-text"

Build = Callable[..., Embedder]  # (fake or base URL, **Embedder options)


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return PriceTable.load()


@pytest.fixture
async def clients() -> AsyncIterator[list[openai.AsyncOpenAI]]:
    opened: list[openai.AsyncOpenAI] = []
    yield opened
    for client in opened:
        await client.close()


@pytest.fixture
def embedder(clients: list[openai.AsyncOpenAI], prices: PriceTable) -> Build:
    """`embedder(fake, **options)`: an Embedder on a client built as `OpenAIChatModel.connect`
    builds its own (aiohttp transport), its SDK retries left at their default of 2 so that a
    request count shows ours are the only ones."""

    def build(fake: FakeLlm | str, **options: object) -> Embedder:
        base_url = fake if isinstance(fake, str) else fake.base_url
        client = openai.AsyncOpenAI(
            api_key=SECRET, base_url=base_url, http_client=openai.DefaultAioHttpClient()
        )
        clients.append(client)
        settings = {"model": PRICED, "prices": prices, "backoff_base": 0.01, **options}
        return Embedder(client, **settings)  # type: ignore[arg-type]

    return build


class Ledger:
    def __init__(self) -> None:
        self.calls: list[CallRecord] = []

    def __call__(self, call: CallRecord) -> None:
        self.calls.append(call)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    )


TEXTS = [
    "How do we deploy the billing service to production?",
    "Deploying the billing services: the production checklist",
    "The cafeteria serves lunch from noon on Fridays",
]


# ------------------------------------------------------------------ the vectors


async def test_texts_sharing_words_are_near_and_others_far(embedder: Build) -> None:
    async with FakeLlm() as fake:
        done = await embedder(fake).embed(TEXTS, account=Ledger())
    deploy, checklist, lunch = done.vectors
    assert done.dimensions == 256 and all(len(v) == 256 for v in done.vectors)
    assert cosine(deploy, checklist) > 0.5
    assert abs(cosine(deploy, lunch)) < 0.2 and abs(cosine(checklist, lunch)) < 0.2
    assert all(math.isclose(cosine(v, v), 1.0, rel_tol=1e-6) for v in done.vectors)


async def test_vectors_are_deterministic_and_the_exported_function_predicts_them(
    embedder: Build,
) -> None:
    async with FakeLlm() as fake:
        first = await embedder(fake).embed(TEXTS, account=Ledger())
        again = await embedder(fake).embed(list(reversed(TEXTS)), account=Ledger())
    assert first.vectors == list(reversed(again.vectors))
    assert first.vectors == [fake_embedding(text) for text in TEXTS]
    assert fake_embedding("") == fake_embedding("the of and")  # no words: one fixed unit vector
    assert fake_embedding("") != fake_embedding("lunch")


async def test_base64_and_float_answers_decode_to_the_same_vectors() -> None:
    async with FakeLlm() as fake:
        client = openai.AsyncOpenAI(api_key=SECRET, base_url=fake.base_url)
        floats = await client.embeddings.create(model=PRICED, input=TEXTS, encoding_format="float")
        packed = await client.embeddings.create(model=PRICED, input=TEXTS, encoding_format="base64")
        by_default = await client.embeddings.create(model=PRICED, input=TEXTS)  # SDK: base64
        await client.close()
    assert [body["encoding_format"] for body in fake.embedding_bodies] == [
        "float",
        "base64",
        "base64",
    ]
    as_floats = [item.embedding for item in floats.data]
    raw = [base64.b64decode(item.embedding) for item in packed.data]  # type: ignore[arg-type]
    as_packed = [list(struct.unpack(f"<{len(b) // 4}f", b)) for b in raw]
    assert as_floats == as_packed == [item.embedding for item in by_default.data]


async def test_a_server_that_ignores_base64_is_read_as_floats(embedder: Build) -> None:
    async with FakeLlm(like="llamacpp") as fake:  # llama-cpp-python knows no encoding_format
        done = await embedder(fake).embed(TEXTS, account=Ledger())
    assert fake.embedding_bodies[0]["encoding_format"] == "base64"
    assert done.vectors == [fake_embedding(text) for text in TEXTS]


async def test_dimensions_are_asked_for_and_honoured(embedder: Build) -> None:
    async with FakeLlm() as fake:
        done = await embedder(fake, dimensions=64).embed(TEXTS[:1], account=Ledger())
    assert fake.embedding_bodies[0]["dimensions"] == 64
    assert done.dimensions == 64 and done.vectors == [fake_embedding(TEXTS[0], 64)]


async def test_a_server_that_ignores_dimensions_is_an_error_saying_so(embedder: Build) -> None:
    async with FakeLlm(like="llamacpp", embeds_like="llama-server") as fake:
        with pytest.raises(EmbeddingError, match="does not honour `dimensions`"):
            await embedder(fake, dimensions=64).embed(TEXTS[:1], account=Ledger())


async def test_ollama_shortens_a_vector_to_the_dimensions_asked_for(embedder: Build) -> None:
    async with FakeLlm(like="ollama") as fake:
        done = await embedder(fake, dimensions=64).embed(TEXTS[:1], account=Ledger())
    native = fake_embedding(TEXTS[0])[:64]
    norm = math.sqrt(sum(x * x for x in native))
    assert done.vectors[0] == pytest.approx([x / norm for x in native], rel=1e-6)


# ------------------------------------------------------------------ batches and progress


async def test_texts_go_in_batches_with_progress_and_one_record_each(embedder: Build) -> None:
    texts = [f"passage {n} about topic {n % 7}" for n in range(100)]
    progress: list[int] = []
    ledger = Ledger()
    async with FakeLlm() as fake:
        done = await embedder(fake, batch_size=32).embed(
            texts, account=ledger, on_batch=progress.append
        )
    assert [len(inputs) for inputs in fake.embedding_requests] == [32, 32, 32, 4]
    assert [text for inputs in fake.embedding_requests for text in inputs] == texts
    assert progress == [32, 32, 32, 4]
    assert len(done.vectors) == 100 and done.vectors[42] == fake_embedding(texts[42])
    assert [c.status for c in ledger.calls] == ["ok"] * 4
    assert all(c.purpose == "embedding" and c.completion_tokens == 0 for c in ledger.calls)


async def test_nothing_to_embed_sends_nothing(embedder: Build) -> None:
    async with FakeLlm() as fake:
        done = await embedder(fake).embed([], account=Ledger())
        with pytest.raises(ValueError, match="text 2 of 2 is blank"):
            await embedder(fake).embed(["fine", "  "], account=Ledger())
    assert done == Embedded(vectors=[], dimensions=0)
    assert fake.embedding_requests == []


# ------------------------------------------------------------------ retries


async def test_429_is_retried_after_the_servers_delay_and_both_attempts_accounted(
    embedder: Build,
) -> None:
    ledger = Ledger()
    async with FakeLlm() as fake:
        fake.script_embeddings(Fail(status=429, headers={"retry-after-ms": "150"}))
        started = time.perf_counter()
        done = await embedder(fake).embed(TEXTS, account=ledger)
        elapsed = time.perf_counter() - started
    assert len(fake.embedding_requests) == 2 and len(done.vectors) == 3
    assert elapsed >= 0.15
    failed, ok = ledger.calls
    assert (failed.status, failed.error_class, failed.token_source) == (
        "error",
        "RateLimited",
        NO_TOKENS,
    )
    assert failed.cost_usd is None and failed.prompt_tokens == 0
    assert (ok.status, ok.token_source) == ("ok", SERVER_TOKENS) and ok.prompt_tokens > 0


@pytest.mark.parametrize("fault", [Fail(status=500), Fail(status=503), Cut()])
async def test_a_failing_server_is_tried_again(embedder: Build, fault: Fail | Cut) -> None:
    ledger = Ledger()
    async with FakeLlm() as fake:
        fake.script_embeddings(fault)
        done = await embedder(fake).embed(TEXTS, account=ledger)
    assert len(fake.embedding_requests) == 2 and len(done.vectors) == 3
    assert [c.status for c in ledger.calls] == ["error", "ok"]


async def test_a_hung_request_times_out_and_is_tried_again(embedder: Build) -> None:
    ledger = Ledger()
    async with FakeLlm() as fake:
        fake.script_embeddings(Hang())
        done = await embedder(fake, timeout=0.5).embed(TEXTS, account=ledger)
    assert len(done.vectors) == 3
    assert [(c.status, c.error_class) for c in ledger.calls] == [
        ("error", "Timeout"),
        ("ok", None),
    ]
    assert ledger.calls[0].total_ms >= 500


async def test_retries_are_bounded_and_the_error_says_what_to_do(embedder: Build) -> None:
    ledger = Ledger()
    async with FakeLlm() as fake:
        fake.script_embeddings(*[Fail(status=500, message="overloaded")] * 5)
        with pytest.raises(EmbeddingError, match="after 3 attempts") as caught:
            await embedder(fake, max_attempts=3).embed(TEXTS, account=ledger)
    assert not isinstance(caught.value, EmbeddingsUnsupported)
    assert "HTTP 500: overloaded" in str(caught.value) and "try again later" in str(caught.value)
    assert len(fake.embedding_requests) == 3 and len(ledger.calls) == 3


@pytest.mark.parametrize("status", [400, 401])
async def test_a_refusal_is_not_retried_and_never_quotes_the_key(
    embedder: Build, status: int
) -> None:
    ledger = Ledger()
    async with FakeLlm() as fake:
        fake.script_embeddings(Fail(status=status, echo_key=True))
        with pytest.raises(EmbeddingError) as caught:
            await embedder(fake).embed(TEXTS, account=ledger)
    assert len(fake.embedding_requests) == 1 and len(ledger.calls) == 1
    assert SECRET not in str(caught.value) and "[redacted]" in str(caught.value)


async def test_a_server_nobody_can_reach_is_not_accounted(embedder: Build) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ledger = Ledger()
    with pytest.raises(EmbeddingError, match="after 2 attempts"):
        await embedder(f"http://127.0.0.1:{port}/v1", max_attempts=2).embed(TEXTS, account=ledger)
    assert ledger.calls == []


# ------------------------------------------------------------------ servers without embeddings


@pytest.mark.parametrize(
    ("like", "embeds_like", "status", "advice"),
    [
        # llama.cpp's llama-server started without --embeddings: 501
        ("llamacpp", "llama-server", 501, "--embeddings"),
        # Ollama asked with a chat model: llama-server's 501 and words, passed on
        ("ollama", None, 501, "ollama pull"),
        # llama-cpp-python without embedding=True: a 500 that must not be retried
        ("llamacpp", None, 500, "--embedding true"),
        # vLLM serving a chat model: no route at all
        ("vllm", None, 404, "embedding model"),
    ],
)
async def test_a_server_that_cannot_embed_says_so_once_with_what_to_do(
    embedder: Build, like: str, embeds_like: str | None, status: int, advice: str
) -> None:
    ledger = Ledger()
    async with FakeLlm(like=like, embeds_like=embeds_like, serves_embeddings=False) as fake:
        with pytest.raises(EmbeddingsUnsupported) as caught:
            await embedder(fake).embed(TEXTS, account=ledger)
    said = str(caught.value)
    assert f"HTTP {status}" in said and advice in said and "keywords" in said
    assert len(fake.embedding_requests) == 1
    assert [(c.status, c.error_class) for c in ledger.calls] == [("error", "EmbeddingsUnsupported")]


def test_a_fake_that_cannot_say_how_it_refuses_is_refused() -> None:
    with pytest.raises(ValueError, match="no record of how openai answers"):
        FakeLlm(serves_embeddings=False)


# ------------------------------------------------------------------ inputs too large


@pytest.mark.parametrize(
    ("status", "message"),
    [
        # llama.cpp before it counted the tokens in its words
        (500, "input is too large to process. increase the physical batch size"),
        (400, "Requested 453357 tokens, max 300000 tokens per request"),  # OpenAI
        (400, "Too many inputs. The max number of inputs is 16."),  # Azure OpenAI
    ],
)
async def test_a_batch_too_large_is_halved_until_it_fits(
    embedder: Build, status: int, message: str
) -> None:
    texts = [f"note {n}" for n in range(8)]
    ledger = Ledger()
    progress: list[int] = []
    async with FakeLlm() as fake:
        fake.script_embeddings(*[Fail(status=status, message=message)] * 2)
        done = await embedder(fake, batch_size=8).embed(
            texts, account=ledger, on_batch=progress.append
        )
    assert [len(inputs) for inputs in fake.embedding_requests] == [8, 4, 2, 2, 4]
    assert done.vectors == [fake_embedding(text) for text in texts]
    assert progress == [2, 2, 4]
    assert [c.error_class for c in ledger.calls] == ["InputTooLarge"] * 2 + [None] * 3


async def test_one_input_too_large_for_llama_server_is_named(embedder: Build) -> None:
    texts = ["short one", "short two", "short three", "long " * 400]  # 2000 chars: 741 tokens
    ledger = Ledger()
    async with FakeLlm(like="llamacpp", embeds_like="llama-server") as fake:
        with pytest.raises(EmbeddingError) as caught:
            await embedder(fake, batch_size=4).embed(texts, account=ledger)
    said = str(caught.value)
    assert "text 4 of 4" in said and "too large" in said and "--ubatch-size" in said
    assert "input (741 tokens) is too large to process" in said
    assert [len(inputs) for inputs in fake.embedding_requests] == [4, 2, 2, 1, 1]
    assert [c.status for c in ledger.calls] == ["error", "ok", "error", "ok", "error"]


async def test_openai_refuses_an_input_over_8192_tokens(embedder: Build) -> None:
    async with FakeLlm() as fake:
        with pytest.raises(EmbeddingError, match="maximum context length is 8192 tokens"):
            await embedder(fake).embed(["word " * 9000], account=Ledger())
    assert len(fake.embedding_requests) == 1  # one input: nothing to halve, not retried


# ------------------------------------------------------------------ accounting


async def test_a_priced_model_is_costed_from_the_servers_count(embedder: Build) -> None:
    ledger = Ledger()
    async with FakeLlm() as fake:
        await embedder(fake).embed(TEXTS, account=ledger)
    (call,) = ledger.calls
    assert call.model == PRICED and call.token_source == SERVER_TOKENS
    tokens = sum(TokenCounter(PRICED).count(text) for text in TEXTS)  # OpenAI's count: tiktoken
    assert call.prompt_tokens == tokens == 27
    assert call.cost_usd == pytest.approx(27 * 0.02 / 1_000_000, rel=1e-12)
    assert call.total_ms > 0


async def test_an_unpriced_model_has_no_cost_not_zero(embedder: Build) -> None:
    ledger = Ledger()
    async with FakeLlm(like="ollama") as fake:
        await embedder(fake, model=UNPRICED).embed(TEXTS, account=ledger)
    (call,) = ledger.calls
    assert call.model == UNPRICED and call.status == "ok" and call.cost_usd is None
    assert call.prompt_tokens > 0


async def test_a_server_that_sends_no_usage_is_counted_with_our_tokenizer(embedder: Build) -> None:
    ledger = Ledger()
    async with FakeLlm() as fake:
        fake.script_embeddings(Vectors(usage=False))
        await embedder(fake).embed(TEXTS, account=ledger)
    (call,) = ledger.calls
    assert call.estimated and call.token_source == "estimate:cl100k_base"
    assert call.prompt_tokens == 27 and call.cost_usd == pytest.approx(27 * 0.02 / 1e6)


# ------------------------------------------------------------------ broken answers


@pytest.mark.parametrize(
    ("vectors", "complaint"),
    [
        (((math.nan,) * 256,) * 3, "NaN or infinity"),
        (((0.5,) * 256,) * 2, "2 vectors for 3 texts"),
        (((0.5,) * 256, (0.5,) * 256, (0.5,) * 128), "mixed sizes"),
        (((0.0,) * 256,) * 3, "vector of zeros"),
    ],
)
async def test_a_broken_answer_is_an_error_and_still_accounted(
    embedder: Build,
    vectors: tuple[tuple[float, ...], ...],
    complaint: str,
) -> None:
    ledger = Ledger()
    async with FakeLlm() as fake:
        fake.script_embeddings(Vectors(vectors=vectors))
        with pytest.raises(EmbeddingError, match=complaint) as caught:
            await embedder(fake).embed(TEXTS, account=ledger)
    assert not isinstance(caught.value, EmbeddingsUnsupported)
    assert len(fake.embedding_requests) == 1
    (call,) = ledger.calls
    assert (call.status, call.error_class) == ("error", "BadResponse")
    assert call.token_source == SERVER_TOKENS and call.cost_usd is not None  # it was billed


# ------------------------------------------------------------------ the fake's wire


async def test_the_fake_refuses_empty_inputs_as_openai_does() -> None:
    async with FakeLlm() as fake:
        client = openai.AsyncOpenAI(api_key=SECRET, base_url=fake.base_url, max_retries=0)
        for empty in ([], "", ["fine", ""]):
            with pytest.raises(openai.BadRequestError) as caught:
                await client.embeddings.create(model=PRICED, input=empty)
            assert caught.value.body == {
                "message": "'$.input' is invalid. Please check the API reference: "
                "https://platform.openai.com/docs/api-reference.",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        tokens = await client.embeddings.create(
            model="any", input=[[1, 2, 3], [4, 5]], encoding_format="float"
        )
        await client.close()
    assert [item.embedding for item in tokens.data] == [
        fake_embedding("1 2 3"),
        fake_embedding("4 5"),
    ]
    assert tokens.model == "any" and tokens.usage.total_tokens == tokens.usage.prompt_tokens
    assert fake.embedding_requests[-1] == ["1 2 3", "4 5"]


async def test_llama_cpp_python_embeds_with_the_model_a_stream_holds() -> None:
    """An embeddings request waits for the one model, and the running stream, seeing it
    wait, ends early (llama-cpp-python's interrupt_requests), as another completion would."""
    async with FakeLlm(like="llamacpp") as fake:
        fake.script(Reply(text="word " * 60, chunk_chars=5, chunk_delay=0.02))
        client = openai.AsyncOpenAI(api_key=SECRET, base_url=fake.base_url, max_retries=0)
        stream = await client.chat.completions.create(
            model="fake", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = []

        async def read() -> None:
            async for chunk in stream:
                chunks.append(chunk)

        reading = asyncio.create_task(read())
        await asyncio.sleep(0.2)
        embedded = await client.embeddings.create(model="m", input="hello")
        await reading
        await client.close()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert 0 < len(text) < len("word " * 60)
    assert not any(c.choices and c.choices[0].finish_reason for c in chunks)
    assert len(embedded.data) == 1
