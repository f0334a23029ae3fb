"""Hostile review of team knowledge: each test fails on 9c484d9 and names the harm a user or an
operator would see."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.knowledge.embeddings import Embedder
from assistant.knowledge.service import Knowledge
from assistant.llm import OpenAIChatModel
from assistant.pricing import PriceTable
from assistant.store import Store
from assistant.testing import FakeLlm
from assistant.testing.scripts import Fail
from tests.conftest import write_prompt

ASSISTANT = [str(Path(sys.executable).parent / "assistant")]


@pytest.fixture
def knowledge(db: Store, model: OpenAIChatModel) -> Knowledge:
    embedder = Embedder(
        model.client, model="fake-embedding", prices=PriceTable.load(), backoff_base=0.01
    )
    return Knowledge(db, embedder)


async def _add(knowledge: Knowledge, name: str, folder: Path):
    return await knowledge.store.add_collection(
        name, str(folder), link=None, description="", origin="cli", actor="t", surface="cli"
    )


async def test_a_symlink_in_the_folder_does_not_index_a_file_outside_it(
    db: Store, knowledge: Knowledge, tmp_path: Path
) -> None:
    """Harm: anyone who can drop a file into a synced folder (a shared drive, a git checkout
    of the wiki) can plant `notes.txt -> /etc/passwd` (or the bot's own .env), and the
    assistant then quotes that file to every channel the collection is bound to."""
    outside = tmp_path / "private.txt"
    outside.write_text("OPENAI_API_KEY=sk-live-hunter2 bastion password\n", encoding="utf-8")
    folder = tmp_path / "handbook"
    folder.mkdir()
    (folder / "intro.md").write_text("# Intro\n\nWelcome to the team.\n", encoding="utf-8")
    os.symlink(outside, folder / "notes.txt")
    info = await _add(knowledge, "handbook", folder)

    await knowledge.sync(info)

    found = await knowledge.search("bastion password", collections=[info], account=lambda _: None)
    assert not [hit.document for hit in found.hits if "hunter2" in hit.text]


async def test_a_collection_indexed_without_embeddings_is_embedded_once_they_are_available(
    db: Store, knowledge: Knowledge, tmp_path: Path
) -> None:
    """Harm: an operator who first syncs without EMBEDDING_MODEL (or whose server was started
    without --embeddings) and then configures it gets a sync that reports success, embeds
    nothing, and search stays keyword-only forever (until every file is edited)."""
    folder = tmp_path / "handbook"
    folder.mkdir()
    (folder / "vpn.md").write_text("# VPN\n\nRotate the keys quarterly.\n", encoding="utf-8")
    info = await _add(knowledge, "handbook", folder)
    await Knowledge(db, None).sync(info)

    info = await knowledge.store.collection("handbook")
    assert info is not None
    report = await knowledge.sync(info)

    after = await knowledge.store.collection("handbook")
    assert after is not None
    assert (report.embedded, after.embedded) == (1, 1), (report, after)


async def test_a_passing_embeddings_outage_does_not_leave_documents_without_vectors_forever(
    db: Store, knowledge: Knowledge, fake_llm: FakeLlm, tmp_path: Path
) -> None:
    """Harm: a re-sync during a brief 404 from the embeddings server (a proxy reloading, a
    model being swapped) stores the edited document with its new hash and no vectors; every
    later sync skips it as unchanged, so that document is never found by meaning again."""
    folder = tmp_path / "handbook"
    folder.mkdir()
    (folder / "vpn.md").write_text("# VPN\n\nRotate the keys quarterly.\n", encoding="utf-8")
    (folder / "pay.md").write_text("# Pay\n\nSalaries are paid monthly.\n", encoding="utf-8")
    info = await _add(knowledge, "handbook", folder)
    await knowledge.sync(info)
    (folder / "pay.md").write_text("# Pay\n\nSalaries are paid weekly now.\n", encoding="utf-8")
    fake_llm.script_embeddings(Fail(status=404, message="model not found"))
    await knowledge.sync(info)  # keywords only for now: said so, fine

    report = await knowledge.sync(info)  # the server is back

    after = await knowledge.store.collection("handbook")
    assert after is not None
    assert after.embedded == after.chunks, (report, after)


def test_one_collection_with_a_missing_folder_does_not_stop_the_others_syncing(
    tmp_path: Path,
) -> None:
    """Harm: `assistant knowledge sync` stops at the first collection whose folder moved
    (exit 2): every collection after it in name order stays unindexed or stale, and the
    error's advice (`assistant knowledge add aaa PATH`) is undone by the next sync, which
    takes knowledge.yaml's path again."""
    good = tmp_path / "good"
    good.mkdir()
    (good / "vpn.md").write_text("# VPN\n\nRotate the keys quarterly.\n", encoding="utf-8")
    prompts = tmp_path / "prompts"
    write_prompt(prompts)
    (prompts / "knowledge.yaml").write_text(
        "collections:\n  aaa:\n    path: ../missing\n  zzz:\n    path: ../good\n",
        encoding="utf-8",
    )
    env = _env(tmp_path, prompts)

    _cli(tmp_path, env, "knowledge", "sync", "--fake")

    shown = _cli(tmp_path, env, "knowledge", "show", "zzz")
    assert "documents: 1," in shown.stdout, shown.stdout + shown.stderr


def _env(tmp_path: Path, prompts: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SLACK_"))}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path}/a.db", PROMPTS_DIR=str(prompts))
    return env


def _cli(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ASSISTANT, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )


def test_a_bad_collection_name_is_one_clear_line_not_a_traceback(tmp_path: Path) -> None:
    """Harm: `assistant knowledge add "Team Handbook" ./docs` prints a 40-line traceback
    instead of the sentence check_name already composes."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (tmp_path / "p").mkdir()
    env = _env(tmp_path, tmp_path / "p")

    result = _cli(tmp_path, env, "knowledge", "add", "Team Handbook", str(folder), "--fake")

    assert "Traceback" not in result.stderr, result.stderr
    assert "is not a collection name" in result.stderr
