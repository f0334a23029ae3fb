"""The package as an operator installs it: what `assistant run` needs ships inside the wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

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
    return found


def test_every_folder_of_the_code_is_listed_for_the_wheel():
    assert listed_packages() == package_folders()


def test_the_installed_package_migrates_a_database_outside_the_repository(tmp_path):
    source, built, site = tmp_path / "source", tmp_path / "dist", tmp_path / "site"
    # built from a copy: setuptools writes build/ beside the sources, and suites run in parallel
    shutil.copytree(REPO, source, ignore=not_shipped)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(built), str(source)], check=True)
    [wheel] = built.glob("*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(site),  # the installed copy, not the repository
        "DATABASE_URL": f"sqlite:///{tmp_path}/operator.db",
    }
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
    upgraded = subprocess.run(
        [sys.executable, "-m", "bots", "db", "upgrade"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert "database is up to date" in upgraded.stdout
    assert (tmp_path / "operator.db").stat().st_size > 0
