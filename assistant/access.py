"""Who may talk to the assistant, where, and how often: the operator's allow and block lists,
whether direct messages are answered, and per-user and per-channel message rate limits.

The rules are pure functions of the settings and the message (`decide`, `rate_refusal`), so
each can be tested alone; `AccessGate` adds the two things that need the store: counting a
user's or a channel's recent messages (stored ones, so every replica counts the same) and
answering each refusal once rather than once per message.

Only the chat platforms are gated: the terminal and evals run on the operator's own machine.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from assistant.turns import Actor, ConversationRef, Failed, Ignored, Inbound

log = logging.getLogger(__name__)

GATED_PLATFORMS = frozenset({"slack", "discord"})
ACCESS_DENIED = "AccessDenied"
RATE_LIMITED = "RateLimited"
# how long a person is told only once that they may not talk here (per place)
QUIET_AFTER_REFUSAL = timedelta(hours=1)

NO_ACCESS = "You don't have access to the assistant here. Ask an admin if you need it."
NOT_IN_CHANNEL = "The assistant doesn't answer in this channel. Ask an admin if you need it here."
NO_DMS = "The assistant doesn't answer direct messages here; mention it in a channel."

_UNITS = {
    "second": timedelta(seconds=1),
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
}
_RATE = re.compile(r"\s*(\d{1,6})\s*/\s*([a-z]+?)s?\s*", re.IGNORECASE)
# Slack ids are upper-case letters and digits (U0123, C0123, W0123); Discord's are snowflakes
_ID_SHAPES = {"slack": re.compile(r"[A-Z0-9]{2,32}"), "discord": re.compile(r"\d{1,20}")}


@dataclass(frozen=True, kw_only=True)
class RateLimit:
    """At most `count` messages in any `unit`-long window ("20/hour")."""

    count: int
    unit: str  # second, minute, hour or day

    @property
    def window(self) -> timedelta:
        return _UNITS[self.unit]

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """ "20/hour", "5/minute", "100/day"; ValueError saying the expected form."""
        match = _RATE.fullmatch(text)
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _UNITS or int(match.group(1)) < 1:
            raise ValueError(
                f"expected a count per second, minute, hour or day like '20/hour', got {text!r}"
            )
        return cls(count=int(match.group(1)), unit=unit)

    def __str__(self) -> str:
        return f"{self.count}/{self.unit}"


def check_ids(entries: Sequence[str], *, platforms: Sequence[str] = ("slack", "discord")) -> None:
    """ValueError naming the first entry that is not `platform:id` on one of `platforms`, with
    an id of that platform's shape: a typo would otherwise silently match nobody."""
    for entry in entries:
        platform, _, ident = entry.partition(":")
        if platform not in platforms:
            named = " or ".join(f"'{p}:…'" for p in platforms)
            raise ValueError(f"expected {named} entries, got {entry!r}")
        if not _ID_SHAPES[platform].fullmatch(ident):
            raise ValueError(f"{entry!r} is not a {platform.capitalize()} id")


@dataclass(frozen=True, kw_only=True)
class AccessPolicy:
    """The operator's rules (every entry `platform:id`). Block beats allow. An allow list
    applies on a platform only when it names something there (ALLOWED_ROLES, being Discord's
    alone, never shuts Slack out). Place rules (DMs, channels) bind everyone; admins skip the
    person rules and the rate limits, so no list can lock an operator out."""

    allowed_users: frozenset[str] = frozenset()
    blocked_users: frozenset[str] = frozenset()
    allowed_roles: frozenset[str] = frozenset()
    blocked_roles: frozenset[str] = frozenset()
    allowed_channels: frozenset[str] = frozenset()
    blocked_channels: frozenset[str] = frozenset()
    allow_dms: bool = True
    user_rate: RateLimit | None = None
    channel_rate: RateLimit | None = None
    admins: frozenset[str] = frozenset()

    @property
    def open(self) -> bool:
        """Nothing to check: every message passes without a look at the store."""
        lists = (self.allowed_users, self.blocked_users, self.allowed_roles, self.blocked_roles)
        places = (self.allowed_channels, self.blocked_channels)
        return (
            not any(lists + places)
            and self.allow_dms
            and self.user_rate is None
            and self.channel_rate is None
        )

    def names_roles(self, platform: str) -> bool:
        """Whether a rule names a role on `platform`: only then are roles worth looking up."""
        return _names(self.allowed_roles | self.blocked_roles, platform)


@dataclass(frozen=True, kw_only=True)
class Refusal:
    """Why a message is not answered, and the words the person gets."""

    reason: str  # for the log line: "user blocked", "channel rate limit" …
    error_class: str  # ACCESS_DENIED or RATE_LIMITED
    message: str
    # later refusals under the same key are not answered: one answer per person, place and
    # hour for a rule, one per time a limit is reached for a rate
    quiet_key: str


def decide(policy: AccessPolicy, inbound: Inbound) -> Refusal | None:
    """The list rules (no counting): the place first, then the person."""
    actor, ref = inbound.actor, inbound.ref
    return _place_refusal(policy, inbound) or (
        None if actor.qualified_id in policy.admins else _person_refusal(policy, actor, ref)
    )


def _place_refusal(policy: AccessPolicy, inbound: Inbound) -> Refusal | None:
    ref = inbound.ref
    if inbound.direct:  # a DM is not a channel: only ALLOW_DMS speaks of it
        if policy.allow_dms:
            return None
        return _refusal("direct messages off", NO_DMS, inbound.actor, ref)
    channel = f"{ref.platform}:{ref.channel}"
    if channel in policy.blocked_channels:
        return _refusal("channel blocked", NOT_IN_CHANNEL, inbound.actor, ref)
    if _names(policy.allowed_channels, ref.platform) and channel not in policy.allowed_channels:
        return _refusal("channel not allowed", NOT_IN_CHANNEL, inbound.actor, ref)
    return None


def _person_refusal(policy: AccessPolicy, actor: Actor, ref: ConversationRef) -> Refusal | None:
    roles = {f"{actor.platform}:{role}" for role in actor.roles}
    if actor.qualified_id in policy.blocked_users:
        return _refusal("user blocked", NO_ACCESS, actor, ref)
    if roles & policy.blocked_roles:
        return _refusal("role blocked", NO_ACCESS, actor, ref)
    allow_lists = _names(policy.allowed_users, actor.platform) or _names(
        policy.allowed_roles, actor.platform
    )
    allowed = actor.qualified_id in policy.allowed_users or roles & policy.allowed_roles
    if allow_lists and not allowed:
        return _refusal("user not allowed", NO_ACCESS, actor, ref)
    return None


def _names(entries: frozenset[str], platform: str) -> bool:
    return any(entry.startswith(platform + ":") for entry in entries)


def _refusal(reason: str, message: str, actor: Actor, ref: ConversationRef) -> Refusal:
    return Refusal(
        reason=reason,
        error_class=ACCESS_DENIED,
        message=message,
        quiet_key=f"access:{reason}:{actor.qualified_id}:{ref.platform}:{ref.channel}",
    )


def rate_refusal(
    limit: RateLimit, nth: datetime | None, now: datetime, *, whose: str, channel: bool
) -> Refusal | None:
    """A refusal when the window holds `limit.count` messages of `whose` (`platform:id` of a
    person, or of a channel when `channel`): `nth` is when the `limit.count`th newest of them
    was sent, None when there were fewer. It lifts when that one leaves the window."""
    if nth is None:
        return None
    oldest = nth
    wait = _wait_words(oldest + limit.window - now)
    window = "the last 24 hours" if limit.unit == "day" else f"the last {limit.unit}"
    if channel:
        reason = "channel rate limit"
        message = (
            f"This channel has sent the assistant {limit.count} messages in {window}, its "
            f"limit; try again in {wait}."
        )
    else:
        reason = "user rate limit"
        message = (
            f"You've sent {limit.count} messages in {window}, the limit here; try again in {wait}."
        )
    return Refusal(
        reason=reason,
        error_class=RATE_LIMITED,
        message=message,
        # the same oldest message still blocks: the same limit reached, already said
        quiet_key=f"access:{reason}:{whose}:{oldest.isoformat()}",
    )


def _wait_words(wait: timedelta) -> str:
    seconds = max(wait.total_seconds(), 1.0)
    if seconds < 90:
        return _plural(math.ceil(seconds), "second")
    if seconds < 90 * 60:
        return _plural(math.ceil(seconds / 60), "minute")
    return _plural(math.ceil(seconds / 3600), "hour")


def _plural(count: int, unit: str) -> str:
    return f"about {count} {unit}" + ("" if count == 1 else "s")


class RecentMessages(Protocol):
    """What the gate needs of the store: stored user messages are what limits count."""

    async def nth_user_message(
        self, author_id: str, *, since: datetime, n: int
    ) -> datetime | None: ...

    async def nth_channel_message(
        self, ref: ConversationRef, *, since: datetime, n: int
    ) -> datetime | None: ...

    async def claim_event(self, keys: Sequence[str], *, keep: timedelta) -> bool: ...


class AccessGate:
    """The rules applied to one message, before anything of it is stored or a model called."""

    def __init__(
        self,
        policy: AccessPolicy,
        messages: RecentMessages,
        *,
        keep: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self._policy = policy
        self._messages = messages
        self._keep = keep
        self._clock = clock

    async def check(self, inbound: Inbound) -> Refusal | None:
        """Why `inbound` is not answered, or None when it may be."""
        if self._policy.open or inbound.ref.platform not in GATED_PLATFORMS:
            return None
        refused = decide(self._policy, inbound)
        if refused is not None or inbound.actor.qualified_id in self._policy.admins:
            return refused
        return await self._rate_refusal(inbound)

    async def _rate_refusal(self, inbound: Inbound) -> Refusal | None:
        now, user, channel = self._clock(), self._policy.user_rate, self._policy.channel_rate
        if user is not None:
            author = inbound.actor.qualified_id[:128]  # as messages store it
            nth = await self._messages.nth_user_message(
                author, since=now - user.window, n=user.count
            )
            refused = rate_refusal(user, nth, now, whose=author, channel=False)
            if refused is not None:
                return refused
        if channel is not None and not inbound.direct:
            ref = inbound.ref
            nth = await self._messages.nth_channel_message(
                ref, since=now - channel.window, n=channel.count
            )
            where = f"{ref.platform}:{ref.channel}"
            return rate_refusal(channel, nth, now, whose=where, channel=True)
        return None

    async def refuse(self, inbound: Inbound, refusal: Refusal) -> Failed | Ignored:
        """The answer to a refused message: its delivery is claimed (a redelivery stays
        quiet), and only the first refusal under its key is said; the rest are ignored, so
        someone hammering the assistant never makes it post a refusal per message."""
        if inbound.dedupe_keys and not await self._messages.claim_event(
            inbound.dedupe_keys, keep=self._keep
        ):
            return Ignored(reason="duplicate delivery")
        key = refusal.quiet_key
        if refusal.error_class == ACCESS_DENIED:  # one answer per hour for a standing rule
            key += f":{int(self._clock().timestamp() // QUIET_AFTER_REFUSAL.total_seconds())}"
        said = await self._messages.claim_event([key], keep=self._keep)
        ref = inbound.ref
        log.info(
            "refused a message from %s in %s:%s (%s)%s",
            inbound.actor.qualified_id,
            ref.platform,
            ref.channel or "-",
            refusal.reason,
            "" if said else "; told before, so not answered",
        )
        if not said:
            return Ignored(reason=f"{refusal.reason}, told already")
        return Failed(
            user_message=refusal.message, retryable=False, error_class=refusal.error_class
        )
