"""What the scheduler posts to team channels, and the one seam it posts through.

The engine decides what to say (a report, an alert); adapters decide how their platform shows
it (Slack blocks, a Discord embed) through a `Notifier`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from assistant.reporting.figures import Report


@dataclass(frozen=True, kw_only=True)
class Notice:
    title: str
    text: str  # Markdown; what a surface shows when it has nothing richer
    report: Report | None = None
    image_png: bytes | None = None
    image_name: str = "report.png"


class Notifier(Protocol):
    async def post(self, channel: str, notice: Notice) -> None:
        """Post to `channel`, a `platform:id` from REPORT_CHANNELS."""
