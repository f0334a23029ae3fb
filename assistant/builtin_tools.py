"""The tools every installation has, registered the same way as any added later."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from assistant import calculator as calc
from assistant.tools import ToolFunction, ToolRegistry

KNOWLEDGE_TOOL = "search_knowledge"


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


def no_knowledge(query: str) -> str:
    """Search the team's own documents for passages about `query`."""
    raise RuntimeError("knowledge search is not set up in this process")


def builtin_registry(search_knowledge: ToolFunction = no_knowledge) -> ToolRegistry:
    """The built-in tools; `search_knowledge` is the knowledge service's search, when this
    process has one (the doctor only reads which tools exist)."""
    registry = ToolRegistry()
    registry.register(current_time)
    registry.register(calculator)
    registry.register(search_knowledge, name=KNOWLEDGE_TOOL)
    return registry
