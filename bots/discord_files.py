"""Files attached to Discord messages, fetched for the engine within the limits it sets.

A message's attachments (filename, content_type, size, url) are downloaded from their CDN
`url`, which needs no token. Only what the assistant can read (an image or a text file) is
fetched, and its size is checked before (Discord's word) and while downloading (the bytes').
Whatever is not fetched becomes an `Attachment` whose `problem` says why, so the user is told.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

import aiohttp

from assistant.attachments import AttachmentLimits, kind_of
from assistant.turns import Attachment
from bots.downloads import download

log = logging.getLogger(__name__)

DOWNLOAD_SECONDS = 20.0


class DiscordFile(Protocol):
    """What is read of a `discord.Attachment`."""

    @property
    def filename(self) -> str: ...
    @property
    def content_type(self) -> str | None: ...
    @property
    def size(self) -> int: ...
    @property
    def url(self) -> str: ...


class DiscordFiles:
    """Downloads messages' attachments on one connection pool of its own (opened at the first
    file, closed with the adapter): discord.py's own `Attachment.read` reads any size."""

    def __init__(self, limits: AttachmentLimits) -> None:
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None

    async def fetch(self, files: Sequence[DiscordFile]) -> tuple[Attachment, ...]:
        if not files:
            return ()
        limits = self._limits
        if self._session is None:
            self._session = aiohttp.ClientSession()
        session = self._session
        wanted = files[: limits.max_count]
        fetched = await asyncio.gather(*(self._fetch(session, f, limits) for f in wanted))
        skipped = [_described(f, limits.too_many()) for f in files[limits.max_count :]]
        return (*fetched, *skipped)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _fetch(
        self, session: aiohttp.ClientSession, file: DiscordFile, limits: AttachmentLimits
    ) -> Attachment:
        if kind_of(file.filename, file.content_type or "") == "other":
            return _described(file, None)  # named to the model, never downloaded
        if file.size > limits.max_bytes:
            return _described(file, limits.too_large(file.size))
        try:
            data, problem = await _download(session, file.url, limits)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("Discord: could not download %s (%s)", file.filename, type(exc).__name__)
            data, problem = None, "it could not be downloaded from Discord"
        return Attachment(
            name=file.filename,
            media_type=file.content_type or "",
            size=file.size,
            data=data,
            problem=problem,
        )


async def _download(
    session: aiohttp.ClientSession, url: str, limits: AttachmentLimits
) -> tuple[bytes | None, str | None]:
    got = await download(session, url, max_bytes=limits.max_bytes, seconds=DOWNLOAD_SECONDS)
    if got.status != 200:
        return None, f"Discord answered HTTP {got.status} when it was downloaded"
    if got.data is None:
        return None, limits.too_large()
    return got.data, None


def _described(file: DiscordFile, problem: str | None) -> Attachment:
    return Attachment(
        name=file.filename, media_type=file.content_type or "", size=file.size, problem=problem
    )
