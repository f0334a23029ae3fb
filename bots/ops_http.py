"""`/metrics`, `/healthz` and `/readyz`: on Slack's HTTP port when Slack is served over HTTP,
else on METRICS_PORT (Socket Mode, the Discord gateway), by the small server here.

The routes are the same on either; `OpsServer` is only the server around them when no
surface has one. Under `assistant run --workers N` each worker is handed its share of the port
(bound once per worker by the supervisor, as Slack's is) and every worker's `/metrics` shows the
figures of all of them (assistant/observability/metrics.py, multiprocess mode).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from assistant.observability.health import (
    Check,
    Connected,
    Health,
    Platforms,
    database_check,
    migrations_check,
    model_check,
)
from assistant.observability.metrics import CONTENT_TYPE, Metrics
from assistant.runtime import Runtime

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"


@dataclass(frozen=True, kw_only=True)
class Ops:
    """What the operator's routes read."""

    metrics: Metrics
    health: Health

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(METRICS_PATH, self.metrics_page),
            web.get(HEALTHZ_PATH, self.healthz),
            web.get(READYZ_PATH, self.readyz),
        ]

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(self, request: web.Request) -> web.Response:
        """The process runs and its event loop answers: nothing more (a liveness probe that
        checked the database would restart every pod when the database blinks)."""
        return web.json_response({"alive": True})

    async def readyz(self, request: web.Request) -> web.Response:
        readiness = await self.health.readiness()
        return web.json_response(readiness.as_json(), status=200 if readiness.ready else 503)


class OpsServer:
    """The routes on a port of their own (METRICS_PORT), or on a worker's share of it."""

    def __init__(self, ops: Ops) -> None:
        self._ops = ops
        self._runner: web.AppRunner | None = None

    async def start(
        self,
        *,
        port: int = 0,
        host: str = "0.0.0.0",  # noqa: S104 - where Prometheus and the kubelet reach it
        sock: socket.socket | None = None,
    ) -> int:
        """Listen on `port` or `sock`; the port (useful when `port` is 0). OSError when the
        port is taken."""
        app = web.Application()
        app.add_routes(self._ops.routes())
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = (
            web.TCPSite(self._runner, host, port)
            if sock is None
            else web.SockSite(self._runner, sock)
        )
        try:
            await site.start()
        except BaseException:
            await self.close()
            raise
        bound = int(self._runner.addresses[0][1])
        log.info("metrics and health on http://%s:%d%s", host, bound, METRICS_PATH)
        return bound

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def ops_for(runtime: Runtime, platforms: Callable[[], Sequence[Connected]]) -> Ops:
    """The routes of a serving process: its metrics, and readiness of the database, its schema,
    the platforms `platforms` returns (those started so far) and the model server."""
    metrics = runtime.metrics or Metrics()
    engine = runtime.store.engine
    checks: list[Check] = [
        database_check(engine),
        migrations_check(engine),
        Platforms(platforms),
        model_check(runtime.model, answered_at=lambda: metrics.last_model_answer),
    ]
    return Ops(metrics=metrics, health=Health(checks))
