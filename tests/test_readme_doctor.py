"""The README's `assistant doctor` transcript is what the command prints today: rerun against
the same fake server, it must match (the port and the milliseconds aside)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from assistant.testing import FakeLlm

REPO = Path(__file__).resolve().parents[1]
COMMAND = "$ OPENAI_BASE_URL=http://127.0.0.1:8808/v1 .venv/bin/assistant doctor\n"


def normalized(text: str, base_url: str) -> str:
    text = text.replace(base_url, "http://127.0.0.1:8808/v1")
    return re.sub(r"first after \d+ ms", "first after N ms", text).strip()


async def test_the_readme_shows_what_doctor_prints(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index(COMMAND) + len(COMMAND)
    shown = readme[start : readme.index("```", start)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "SLACK_"))}
    async with FakeLlm(like="llamacpp") as server:  # as `assistant fake-llm --like llamacpp`
        env.update(
            OPENAI_BASE_URL=server.base_url,
            COLUMNS="100",
            DATABASE_URL=f"sqlite:///{tmp_path}/d.db",
            PROMPTS_DIR=str(REPO / "prompts"),
        )
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "assistant"),
            "doctor",
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
        )
        printed, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0
    url = server.base_url + "/"
    assert normalized(printed.decode(), url) == normalized(shown, "http://127.0.0.1:8808/v1/"), (
        "README.md's doctor transcript is stale: rerun it (see the command above the block)"
    )
