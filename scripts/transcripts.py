"""Regenerate (or check) every command transcript in README.md and docs/*.md by running it.

A transcript is a fenced block right after a `<!-- transcript -->` comment whose first line is
`$ COMMAND`. The command runs in a scratch folder (its own database; `prompts` is this
repository's) with none of the caller's settings (only PATH, HOME and the locale pass), as the
user `ana`, 100 columns wide. For `chat`, the block's `you> ` lines are what is typed.
Commands of one file share the scratch folder in order, so a file can tell a story (an eval
run, then the gate using it); a `<!-- transcript setup: COMMAND -->` comment runs a command
without showing it. A
`<!-- transcript server: like=llamacpp -->` comment starts a fake model server for the next
transcript, reached where the command says 127.0.0.1:8808.

    ./dev docs            rewrite the transcripts with what the commands print now
    ./dev docs --check    exit 1 naming each transcript that no longer matches

The check ignores what changes from run to run: milliseconds, dates and times, and the
spacing of tables (a column widens when a latency gains a digit).
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs/operations.md", "docs/prompts.md")
ASSISTANT = Path(sys.executable).parent / "assistant"
SHOWN_HOME = "~/team-assistant"  # the scratch folder, as the transcripts show it
PLACEHOLDER_SERVER = "127.0.0.1:8808"
TYPED = "you> "
_BLOCK = re.compile(
    r"(?P<marks>(?:<!-- transcript[^>]*-->\n)+)(?P<fence>```[a-z]*\n)(?P<body>.*?)(?P<end>^```$)",
    re.DOTALL | re.MULTILINE,
)
_MARK = re.compile(r"<!-- transcript(?: (?P<kind>setup|server): (?P<value>.*?))? -->")
_KEPT = frozenset({"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "SYSTEMROOT"})
_VOLATILE = (
    (re.compile(r"\d[\d,.]* ?ms\b"), "N ms"),
    (re.compile(r"\d{4}-\d{2}-\d{2}"), "DATE"),
    (re.compile(r"\d{2}:\d{2}(:\d{2})?"), "TIME"),
    (re.compile(r"\b(Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day\b"), "DAY"),
    (re.compile(r"[─━═┄]+"), "-"),
    (re.compile(r"\s+"), " "),
)


@dataclass
class Transcript:
    document: Path
    command: str
    typed: list[str]
    shown: str  # the block's text below the command
    setup: list[str] = field(default_factory=list)
    server: str | None = None  # the fake model server's personality, when one is started
    start: int = 0  # where the block's body begins and ends in the document
    end: int = 0


def find(document: Path) -> list[Transcript]:
    text = document.read_text(encoding="utf-8")
    found = []
    for match in _BLOCK.finditer(text):
        command, _, shown = match["body"].partition("\n")
        if not command.startswith("$ "):
            raise SystemExit(f"{document}: a transcript block must start with '$ COMMAND'")
        transcript = Transcript(
            document=document,
            command=command[2:],
            typed=[line[len(TYPED) :] for line in shown.splitlines() if line.startswith(TYPED)],
            shown=shown,
            start=match.start("body"),
            end=match.start("end"),
        )
        for mark in _MARK.finditer(match["marks"]):
            if mark["kind"] == "setup":
                transcript.setup.append(mark["value"])
            elif mark["kind"] == "server":
                transcript.server = mark["value"].removeprefix("like=")
        found.append(transcript)
    return found


async def produce(transcript: Transcript, scratch: Path) -> str:
    """The block's text as the command prints it now: the command line, then its output."""
    for command in transcript.setup:
        await _run(command, scratch, typed=[])
    if transcript.server is None:
        output = await _run(transcript.command, scratch, typed=transcript.typed)
    else:
        from assistant.testing import FakeLlm

        async with FakeLlm(like=transcript.server) as server:
            where = server.base_url.removeprefix("http://").removesuffix("/v1")
            command = transcript.command.replace(PLACEHOLDER_SERVER, where)
            output = (await _run(command, scratch, typed=[])).replace(where, PLACEHOLDER_SERVER)
    return f"$ {transcript.command}\n{output}"


async def _run(command: str, scratch: Path, *, typed: list[str]) -> str:
    words = shlex.split(command)
    env = {k: v for k, v in os.environ.items() if k in _KEPT}  # no setting of the caller's
    env.update(COLUMNS="100", USER="ana", LOGNAME="ana", TZ="UTC")
    while "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    if words[0] not in ("./dev", ".venv/bin/assistant", "assistant"):
        raise SystemExit(f"a transcript runs the assistant, not {words[0]!r}: {command}")
    process = await asyncio.create_subprocess_exec(
        str(ASSISTANT),
        *words[1:],
        cwd=scratch,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    stdin = "".join(f"{line}\n" for line in typed).encode()
    try:
        printed, _ = await asyncio.wait_for(process.communicate(stdin), timeout=120)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise SystemExit(f"no answer in 120 s: {command}") from None
    return _as_seen(printed.decode(), typed).replace(str(scratch), SHOWN_HOME)


def _as_seen(output: str, typed: list[str]) -> str:
    """What a person at the terminal sees: each line typed after its prompt (a pipe does not
    echo it), and no prompt left waiting at the end of input."""
    pieces = output.split(TYPED)
    seen = pieces[0]
    for line, piece in zip([*typed, None], pieces[1:], strict=False):
        seen += TYPED + (f"{line}\n" if line is not None else "") + piece
    return seen.rstrip().removesuffix(TYPED.rstrip()).rstrip() + "\n"


def masked(text: str) -> str:
    for pattern, stand_in in _VOLATILE:
        text = pattern.sub(stand_in, text)
    return text.strip()


def refresh(document: Path, *, check: bool) -> list[str]:
    """Rewrite the document's transcripts (or, checking, name the stale ones)."""
    transcripts = find(document)
    if not transcripts:
        return []
    text = document.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="transcripts-") as folder:
        scratch = Path(folder)
        (scratch / "prompts").symlink_to(REPO / "prompts")
        produced = asyncio.run(_produce_all(transcripts, scratch))
    stale = []
    for transcript, now in reversed(list(zip(transcripts, produced, strict=True))):
        before = f"$ {transcript.command}\n{transcript.shown}"
        if masked(before) != masked(now):
            stale.insert(0, f"{document.relative_to(REPO)}: $ {transcript.command}")
        text = text[: transcript.start] + now + text[transcript.end :]
    if not check:
        document.write_text(text, encoding="utf-8")
    return stale


async def _produce_all(transcripts: list[Transcript], scratch: Path) -> list[str]:
    return [await produce(t, scratch) for t in transcripts]  # in order: they share the folder


def main(check: bool) -> int:
    stale = [line for name in DOCUMENTS for line in refresh(REPO / name, check=check)]
    for line in stale:
        print(f"{'stale' if check else 'updated'}: {line}")
    if check and stale:
        print("Run ./dev docs to regenerate them, and read the difference before committing.")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(check="--check" in sys.argv[1:]))
