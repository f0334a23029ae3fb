"""`assistant doctor`: the doctor's findings as a table, and an exit code a script can gate on."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from assistant.doctor import Doctor, Finding, ServerUnreachable

_STYLE = {"ok": "green", "gap": "yellow", "blocker": "bold red"}


async def examine(doctor: Doctor, console: Console, errors: Console) -> int:
    """Print what the server can do; 0 when nothing blocks a turn, 1 on a blocker, 2 when
    the server cannot be reached at all (one line)."""
    try:
        findings = await doctor.examine()
    except ServerUnreachable as exc:
        errors.print(f"error: {exc}", style="bold red", highlight=False, markup=False)
        return 2
    finally:
        await doctor.close()
    console.print(findings_table(doctor, findings))
    blockers = [f for f in findings if f.level == "blocker"]
    if blockers:
        console.print(f"{len(blockers)} blocker(s): no turn can be answered until fixed.")
        return 1
    gaps = sum(f.level == "gap" for f in findings)
    console.print(f"Ready: {gaps} gap(s), each worked around as shown." if gaps else "Ready.")
    return 0


def findings_table(doctor: Doctor, findings: list[Finding]) -> Table:
    table = Table(
        title=f"{doctor.where} — model {doctor.models[0]}",
        title_justify="left",
        expand=False,
    )
    for column in ("check", "result", "", "what the assistant does"):
        table.add_column(column, overflow="fold")
    for finding in findings:  # Text, not markup: a server's words may hold [brackets]
        level = Text(finding.level, style=_STYLE[finding.level])
        table.add_row(Text(finding.check), Text(finding.result), level, Text(finding.action))
    return table
