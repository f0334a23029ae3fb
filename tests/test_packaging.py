"""The package as an operator installs it: what `assistant run` needs ships inside the wheel,
and the installed command runs from any folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from assistant.config import SHIPPED_PROMPTS_NOTE, Settings

REPO = Path(__file__).resolve().parents[1]

# what an installed copy loads from inside itself: its migrations and the bundled price table
SHIPPED_PARTS = (
    "import assistant.migrations as m; from assistant.pricing import PriceTable; "
    "cost = PriceTable.load(None).cost('gpt-4o-mini', prompt_tokens=10**6, completion_tokens=0); "
    "print(m.__file__, cost)"
)


def not_shipped(folder: str, names: list[str]) -> set[str]:
    """What copying the sources leaves out: the checkout's own state and caches."""
    local = {".venv", ".git", "build", "data"} if Path(folder) == REPO else set()
    return {n for n in names if n in local or n == "__pycache__" or n.endswith(("_cache", "-info"))}


def listed_packages() -> set[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return set(config["tool"]["setuptools"]["packages"])


def package_folders() -> set[str]:
    """Every folder the wheel must carry: Python packages, and data folders beside them."""
    found = set()
    for root in ("assistant", "bots"):
        for folder in [REPO / root, *(REPO / root).rglob("*")]:
            if folder.is_dir() and folder.name != "__pycache__":
                found.add(".".join(folder.relative_to(REPO).parts))
    migrations = REPO / "migrations"
    found |= {"assistant.migrations", "assistant.migrations.versions"}
    assert (migrations / "versions").is_dir()
    assert (REPO / "prompts").is_dir()
    found.add("assistant.example_prompts")  # its subfolders are data: each prompt's files
    found.add("assistant.docs")  # the product's docs: the shipped knowledge collection
    return found


def test_every_folder_of_the_code_is_listed_for_the_wheel():
    assert listed_packages() == package_folders()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the sources, installed with --target into a folder of its
    own (built once: it takes a while)."""
    work = tmp_path_factory.mktemp("wheel")
    source, built, site = work / "source", work / "dist", work / "site"
    # built from a copy: setuptools writes build/ beside the sources, and suites run in parallel
    shutil.copytree(REPO, source, ignore=not_shipped)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(built), str(source)], check=True)
    [wheel] = built.glob("*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    return site


def installed_env(site: Path, **settings: str) -> dict[str, str]:
    """The environment of an operator's shell: the installed copy, not the repository, and
    none of this machine's settings unless given."""
    names = {name.upper() for name in Settings.model_fields}
    clean = {k: v for k, v in os.environ.items() if k not in names}
    return {**clean, "PYTHONPATH": str(site), **settings}


def installed(
    site: Path, *args: str, cwd: Path, stdin: str = "", **settings: str
) -> subprocess.CompletedProcess[str]:
    """`assistant ARGS` as the installed package runs it (`python -m bots` is that command)."""
    return subprocess.run(
        [sys.executable, "-m", "bots", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=installed_env(site, **settings),
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_the_installed_package_migrates_a_database_outside_the_repository(site, tmp_path):
    env = installed_env(site, DATABASE_URL=f"sqlite:///{tmp_path}/operator.db")
    where = subprocess.run(
        [sys.executable, "-c", SHIPPED_PARTS],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    migrations, prices = where.stdout.split()
    assert migrations.startswith(str(site)) and float(prices) > 0
    upgraded = installed(
        site, "db", "upgrade", cwd=tmp_path, DATABASE_URL=f"sqlite:///{tmp_path}/operator.db"
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert "database is up to date" in upgraded.stdout
    assert (tmp_path / "operator.db").stat().st_size > 0


def test_the_installed_package_chats_from_an_empty_folder(site, tmp_path):
    """No PROMPTS_DIR, no ./prompts, no DATABASE_URL: the shipped examples answer, and the
    database is the default file in this folder, both said at start."""
    shipped = site / "assistant" / "example_prompts"
    assert sorted(shipped.glob("*/*.yaml")), "the wheel carries no example prompts"
    result = installed(site, "chat", "--fake", cwd=tmp_path, stdin="hello there\n")
    assert result.returncode == 0, result.stderr
    assert "You said: hello there" in result.stdout
    database = tmp_path / "data" / "assistant.db"
    assert result.stderr.splitlines()[:2] == [SHIPPED_PROMPTS_NOTE, f"database: {database}"]
    assert database.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing else written here
    synced = installed(site, "prompts", "sync", cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    assert f"prompt versions in {shipped}" in synced.stdout  # read from inside the package


def test_the_installed_package_runs_the_shipped_evals_from_an_empty_folder(site, tmp_path):
    if not (site / "assistant" / "example_prompts" / "assistant" / "evals.yaml").is_file():
        pytest.skip("prompts/assistant/evals.yaml does not exist (yet): no suite to run")
    result = installed(site, "eval", "run", "assistant", "--fake", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.splitlines()[0] == SHIPPED_PROMPTS_NOTE
    assert "assistant@" in result.stdout
    assert (tmp_path / "data" / "assistant.db").stat().st_size > 0
