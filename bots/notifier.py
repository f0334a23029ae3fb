"""Posting notices to `platform:id` channels through whichever adapters are running."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

from assistant.reporting.notices import Notice

if TYPE_CHECKING:  # each platform's module loads its library (tens of MB): only when served
    from bots.discord_app import DiscordAdapter
    from bots.slack_app import SlackAdapter

log = logging.getLogger(__name__)


class ChannelNotifier:
    """A `Notifier` over the running adapters; a channel of a platform that is not running
    is logged, not raised, so one bad entry in REPORT_CHANNELS does not stop the others."""

    def __init__(
        self, *, slack: SlackAdapter | None = None, discord: DiscordAdapter | None = None
    ) -> None:
        self._slack = slack
        self._discord = discord

    @classmethod
    def over(cls, running: Iterable[SlackAdapter | DiscordAdapter]) -> ChannelNotifier:
        """The notifier for whichever adapters run. A platform's module is looked at only when
        it is loaded (it is whenever one of its adapters runs): importing it to test against its
        class would load that platform's library into a process that does not serve it."""
        adapters = list(running)
        slack: SlackAdapter | None = None
        discord: DiscordAdapter | None = None
        if "bots.slack_app" in sys.modules:
            from bots.slack_app import SlackAdapter

            slack = next((a for a in adapters if isinstance(a, SlackAdapter)), None)
        if "bots.discord_app" in sys.modules:
            from bots.discord_app import DiscordAdapter

            discord = next((a for a in adapters if isinstance(a, DiscordAdapter)), None)
        return cls(slack=slack, discord=discord)

    async def post(self, channel: str, notice: Notice) -> None:
        platform, _, ident = channel.partition(":")
        if platform == "slack" and self._slack is not None:
            await self._slack.post_notice(ident, notice)
        elif platform == "discord" and self._discord is not None and ident.isdigit():
            await self._discord.post_notice(int(ident), notice)
        else:
            log.warning("REPORT_CHANNELS names %s, but that platform is not running", channel)
