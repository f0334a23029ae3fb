"""Files attached to Slack messages, fetched for the engine within the limits it sets.

A message event lists its files (`files`: id, name, mimetype, size, url_private_download …);
each the assistant can read (an image or a text file) is downloaded with the bot token, which
needs the `files:read` scope. Slack answers a token that may not read a file with its sign-in
page (HTTP 200, text/html) rather than an error: that is caught and named. A file in a Slack
Connect channel comes as `file_access: check_file_info`, its URLs asked of `files.info`.
Whatever is not fetched becomes an `Attachment` whose `problem` says why, so the user is told.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient

from assistant.attachments import AttachmentLimits, kind_of
from assistant.turns import Attachment
from bots.downloads import download

log = logging.getLogger(__name__)

DOWNLOAD_SECONDS = 20.0
SIGN_IN_PAGE = (
    "Slack sent its sign-in page instead of the file (the app needs the files:read scope)"
)
NOT_SLACKS = "it is not stored on Slack (a link to another service), so it was not fetched"


class SlackFiles:
    """Downloads a message's files with the bot token, on the adapter's connection pool."""

    def __init__(self, client: AsyncWebClient, *, token: str, limits: AttachmentLimits) -> None:
        self._client = client
        self._token = token
        self._limits = limits
        self._api_host = urlsplit(client.base_url).netloc

    def _slacks(self, url: str) -> bool:
        """Whether the bot token may go to `url`: Slack's own file hosts over HTTPS, or the
        Web API's host (SLACK_API_URL). A remote file's URL names another service, which
        must never see the token."""
        parts = urlsplit(url)
        if parts.netloc == self._api_host and parts.scheme in ("http", "https"):
            return True
        host = parts.hostname or ""
        return parts.scheme == "https" and (host == "slack.com" or host.endswith(".slack.com"))

    async def fetch(self, files: object) -> tuple[Attachment, ...]:
        """The event's `files` as attachments, fetched where the assistant can read them."""
        listed = [f for f in files if isinstance(f, dict)] if isinstance(files, list) else []
        if not listed:
            return ()
        session = self._client.session
        if session is not None:
            return await self._fetch_all(session, listed)
        async with aiohttp.ClientSession() as own:  # a client not serving yet (a test)
            return await self._fetch_all(own, listed)

    async def _fetch_all(
        self, session: aiohttp.ClientSession, files: list[dict[str, Any]]
    ) -> tuple[Attachment, ...]:
        limit = self._limits.max_count
        fetched = await asyncio.gather(*(self._fetch(session, f) for f in files[:limit]))
        skipped = [_described(f, self._limits.too_many()) for f in files[limit:]]
        return (*fetched, *skipped)

    async def _fetch(self, session: aiohttp.ClientSession, file: dict[str, Any]) -> Attachment:
        if file.get("file_access") == "check_file_info":
            file = await self._file_info(file)
        name, media_type, size = _fields(file)
        if kind_of(name, media_type) == "other":
            return _described(file, None)  # named to the model, never downloaded
        if size > self._limits.max_bytes:
            return _described(file, self._limits.too_large(size))
        url = file.get("url_private_download") or file.get("url_private")
        if not isinstance(url, str) or not url:
            return _described(file, "Slack did not share it with the app")
        if not self._slacks(url):
            return _described(file, NOT_SLACKS)
        try:
            data, problem = await self._download(session, url, media_type)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("Slack: could not download %s (%s)", name, type(exc).__name__)
            data, problem = None, "it could not be downloaded from Slack"
        return Attachment(name=name, media_type=media_type, size=size, data=data, problem=problem)

    async def _file_info(self, file: dict[str, Any]) -> dict[str, Any]:
        """A Slack Connect file's full record (its URLs), or what the event said of it."""
        try:
            answer = await self._client.files_info(file=str(file.get("id") or ""))
        except Exception as exc:  # the file stays unread; the user is told
            log.warning("Slack: files.info failed for a shared file (%s)", exc)
            return file
        found = answer.get("file")
        return found if isinstance(found, dict) else file

    async def _download(
        self, session: aiohttp.ClientSession, url: str, media_type: str
    ) -> tuple[bytes | None, str | None]:
        """The file's bytes, or why there are none. Its size is checked as it arrives: the
        size the event gave is not trusted."""
        got = await download(
            session,
            url,
            max_bytes=self._limits.max_bytes,
            seconds=DOWNLOAD_SECONDS,
            headers={"Authorization": f"Bearer {self._token}"},
        )
        if got.status != 200:
            return None, f"Slack answered HTTP {got.status} when it was downloaded"
        if got.content_type == "text/html" and not media_type.startswith("text/html"):
            log.warning(
                "Slack: a file download got the sign-in page: add the files:read scope "
                "under OAuth & Permissions and reinstall the app"
            )
            return None, SIGN_IN_PAGE
        if got.data is None:
            return None, self._limits.too_large()
        return got.data, None


def _fields(file: Mapping[str, Any]) -> tuple[str, str, int]:
    """A file's name, media type and size as the event gives them (of any type: checked)."""
    name = file.get("name") or file.get("title") or file.get("id") or "file"
    media_type = file.get("mimetype")
    size = file.get("size")
    return (
        str(name)[:200],
        str(media_type) if isinstance(media_type, str) else "",
        size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else 0,
    )


def _described(file: Mapping[str, Any], problem: str | None) -> Attachment:
    name, media_type, size = _fields(file)
    return Attachment(name=name, media_type=media_type, size=size, problem=problem)
