"""Every command transcript in README.md and docs/ is what the command prints today: each is
rerun (scripts/transcripts.py) and compared, milliseconds, dates and table spacing aside."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("transcripts", REPO / "scripts/transcripts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("transcripts", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_transcript_in_the_docs_is_what_its_command_prints() -> None:
    script = load_script()
    stale = []
    for name in script.DOCUMENTS:
        stale += script.refresh(REPO / name, check=True)
    assert stale == [], "stale transcripts (run ./dev docs, then read the diff):\n" + "\n".join(
        stale
    )


def test_the_check_ignores_timings_but_not_words() -> None:
    script = load_script()
    before = "first token 26 ms, total 34 ms on 2026-11-24 13:47:18\n┃ a  ┃"
    assert script.masked(before) == script.masked(
        "first token 7 ms, total 120 ms on 2027-01-02 09:00:00\n┃ a ┃"
    )
    assert script.masked(before) != script.masked(before.replace("total", "overall"))
