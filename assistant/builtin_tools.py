"""The tools every installation has, registered the same way as any added later."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from assistant import calculator as calc
from assistant.tools import ToolRegistry


def current_time(timezone: str = "UTC") -> str:
    """The current date and time in an IANA time zone such as "Europe/Paris" (default UTC)."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {timezone!r}; use an IANA name like 'Asia/Tokyo'"
        ) from None
    now = datetime.now(UTC).astimezone(zone)
    return f"{now:%A %Y-%m-%d %H:%M:%S} {now.tzname()} (UTC{now:%z})"


def calculator(expression: str) -> str:
    """Evaluate arithmetic: + - * / // % ** and parentheses, sqrt, log, sin, round, pi, e."""
    result = calc.evaluate(expression)
    if isinstance(result, float) and result.is_integer() and abs(result) < 1e15:
        return str(int(result))
    return str(result)


def builtin_registry() -> ToolRegistry:
    registry = ToolRegistry()
    registry.register(current_time)
    registry.register(calculator)
    return registry
