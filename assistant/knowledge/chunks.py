"""Sections → passages small enough to embed, each hashed, so that a re-sync embeds only the
passages an edit touched.

What is bounded: `count(chunk.embedding_text) <= max_tokens` for every chunk, the title and
heading lines included, since that whole text is what the embedding model must accept. The
title and heading may take at most half of it (longer ones are shortened in the embedding text
only; `Chunk.heading` stays whole).

What a re-sync embeds again: the passages whose text changed, and, when an edit makes a
paragraph longer or shorter, the passages after it in the same section (each is filled as far
as it goes, so their boundaries move); never another section's. Content-defined boundaries
(ending passages at hash-chosen paragraphs, as rsync cuts files) were measured and left out:
they cut that re-embedding by a third to a half (a fraction of a cent of embedding) and cost
11-18% more, smaller passages in every search.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from assistant.knowledge.documents import (
    Document,
    closes_fence,
    opening_fence,
    split_paragraphs,
)

MIN_TOKENS = 16  # room for a shortened title and heading and a few words
_PARAGRAPHS = "\n\n"
_CHARS_A_TOKEN_AT_MOST = 16  # beyond this many characters a token, a text is counted whole
# Where a paragraph too long for one passage is cut, the coarsest that makes its pieces fit: after
# a sentence (". ", "?) ", or an ideographic full stop, which needs no space), before a line, or
# between words. Each cut falls before the whitespace, which leads the next piece as a tokenizer
# attaches a space to the word after it: a piece counted alone counts as it does in a passage.
_SENTENCE_ENDS = re.compile(
    r"[.!?\u2026][\"'\u201d\u2019)\]]*(?=\s)|[\u3002\uff01\uff1f][\u300d\u300f\u201d\u2019)]*"
)
_LINE_ENDS = re.compile(r"(?=\n)")
_WORD_ENDS = re.compile(r"(?<=\S)(?=\s)")
_BOUNDARIES = (_SENTENCE_ENDS, _LINE_ENDS, _WORD_ENDS)
_LINES = _BOUNDARIES.index(_LINE_ENDS)
_NEARLY_FULL = 1 / 32  # a cut mid-word may leave this much of the limit unused

Count = Callable[[str], int]


class _Unit(NamedTuple):
    """A paragraph, or a piece of one, as the packer sees it."""

    join: str | None  # what joins it to the unit before it in a passage; None starts a passage
    text: str
    tokens: int


@dataclass(frozen=True, kw_only=True)
class Chunk:
    position: int  # 0-based order in the document
    heading: str  # the section's headings joined by " > " ("" when none)
    anchor: str
    text: str
    token_count: int  # count(embedding_text)
    content_hash: str  # sha256 hex of embedding_text: a renamed heading or title re-embeds
    embedding_text: str  # title, heading (when any), a blank line, then text


def chunk_document(
    document: Document, *, count: Count, max_tokens: int = 350, overlap_tokens: int = 0
) -> list[Chunk]:
    """The document's passages in order; none crosses a section boundary.

    Args:
        count: tokens in a text, as the embedding model counts them (`TokenCounter.count`).
        max_tokens: the most tokens any chunk's `embedding_text` holds.
        overlap_tokens: words from the end of the previous passage of the same section to start
            each passage with (at most max_tokens // 4), so a sentence cut at a boundary is
            found from either side.
    """
    if max_tokens < MIN_TOKENS:
        raise ValueError(f"max_tokens must be at least {MIN_TOKENS}, not {max_tokens}")
    if not 0 <= overlap_tokens <= max_tokens // 4:
        raise ValueError(f"overlap_tokens must be between 0 and {max_tokens // 4}")
    chunks: list[Chunk] = []
    for section in document.sections:
        heading = " > ".join(section.headings)
        lead = _lead(document.title, heading, count, max_tokens)
        limit = max(1, max_tokens - count(lead) - overlap_tokens)
        bodies = _section_bodies(section.text, limit, count)
        if overlap_tokens:
            bodies = _overlapped(bodies, overlap_tokens, count)
        for body, tokens in _fitted(bodies, lead, count, max_tokens):
            embedding_text = lead + body
            chunk = Chunk(
                position=len(chunks),
                heading=heading,
                anchor=section.anchor,
                text=body,
                token_count=tokens,
                content_hash=hashlib.sha256(embedding_text.encode()).hexdigest(),
                embedding_text=embedding_text,
            )
            chunks.append(chunk)
    return chunks


def _lead(title: str, heading: str, count: Count, max_tokens: int) -> str:
    """What every passage of a section starts with in its embedding text: the title and
    heading lines and a blank line, shortened to half the budget."""
    context = "\n".join(part for part in (title, heading) if part)
    half = max_tokens // 2
    if count(context + _PARAGRAPHS) > half:

        def shortened(text: str) -> int:
            return count(text + "…" + _PARAGRAPHS)

        context = context[: _longest_prefix(context, shortened, half, 4 * half)].rstrip() + "…"
    return context + _PARAGRAPHS if context else ""


def _section_bodies(text: str, limit: int, count: Count) -> list[str]:
    """Whole paragraphs packed up to `limit` tokens. A paragraph longer than that starts a
    passage of its own (read from its first words, and its growing leaves the passage before it
    alone), cut in pieces; its last piece packs with the paragraphs after it."""
    units: list[_Unit] = []
    for paragraph in split_paragraphs(text):
        tokens = _tokens_within(paragraph, limit, count)
        if tokens is not None:
            units.append(_Unit(_PARAGRAPHS, paragraph, tokens))
        elif opening_fence(paragraph.split("\n", 1)[0]) is not None:
            pieces = _code_pieces(paragraph, limit, count)
            units += [_Unit(None, piece, count(piece)) for piece in pieces]
        else:
            cut = _pieces(paragraph, limit, count, level=0)
            units += [_Unit("" if n else None, *piece) for n, piece in enumerate(cut)]
    runs = (run.strip() for run in _pack(units, limit, count))
    return [run for run in runs if run]


def _pieces(text: str, limit: int, count: Count, *, level: int) -> list[tuple[str, int]]:
    """`text` cut at the coarsest boundaries (sentence, line, word) that give pieces of at most
    `limit` tokens, and mid-word only where one word is longer than that, each with its tokens.
    The pieces joined give `text` back exactly."""
    tokens = _tokens_within(text, limit, count)
    if tokens is not None:
        return [(text, tokens)]
    if level == len(_BOUNDARIES):
        return [(piece, count(piece)) for piece in _hard_cut(text, count, limit)]
    pieces: list[tuple[str, int]] = []
    for part in _split_at(text, _BOUNDARIES[level]):
        pieces += _pieces(part, limit, count, level=level + 1)
    return pieces


def _code_pieces(block: str, limit: int, count: Count) -> list[str]:
    """A code block too long for one passage, cut at line ends, each piece fenced again so it
    still reads as code. Each piece is as long as fits, so no two of them share a passage."""
    lines = block.split("\n")
    opener = lines[0]
    fence = opening_fence(opener) or "```"
    closed = len(lines) > 1 and closes_fence(lines[-1], fence)
    code = "\n".join(lines[1:-1] if closed else lines[1:])
    inner = max(1, limit - count(f"{opener}\n\n{fence}"))
    units = [_Unit("", *piece) for piece in _pieces(code, inner, count, level=_LINES)]
    packed = (piece.strip("\n").rstrip() for piece in _pack(units, inner, count))
    return [f"{opener}\n{piece}\n{fence}" for piece in packed if piece.strip()]


def _split_at(text: str, boundary: re.Pattern[str]) -> list[str]:
    """`text` in consecutive parts, each ending where a match of `boundary` ends."""
    parts: list[str] = []
    start = 0
    for match in boundary.finditer(text):
        if match.end() > start:
            parts.append(text[start : match.end()])
            start = match.end()
    if start < len(text):
        parts.append(text[start:])
    return parts


def _tokens_within(text: str, limit: int, count: Count) -> int | None:
    """The tokens of `text` if they are at most `limit`, else None, without counting a long
    text whole: a start of it already over the limit settles it (a tokenizer can take seconds
    over a megabyte of base64)."""
    start = text[: _CHARS_A_TOKEN_AT_MOST * limit]
    if len(start) < len(text) and count(start) > limit:
        return None
    tokens = count(text)
    return tokens if tokens <= limit else None


def _pack(units: list[_Unit], limit: int, count: Count) -> list[str]:
    """Consecutive units joined, as many in each run as fit in `limit` tokens (a unit whose join
    is None starts a run)."""
    packer = _Packer(units, limit, count)
    runs: list[str] = []
    start = 0
    while start < len(units):
        end = packer.end(start)
        runs.append(packer.text(start, end))
        start = end
    return runs


class _Packer:
    """Where runs end, found by counting the joined text a few times: each guess from the units'
    own counts, scaled by how far off the last guess was (a word counted alone counts more than
    within a sentence, a join can count less than its parts)."""

    def __init__(self, units: list[_Unit], limit: int, count: Count) -> None:
        self._units = units
        self._limit = limit
        self._count = count
        self._glued = [(unit.join or "") + unit.text for unit in units]  # as it follows another
        join_tokens = {"": 0, _PARAGRAPHS: count(_PARAGRAPHS)}
        self._sums = [0]  # tokens of units and their joins: _sums[i] adds up units[:i]
        for unit in units:
            self._sums.append(self._sums[-1] + join_tokens.get(unit.join or "", 0) + unit.tokens)
        self._bounds = [len(units)] * len(units)  # the furthest a run from each unit may reach
        for index in range(len(units) - 2, -1, -1):
            follower = units[index + 1]
            self._bounds[index] = index + 1 if follower.join is None else self._bounds[index + 1]

    def text(self, start: int, end: int) -> str:
        return self._units[start].text + "".join(self._glued[start + 1 : end])

    def end(self, start: int) -> int:
        good, bad = start + 1, self._bounds[start] + 1  # ends known to fit, and not to
        probe = self._furthest(start, self._limit)
        while bad - good > 1:
            if not good < probe < bad:  # no help from the estimate: gallop, then bisect
                probe = min((good + bad) // 2, good + (good - start))
            used = self._count(self.text(start, probe))
            if used <= self._limit:
                good = probe
            else:
                bad = probe
            estimated = self._sums[probe] - self._sums[start + 1] + self._units[start].tokens
            predicted = self._furthest(start, self._limit * estimated / max(used, 1))
            if used <= self._limit and predicted <= probe:
                break  # as full as the estimate can tell
            probe = predicted
        return good

    def _furthest(self, start: int, budget: float) -> int:
        """The end of the longest run from `start` whose units' own counts add up to `budget`."""
        offset = self._sums[start + 1] - self._units[start].tokens
        end = bisect.bisect_right(self._sums, budget + offset, lo=start + 1) - 1
        return min(max(end, start + 1), self._bounds[start])


def _hard_cut(text: str, size: Count, limit: int) -> list[str]:
    """`text` in pieces of at most `limit` tokens by `size`, cut anywhere (a base64 blob has no
    better place), each sized from the one before."""
    pieces: list[str] = []
    guess = 4 * limit
    while text:
        guess = _longest_prefix(text, size, limit, guess)
        pieces.append(text[:guess])
        text = text[guess:]
    return pieces


def _longest_prefix(text: str, size: Count, limit: int, guess: int) -> int:
    """How many characters from the start of `text` fit in `limit` tokens, nearly as many as
    could (at least one, so cutting moves on): each probe sized in proportion to the last one's
    tokens, so a few counts settle it where bisecting would take a dozen."""
    good, bad = 1, len(text) + 1  # lengths known to fit (one is taken regardless), not to fit
    probe = max(1, min(len(text), guess))
    while bad - good > 1:
        used = size(text[:probe])
        if used <= limit:
            good = probe
            if probe == len(text) or used >= limit * (1 - _NEARLY_FULL):
                break
        else:
            bad = probe
        predicted = probe * limit // max(used, 1)
        probe = predicted if good < predicted < bad else (good + bad) // 2
    return good


def _overlapped(bodies: list[str], overlap_tokens: int, count: Count) -> list[str]:
    """Each passage after the first begins with the last words of the one before it, unless
    that one ends in code (its words would read as a broken fence)."""
    result = bodies[:1]
    for previous, body in itertools.pairwise(bodies):
        last_line = previous.rsplit("\n", 1)[-1]
        fence = opening_fence(last_line)
        if fence is not None and closes_fence(last_line, fence):
            result.append(body)
            continue
        words = previous.split()
        taken = _longest_suffix(words, lambda tail: count(" ".join(tail)) <= overlap_tokens)
        result.append(f"{' '.join(words[-taken:])}{_PARAGRAPHS}{body}" if taken else body)
    return result


def _longest_suffix(words: list[str], fits: Callable[[list[str]], bool]) -> int:
    good, bad = 0, len(words) + 1
    while bad - good > 1:
        middle = (good + bad) // 2
        if fits(words[-middle:]):
            good = middle
        else:
            bad = middle
    return good


def _fitted(bodies: list[str], lead: str, count: Count, max_tokens: int) -> list[tuple[str, int]]:
    """The bodies with their embedding texts' tokens, each counted as the embedding model will
    count it; the rare one over the limit (a tokenizer counting a join as more than its parts)
    is cut to fit."""
    fitted: list[tuple[str, int]] = []
    for body in bodies:
        tokens = count(lead + body)
        if tokens <= max_tokens:
            fitted.append((body, tokens))
            continue
        for piece in _hard_cut(body, lambda piece: count(lead + piece), max_tokens):
            if piece.strip():
                fitted.append((piece.strip(), count(lead + piece.strip())))
    return fitted
