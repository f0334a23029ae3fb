"""Files users send with a message: what the model is shown of each, and what is kept of it.

Adapters fetch the files within `AttachmentLimits` (the engine never reaches a platform) and
hand them over as `Attachment`s; `prepare` turns them into the turn's user message. Images go
to a model that can see them as image parts, of this turn only (history keeps
"[image attachment: name]": sending every past image again would cost their tokens on every
turn). Text files are inlined as fenced blocks, cut to a share of the context. Anything else,
and any file that could not be had, is named with the reason, and the user is told. What the
model saw of each file is kept with the message (`messages.attachments`, JSON).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Literal

from assistant.llm import ChatMessage, ImagePart
from assistant.memory import fit
from assistant.tokens import TokenCounter, image_size, image_tokens
from assistant.turns import Attachment

Kind = Literal["image", "text", "other"]

# What the model saw of a file (`FileSeen.seen`, and the JSON kept with the message).
IMAGE = "image"
TEXT = "text"
TEXT_TRUNCATED = "text-truncated"
NOT_SENT = "not-sent"

# The image formats OpenAI-compatible APIs take, by the format Pillow reads in the header.
IMAGE_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
# Text that is not text/*: data and source files as platforms label them.
TEXT_MEDIA_TYPES = frozenset(
    {
        "application/json",
        "application/x-ndjson",
        "application/xml",
        "application/yaml",
        "application/x-yaml",
        "application/toml",
        "application/javascript",
        "application/x-javascript",
        "application/typescript",
        "application/x-sh",
        "application/x-shellscript",
        "application/sql",
        "application/csv",
        "application/x-python",
        "application/x-httpd-php",
        "application/graphql",
    }
)
# Source and data files by name, for platforms that call them application/octet-stream.
TEXT_SUFFIXES = frozenset(
    (  # noqa: SIM905 (a list of 64 quoted names is harder to read than this)
        ".txt .md .markdown .rst .csv .tsv .json .jsonl .ndjson .yaml .yml .toml .ini .cfg "
        ".conf .log .xml .html .htm .css .scss .sql .py .pyi .js .mjs .cjs .ts .tsx .jsx .go "
        ".rs .java .kt .kts .swift .c .h .cc .cpp .hpp .cs .rb .php .pl .lua .r .scala .sh "
        ".bash .zsh .ps1 .bat .dockerfile .tf .hcl .proto .graphql .diff .patch .tex .env "
        ".properties .gradle"
    ).split()
)
TEXT_SHARE = 3  # text files take at most a third of the context …
IMAGE_SHARE = 3  # … and images another third, so the question and some history still fit

BLIND = "this model cannot see images"
REFUSED = "the model's server refused images, so this model cannot see them"


@dataclass(frozen=True, kw_only=True)
class AttachmentLimits:
    """What adapters fetch of a message's files (ATTACHMENT_MAX_BYTES, ATTACHMENT_MAX_COUNT).
    5 MiB fits every major provider's limit for one image (Anthropic's 5 MB is the lowest;
    OpenAI takes 20 MB) and keeps four images, base64-encoded, under OpenAI's 50 MB request."""

    max_bytes: int = 5 * 1024 * 1024
    max_count: int = 4

    def too_large(self, size: int | None = None) -> str:
        """The reason a file of `size` bytes (None: found too large while downloading) is not
        fetched."""
        limit = f"the {file_size(self.max_bytes)} limit for files"
        return f"it is {file_size(size)}, larger than {limit}" if size else f"it is over {limit}"

    def too_many(self) -> str:
        return f"only the first {self.max_count} files of a message are read"


def kind_of(name: str, media_type: str) -> Kind:
    """Whether a file is worth fetching as an image, as text, or not at all (`other`)."""
    media = media_type.split(";")[0].strip().lower()
    suffix = PurePosixPath(name.lower()).suffix
    if media in IMAGE_FORMATS.values() or (not media and suffix in _IMAGE_SUFFIXES):
        return "image"
    if media.startswith("image/"):
        return "other"  # SVG, HEIC, TIFF …: no model API takes them
    if media.startswith("text/") or media in TEXT_MEDIA_TYPES or suffix in TEXT_SUFFIXES:
        return "text"
    if media.endswith(("+json", "+xml", "+yaml")):
        return "text"
    return "other"


_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp"})


def file_size(size: int) -> str:
    """A size as people read it: 812 bytes, 14 KB, 5.2 MB."""
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / (1024 * 1024):.1f} MB".replace(".0 MB", " MB")


@dataclass(frozen=True, kw_only=True)
class FileSeen:
    """What the model saw of one file, as kept with the message."""

    name: str
    media_type: str
    size: int
    seen: str  # image | text | text-truncated | not-sent
    reason: str | None = None  # why not sent, or how it was cut

    def record(self) -> dict[str, object]:
        return {
            "name": self.name,
            "media_type": self.media_type,
            "size": self.size,
            "seen": self.seen,
            "reason": self.reason,
        }


@dataclass(frozen=True, kw_only=True)
class PreparedMessage:
    """A user message with its files read: the text stored (files inlined or named), the
    images for this turn's request, and what the model saw of each file."""

    text: str
    files: tuple[FileSeen, ...] = ()
    images: tuple[ImagePart, ...] = ()
    image_tokens: int = 0  # what the images add to the request (the tile formula)

    def record(self) -> str | None:
        """The JSON kept in `messages.attachments`; None for a message without files."""
        if not self.files:
            return None
        return json.dumps([file.record() for file in self.files], ensure_ascii=False)

    def notice(self, *, said: str = "") -> str:
        """What the user is told before the answer: each file the model did not see whole,
        and why, but for the lines of `said` (told already). Empty when it saw every one."""
        unseen = [f for f in self.files if f.seen == NOT_SENT and f.reason not in (BLIND, REFUSED)]
        lines = [_blind_line(self.files)] if self._blind() else []
        lines += [f"Note: {f.name} was not read: {f.reason}." for f in unseen]
        lines += [
            f"Note: {f.name} was too long to read whole: only its beginning was read."
            for f in self.files
            if f.seen == TEXT_TRUNCATED
        ]
        lines = [line for line in lines if f"{line}\n" not in said]
        return "".join(f"{line}\n" for line in lines) + "\n" if lines else ""

    def show(self, messages: list[ChatMessage]) -> list[ChatMessage]:
        """The request's messages with this turn's images on its user message (the last), and
        a note there when the model cannot see the images it was sent, so that it says so
        instead of guessing what they show."""
        if not messages or messages[-1].role != "user":
            return messages
        last = messages[-1]
        content = last.content
        if self._blind():
            names = ", ".join(f.name for f in self.files if f.reason in (BLIND, REFUSED))
            content += (
                f"\n\n[Note from the assistant's software: the user attached images you cannot "
                f"see ({names}); this model does not take images. Say plainly that you cannot "
                "see images, and do not guess or describe what they show.]"
            )
        return [*messages[:-1], replace(last, content=content, images=self.images)]

    def refused(self) -> PreparedMessage:
        """The same message after the model's server refused its images: none is sent."""
        files = tuple(
            replace(f, seen=NOT_SENT, reason=REFUSED) if f.seen == IMAGE else f for f in self.files
        )
        return replace(self, files=files, images=(), image_tokens=0)

    def _blind(self) -> bool:
        return any(f.reason in (BLIND, REFUSED) for f in self.files)


NO_FILES = PreparedMessage(text="")  # a turn whose files are not at hand (a resumed one)


def _blind_line(files: Sequence[FileSeen]) -> str:
    names = ", ".join(f.name for f in files if f.reason in (BLIND, REFUSED))
    return f"Note: this model cannot see images, so {names} could not be shown to it."


def prepare(
    text: str,
    files: Sequence[Attachment],
    *,
    sees_images: bool,
    counter: TokenCounter,
    budget: int,
    limits: AttachmentLimits,
) -> PreparedMessage:
    """Read a message's files for a model with a context of `budget` tokens."""
    if not files:
        return PreparedMessage(text=text)
    reading = _Reading(
        counter=counter,
        sees_images=sees_images,
        text_room=budget // TEXT_SHARE,
        image_room=budget // IMAGE_SHARE,
        texts_left=sum(1 for f in files if _readable(f, limits) and _kind(f) == "text"),
    )
    for index, file in enumerate(files):
        if index >= limits.max_count:
            reading.skip(file, file.problem or limits.too_many())
        elif file.data is not None and len(file.data) > limits.max_bytes:  # the adapter's word
            reading.skip(file, limits.too_large(len(file.data)))  # is not trusted either
        elif file.problem is not None or file.data is None:
            reading.skip(file, file.problem or _not_read(file))
        elif _kind(file) == "image":
            reading.image(file, file.data)
        elif _kind(file) == "text":
            reading.text(file, file.data)
        else:
            reading.skip(file, _not_read(file))
    blocks = "\n\n".join(reading.blocks)
    return PreparedMessage(
        text=f"{text}\n\n{blocks}" if text else blocks,
        files=tuple(reading.seen),
        images=tuple(reading.images),
        image_tokens=reading.image_tokens,
    )


def _kind(file: Attachment) -> Kind:
    return kind_of(file.name, file.media_type)


def _readable(file: Attachment, limits: AttachmentLimits) -> bool:
    return file.problem is None and file.data is not None and len(file.data) <= limits.max_bytes


def _not_read(file: Attachment) -> str:
    what = file.media_type.split(";")[0] or "files of this kind"
    return f"the assistant reads images and text files, not {what}"


class _Reading:
    """The files of one message, read in order into blocks, images and records."""

    def __init__(
        self,
        *,
        counter: TokenCounter,
        sees_images: bool,
        text_room: int,
        image_room: int,
        texts_left: int,
    ) -> None:
        self._counter = counter
        self._sees_images = sees_images
        self._text_room = text_room
        self._image_room = image_room
        self._texts_left = texts_left
        self.blocks: list[str] = []
        self.seen: list[FileSeen] = []
        self.images: list[ImagePart] = []
        self.image_tokens = 0

    def skip(self, file: Attachment, reason: str) -> None:
        kind = "image attachment" if _kind(file) == "image" else "attachment"
        size = f", {file_size(file.size)}" if file.size else ""
        media = f" ({file.media_type.split(';')[0]}{size})" if file.media_type else ""
        self.blocks.append(f"[{kind}: {file.name}{media}, not shown to you: {reason}]")
        self._record(file, NOT_SENT, reason)

    def image(self, file: Attachment, data: bytes) -> None:
        found = image_size(data)
        media_type = IMAGE_FORMATS.get(found[0]) if found else None
        if found is None or media_type is None:
            self.skip(file, "it is not a PNG, JPEG, GIF or WebP image the model can read")
            return
        if not self._sees_images:
            self.skip(file, BLIND)
            return
        tokens = image_tokens(found[1], found[2])
        if self.image_tokens + tokens > self._image_room:
            self.skip(file, "there was no room left in the model's context for it")
            return
        self.image_tokens += tokens
        self.images.append(ImagePart(media_type=media_type, data=data))
        self.blocks.append(f"[image attachment: {file.name}]")
        self._record(file, IMAGE, None)

    def text(self, file: Attachment, data: bytes) -> None:
        share = self._text_room // max(self._texts_left, 1)
        self._texts_left -= 1
        content = _decoded(data)
        if content is None:
            self.skip(file, "it is not UTF-8 or UTF-16 text")
            return
        if "\x00" in content:
            self.skip(file, "it is a binary file, not text")
            return
        # what cannot fit is cut before it is counted: tokenizing megabytes would hold up
        # every chat of the process for seconds
        longest = share * MAX_CHARS_PER_TOKEN
        cut = len(content) > longest
        content = content[:longest]
        block = _fenced(file.name, content)
        used = self._counter.count(block)
        if used <= share and not cut:
            self._text_room -= used
            self.blocks.append(block)
            self._record(file, TEXT, None)
            return
        room = share - self._counter.count(_fenced(file.name, ""))
        if room < 32:
            self.skip(file, "there was no room left in the model's context for it")
            return
        block = _fenced(file.name, fit(content, room, self._counter))
        self._text_room -= self._counter.count(block)
        self.blocks.append(block)
        self._record(file, TEXT_TRUNCATED, f"cut to about {room:,} tokens to fit the context")

    def _record(self, file: Attachment, seen: str, reason: str | None) -> None:
        self.seen.append(
            FileSeen(
                name=file.name,
                media_type=file.media_type,
                size=file.size,
                seen=seen,
                reason=reason,
            )
        )


_BACKTICKS = re.compile(r"`{3,}")
# more characters than any text spends on a token (English prose about 4, code about 3): a
# text longer than this many per token of its room cannot fit whole
MAX_CHARS_PER_TOKEN = 8
_UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")


def _decoded(data: bytes) -> str | None:
    """UTF-8 (with or without its mark), or UTF-16 with its byte order mark (what Windows
    tools and Excel export); None otherwise."""
    encoding = "utf-16" if data.startswith(_UTF16_MARKS) else "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        return None


def _fenced(name: str, content: str) -> str:
    """A file's text as a fenced block labelled with its name; the fence is longer than any
    run of backticks inside, so the file cannot close it early."""
    longest = max((len(run) for run in _BACKTICKS.findall(content)), default=2)
    fence = "`" * (longest + 1)
    return f"Attachment {name}:\n{fence}\n{content.rstrip()}\n{fence}"
