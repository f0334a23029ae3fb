"""Whether this process can answer: the checks behind `/readyz` (and `/healthz`'s plain yes).

Probes come every few seconds, from anyone who can reach the port, so no check does its work
on every probe: each answer is remembered for a while (the database's for a second, the
migrations' and the model server's for longer) and concurrent probes share one check under
way. Each check has its own time limit, so a probe's answer never waits on a hung server for
long. What a check says names the problem, never a URL, token or key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import openai
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from assistant.llm import OpenAIChatModel
from assistant.store import migrate

log = logging.getLogger(__name__)

DATABASE_TIMEOUT = 2.0
DATABASE_EVERY = 1.0
MIGRATIONS_EVERY = 30.0
MODEL_TIMEOUT = 5.0
MODEL_EVERY = 30.0


class Unready(Exception):
    """A check failed; the message says what is wrong, fit for anyone to read."""


@dataclass(frozen=True, kw_only=True)
class CheckState:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, kw_only=True)
class Readiness:
    checks: tuple[CheckState, ...]

    @property
    def ready(self) -> bool:
        return all(check.ok for check in self.checks)

    def as_json(self) -> dict[str, object]:
        return {
            "ready": self.ready,
            "failing": [check.name for check in self.checks if not check.ok],
            "checks": {
                check.name: {"ok": check.ok, "detail": check.detail} for check in self.checks
            },
        }


class Check(Protocol):
    name: str

    async def state(self) -> CheckState: ...


class Remembered:
    """A check whose answer is kept for `every` seconds; one run at a time, cut at `timeout`."""

    def __init__(
        self,
        name: str,
        probe: Callable[[], Awaitable[str]],
        *,
        timeout: float,
        every: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._probe = probe
        self._timeout = timeout
        self._every = every
        self._clock = clock
        self._last: tuple[float, CheckState] | None = None
        self._running: asyncio.Task[CheckState] | None = None

    async def state(self) -> CheckState:
        if self._last is not None and self._clock() - self._last[0] < self._every:
            return self._last[1]
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._run())
        return await asyncio.shield(self._running)  # one prober gone stops no other

    async def _run(self) -> CheckState:
        try:
            async with asyncio.timeout(self._timeout):
                detail = await self._probe()
            state = CheckState(name=self.name, ok=True, detail=detail)
        except Unready as exc:
            state = CheckState(name=self.name, ok=False, detail=str(exc))
        except TimeoutError:
            detail = f"no answer within {self._timeout:g} s"
            state = CheckState(name=self.name, ok=False, detail=detail)
        self._last = (self._clock(), state)
        return state


class Connected(Protocol):
    """A platform's connection, as its adapter knows it."""

    surface: str

    async def connected(self) -> bool: ...


class Platforms:
    """Every platform this process serves is connected (asked each time: it costs nothing)."""

    name = "platforms"

    def __init__(self, running: Callable[[], Sequence[Connected]]) -> None:
        self._running = running

    async def state(self) -> CheckState:
        running = list(self._running())
        if not running:
            return CheckState(name=self.name, ok=False, detail="no platform connected yet")
        down = [adapter.surface for adapter in running if not await adapter.connected()]
        if down:
            return CheckState(name=self.name, ok=False, detail=f"not connected: {', '.join(down)}")
        names = ", ".join(adapter.surface for adapter in running)
        return CheckState(name=self.name, ok=True, detail=f"connected: {names}")


class Health:
    """The checks of `/readyz`, run together."""

    def __init__(self, checks: Sequence[Check]) -> None:
        self._checks = tuple(checks)

    async def readiness(self) -> Readiness:
        states = await asyncio.gather(*(check.state() for check in self._checks))
        return Readiness(checks=tuple(states))


def database_check(engine: AsyncEngine, *, every: float = DATABASE_EVERY) -> Remembered:
    """The database answers `SELECT 1`."""

    async def probe() -> str:
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except (sa_exc.DBAPIError, OSError) as exc:
            # the driver's words name hosts, roles and databases: the log's, not the body's
            log.warning("readiness: the database does not answer (%s)", migrate.why(exc))
            raise Unready("the database does not answer (the log says why)") from None
        return "answers"

    return Remembered("database", probe, timeout=DATABASE_TIMEOUT, every=every)


def migrations_check(engine: AsyncEngine, *, every: float = MIGRATIONS_EVERY) -> Remembered:
    """The database's schema is the one this build's migrations end at, or newer: read from
    alembic_version with one query, against the revisions read from the files once. A schema
    a newer build migrated (a rolling deploy's first new replica) keeps this one serving:
    migrations add, so the old code still works on it, and turning every old replica unready
    at once would leave no replica at all."""
    head = migrate.head_revision()
    known = migrate.known_revisions()

    async def probe() -> str:
        try:
            async with engine.connect() as connection:
                rows = await connection.exec_driver_sql("SELECT version_num FROM alembic_version")
                stored = {str(row[0]) for row in rows}
        except (sa_exc.DBAPIError, OSError) as exc:
            log.warning("readiness: cannot read the schema's revision (%s)", migrate.why(exc))
            raise Unready("cannot read the schema's revision (the log says why)") from None
        found = ", ".join(sorted(stored)) or "none"
        if head is not None and stored and not stored & known:
            return f"at {found}, newer than this build's {head}"
        if head is not None and stored != {head}:
            raise Unready(f"the database is at revision {found}, this build expects {head}")
        return f"at {head}" if head else "revision not checked (no single head)"

    return Remembered("migrations", probe, timeout=DATABASE_TIMEOUT, every=every)


def model_check(
    model: OpenAIChatModel,
    *,
    every: float = MODEL_EVERY,
    timeout: float = MODEL_TIMEOUT,
    answered_at: Callable[[], float | None] = lambda: None,
) -> Remembered:
    """The model server answers `GET /models` within `timeout`. A call that ended well within
    the last `every` seconds (`answered_at`, monotonic) is answer enough: a single-slot server
    (llama.cpp) makes the listing wait while it generates, and a busy server is not down."""
    options: openai.RequestOptions = {"timeout": timeout, "max_retries": 0}
    if not model.sends_key:
        options["headers"] = {"Authorization": openai.Omit()}

    async def probe() -> str:
        answered = answered_at()
        if answered is not None and time.monotonic() - answered < every:
            return "answered a call recently"
        try:
            await model.client.get("/models", cast_to=object, options=options)
        except openai.AuthenticationError:
            raise Unready("the model server refused the API key (OPENAI_API_KEY)") from None
        except openai.APIStatusError as exc:
            if exc.status_code >= 500:
                raise Unready(f"the model server answered HTTP {exc.status_code}") from None
        except openai.APIConnectionError:
            raise Unready("the model server cannot be reached") from None
        except ValueError:  # it answered, with something other than JSON
            pass
        return "answers"

    return Remembered("model_server", probe, timeout=timeout + 1.0, every=every)
