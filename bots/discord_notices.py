"""A report as a Discord embed: the figures as inline fields, a field per version while room
lasts, a colour for how things stand.

The figures and their wording come from the core (`assistant.reporting`); only the layout and
Discord's limits live here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from assistant.reporting.figures import Report, VersionFigures
from assistant.reporting.wording import (
    METHOD,
    clip,
    fit_lines,
    model_lines,
    quality,
    span,
    summary_fields,
    unpriced_note,
    version_traffic,
)

DISCORD_TITLE_LIMIT = 256
DISCORD_DESCRIPTION_LIMIT = 4096
DISCORD_FIELDS = 25
DISCORD_NAME_LIMIT = 256
DISCORD_VALUE_LIMIT = 1024
DISCORD_TOTAL_LIMIT = 6000
_GREEN, _AMBER, _RED = 0x2EA043, 0xE8A33D, 0xD93F3F
_WARN_ERROR_RATE, _BAD_ERROR_RATE = 0.05, 0.25
_WARN_BUDGET = 0.8


def discord_embed(report: Report) -> dict[str, Any]:
    """A Discord embed: the figures as inline fields, a field per version while room lasts."""
    note = unpriced_note(report)
    description = "\n".join(
        [f"⚠️ **{note}**"] * bool(note) + [f"Production traffic only; {METHOD}."]
    )
    fields = [
        {"name": name, "value": value, "inline": True} for name, value in summary_fields(report)
    ]
    if report.cost_by_model:
        value = fit_lines("", model_lines(report), DISCORD_VALUE_LIMIT).strip()
        fields.append({"name": "Cost by model", "value": value, "inline": False})
    embed: dict[str, Any] = {
        "title": clip(f"Assistant report, {report.period.describe()}", DISCORD_TITLE_LIMIT),
        "description": clip(description, DISCORD_DESCRIPTION_LIMIT),
        "color": _color(report),
        "fields": fields,
        "footer": {"text": span(report.period)},
    }
    _add_version_fields(embed, report.by_version)
    return embed


def discord_embed_size(embed: dict[str, Any]) -> int:
    """The characters Discord counts against an embed's 6000, counted as UTF-16 units (an
    emoji is two): never fewer than Discord counts, however it counts them."""
    texts = [
        embed.get("title", ""),
        embed.get("description", ""),
        embed.get("footer", {}).get("text", ""),
        embed.get("author", {}).get("name", ""),
    ]
    texts += [part for field in embed.get("fields", []) for part in (field["name"], field["value"])]
    return sum(len(text.encode("utf-16-le")) // 2 for text in texts)


def _add_version_fields(embed: dict[str, Any], versions: Sequence[VersionFigures]) -> None:
    """One field a version, while the field count and the character total allow; then a
    field that says how many were left out (room for it is kept)."""
    fields: list[dict[str, Any]] = embed["fields"]
    reserve = 64
    for index, version in enumerate(versions):
        name = clip(version.label, DISCORD_NAME_LIMIT)
        value = clip(f"{version_traffic(version)}\n{quality(version)}", DISCORD_VALUE_LIMIT)
        size = len(name) + len(value)
        if (
            len(fields) + 2 > DISCORD_FIELDS
            or discord_embed_size(embed) + size + reserve > DISCORD_TOTAL_LIMIT
        ):
            left = len(versions) - index
            more = f"{left} more version{'' if left == 1 else 's'}"
            fields.append({"name": more, "value": "see `assistant report`", "inline": False})
            return
        fields.append({"name": name, "value": value, "inline": False})


def _color(report: Report) -> int:
    used = report.budget_used or 0.0
    if used >= 1 or report.error_rate >= _BAD_ERROR_RATE:
        return _RED
    if report.unpriced_calls or used >= _WARN_BUDGET or report.error_rate >= _WARN_ERROR_RATE:
        return _AMBER
    return _GREEN
