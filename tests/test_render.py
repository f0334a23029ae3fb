"""Rendering replies for chat: Slack mrkdwn, message-size pieces, and previews while streaming."""

from __future__ import annotations

import itertools
import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bots.render import (
    LINK_PIPE,
    RULE_TEXT,
    close_fences,
    from_mrkdwn,
    open_fence,
    split_message,
    to_mrkdwn,
)

# --- helpers: an independent, deliberately simple model of what a reader sees -----------------

ADDED_FENCE = re.compile(r"(`{3,}|~{3,}).*")  # a fence line, seen without its whitespace


def fence_lines(piece: str) -> int:
    """Lines that open or close a ``` block (enough for texts whose only fences are ```)."""
    count, inside = 0, False
    for line in piece.split("\n"):
        stripped = line.strip()
        if (not inside and stripped.startswith("```")) or (inside and stripped == "```"):
            count, inside = count + 1, not inside
    return count


def no_whitespace(text: str) -> str:
    return "".join(text.split())


def only_fence_lines_added(pieces: list[str], original: str) -> bool:
    """The pieces are the original's non-whitespace characters, in order, plus whole fence lines."""
    target = no_whitespace(original)
    reachable = {0}
    for line in (no_whitespace(line) for piece in pieces for line in piece.split("\n")):
        step = {at + len(line) for at in reachable if target.startswith(line, at)}
        if ADDED_FENCE.fullmatch(line):
            step |= reachable
        reachable = step
        if not reachable:
            return False
    return len(target) in reachable


def answer(code_lines: int = 150) -> str:
    """A long model answer: headings, prose, lists and a python block bigger than a message."""
    prose = "The cache is keyed by conversation and invalidated when a prompt version changes. " * 6
    code = "\n".join(
        f"    total_{i} = compute(items[{i}], factor={i})  # step {i}" for i in range(code_lines)
    )
    return (
        f"# Caching replies\n\n{prose}\n\n## Steps\n\n- read the config\n  - check the TTL\n"
        f"- warm the cache\n\n{prose}\n\n```python\ndef warm(items):\n{code}\n    return total_0\n"
        f"```\n\n{prose}\n\n```bash\npip install team-assistant\n```\n\n{prose}\n"
    )


# --- split_message ------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [2000, 500])
def test_a_10000_char_answer_splits_into_pieces_that_each_render(limit: int) -> None:
    text = answer()
    assert len(text) > 10_000
    pieces = split_message(text, limit)
    assert len(pieces) > 1
    assert all(len(piece) <= limit for piece in pieces)
    assert all(fence_lines(piece) % 2 == 0 for piece in pieces)
    assert all(close_fences(piece) == piece for piece in pieces)
    assert only_fence_lines_added(pieces, text)
    assert len(pieces) <= len(text) // (limit // 2) + 1  # no flood of tiny messages


def test_converted_then_split_as_the_slack_adapter_does_every_piece_renders() -> None:
    pieces = split_message(to_mrkdwn(answer()), 3000)
    assert len(pieces) > 1
    assert all(len(piece) <= 3000 and fence_lines(piece) % 2 == 0 for piece in pieces)
    assert only_fence_lines_added(pieces, to_mrkdwn(answer()))


def test_a_python_block_across_a_split_is_reopened_as_python() -> None:
    pieces = split_message(answer(), 2000)
    split_inside = [
        (before, after)
        for before, after in itertools.pairwise(pieces)
        if before.endswith("\n```") and after.startswith("```python\n")
    ]
    assert split_inside
    for before, after in split_inside:
        assert "total_" in before.rsplit("\n", 2)[-2]  # closed right after code, not after prose
        assert "total_" in after.split("\n", 2)[1]


def test_text_within_the_limit_comes_back_unchanged() -> None:
    text = "```python\nprint('hi')\n```\n\n  trailing space  \n"
    assert split_message(text, 50) == [text]
    assert split_message("x" * 50, 50) == ["x" * 50]


def test_empty_text_gives_no_messages() -> None:
    assert split_message("", 100) == []


def test_a_limit_below_50_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 50"):
        split_message("hello", 49)


def test_a_blank_line_is_preferred_to_a_line_end() -> None:
    text = "x" * 40 + "\n" + "y" * 5 + "\n\n" + "z" * 40
    assert split_message(text, 60) == ["x" * 40 + "\n" + "y" * 5, "z" * 40]


def test_a_line_end_is_preferred_to_a_space() -> None:
    text = "alpha beta gamma delta epsilon zeta eta theta\niota kappa lambda mu"
    assert split_message(text, 50) == [
        "alpha beta gamma delta epsilon zeta eta theta",
        "iota kappa lambda mu",
    ]


def test_words_are_not_cut_when_there_are_spaces() -> None:
    pieces = split_message("word " * 40, 50)
    assert all(set(piece.split()) == {"word"} for piece in pieces)
    assert sum(len(piece.split()) for piece in pieces) == 40


def test_a_word_longer_than_the_limit_is_cut_hard() -> None:
    assert split_message("x" * 120, 50) == ["x" * 50, "x" * 50, "x" * 20]


def test_python_indentation_survives_a_split_between_lines() -> None:
    text = "```python\n" + "def f():\n    if x:\n        return 1\n" * 6 + "```"
    pieces = split_message(text, 60)
    for piece in pieces[1:]:
        first_code_line = piece.split("\n")[1]
        assert first_code_line in ("def f():", "    if x:", "        return 1")


def test_a_split_does_not_leave_an_empty_code_block() -> None:
    text = "p" * 35 + "\n```python\n" + "y" * 60 + "\n```"
    pieces = split_message(text, 50)
    assert pieces[0] == "p" * 35
    assert pieces[1].startswith("```python\n" + "y")
    assert only_fence_lines_added(pieces, text)


def test_backticks_inside_a_line_never_become_a_fence_after_a_split() -> None:
    text = "a" * 44 + " ```python is how a block starts, said the model"
    pieces = split_message(text, 50)
    assert not any(line.lstrip().startswith("```") for p in pieces for line in p.split("\n"))
    assert only_fence_lines_added(pieces, text)


def test_links_and_inline_code_are_not_broken_at_a_space() -> None:
    text = "word " * 6 + "<https://example.com|the release notes> and `pip install --pre x` ok"
    for piece in split_message(text, 50):
        assert piece.count("<") == piece.count(">")
        assert piece.count("`") % 2 == 0


def test_a_block_left_open_by_the_model_is_closed_in_the_last_piece() -> None:
    text = "Here you go:\n\n```js\n" + "console.log(1);\n" * 10
    pieces = split_message(text, 60)
    assert pieces[-1].endswith("\n```")
    assert pieces[-1].startswith("```js\n")
    assert all(fence_lines(piece) == 2 for piece in pieces[1:])


def test_a_tilde_block_is_closed_and_reopened_with_tildes() -> None:
    text = "~~~text\n" + "line of text\n" * 10 + "~~~"
    pieces = split_message(text, 60)
    assert all(p.startswith("~~~text\n") and p.endswith("\n~~~") for p in pieces)
    assert only_fence_lines_added(pieces, text)


# Random texts whose only backticks are ``` fence lines, so `fence_lines` can count them.
words = st.text(string.ascii_letters + string.digits + ".,:;!?*_#>-()[]|&<", min_size=1, max_size=9)
long_words = st.integers(min_value=40, max_value=400).map(lambda n: "w" * n)
fences = st.sampled_from(["```", "```python", "```js", "  ```", "```c++"]).map(lambda f: f"\n{f}\n")
gaps = st.sampled_from([" ", "  ", "\t", "\n", "\n\n", "\n    ", " \n \n"])
texts = st.lists(st.one_of(words, words, gaps, gaps, long_words, fences), max_size=150).map("".join)
limits = st.integers(min_value=50, max_value=300)


@settings(max_examples=300, deadline=None)
@given(text=texts, limit=limits)
def test_every_piece_fits_renders_and_nothing_is_lost(text: str, limit: int) -> None:
    pieces = split_message(text, limit)
    if len(text) <= limit:
        assert pieces == ([text] if text else [])
        return
    assert all(0 < len(piece) <= limit for piece in pieces)
    assert all(fence_lines(piece) % 2 == 0 for piece in pieces)
    assert only_fence_lines_added(pieces, text)


any_fences = st.sampled_from(["```", "~~~", "````", "```a`b", "~~~ x y", "`" * 70, " ```py"])
any_texts = st.lists(
    st.one_of(st.text(max_size=30), any_fences.map(lambda f: f"\n{f}\n"), gaps, long_words),
    max_size=60,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=any_texts, limit=limits)
def test_any_text_splits_within_the_limit_without_losing_characters(text: str, limit: int) -> None:
    pieces = split_message(text, limit)
    assert all(len(piece) <= limit for piece in pieces)
    assert only_fence_lines_added(pieces, text)
    if len(pieces) > 1:
        assert all(close_fences(piece) == piece for piece in pieces)


# --- close_fences -------------------------------------------------------------------------------


def test_an_open_block_in_a_streaming_preview_gets_closed() -> None:
    assert close_fences("Try:\n```python\nprint(1)") == "Try:\n```python\nprint(1)\n```"
    assert close_fences("```python\nprint(1)\n") == "```python\nprint(1)\n```"


def test_balanced_text_is_left_alone() -> None:
    text = "```python\nprint(1)\n```\nand `inline` code"
    assert close_fences(text) == text
    assert close_fences("no code") == "no code"


def test_a_fence_is_closed_with_its_own_marker() -> None:
    assert close_fences("~~~\ncode") == "~~~\ncode\n~~~"
    assert close_fences("````md\n```python\nx") == "````md\n```python\nx\n````"


def test_every_moment_of_a_stream_previews_with_balanced_fences() -> None:
    text = answer(code_lines=3)
    for end in range(len(text) + 1):
        preview = close_fences(text[:end])
        assert preview.startswith(text[:end])
        assert fence_lines(preview) % 2 == 0
        assert fence_lines(to_mrkdwn(preview)) % 2 == 0


@settings(max_examples=300, deadline=None)
@given(text=any_texts)
def test_closing_fences_only_appends_and_is_idempotent(text: str) -> None:
    closed = close_fences(text)
    assert closed.startswith(text)
    assert close_fences(closed) == closed


# --- to_mrkdwn ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("This is **bold** and __also bold__.", "This is *bold* and *also bold*."),
        ("An *italic* and an _italic_ word.", "An _italic_ and an _italic_ word."),
        ("***both*** at once", "*_both_* at once"),
        ("**bold with *italic* inside**", "*bold with _italic_ inside*"),
        ("~~gone~~ but ~5 minutes", "~gone~ but ~5 minutes"),
        ("See [the docs](https://example.com/docs).", "See <https://example.com/docs|the docs>."),
        ("![a diagram](https://example.com/d.png)", "<https://example.com/d.png|a diagram>"),
        ("[**bold** link](https://x.io)", "<https://x.io|*bold* link>"),
        ("[](https://x.io)", "<https://x.io>"),
        (
            "[Wiki](https://en.wikipedia.org/wiki/Foo_(bar))",
            "<https://en.wikipedia.org/wiki/Foo_(bar)|Wiki>",
        ),
        ("[q](https://x.io/?a=1&b=2)", "<https://x.io/?a=1&amp;b=2|q>"),
        ("Visit https://example.com/a_b_c now", "Visit https://example.com/a_b_c now"),
        ("Visit https://example.com/_x_/ now", "Visit https://example.com/_x_/ now"),
        ("an autolink <https://example.com>", "an autolink <https://example.com>"),
        ("[see above](#setup)", "see above"),
        ("# Title", "*Title*"),
        ("### A **bold** word ###", "*A bold word*"),
        ("###### Six", "*Six*"),
        ("#hashtag", "#hashtag"),
        ("- one\n* two\n+ three", "• one\n• two\n• three"),
        ("- top\n  - nested\n    * deeper", "• top\n  • nested\n    • deeper"),
        ("1. first\n2. **second**", "1. first\n2. *second*"),
        ("* an *italic* item", "• an _italic_ item"),
        ("> quoted **text**\n>> nested", "> quoted *text*\n>> nested"),
        ("> - a quoted item", "> • a quoted item"),
        ("above\n\n---\n\n***\nbelow", f"above\n\n{RULE_TEXT}\n\n{RULE_TEXT}\nbelow"),
        ("| a | b<c |\n|---|---|\n| 1 & 2 | x |", "| a | b&lt;c |\n|---|---|\n| 1 &amp; 2 | x |"),
        ("if a < b && b > c", "if a &lt; b &amp;&amp; b &gt; c"),
        ("<@U123> <!channel>", "&lt;@U123&gt; &lt;!channel&gt;"),
        (r"\*not italic\* and \<tag\>", "*not italic* and &lt;tag&gt;"),
        ("Set `my_var` via my_var_name, __init__.py, obj._private_ and MAX_SIZE", None),
        ("__dunder__ alone is bold, as in CommonMark", "*dunder* alone is bold, as in CommonMark"),
        ("2 * 3 * 4 = 24 and a*b*c", "2 * 3 * 4 = 24 and a*b*c"),
        ("snake_case_words stay", "snake_case_words stay"),
        ("line one\r\nline **two**", "line one\nline *two*"),
    ],
)
def test_markdown_becomes_mrkdwn(markdown: str, mrkdwn: str | None) -> None:
    assert to_mrkdwn(markdown) == (markdown if mrkdwn is None else mrkdwn)


def test_a_pipe_or_angle_bracket_in_link_text_does_not_break_the_link() -> None:
    assert to_mrkdwn("[a|b > c](https://x.io)") == f"<https://x.io|a{LINK_PIPE}b &gt; c>"
    assert to_mrkdwn("[`a|b>`](https://x.io)") == f"<https://x.io|`a{LINK_PIPE}b&gt;`>"
    assert to_mrkdwn("[x](<https://x.io/a b|c>)") == "<https://x.io/a%20b%7Cc|x>"


def test_code_blocks_keep_their_text_without_their_language() -> None:
    markdown = (
        "Run this:\n\n```python\nx = a ** b < c & d  # **not bold**\n"
        "print(f'[link](https://x.io) <tag> _x_ <!here>')\n```\nDone."
    )
    assert to_mrkdwn(markdown) == (  # entities show as the characters; <!here> never pings
        "Run this:\n\n```\nx = a ** b &lt; c &amp; d  # **not bold**\n"
        "print(f'[link](https://x.io) &lt;tag&gt; _x_ &lt;!here&gt;')\n```\nDone."
    )


def test_tilde_and_long_fences_become_slack_fences() -> None:
    assert to_mrkdwn("~~~sh\nls *.py\n~~~") == "```\nls *.py\n```"
    assert to_mrkdwn("````md\n**x**\n````") == "```\n**x**\n```"


def test_a_fence_indented_in_a_list_keeps_the_code_unindented() -> None:
    markdown = "1. Install:\n   ```bash\n   pip install x\n     --pre\n   ```"
    assert to_mrkdwn(markdown) == "1. Install:\n```\npip install x\n  --pre\n```"


def test_inline_code_keeps_its_markup() -> None:
    markdown = "Use `a**b < c & [x](https://y.io)` then ``tick ` inside`` **now**"
    assert to_mrkdwn(markdown) == (
        "Use `a**b &lt; c &amp; [x](https://y.io)` then ``tick ` inside`` *now*"
    )


@pytest.mark.parametrize(
    "partial",
    ["**bold", "*it", "[link](https://exa", "[link", "`code", "```py", "~~x", "***", "__a_", "!["],
)
def test_half_written_markup_from_a_stream_loses_nothing(partial: str) -> None:
    assert no_whitespace(to_mrkdwn(partial)) in (partial, "```", RULE_TEXT)


@settings(max_examples=300, deadline=None)
@given(text=st.text(string.ascii_letters + string.digits + " \n.,;:!?'()", max_size=200))
def test_plain_prose_is_unchanged(text: str) -> None:
    assert to_mrkdwn(text) == text


@settings(max_examples=300, deadline=None)
@given(
    code=st.lists(
        st.text(max_size=40).filter(lambda s: "```" not in s and not {"\n", "\r"} & set(s))
    ),
    prose=st.text(max_size=80),
)
def test_code_block_content_survives_any_surrounding_prose(code: list[str], prose: str) -> None:
    body = "\n".join(code)
    markdown = f"{prose}\n```python\n{body}\n```\n{prose}"
    if fence_lines(prose) or "~~~" in prose:
        return  # the prose itself opened a block; a different text than this test is about
    escaped = body.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert f"\n```\n{escaped}\n```\n" in to_mrkdwn(markdown)


@settings(max_examples=300, deadline=None)
@given(text=any_texts)
def test_any_text_converts_without_raising(text: str) -> None:
    assert isinstance(to_mrkdwn(text), str)


@pytest.mark.parametrize(
    ("mrkdwn", "plain"),
    [
        ("is a &lt; b &amp;&amp; c &gt; d?", "is a < b && c > d?"),
        ("ask <@U2> about it", "ask @Bob about it"),
        ("ask <@U9>", "ask @U9"),
        ("see <#C1|general> and <!here>", "see #general and @here"),
        ("<!subteam^S1|@ops> please", "@ops please"),
        ("read <https://x.io/a?b=1&amp;c=2|the docs>", "read the docs (https://x.io/a?b=1&c=2)"),
        ("read <https://x.io>", "read https://x.io"),
        ("a &amp;lt; stays", "a &lt; stays"),
    ],
)
def test_what_a_slack_user_wrote_reaches_the_model_as_plain_text(mrkdwn: str, plain: str):
    assert from_mrkdwn(mrkdwn, names={"U2": "Bob"}) == plain


def test_the_open_fence_is_named_with_its_language():
    assert open_fence("text\n```python\nx = 1\n") == ("```python", "```")
    assert open_fence("text\n```python\nx = 1\n```\n") is None
    assert open_fence("~~~\ncode") == ("~~~", "~~~")
