"""Markdown replies made fit for chat: Slack's mrkdwn, message-size pieces, previews mid-stream,
and the lines that name an answer's sources."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from assistant.turns import Source

_LineKind = Literal["text", "open", "code", "close"]

_FENCE_LINE = re.compile(r"(?P<indent>[ \t]*)(?P<marker>`{3,}|~{3,})(?P<info>.*)")


@dataclass(frozen=True, slots=True)
class _Fence:
    """An open code fence: what closes it, and what to repeat when a split reopens it."""

    marker: str
    info: str
    indent: int

    def closed_by(self, line: str) -> bool:
        """CommonMark: the same character, at least as long, nothing after it."""
        m = _FENCE_LINE.match(line)
        return (
            m is not None
            and m["marker"][0] == self.marker[0]
            and len(m["marker"]) >= len(self.marker)
            and not m["info"].strip()
        )


def _opener(line: str) -> _Fence | None:
    """A line that opens a fence; a backtick fence's info may not hold backticks (`x```y`)."""
    m = _FENCE_LINE.match(line)
    if m is None or (m["marker"][0] == "`" and "`" in m["info"]):
        return None
    return _Fence(marker=m["marker"], info=m["info"].strip(), indent=len(m["indent"]))


def _walk(
    lines: Iterable[str], fence: _Fence | None = None
) -> Iterator[tuple[str, _LineKind, _Fence | None]]:
    """Tag each line and give the fence still open after it; the one scanner all three share."""
    for line in lines:
        if fence is None:
            fence = _opener(line)
            yield line, ("text" if fence is None else "open"), fence
        elif fence.closed_by(line):
            fence = None
            yield line, "close", None
        else:
            yield line, "code", fence


def _open_at_end(lines: Iterable[str], fence: _Fence | None = None) -> _Fence | None:
    """The fence a text leaves open, if any."""
    for _, _, after in _walk(lines, fence):
        fence = after
    return fence


def open_fence(text: str) -> tuple[str, str] | None:
    """The code block `text` leaves open, as (what reopens it, what closes it); None if none."""
    fence = _open_at_end(text.split("\n"))
    if fence is None:
        return None
    return f"{fence.marker}{fence.info}", fence.marker


def close_fences(text: str) -> str:
    """A still-streaming text with an open ``` fence gets a closing one, so a preview renders."""
    fence = _open_at_end(text.split("\n"))
    if fence is None:
        return text
    return text + ("" if text.endswith("\n") else "\n") + fence.marker


# --- Slack mrkdwn -------------------------------------------------------------------------------

# Emphasis found in the prose becomes these private-use sentinels until escaping is done, so later
# passes neither re-read nor escape the markup earlier passes produced.
_BOLD, _ITALIC, _STRIKE, _KEPT = "\ue000", "\ue001", "\ue002", "\ue003"

_TOKEN = re.compile(
    r"""
    (?P<code>(?<!`)(?P<ticks>`+)(?!`).+?(?<!`)(?P=ticks)(?!`))
  | (?P<stray>`+)
  | (?P<link>!?\[(?P<text>(?:[^\[\]\\]|\\.|\[[^\[\]]*\])*)\]
        \(\s*(?P<url><[^<>\n]*>|[^\s()<>]*(?:\([^\s()<>]*\)[^\s()<>]*)*)
        (?:\s+(?:"[^"]*"|'[^']*'))?\s*\))
  | (?P<auto><(?:https?|mailto|ftp|tel|slack):[^\s<>]*>)
  | (?P<bare>\b(?:https?|ftp)://[^\s<>]*[^\s<>.,;:!?'")\]*_~])
  | (?P<dotted>(?<![\w.])\w+(?:\.\w+)+)  # file and module names: __init__.py, obj._x_
  | (?P<escaped>\\[!-/:-@\[\]-`{-~])
  | (?P<private>[\ue000-\ue003])
    """,
    re.VERBOSE,
)


def _pair(delimiter: str, markup: str) -> tuple[re.Pattern[str], str]:
    """Emphasis as Slack can show it: not inside a word (my_var_name, 2*3*4), no space inside."""
    d, c = re.escape(delimiter), re.escape(delimiter[0])
    # At most 500 characters: longer is rare, and the bound keeps a line full of stray
    # asterisks from costing quadratic time on every streamed update.
    pattern = rf"(?<![\w{c}]){d}(?![\s{c}])(.{{1,500}}?)(?<![\s{c}]){d}(?![\w{c}])"
    return re.compile(pattern), f"{markup}\\1{markup[::-1]}"


_EMPHASIS = tuple(
    _pair(delimiter, markup)
    for delimiter, markup in (
        ("***", _BOLD + _ITALIC),
        ("___", _BOLD + _ITALIC),
        ("**", _BOLD),
        ("__", _BOLD),
        ("*", _ITALIC),
        ("_", _ITALIC),
        ("~~", _STRIKE),
    )
)

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_HEADING = re.compile(r"[ \t]{0,3}#{1,6}(?:[ \t]+(?P<title>.*?))?(?:[ \t]+#+)?[ \t]*")
_RULE = re.compile(r"[ \t]{0,3}(?:(?:-[ \t]*){3,}|(?:\*[ \t]*){3,}|(?:_[ \t]*){3,})")
_QUOTE = re.compile(r"(?P<mark>[ \t]*>[ \t]?)(?P<rest>.*)")
_BULLET = re.compile(r"(?P<indent>[ \t]*)[-*+][ \t]+(?P<rest>.*)")

RULE_TEXT = "──────────"
LINK_PIPE = "\u2223"  # DIVIDES stands in for "|", which would end a Slack link label


def to_mrkdwn(markdown: str) -> str:
    """Markdown from the model -> Slack mrkdwn; code keeps its text (entity-escaped)."""
    out: list[str] = []
    for line, kind, fence in _walk(markdown.replace("\r\n", "\n").split("\n")):
        if kind == "text":
            out.append(_prose_line(line))
        elif kind == "code" and fence is not None:
            out.append(escape_mrkdwn(_dedent(line, fence.indent)))
        else:
            out.append("```")  # Slack has no language tags, and no ~~~ fences
    return "\n".join(out)


def _dedent(line: str, width: int) -> str:
    """Code in an indented fence (in a list item) sheds the fence's indent, as in CommonMark."""
    removable = len(line) - len(line.lstrip(" \t"))
    return line[min(width, removable) :]


def _prose_line(line: str) -> str:
    """Block markup first (it lives at the start of a line), then the inline markup."""
    if _RULE.fullmatch(line):
        return RULE_TEXT
    if quote := _QUOTE.fullmatch(line):
        return quote["mark"] + _prose_line(quote["rest"])
    heading = _HEADING.fullmatch(line)
    if heading and heading["title"]:
        return f"*{_inline(heading['title'], bold='')}*"  # already bold: inner ** would end it
    if bullet := _BULLET.fullmatch(line):
        return f"{bullet['indent']}• {_inline(bullet['rest'])}"
    return _inline(line)


def _inline(text: str, *, bold: str = "*", label: bool = False) -> str:
    """Code, links and URLs are set aside first so emphasis and escaping never reach into them."""
    kept: list[str] = []

    def keep(m: re.Match[str]) -> str:
        kept.append(_render_token(m, bold=bold, label=label))
        return _KEPT

    shielded = _TOKEN.sub(keep, text)
    for pattern, template in _EMPHASIS:
        shielded = pattern.sub(template, shielded)
    out = escape_mrkdwn(shielded).replace(_BOLD, bold).replace(_ITALIC, "_").replace(_STRIKE, "~")
    parts = out.split(_KEPT)
    out = parts[0] + "".join(k + p for k, p in zip(kept, parts[1:], strict=True))
    return out.replace("|", LINK_PIPE) if label else out


def _render_token(m: re.Match[str], *, bold: str, label: bool) -> str:
    """The mrkdwn for one protected token. Code keeps its markup but not Slack's control
    characters: Slack shows `&lt;` as `<` inside code too, and a raw `<!here>` would ping."""
    kind = m.lastgroup
    if kind == "code":
        return escape_mrkdwn(m[0])
    if kind == "auto":
        return escape_mrkdwn(m[0]) if label else m[0]
    if kind == "link":
        return _link(m, bold=bold, label=label)
    if kind == "bare":
        return escape_mrkdwn(m[0])
    if kind == "escaped":
        return escape_mrkdwn(m[0][1])
    return m[0]  # stray backticks, dotted names, our own sentinel characters: as they are


def _link(m: re.Match[str], *, bold: str, label: bool) -> str:
    """`[text](url)` and `![alt](url)` -> `<url|text>`; a link inside a label keeps its text."""
    text = _inline(m["text"], bold=bold, label=True)
    url = m["url"]
    if url.startswith("<") and url.endswith(">"):
        url = url[1:-1]
    if label or not url or url.startswith("#"):
        return text
    if not _SCHEME.match(url):
        return f"{text} ({escape_mrkdwn(url)})"  # a relative link means nothing in Slack
    target = escape_mrkdwn(url.replace("|", "%7C").replace(" ", "%20"))
    return f"<{target}|{text}>" if text else f"<{target}>"


def escape_mrkdwn(text: str) -> str:
    """Slack's control characters, which must be entities wherever they are not markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- sources ------------------------------------------------------------------------------------

SOURCES_TITLE = "Sources"
LABEL_CHARS = 200  # a footnote points to a passage; a longer title or heading is cut


def _as_is(text: str) -> str:
    return text


def source_label(source: Source) -> str:
    """ "Title > Section", cut to LABEL_CHARS so one long heading cannot crowd out the answer."""
    label = source.label()
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1].rstrip() + "…"


def source_lines(
    sources: Iterable[Source],
    *,
    label: Callable[[str], str] = _as_is,
    link: Callable[[str], str] = _as_is,
) -> list[str]:
    """ "[1] Title > Section — link", one line per source: the words every surface shows, so
    the numbers match the [1] marks in the answer's text. A surface escapes the label and
    dresses the link in its own platform's way."""
    lines = []
    for source in sources:
        line = f"[{source.number}] {label(source_label(source))}"
        lines.append(f"{line} — {link(source.link)}" if source.link else line)
    return lines


def mrkdwn_sources(sources: Iterable[Source]) -> list[str]:
    """Slack's form of `source_lines`: "[1] <link|Title > Section>", the label being the link
    (a plain escaped label for a source without one)."""
    return [_mrkdwn_source(source) for source in sources]


def _mrkdwn_source(source: Source) -> str:
    label = escape_mrkdwn(source_label(source)).replace("|", LINK_PIPE)
    if not source.link:
        return f"[{source.number}] {label}"
    target = escape_mrkdwn(source.link.replace("|", "%7C").replace(" ", "%20"))
    return f"[{source.number}] <{target}|{label}>"


# --- splitting ----------------------------------------------------------------------------------

MIN_LIMIT = 50
_LOOKAHEAD = 1000  # how far past a piece's end a line or inline span is followed

_BLANK_BREAK = re.compile(r"\n(?=[ \t\r]*\n)")
_LINE_BREAK = re.compile(r"\n")
_SPACE_BREAK = re.compile(r"[ \t]")
_BLANK_LINES = re.compile(r"(?:[ \t\r]*\n)*")
_FENCE_START = re.compile(r"[ \t]*(?:`{3}|~{3})")
# Spans a break at a space would spoil: inline code, Slack links, Markdown links.
_UNBREAKABLE = re.compile(r"`[^`\n]+`|<[^<>\n]*>|!?\[[^\[\]\n]*\]\([^()\s]*\)")


def split_message(text: str, limit: int) -> list[str]:
    """Split a long reply into messages of at most `limit` characters, nothing lost."""
    if limit < MIN_LIMIT:
        raise ValueError(f"limit must be at least {MIN_LIMIT} characters, got {limit}")
    if len(text) <= limit:
        return [text] if text else []
    pieces: list[str] = []
    fence: _Fence | None = None
    rest = _after_blank_lines(text, 0)
    while rest and not rest.isspace():
        piece, resume, fence = _next_piece(rest, fence, limit)
        if piece:
            pieces.append(piece)
        rest = _after_blank_lines(rest, resume)
    return pieces


def _after_blank_lines(text: str, start: int) -> str:
    """The text from `start` on, without the blank lines a split leaves at its top."""
    m = _BLANK_LINES.match(text, start)
    return text[m.end() if m else start :]


def _reopen_line(fence: _Fence, limit: int) -> str:
    """The fence line that continues a code block in the next piece, kept short enough to fit."""
    language = fence.info.split()[0] if fence.info else ""
    for line in (fence.marker + language, fence.marker):
        if len(line) <= limit // 5:
            return line
    return fence.marker[0] * 3


def _next_piece(rest: str, fence: _Fence | None, limit: int) -> tuple[str, int, _Fence | None]:
    """One piece, where the rest resumes, and the fence left open; shrinks until fences fit too."""
    head = _reopen_line(fence, limit) if fence else ""
    start = _opener(head)
    prefix = head + "\n" if head else ""
    budget = limit - len(prefix)
    while True:
        cut, resume = _find_cut(rest, budget, start)
        body = rest[:cut].rstrip()
        end = _open_at_end(body.split("\n"), start)
        piece = prefix + body + ("\n" + end.marker if end else "")
        overflow = len(piece) - limit
        if overflow <= 0:
            return (piece if body else ""), resume, end
        # A single character never opens a fence, so a budget of 1 always fits.
        budget = budget - overflow if budget > overflow else max(1, budget // 2)


def _find_cut(rest: str, budget: int, start: _Fence | None) -> tuple[int, int]:
    """Where to end this piece and resume the next: the best break in the back half, else any."""
    if len(rest) <= budget:
        return len(rest), len(rest)
    head = rest[: budget + 1]
    lowest = len(head) - len(head.lstrip()) + 1  # never a piece of whitespace only
    kinds = _break_candidates(rest, budget, start)
    for floor in (max(lowest, budget // 2), lowest):
        for positions in kinds:
            usable = [i for i in positions if i >= floor]
            if usable:
                return usable[-1], usable[-1] + 1
    cut = budget
    while cut > lowest and _FENCE_START.match(rest, cut):
        cut -= 1
    if _FENCE_START.match(rest, cut):
        cut = budget
    return cut, cut


def _break_candidates(rest: str, budget: int, start: _Fence | None) -> list[list[int]]:
    """Break positions by preference: blank lines, line ends, spaces (a separator is dropped).

    A break just after a fence opener or just before a closer would leave an empty code block
    behind, a break inside a line must not make a fence of the text after it, and one inside
    inline code or a link would show its markup: all left out.
    """
    near = rest[: budget + _LOOKAHEAD]  # enough to finish the line or span a break falls in
    empty_block = _empty_block_breaks(near, budget, start)
    blanks = [i for i in _positions(_BLANK_BREAK, near, budget) if i not in empty_block]
    lines = [i for i in _positions(_LINE_BREAK, near, budget) if i not in empty_block]
    inside = _inside_spans(near, budget)
    spaces = [
        i
        for i in _positions(_SPACE_BREAK, near, budget)
        if i not in inside and not _FENCE_START.match(near, i + 1)
    ]
    return [blanks, lines, spaces]


def _inside_spans(near: str, budget: int) -> set[int]:
    """Positions inside inline code or a link, up to `budget`."""
    inside: set[int] = set()
    for m in _UNBREAKABLE.finditer(near):
        if m.start() > budget:
            break
        inside.update(range(m.start() + 1, min(m.end() - 1, budget + 1)))
    return inside


def _positions(pattern: re.Pattern[str], near: str, budget: int) -> list[int]:
    """Where `pattern` starts, up to `budget` (a break there leaves `budget` characters)."""
    found: list[int] = []
    for m in pattern.finditer(near):
        if m.start() > budget:
            break
        found.append(m.start())
    return found


def _empty_block_breaks(near: str, budget: int, start: _Fence | None) -> set[int]:
    """The newlines that end a fence-opening line or come just before a closing one."""
    end = near.find("\n", budget + 1)
    found: set[int] = set()
    offset = 0
    for line, kind, _ in _walk(near[: end if end >= 0 else len(near)].split("\n"), start):
        if kind == "close" and offset:
            found.add(offset - 1)
        offset += len(line)
        if kind == "open":
            found.add(offset)
        offset += 1
    return found


# --- Slack mrkdwn in ------------------------------------------------------------------------------

_SLACK_REF = re.compile(r"<(?P<target>[^<>|\s]+)(?:\|(?P<label>[^<>]*))?>")


def from_mrkdwn(text: str, *, names: dict[str, str] | None = None) -> str:
    """What a Slack user wrote, as plain text for the model: `<@U1>` -> `@Alice` (from
    `names`), `<#C1|general>` -> `#general`, `<!here>` -> `@here`, `<url|label>` ->
    `label (url)`, and Slack's three entities back to characters."""
    known = names or {}

    def plain(m: re.Match[str]) -> str:
        target, label = m["target"], m["label"]
        if target.startswith("@"):
            return "@" + (label or known.get(target[1:], target[1:]))
        if target.startswith("#"):
            return "#" + (label or target[1:])
        if target.startswith("!"):
            return "@" + (label or target[1:].split("^")[0]).lstrip("@")
        return f"{label} ({target})" if label and label != target else target

    unwrapped = _SLACK_REF.sub(plain, text)
    return unwrapped.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
