"""Files a team keeps (Markdown, text, HTML, PDF) → sections under their headings, so that a
passage found later can name where it came from ("Guide > Switch a prompt version").

Every section's text is Markdown-flavoured plain text: paragraphs separated by one blank line,
code in fences (an HTML `<pre>` becomes one), so the chunker reads every kind the same way.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

SUFFIXES = frozenset({".md", ".markdown", ".txt", ".html", ".htm", ".pdf"})
MAX_BYTES = 20 * 1024 * 1024  # a manual of a thousand pages fits; a data dump is not knowledge


@dataclass(frozen=True, kw_only=True)
class Section:
    headings: tuple[str, ...]  # outermost first; () for text before any heading
    anchor: str  # URL fragment without '#': a heading's slug or id, "page=N" in a PDF, or ""
    text: str  # paragraphs separated by a blank line, code blocks kept whole (fenced)


@dataclass(frozen=True, kw_only=True)
class Document:
    path: str  # POSIX path relative to the collection's folder
    title: str
    sections: tuple[Section, ...]  # only sections with text
    content_hash: str  # sha256 hex of the raw bytes: an unchanged file is not chunked again


class DocumentError(Exception):
    """A file that cannot be indexed, said so that whoever keeps the folder can fix it."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def read_document(path: Path, root: Path) -> Document:
    """The document in `path`, a file under `root`, or DocumentError saying what to fix."""
    shown = path.relative_to(root).as_posix()
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        kinds = ", ".join(sorted(SUFFIXES))
        raise DocumentError(shown, f"not a kind of file read here; save it as one of {kinds}")
    data = _read_bytes(path, shown)
    title, sections = _PARSERS[suffix](data, shown)
    return Document(
        path=shown,
        title=title or path.stem,
        sections=tuple(section for section in sections if section.text),
        content_hash=hashlib.sha256(data).hexdigest(),
    )


def read_folder(root: Path) -> Iterator[Document | DocumentError]:
    """Every supported file under root, sorted by relative path, recursive; hidden files/folders
    (dot-names) skipped; an unreadable file yields its DocumentError instead of stopping the walk.

    A missing or unreadable `root` raises DocumentError at once, and a folder below it that
    cannot be listed yields one whose path ends in "/": a folder that cannot be listed must not
    look like an empty one (a sync would then drop every document it had there)."""
    entries = _listing(root)
    return (_entry(root, relative, problem) for relative, problem in entries)


def _entry(root: Path, relative: str, problem: str | None) -> Document | DocumentError:
    if problem is not None:
        return DocumentError(relative, problem)
    if not (root / relative).resolve().is_relative_to(root.resolve()):
        # a link out of the folder would serve any file the bot can read (its .env) to every
        # place the collection is bound
        return DocumentError(relative, "a link to a file outside the collection's folder; not read")
    try:
        return read_document(root / relative, root)
    except DocumentError as exc:
        return exc


def _listing(root: Path) -> list[tuple[str, str | None]]:
    """(relative path, None) for each supported file, ("folder/", problem) for each unlistable
    folder below root, sorted by path."""
    if not root.is_dir():
        raise DocumentError(str(root), "not a folder; check the collection's path")
    found: list[tuple[str, str | None]] = []
    failures: list[OSError] = []
    for folder, folders, files in os.walk(root, onerror=failures.append):
        folders[:] = [name for name in folders if not name.startswith(".")]
        base = Path(folder).relative_to(root)
        found += [
            ((base / name).as_posix(), None)
            for name in files
            if not name.startswith(".") and Path(name).suffix.lower() in SUFFIXES
        ]
    for failure in failures:
        where = Path(failure.filename or root)
        if where == root:
            raise DocumentError(str(root), _cannot_read("folder", failure))
        found.append((where.relative_to(root).as_posix() + "/", _cannot_read("folder", failure)))
    return sorted(found)


def _cannot_read(kind: str, exc: OSError) -> str:
    return f"cannot read the {kind} ({exc.strerror or exc}); check its permissions"


def _read_bytes(path: Path, shown: str) -> bytes:
    """The file's bytes; anything but a regular file is refused before it is opened (reading a
    FIFO would wait forever), and so is a file over MAX_BYTES, before it is read."""
    try:
        _check_regular(os.stat(path), shown)
        # O_NONBLOCK: should the path become a FIFO after the check, opening it still returns
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise DocumentError(shown, _cannot_read("file", exc)) from None
    try:
        _check_regular(os.fstat(fd), shown)
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read(MAX_BYTES + 1)
    except OSError as exc:
        raise DocumentError(shown, _cannot_read("file", exc)) from None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise DocumentError(shown, _too_large(len(data)))
    return data


def _check_regular(info: os.stat_result, shown: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise DocumentError(shown, "not a regular file; put a plain file here")
    if info.st_size > MAX_BYTES:
        raise DocumentError(shown, _too_large(info.st_size))


def _too_large(size: int) -> str:
    limit = MAX_BYTES // (1024 * 1024)
    return f"too large ({size:,} bytes, over {limit} MB); split it into smaller files"


def _decode(data: bytes, shown: str) -> str:
    """UTF-8 text (a byte order mark allowed) with Unix line ends and no NUL characters (which
    Postgres text refuses); a guess at any other encoding would index mojibake silently."""
    bom = b"\xef\xbb\xbf" if data.startswith(b"\xef\xbb\xbf") else b""
    try:
        text = data[len(bom) :].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = exc.start + len(bom)
        raise DocumentError(shown, f"not UTF-8 at byte {at}; save it as UTF-8") from None
    return _clean(text)


def _clean(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


# --- paragraphs and code fences, shared with the chunker ------------------------------------

_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")


def opening_fence(line: str) -> str | None:
    """The fence (```` ``` ```` or `~~~`, at least three) that `line` opens a code block with."""
    match = _FENCE.fullmatch(line)
    if match is None or (match[1][0] == "`" and "`" in match[2]):
        return None
    return match[1]


def closes_fence(line: str, fence: str) -> bool:
    """Whether `line` ends the block `fence` opened: the same character, at least as many."""
    indent = len(line) - len(line.lstrip(" "))
    stripped = line.strip()
    return indent < 4 and len(stripped) >= len(fence) and stripped == fence[0] * len(stripped)


def split_paragraphs(text: str) -> list[str]:
    """Runs of non-blank lines, and fenced code blocks whole (blank lines inside included),
    each with its lines' trailing spaces removed."""
    paragraphs: list[str] = []
    current: list[str] = []
    fence: str | None = None
    for raw in text.split("\n"):
        line = raw.rstrip()
        if fence is not None:
            current.append(line)
            if closes_fence(line, fence):
                paragraphs.append("\n".join(current))
                current, fence = [], None
        elif (opened := opening_fence(line)) is not None:
            if current:
                paragraphs.append("\n".join(current))
            current, fence = [line], opened
        elif line.strip():
            current.append(line)
        elif current:
            paragraphs.append("\n".join(current))
            current = []
    if current:
        paragraphs.append("\n".join(current).rstrip())
    return paragraphs


def _paragraphed(lines: list[str]) -> str:
    return "\n\n".join(split_paragraphs("\n".join(lines)))


# --- headings → sections, for Markdown and HTML ---------------------------------------------


def slug(text: str) -> str:
    """GitHub's anchor for a heading: lower case, spaces to '-', punctuation dropped."""
    kept = [
        "-" if char == " " else char
        for char in text.strip().lower()
        if char in " -_" or unicodedata.category(char)[0] in "LNM"
    ]
    return "".join(kept)


class _Outline:
    """Lines gathered under the heading path in force, a section per heading."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.first_h1: str | None = None
        self._path: list[tuple[int, str]] = []
        self._anchor = ""
        self._lines: list[str] = []
        self._slugs: dict[str, int] = {}

    def add(self, line: str) -> None:
        self._lines.append(line)

    def heading(self, level: int, text: str, anchor: str | None = None) -> None:
        self.close()
        if level == 1 and self.first_h1 is None:
            self.first_h1 = text
        while self._path and self._path[-1][0] >= level:
            self._path.pop()
        self._path.append((level, text))
        self._anchor = anchor or self._unique(slug(text))

    def close(self) -> None:
        """Ends the section under way, if it has text."""
        text = _paragraphed(self._lines)
        if text:
            headings = tuple(heading for _, heading in self._path)
            self.sections.append(Section(headings=headings, anchor=self._anchor, text=text))
        self._lines = []

    def _unique(self, base: str) -> str:
        """GitHub's suffix for a repeated heading: "usage", "usage-1", "usage-2"."""
        candidate = base
        while candidate in self._slugs:
            self._slugs[base] += 1
            candidate = f"{base}-{self._slugs[base]}"
        self._slugs[candidate] = 0
        return candidate


# --- Markdown ---------------------------------------------------------------------------------

_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*")
_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*")
_BREAK = re.compile(r" {0,3}(?:(?:-[ \t]*){3,}|(?:\*[ \t]*){3,}|(?:_[ \t]*){3,})")
_NOT_PROSE = re.compile(r"\s*(?:[-+*][ \t]|\d{1,9}[.)][ \t]|>|\||<)| {4}")  # lists, quotes…
_CUSTOM_ID = re.compile(r"\s*\{#([\w:.-]+)\}\s*$")  # "## Setup {#setup}" (MkDocs, Pandoc)
_FRONT_TITLE = re.compile(r"title:[ \t]*(.*?)[ \t]*")


def _markdown(data: bytes, shown: str) -> tuple[str | None, list[Section]]:
    lines = _decode(data, shown).split("\n")
    front_title, lines = _front_matter(lines)
    outline = _Outline()
    _MarkdownReader(outline).read(lines)
    outline.close()
    return front_title or outline.first_h1, outline.sections


def _front_matter(lines: list[str]) -> tuple[str | None, list[str]]:
    """YAML front matter's title (read with a pattern: no YAML library for one field) and the
    lines after it."""
    if not lines or lines[0].rstrip() != "---":
        return None, lines
    for end, line in enumerate(lines[1:], start=1):
        if line.rstrip() in ("---", "..."):
            titles = [m[1] for m in map(_FRONT_TITLE.fullmatch, lines[1:end]) if m]
            title = _unquote(titles[0]) if titles else ""
            return title or None, lines[end + 1 :]
    return None, lines


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


class _MarkdownReader:
    """Routes each line to the section its heading opens; code fences shield their lines."""

    def __init__(self, outline: _Outline) -> None:
        self._outline = outline
        self._fence: str | None = None
        self._pending: list[str] = []  # the paragraph so far: a setext underline makes it a heading

    def read(self, lines: list[str]) -> None:
        for line in lines:
            if self._fence is not None:
                self._outline.add(line)
                self._fence = None if closes_fence(line, self._fence) else self._fence
            elif (fence := opening_fence(line)) is not None:
                self._flush()
                self._fence = fence
                self._outline.add(line)
            else:
                self._prose(line)
        self._flush()

    def _prose(self, line: str) -> None:
        atx = _ATX.fullmatch(line)
        if atx:
            self._flush()
            if atx[2]:
                self._heading(len(atx[1]), atx[2])
        elif self._pending and _SETEXT.fullmatch(line) and not _NOT_PROSE.match(self._pending[0]):
            text = " ".join(part.strip() for part in self._pending)
            self._pending = []
            self._heading(1 if line.strip()[0] == "=" else 2, text)
        elif _BREAK.fullmatch(line) or not line.strip():
            self._flush()
        else:
            self._pending.append(line)

    def _heading(self, level: int, raw: str) -> None:
        custom = _CUSTOM_ID.search(raw)
        text = _plain_inline(raw[: custom.start()] if custom else raw)
        self._outline.heading(level, text, custom[1] if custom else None)

    def _flush(self) -> None:
        for line in self._pending:
            self._outline.add(line)
        self._outline.add("")
        self._pending = []


_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"\*+|(?<!\w)_+(?=\S)|(?<=\S)_+(?!\w)")


def _plain_inline(text: str) -> str:
    """A heading as it reads rendered: links as their text, no emphasis marks, code spans
    verbatim (GitHub slugs the rendered text)."""
    parts: list[str] = []
    last = 0
    for span in _CODE_SPAN.finditer(text):
        parts.append(_EMPHASIS.sub("", _LINK.sub(r"\1", text[last : span.start()])))
        parts.append(span[2].strip())
        last = span.end()
    parts.append(_EMPHASIS.sub("", _LINK.sub(r"\1", text[last:])))
    return " ".join("".join(parts).split())


# --- plain text ------------------------------------------------------------------------------


def _plain(data: bytes, shown: str) -> tuple[str | None, list[Section]]:
    text = "\n\n".join(split_paragraphs(_decode(data, shown)))
    return None, [Section(headings=(), anchor="", text=text)]


# --- HTML ------------------------------------------------------------------------------------

_DROPPED = frozenset({"script", "style", "nav", "head", "noscript", "template", "svg"})
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_BLOCKS = frozenset(
    {
        *("address", "article", "aside", "blockquote", "body", "caption", "dd", "details"),
        *("dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form"),
        *("header", "hr", "html", "li", "main", "ol", "p", "section", "summary", "table"),
        *("tbody", "tfoot", "thead", "tr", "ul"),
    }
)


def _html(data: bytes, shown: str) -> tuple[str | None, list[Section]]:
    reader = _HtmlReader()
    try:
        reader.feed(_decode(data, shown))
        reader.close()
    except AssertionError as exc:  # how html.parser gives up on a bad "<![" declaration
        raise DocumentError(shown, f"not readable HTML ({exc}); fix the markup there") from None
    return reader.title or reader.outline.first_h1, reader.outline.sections


class _HtmlReader(HTMLParser):
    """Readable text under its headings; scripts, styles, navigation and <head> left out."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.outline = _Outline()
        self.title: str | None = None
        self._dropped: list[str] = []  # open elements whose content is left out
        self._title: list[str] | None = None
        self._heading: tuple[int, str | None, list[str]] | None = None  # level, id, text
        self._pre: list[str] | None = None
        self._pre_depth = 0
        self._lines: list[list[str]] = [[]]  # the paragraph so far, a list per <br> line

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title" and "svg" not in self._dropped:
            self._title = []
        if tag == "body":  # <head> and <title> closed implicitly
            self._end_title()
            if "head" in self._dropped:
                del self._dropped[self._dropped.index("head") :]
        if tag in _DROPPED or self._dropped:
            self._dropped += [tag] if tag in _DROPPED else []
            return
        if self._heading is not None and (tag in _BLOCKS or tag in _HEADINGS or tag == "pre"):
            self._end_heading()  # a heading left open ends where a block begins
        if self._heading is not None and tag == "a" and self._heading[1] is None:
            self._heading = (self._heading[0], _id(attrs), self._heading[2])
        elif tag in _HEADINGS:
            self._paragraph()
            self._heading = (_HEADINGS[tag], _id(attrs), [])
        else:
            self._open(tag)

    def _open(self, tag: str) -> None:
        if tag == "pre":
            self._paragraph()
            self._pre_depth += 1
            self._pre = self._pre if self._pre is not None else []
        elif tag == "br":
            self.handle_data("\n" if self._pre is not None else "")
            self._lines.append([])
        elif tag in ("td", "th"):
            self.handle_data(" ")
        elif tag in _BLOCKS:
            self._paragraph()
            if tag == "li":
                self._lines[-1].append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._end_title()
        if tag in self._dropped:
            del self._dropped[len(self._dropped) - 1 - self._dropped[::-1].index(tag) :]
        elif self._dropped:
            return
        elif tag in _HEADINGS:
            self._end_heading()
        elif tag == "pre" and self._pre is not None:
            self._pre_depth -= 1
            if self._pre_depth == 0:
                self._end_pre(self._pre)
        elif tag in _BLOCKS:
            self._paragraph()

    def handle_data(self, data: str) -> None:
        if self._title is not None:
            self._title.append(data)
        if self._dropped:
            return
        if self._heading is not None:
            self._heading[2].append(data)
        elif self._pre is not None:
            self._pre.append(data)
        else:
            self._lines[-1].append(data)

    def close(self) -> None:
        super().close()
        self._end_heading()
        self._paragraph()
        if self._pre is not None:
            self._end_pre(self._pre)
        self.outline.close()

    def _end_heading(self) -> None:
        if self._heading is not None:
            level, anchor, parts = self._heading
            self._heading = None
            text = " ".join("".join(parts).split())
            if text:
                self.outline.heading(level, text, anchor)

    def _end_title(self) -> None:
        if self._title is not None and self.title is None:
            self.title = " ".join("".join(self._title).split()) or None
        self._title = None

    def _end_pre(self, parts: list[str]) -> None:
        self._pre = None
        code = "".join(parts).removeprefix("\n").rstrip()
        if code.strip():
            longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
            fence = "`" * max(3, longest + 1)
            self.outline.add(f"{fence}\n{code}\n{fence}\n")

    def _paragraph(self) -> None:
        lines = (" ".join("".join(parts).split()) for parts in self._lines)
        text = "\n".join(line for line in lines if line)
        if text == "-":  # a list item's bullet, its text still to come (<li><p>…)
            return
        if text:
            self.outline.add(text + "\n")
        self._lines = [[]]


def _id(attrs: list[tuple[str, str | None]]) -> str | None:
    found = dict(attrs)
    return found.get("id") or found.get("name") or None


# --- PDF -------------------------------------------------------------------------------------


def _pdf(data: bytes, shown: str) -> tuple[str | None, list[Section]]:
    """A section per page. pypdf is imported here: a process that never reads a PDF never
    loads it."""
    if not data:
        return None, []  # an empty file is an empty document, whatever its name says
    import pypdf
    from pypdf.errors import DependencyError

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):  # an owner password alone opens
            raise DocumentError(shown, "the PDF needs a password; save a copy without one")
        title = reader.metadata.title if reader.metadata else None
        pages = [page.extract_text() for page in reader.pages]
    except DocumentError:
        raise
    except DependencyError as exc:
        problem = f"the PDF is encrypted ({exc}); save a copy without encryption"
        raise DocumentError(shown, problem) from None
    except Exception as exc:  # a damaged file can fail anywhere inside pypdf
        problem = f"not a readable PDF ({type(exc).__name__}: {exc}); export or save it again"
        raise DocumentError(shown, problem) from None
    sections = [_page(number, text) for number, text in enumerate(pages, start=1)]
    if pages and not any(section.text for section in sections):
        problem = "no text in the PDF (scanned pages?); save a copy with a text layer (OCR)"
        raise DocumentError(shown, problem)
    return (title or "").strip() or None, sections


def _page(number: int, text: str) -> Section:
    # a text layer may hold lone surrogates, which no database text column accepts
    clean = _clean(text).encode("utf-8", "replace").decode("utf-8")
    return Section(
        headings=(f"Page {number}",),
        anchor=f"page={number}",
        text="\n\n".join(split_paragraphs(clean)),
    )


_PARSERS = {
    ".md": _markdown,
    ".markdown": _markdown,
    ".txt": _plain,
    ".html": _html,
    ".htm": _html,
    ".pdf": _pdf,
}
