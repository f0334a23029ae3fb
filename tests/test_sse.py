"""The SSE reader gives each event's data however the bytes are cut and whatever a server
puts around them."""

from __future__ import annotations

import pytest

from assistant.sse import SseReader

STREAM = (
    b": keep-alive comment\n"
    b'data: {"a": 1}\n\n'
    b"event: message\nid: 7\nretry: 10\n"
    b'data: {"b":\ndata:  2}\n\n'
    b"\n\n"  # blank lines with no data make no event
    b"data:[DONE]\n\n"
)
EXPECTED = [b'{"a": 1}', b'{"b":\n 2}', b"[DONE]"]


def read(stream: bytes, size: int) -> list[bytes]:
    reader = SseReader()
    events: list[bytes] = []
    for start in range(0, len(stream), size):
        events += reader.feed(stream[start : start + size])
    return events + reader.end()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 1000])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_events_survive_any_cut_and_any_line_ending(size: int, newline: bytes) -> None:
    assert read(STREAM.replace(b"\n", newline), size) == EXPECTED


def test_an_event_the_stream_ends_inside_is_not_given() -> None:
    assert read(b'data: {"a": 1}\n\ndata: {"cut', 4) == [b'{"a": 1}']


def test_openrouter_processing_comments_between_chunks_are_skipped() -> None:
    stream = b": OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\n\ndata: {}\n\n"
    assert read(stream, 7) == [b"{}"]
