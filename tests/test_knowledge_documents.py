"""Team knowledge, files to passages: what a source shows its reader (heading path, anchor, the
text as written), passages that fit the embedding model, and re-syncs that embed only what an
edit touched."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

from assistant.knowledge.chunks import Chunk, chunk_document
from assistant.knowledge.documents import (
    MAX_BYTES,
    Document,
    DocumentError,
    Section,
    read_document,
    read_folder,
)
from assistant.tokens import TokenCounter, load_encoder

FIXTURES = Path(__file__).parent / "fixtures" / "knowledge"


def quarter(text: str) -> int:
    """The 4-characters-a-token guess TokenCounter falls back to."""
    return (len(text) + 3) // 4


def words(text: str) -> int:
    return len(text.split())


def read(name: str) -> Document:
    return read_document(FIXTURES / name, FIXTURES)


def prose(paragraphs: list[str], *, title: str = "Notes") -> Document:
    text = "\n\n".join(paragraphs)
    section = Section(headings=("Notes",), anchor="notes", text=text)
    return Document(path="notes.md", title=title, sections=(section,), content_hash="")


def sentences(first: int, stop: int) -> str:
    return " ".join(f"Sentence {n} says something about step {n}." for n in range(first, stop))


# --- Markdown ----------------------------------------------------------------------------------


def test_markdown_headings_become_the_sources_heading_path_and_anchor() -> None:
    document = read("guides/prompts.md")
    assert document.path == "guides/prompts.md"
    assert document.title == "Prompt handbook"  # front matter's title, front matter not indexed
    assert [(s.headings, s.anchor) for s in document.sections] == [
        ((), ""),
        (("Prompts",), "prompts"),
        (("Prompts", "Switch a prompt version"), "switch-a-prompt-version"),
        (("Prompts", "Switch a prompt version", "Roll back"), "roll-back"),
        (("Prompts", "Run checks"), "run-checks"),  # a setext heading
        (("Prompts", "Switch a prompt version"), "switch-a-prompt-version-1"),  # GitHub's suffix
    ]
    assert "owner: platform-team" not in str(document.sections)
    raw = (FIXTURES / "guides/prompts.md").read_bytes()
    assert document.content_hash == hashlib.sha256(raw).hexdigest()


def test_hashes_inside_code_fences_are_code_not_headings() -> None:
    sections = {s.anchor: s.text for s in read("guides/prompts.md").sections}
    switch = sections["switch-a-prompt-version"]
    assert "# pick the version the channel should answer with" in switch
    fenced = switch.split("\n\n", 1)[1].rsplit("\n\n", 1)[0]
    assert fenced.startswith("```bash\n") and fenced.endswith("\n```")  # whole, blank line and all
    assert "# check it took" in fenced
    assert sections["roll-back"] == (
        "~~~\n# a tilde fence hides this too\nassistant prompt use support 2\n~~~"
    )


def test_a_rule_after_a_list_is_not_a_heading() -> None:
    sections = {s.anchor: s.text for s in read("guides/prompts.md").sections}
    assert sections["run-checks"].endswith("- one\n- two")


def test_markdown_title_is_the_first_h1_else_the_file_name(tmp_path: Path) -> None:
    (tmp_path / "setup.md").write_text("Intro\n\n## Install\n\nx\n\n# Setup guide\n\ny\n")
    (tmp_path / "faq.md").write_text("## Why\n\nBecause.\n")
    assert read_document(tmp_path / "setup.md", tmp_path).title == "Setup guide"
    assert read_document(tmp_path / "faq.md", tmp_path).title == "faq"


def test_heading_markup_is_dropped_from_the_path_and_the_anchor(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(
        "# The `search_knowledge` tool\n\nx\n\n## See [the guide](g.md)!  ##\n\ny\n"
    )
    sections = read_document(tmp_path / "a.md", tmp_path).sections
    assert [(s.headings[-1], s.anchor) for s in sections] == [
        ("The search_knowledge tool", "the-search_knowledge-tool"),
        ("See the guide!", "see-the-guide"),
    ]


# --- plain text and HTML -------------------------------------------------------------------------


def test_plain_text_is_one_section_of_paragraphs(tmp_path: Path) -> None:
    document = read("on-call.txt")
    [section] = document.sections
    assert (document.title, section.headings, section.anchor) == ("on-call", (), "")
    assert section.text.split("\n\n")[1] == (
        "First check the model server's health page.\nThen look at the last deploy."
    )
    (tmp_path / "dos.txt").write_bytes(b"\xef\xbb\xbfone\r\n\r\n\r\n\r\ntwo  \r\n")
    [dos] = read_document(tmp_path / "dos.txt", tmp_path).sections
    assert dos.text == "one\n\ntwo"  # byte order mark, CRLF and extra blank lines gone


def test_html_keeps_the_reading_and_drops_scripts_styles_and_navigation() -> None:
    document = read("release-notes.html")
    assert document.title == "Release notes & upgrades"
    everything = " ".join(s.text for s in document.sections)
    for dropped in ("analytics", "font-family", "trackUpgrade", "Home", "Docs"):
        assert dropped not in everything
    assert [(s.headings, s.anchor) for s in document.sections] == [
        (("Release notes",), "notes"),  # the element's id
        (("Release notes", "Upgrading"), "upgrading"),  # a slug where it has none
        (("Release notes", "Known issues"), "known-issues"),
    ]
    first = document.sections[0].text
    assert first == "Version 2.0 makes answers faster \u2014 and cheaper <really>."


def test_html_the_parser_gives_up_on_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "odd.html").write_text("<p>fine</p><![#oops]>")
    with pytest.raises(DocumentError, match=r"^odd\.html: not readable HTML"):
        read_document(tmp_path / "odd.html", tmp_path)


def test_html_pre_is_kept_verbatim_as_a_code_block() -> None:
    upgrading = read("release-notes.html").sections[1].text
    assert upgrading.endswith(
        "```\nassistant migrate\n  # keeps     its spacing\n\ndone & dusted\n```"
    )


# --- PDF ---------------------------------------------------------------------------------------


def pdf_bytes(pages: list[str], *, title: str | None = None, password: str | None = None) -> bytes:
    """A real PDF with a text layer (Helvetica), one page per string, lines split on newlines."""
    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    fonts = DictionaryObject({NameObject("/F1"): writer._add_object(font)})
    for text in pages:
        page = writer.add_blank_page(width=612, height=792)
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): fonts})
        shown = "".join(f"({line}) Tj 0 -16 Td " for line in text.split("\n"))
        content = DecodedStreamObject()
        content.set_data(f"BT /F1 12 Tf 72 720 Td {shown}ET".encode())
        page.replace_contents(content)
    if title:
        writer.add_metadata({"/Title": title})
    if password is not None:
        writer.encrypt(user_password=password, owner_password="owner")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_pdf_text_is_read_page_by_page(tmp_path: Path) -> None:
    pages = ["Runbook for outages\nRestart the worker first.", "", "Then page the team."]
    (tmp_path / "runbook.pdf").write_bytes(pdf_bytes(pages, title="Outage runbook"))
    document = read_document(tmp_path / "runbook.pdf", tmp_path)
    assert document.title == "Outage runbook"
    assert [(s.headings, s.anchor) for s in document.sections] == [
        (("Page 1",), "page=1"),
        (("Page 3",), "page=3"),  # the blank page has nothing to find
    ]
    assert document.sections[0].text == "Runbook for outages\nRestart the worker first."
    assert document.sections[1].text == "Then page the team."


def test_a_pdf_locked_only_against_editing_still_opens(tmp_path: Path) -> None:
    (tmp_path / "locked.pdf").write_bytes(pdf_bytes(["Open to read."], password=""))
    [page] = read_document(tmp_path / "locked.pdf", tmp_path).sections
    assert page.text == "Open to read."
    assert read_document(tmp_path / "locked.pdf", tmp_path).title == "locked"


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (pdf_bytes(["secret"], password="hunter2"), "needs a password; save a copy without one"),
        (b"%PDF-1.7\nthis is not really a PDF", "not a readable PDF"),
        (pdf_bytes([""]), "no text in the PDF (scanned pages?)"),
    ],
    ids=["password", "damaged", "scanned"],
)
def test_an_unreadable_pdf_says_why(tmp_path: Path, data: bytes, said: str) -> None:
    (tmp_path / "manual.pdf").write_bytes(data)
    with pytest.raises(DocumentError, match=r"^manual\.pdf: ") as raised:
        read_document(tmp_path / "manual.pdf", tmp_path)
    assert said in str(raised.value)


def test_reading_other_files_does_not_load_pypdf(tmp_path: Path) -> None:
    probe = (
        "import sys\nfrom pathlib import Path\n"
        "from assistant.knowledge.documents import read_folder\n"
        "from assistant.knowledge.chunks import chunk_document\n"
        f"docs = list(read_folder(Path({str(FIXTURES)!r})))\n"
        "print('pypdf' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert result.stdout.strip() == "False"


# --- what cannot be read -------------------------------------------------------------------------


def test_a_file_that_is_not_utf8_names_the_file_and_the_byte(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "caf\u00e9.md").write_bytes("# Menu\n\ncaf\u00e9".encode("latin-1"))
    with pytest.raises(DocumentError) as raised:
        read_document(tmp_path / "notes" / "caf\u00e9.md", tmp_path)
    assert str(raised.value) == "notes/caf\u00e9.md: not UTF-8 at byte 11; save it as UTF-8"
    assert raised.value.path == "notes/caf\u00e9.md"


def test_a_file_over_20_mb_is_refused_before_it_is_read(tmp_path: Path) -> None:
    with (tmp_path / "dump.txt").open("wb") as sparse:
        sparse.truncate(MAX_BYTES + 1)
    with pytest.raises(DocumentError, match=r"^dump.txt: too large .*over 20 MB"):
        read_document(tmp_path / "dump.txt", tmp_path)


def test_an_empty_file_is_a_document_with_nothing_in_it(tmp_path: Path) -> None:
    (tmp_path / "todo.md").write_text("\n  \n")
    document = read_document(tmp_path / "todo.md", tmp_path)
    assert (document.title, document.sections) == ("todo", ())
    assert chunk_document(document, count=quarter) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.md")
    with pytest.raises(DocumentError, match=r"^pipe\.md: not a regular file"):
        read_document(tmp_path / "pipe.md", tmp_path)


def test_read_folder_walks_in_order_past_bad_files_and_skips_hidden_ones(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES, tmp_path, dirs_exist_ok=True)
    (tmp_path / "guides" / "broken.md").write_bytes(b"\xff\xfe")
    (tmp_path / ".draft.md").write_text("# Draft")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "notes.md").write_text("# Git internals")
    (tmp_path / "diagram.png").write_bytes(b"\x89PNG")
    (tmp_path / "LOUD.MD").write_text("# Shouting")
    found = list(read_folder(tmp_path))
    assert [item.path for item in found] == [
        "LOUD.MD",
        "guides/broken.md",
        "guides/prompts.md",
        "on-call.txt",
        "release-notes.html",
    ]
    assert isinstance(found[1], DocumentError)
    assert str(found[1]) == "guides/broken.md: not UTF-8 at byte 0; save it as UTF-8"
    assert all(isinstance(item, Document) for item in found[2:])


def test_a_missing_folder_is_an_error_not_an_empty_collection(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="not a folder"):
        read_folder(tmp_path / "gone")


# --- chunks ------------------------------------------------------------------------------------


def test_a_chunk_names_its_source_and_embeds_with_its_title_and_heading() -> None:
    chunks = chunk_document(read("guides/prompts.md"), count=quarter)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    switch = chunks[2]
    assert switch.heading == "Prompts > Switch a prompt version"
    assert switch.anchor == "switch-a-prompt-version"
    assert switch.embedding_text == f"Prompt handbook\n{switch.heading}\n\n{switch.text}"
    assert switch.content_hash == hashlib.sha256(switch.embedding_text.encode()).hexdigest()
    assert switch.token_count == quarter(switch.embedding_text)
    intro = chunks[0]
    assert intro.heading == "" and intro.embedding_text == f"Prompt handbook\n\n{intro.text}"


def test_small_sections_stay_whole_and_never_share_a_chunk() -> None:
    document = read("guides/prompts.md")
    chunks = chunk_document(document, count=quarter)
    assert [c.text for c in chunks] == [s.text for s in document.sections]


def test_a_long_section_is_cut_between_paragraphs_within_the_bound() -> None:
    paragraphs = [sentences(10 * p, 10 * p + 3) for p in range(30)]
    chunks = chunk_document(prose(paragraphs), count=quarter, max_tokens=120)
    assert len(chunks) > 5
    assert all(c.token_count <= 120 for c in chunks)
    assert [p for c in chunks for p in c.text.split("\n\n")] == paragraphs  # whole, in order


def test_a_long_paragraph_is_cut_at_sentence_ends() -> None:
    paragraph = sentences(0, 40)
    chunks = chunk_document(prose([paragraph]), count=quarter, max_tokens=80)
    assert len(chunks) > 3
    assert all(c.text.startswith("Sentence ") and c.text.endswith(".") for c in chunks)
    assert " ".join(c.text for c in chunks) == paragraph


def test_without_sentences_a_paragraph_is_cut_between_words_and_a_blob_anywhere() -> None:
    unpunctuated = " ".join(f"word{n}" for n in range(300))
    blob = "QUJD" * 500
    chunks = chunk_document(prose([unpunctuated, blob]), count=quarter, max_tokens=60)
    texts = [c.text for c in chunks]
    assert all(c.token_count <= 60 for c in chunks)
    cut_words = [t for t in texts if t.startswith("word")]
    assert " ".join(cut_words) == unpunctuated  # no word split
    assert "".join(t for t in texts if t.startswith("QUJD")) == blob


def test_a_long_code_block_is_cut_at_line_ends_and_each_piece_stays_code() -> None:
    lines = [f"    step_{n}()  # what step {n} does" for n in range(80)]
    block = "```python\n" + "\n".join(lines) + "\n```"
    chunks = chunk_document(prose(["Run these:", block]), count=quarter, max_tokens=100)
    code = [c.text for c in chunks if "step_" in c.text]
    assert len(code) > 3
    assert all(text.endswith("\n```") and "```python\n" in text for text in code)
    shown = [line for text in code for line in text.split("\n") if "step_" in line]
    assert shown == lines  # every line whole, in order


def test_editing_a_paragraph_rehashes_only_the_chunk_that_holds_it() -> None:
    """What makes a re-sync embed only what changed."""
    paragraphs = [sentences(5 * p, 5 * p + 4) for p in range(40)]
    before = chunk_document(prose(paragraphs), count=quarter, max_tokens=150)
    edited = list(paragraphs)
    edited[17] = edited[17].replace("about step 88.", "about stage 8.")  # a fix, same length
    after = chunk_document(prose(edited), count=quarter, max_tokens=150)
    changed = [a for b, a in zip(before, after, strict=True) if a.content_hash != b.content_hash]
    assert [c.text for c in changed] == [c.text for c in after if "stage 8." in c.text]
    assert len(changed) == 1


def test_growing_a_paragraph_leaves_earlier_chunks_and_other_sections_alone() -> None:
    """A longer paragraph moves the boundaries after it in its own section, nowhere else."""

    def parts_document(parts: list[list[str]]) -> Document:
        sections = tuple(
            Section(headings=(f"Part {n}",), anchor=f"part-{n}", text="\n\n".join(paragraphs))
            for n, paragraphs in enumerate(parts)
        )
        return Document(path="a.md", title="A", sections=sections, content_hash="")

    parts = [[sentences(100 * n + 5 * p, 100 * n + 5 * p + 3) for p in range(12)] for n in range(3)]
    before = chunk_document(parts_document(parts), count=quarter, max_tokens=100)
    parts[1][6] += " " + sentences(1000, 1010)
    after = chunk_document(parts_document(parts), count=quarter, max_tokens=100)
    changed = [c for c in after if c.content_hash not in {c.content_hash for c in before}]
    assert changed and {c.heading for c in changed} == {"Part 1"}
    held = next(c.position for c in before if "Sentence 130 " in c.text)  # paragraph 6
    assert changed[0].position == held > 0
    assert after[:held] == before[:held]


def test_a_renamed_title_or_heading_rehashes_what_is_under_it() -> None:
    document = prose([sentences(0, 3)])
    before = chunk_document(document, count=quarter)[0]
    renamed = chunk_document(prose([sentences(0, 3)], title="Runbook"), count=quarter)[0]
    assert renamed.text == before.text and renamed.content_hash != before.content_hash


def test_identical_passages_are_kept_in_their_places() -> None:
    section = Section(headings=(), anchor="", text="Same words.")
    document = Document(path="a.md", title="A", sections=(section, section), content_hash="")
    first, second = chunk_document(document, count=quarter)
    assert (first.position, second.position) == (0, 1)
    assert first.content_hash == second.content_hash


def test_overlap_starts_a_chunk_with_the_end_of_the_one_before() -> None:
    paragraph = sentences(0, 40)
    chunks = chunk_document(prose([paragraph]), count=quarter, max_tokens=80, overlap_tokens=12)
    assert all(c.token_count <= 80 for c in chunks)
    for previous, chunk in itertools.pairwise(chunks):
        carried = chunk.text.split("\n\n", 1)[0]
        assert 0 < quarter(carried) <= 12 and previous.text.endswith(carried)


def test_a_budget_too_small_to_hold_anything_is_refused() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        chunk_document(prose(["x"]), count=quarter, max_tokens=4)
    with pytest.raises(ValueError, match="overlap_tokens"):
        chunk_document(prose(["x"]), count=quarter, max_tokens=100, overlap_tokens=60)


def test_a_heading_longer_than_the_budget_is_shortened_in_the_embedding_only() -> None:
    heading = " ".join(f"part{n}" for n in range(100))
    section = Section(headings=(heading,), anchor="", text=sentences(0, 20))
    document = Document(path="a.md", title="A", sections=(section,), content_hash="")
    chunks = chunk_document(document, count=quarter, max_tokens=64)
    assert all(c.token_count <= 64 and c.heading == heading for c in chunks)
    assert all("\u2026\n\n" in c.embedding_text for c in chunks)
    assert " ".join(c.text for c in chunks) == section.text


@pytest.fixture
def exact_counter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[TokenCounter]:
    """tiktoken's real counts, whose joins are not the sum of their parts."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-cache"))
    load_encoder.cache_clear()
    yield TokenCounter("text-embedding-3-small")
    load_encoder.cache_clear()


def test_the_bound_holds_with_the_real_tokenizer(exact_counter: TokenCounter) -> None:
    assert exact_counter.exact
    documents = [read(name) for name in ("guides/prompts.md", "release-notes.html")]
    documents.append(prose([sentences(0, 200), "\u00e9\u00e8" * 3000, "\U0001f600 " * 900]))
    for document in documents:
        for chunk in chunk_document(document, count=exact_counter.count, max_tokens=64):
            assert chunk.token_count == exact_counter.count(chunk.embedding_text) <= 64


def test_the_same_document_always_gives_the_same_chunks() -> None:
    document = read("guides/prompts.md")
    assert chunk_document(document, count=quarter, max_tokens=40) == chunk_document(
        document, count=quarter, max_tokens=40
    )


# A paragraph is words and separators; some words are longer than any budget.
_word = st.text(alphabet="abcdefghij\u00e9\u4e2d", min_size=1, max_size=12) | st.text(
    alphabet="xyz", min_size=80, max_size=400
)
_gap = st.sampled_from([" ", " ", " ", ". ", "! ", "\n", ", "])
_paragraph = st.lists(st.tuples(_word, _gap), min_size=1, max_size=60).map(
    lambda pairs: "".join(word + gap for word, gap in pairs).strip()
)


@settings(max_examples=100, deadline=None)
@given(
    paragraphs=st.lists(_paragraph, min_size=1, max_size=8),
    max_tokens=st.integers(min_value=16, max_value=200),
    by_words=st.booleans(),
)
def test_no_text_is_lost_and_every_chunk_fits(
    paragraphs: list[str], max_tokens: int, by_words: bool
) -> None:
    count = words if by_words else quarter
    document = prose(paragraphs)
    chunks: list[Chunk] = chunk_document(document, count=count, max_tokens=max_tokens)
    assert all(count(c.embedding_text) <= max_tokens for c in chunks)
    assert all(c.text.strip() == c.text and c.text for c in chunks)
    kept = "".join("".join(c.text.split()) for c in chunks)
    assert kept == "".join(document.sections[0].text.split())
