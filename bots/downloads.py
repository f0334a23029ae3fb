"""Downloading a user's file within a size limit, as every chat surface does: the platform's
word on a file's size is checked before, and the bytes as they arrive, so no file larger than
the limit is ever held whole."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class Download:
    """What came back: `data` None when the server refused (`status` not 200) or the file
    was larger than the limit."""

    status: int
    content_type: str
    data: bytes | None


async def download(
    session: aiohttp.ClientSession,
    url: str,
    *,
    max_bytes: int,
    seconds: float,
    headers: Mapping[str, str] | None = None,
) -> Download:
    """GET `url`, stopping as soon as more than `max_bytes` arrived."""
    timeout = aiohttp.ClientTimeout(total=seconds)
    async with session.get(url, headers=headers, timeout=timeout) as response:
        if response.status != 200:
            return Download(status=response.status, content_type=response.content_type, data=None)
        data = bytearray()
        async for chunk in response.content.iter_chunked(CHUNK_BYTES):
            data += chunk
            if len(data) > max_bytes:
                return Download(status=200, content_type=response.content_type, data=None)
        return Download(status=200, content_type=response.content_type, data=bytes(data))
