"""Posting notices to `platform:id` channels through whichever adapters are running."""

from __future__ import annotations

import logging

from assistant.reporting.notices import Notice
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

    async def post(self, channel: str, notice: Notice) -> None:
        platform, _, ident = channel.partition(":")
        if platform == "slack" and self._slack is not None:
            await self._slack.post_notice(ident, notice)
        elif platform == "discord" and self._discord is not None and ident.isdigit():
            await self._discord.post_notice(int(ident), notice)
        else:
            log.warning("REPORT_CHANNELS names %s, but that platform is not running", channel)
