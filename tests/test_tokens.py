"""Token counts: exact with tiktoken offline, an estimate (logged once) when it cannot load."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

import assistant.tokens
from assistant.tokens import PER_MESSAGE_TOKENS, REPLY_PRIMER_TOKENS, TokenCounter, load_encoder


@pytest.fixture(autouse=True)
def empty_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """An empty tiktoken cache: nothing downloaded, so the encoding must come from the package."""
    cache = tmp_path / "tiktoken-cache"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    load_encoder.cache_clear()
    yield cache
    load_encoder.cache_clear()


def test_exact_counts_offline_from_an_empty_cache() -> None:
    counter = TokenCounter("gpt-4o-mini")
    assert counter.exact is True
    assert counter.count("hello world") == 2
    assert counter.count("") == 0


def test_count_message_adds_the_per_message_overhead() -> None:
    counter = TokenCounter("gpt-4o-mini")
    assert counter.count_message("hello world") == 2 + PER_MESSAGE_TOKENS


def test_count_request_includes_messages_and_tools() -> None:
    counter = TokenCounter("gpt-4o-mini")
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hello world"},
    ]
    tool = {"type": "function", "function": {"name": "calculator", "parameters": {}}}
    without_tools = counter.count_request(messages)
    assert without_tools == REPLY_PRIMER_TOKENS + sum(
        counter.count_message(m["content"]) for m in messages
    )
    with_tools = counter.count_request(messages, tools=[tool])
    assert with_tools > without_tools


def test_falls_back_to_an_estimate_and_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = assistant.tokens._SOURCES["o200k_base"]
    monkeypatch.setitem(assistant.tokens._SOURCES, "o200k_base", (url, "0" * 64))
    with caplog.at_level(logging.WARNING, logger="assistant.tokens"):
        first = TokenCounter("gpt-4o-mini")
        second = TokenCounter("gpt-4o-mini")
    assert not first.exact
    assert not second.exact
    assert first.count("abcdefgh") == 2
    assert first.count_message("abcdefgh") == 2 + PER_MESSAGE_TOKENS
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "estimated" in warnings[0].getMessage()


def test_the_counter_names_its_tokenizer() -> None:
    assert TokenCounter("gpt-4o-mini").tokenizer == "o200k_base"
    assert TokenCounter("gpt-4").tokenizer == "cl100k_base"
    assert TokenCounter("llama-3.1-8b-instruct").tokenizer == "o200k_base"  # the fair guess


def test_the_four_chars_a_token_guess_is_named_chars(monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = assistant.tokens._SOURCES["o200k_base"]
    monkeypatch.setitem(assistant.tokens._SOURCES, "o200k_base", (url, "0" * 64))
    counter = TokenCounter("gpt-4o-mini")
    assert not counter.exact and counter.tokenizer == "chars"
