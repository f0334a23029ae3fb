"""Every benchmark of the performance goals, run in turn, each figure printed next to its goal.

    ./dev bench [--quick] [--only slack discord ...] [--log DIR]

Each benchmark runs as its own process (its full output goes to DIR/<name>.log); its last line
is JSON, from which the figures below are read. `--quick` runs each at a small size (a few
minutes in all): the figures then show the shape, not the goals' sizes. The goals are the
ones issue 14 set; they were written for a machine about three times faster than the 2-core
machines these benchmarks were first recorded on, so `benchmarks/RESULTS.md` compares runs
side by side in one session as well.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Goal:
    label: str
    read: Callable[[dict[str, Any]], Any]  # the figure, from the benchmark's JSON
    met: Callable[[Any], bool]
    goal: str
    unit: str = ""


@dataclass(frozen=True)
class Bench:
    name: str
    script: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    goals: Callable[[dict[str, Any]], list[Goal]]


def at_most(limit: float) -> Callable[[Any], bool]:
    return lambda value: value is not None and value <= limit


def yes(value: Any) -> bool:
    return value is True


def load_goals(prefix: str) -> Callable[[dict[str, Any]], list[Goal]]:
    """The goals of a 200-conversation load (Slack's or Discord's)."""

    def goals(_: dict[str, Any]) -> list[Goal]:
        return [
            Goal(f"{prefix}: CPU per conversation", figure("cpu_ms_per_conversation"),
                 at_most(4.0), "<= 4", " ms"),
            Goal(f"{prefix}: total / model time, p50", figure("total_over_llm_p50"),
                 at_most(1.5), "<= 1.5", "x"),
            Goal(f"{prefix}: first text p50", figure("first_text_p50_ms"),
                 at_most(300), "<= 300", " ms"),
            Goal(f"{prefix}: exactly one reply each", figure("exactly_one_reply"), yes, "yes"),
        ]  # fmt: skip

    return goals


def figure(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda found: found[key]


def workers_goals(_: dict[str, Any]) -> list[Goal]:
    label = "workers: 2N on 2 workers / N on 1, total p50"
    return [Goal(label, figure("p50_ratio"), at_most(1.0), "<= 1", "x")]


def engine_goals(_: dict[str, Any]) -> list[Goal]:
    label = "engine: a turn / the bare request, p50"
    return [Goal(label, figure("ratio_p50_100"), at_most(1.1), "<= 1.1", "x")]


def instruments_goals(_: dict[str, Any]) -> list[Goal]:
    label = "instruments: a turn traced and metered / neither, p50"
    return [Goal(label, figure("ratio_p50"), at_most(1.05), "<= 1.05", "x")]


def report_goals(found: dict[str, Any]) -> list[Goal]:
    goals = []
    for database, sizes in found["results"].items():
        largest = max(sizes, key=int)
        for name, timed in sizes[largest].items():
            if isinstance(timed, dict):
                label = f"reports: {name}, {database}, {int(largest):,} calls, p50"
                read = lambda _, t=timed: t["p50_ms"]  # noqa: E731
                goals.append(Goal(label, read, at_most(1000), "<= 1000", " ms"))
    return goals


def start_goals(found: dict[str, Any]) -> list[Goal]:
    goals = [
        Goal("start: chat --fake to its prompt", lambda f: f["chat_prompt_s"]["median"],
             at_most(1.0), "< 1", " s"),
    ]  # fmt: skip
    for name in found["memory"]:
        read = lambda f, n=name: f["memory"][n]["rss_mb"]["median"]  # noqa: E731
        goals.append(Goal(f"memory: {name}, resident", read, at_most(150), "<= 150", " MB"))
    return goals


def knowledge_goals(found: dict[str, Any]) -> list[Goal]:
    """Search p50 at the largest size (the goal was set for 100,000 passages on SQLite; Postgres
    is held to it too) and a searching turn's growth from 1,000 passages to that size."""
    largest = str(max(found["sizes"]))
    search_goal, growth_goal = found["goal_p50_ms"], found["goal_turn_growth"]
    goals = []
    for database in found["results"]:
        size = f"{int(largest):,}"
        for mode in ("hybrid", "keywords"):
            read = lambda f, d=database, m=mode: f["results"][d]["search"][largest][m]["p50_ms"]  # noqa: E731
            label = f"knowledge: {mode} search p50, {database}, {size} passages"
            goals.append(Goal(label, read, at_most(search_goal), f"<= {search_goal:g}", " ms"))
        read = lambda f, d=database: f["results"][d]["turn_growth_p50"]  # noqa: E731
        label = f"knowledge: turn p50, {database}, {size} / 1,000 passages"
        goals.append(Goal(label, read, at_most(growth_goal), f"<= {growth_goal:g}", "x"))
    return goals


def access_goals(_: dict[str, Any]) -> list[Goal]:
    """Every access rule on costs a message less than the rest of `accept` does again."""
    return [
        Goal("access: accept p50, every rule on / none", figure("ratio_p50_rules_over_open"),
             at_most(3.0), "<= 3", "x"),
    ]  # fmt: skip


def soak_goals(_: dict[str, Any]) -> list[Goal]:
    return [
        Goal("soak: exactly one answer each", figure("exactly_one_answer_each"), yes, "yes"),
        Goal("soak: every question stored once", figure("questions_stored_once"), yes, "yes"),
        Goal("soak: answers still owed", figure("answers_still_owed"), at_most(0), "0"),
        Goal("soak: memory after warm-up / at the end", figure("memory_growth_max"),
             at_most(1.10), "<= 1.10", "x"),
    ]  # fmt: skip


BENCHES = (
    Bench("slack", "slack_load.py", (), (), load_goals("Slack, 200 at once")),
    Bench("discord", "discord_load.py", (), (), load_goals("Discord, 200 at once")),
    Bench("workers", "workers_load.py", (), ("--per-worker", "100"), workers_goals),
    Bench("startup", "startup.py", (), ("--repeat", "1"), start_goals),
    Bench("engine", "engine_overhead.py", (), ("--quick",), engine_goals),
    Bench("instruments", "instruments_overhead.py", (), ("--quick",), instruments_goals),
    Bench("access", "access_gate.py", (), ("--quick",), access_goals),
    Bench("reports", "report_scale.py", ("--database", "both"), ("--quick",), report_goals),
    Bench("soak", "soak.py", (), ("--quick",), soak_goals),
    Bench(
        "knowledge", "knowledge_search.py", ("--database", "both"), ("--quick",), knowledge_goals
    ),
)


def run(bench: Bench, quick: bool, logs: Path) -> dict[str, Any] | str:
    """The benchmark's JSON, or why there is none."""
    log = logs / f"{bench.name}.log"
    command = [sys.executable, str(HERE / bench.script), *(bench.quick if quick else bench.full)]
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    print(f"  {bench.name}: {time.monotonic() - started:.0f} s, output in {log}", flush=True)
    lines = log.read_text(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        return f"exit {done.returncode}; see {log}"
    try:
        found: dict[str, Any] = json.loads(lines[-1])
    except ValueError:
        return f"no JSON on its last line; see {log}"
    return found


def show(goal: Goal, found: dict[str, Any]) -> str:
    try:
        value = goal.read(found)
    except (KeyError, TypeError):
        return f"{goal.label:<58} {'-':>10}   goal {goal.goal:<8} not measured"
    shown = ("yes" if value else "NO") if isinstance(value, bool) else f"{value}{goal.unit}"
    verdict = "met" if goal.met(value) else "NOT met"
    target = f"{goal.goal}{goal.unit}"
    return f"{goal.label:<58} {shown:>10}   goal {target:<10} {verdict}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: minutes, not an hour")
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES])
    parser.add_argument("--log", type=Path, help="where each benchmark's output goes")
    args = parser.parse_args()
    logs = args.log or Path(tempfile.mkdtemp(prefix="bench_"))
    logs.mkdir(parents=True, exist_ok=True)
    chosen = [b for b in BENCHES if args.only is None or b.name in args.only]
    print(f"running {', '.join(b.name for b in chosen)}{' (quick)' if args.quick else ''}")
    results = [(bench, run(bench, args.quick, logs)) for bench in chosen]
    print()
    for bench, found in results:
        if isinstance(found, str):
            print(f"{bench.name:<58} failed: {found}")
            continue
        for goal in bench.goals(found):
            print(show(goal, found))


if __name__ == "__main__":
    main()
