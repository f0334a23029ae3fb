"""A report as Slack Block Kit: a header, the figures as fields, versions, a context line.

The figures and their wording come from the core (`assistant.reporting`); only the layout and
Slack's limits live here.
"""

from __future__ import annotations

from typing import Any

from assistant.reporting.figures import Report
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

SLACK_HEADER_LIMIT = 150
SLACK_TEXT_LIMIT = 3000
SLACK_FIELD_LIMIT = 2000
SLACK_FIELDS = 10


def slack_blocks(report: Report) -> list[dict[str, Any]]:
    """Block Kit for a report: a header, the figures as fields, versions, a context line."""
    title = f"Assistant report, {report.period.describe()}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": clip(title, SLACK_HEADER_LIMIT)}}
    ]
    note = unpriced_note(report)
    if note:
        blocks.append(_slack_section(f"⚠️ *{_slack_escape(note)}*"))
    fields = [
        {"type": "mrkdwn", "text": clip(f"*{name}*\n{_slack_escape(value)}", SLACK_FIELD_LIMIT)}
        for name, value in summary_fields(report)[:SLACK_FIELDS]
    ]
    blocks.append({"type": "section", "fields": fields})
    if report.cost_by_model:
        models = [_slack_escape(line) for line in model_lines(report)]
        blocks.append(_slack_section(fit_lines("*Cost by model*", models, SLACK_TEXT_LIMIT)))
    versions = [
        f"*{_slack_escape(v.label)}*: {_slack_escape(version_traffic(v))}\n    {quality(v)}"
        for v in report.by_version
    ] or ["no traffic"]
    blocks.append(_slack_section(fit_lines("*Prompt versions*", versions, SLACK_TEXT_LIMIT)))
    context = f"{span(report.period)} · production traffic only · {METHOD}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return blocks


def _slack_section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, SLACK_TEXT_LIMIT)}}


def _slack_escape(text: str) -> str:
    """The three characters Slack's mrkdwn reads as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
