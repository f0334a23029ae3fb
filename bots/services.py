"""`assistant run`: every configured platform served by one engine until the process is told
to stop, then a graceful stop that lets answers under way finish."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import signal
import socket
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from assistant.config import ConfigError, Settings
from assistant.reporting.duties import Duties, DutySettings
from assistant.reporting.schedule import Scheduler
from assistant.runtime import Runtime, sync_knowledge
from bots.notifier import ChannelNotifier
from bots.ops_http import Ops, OpsServer, ops_for
from bots.recovery import KeepAlive, TurnRecovery

if TYPE_CHECKING:  # each platform's module loads its library (tens of MB): only when served
    from bots.discord_app import DiscordAdapter
    from bots.slack_app import SlackAdapter

T = TypeVar("T")

log = logging.getLogger(__name__)

NOTHING_TO_SERVE = (
    "Nothing to serve: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET (or SLACK_APP_TOKEN for "
    "Socket Mode) to serve Slack, DISCORD_TOKEN to serve Discord; see README.md. To chat in "
    "the terminal: assistant chat"
)


def missing_configuration(settings: Settings) -> str | None:
    """What stops `run` from starting, in one line naming the setting; None when ready."""
    if settings.slack_app_token and not settings.slack_bot_token:
        return "SLACK_BOT_TOKEN: needed with SLACK_APP_TOKEN (the bot token, xoxb-...)"
    if settings.slack_bot_token:
        if not settings.slack_app_token and not settings.slack_signing_secret:
            return (
                "SLACK_SIGNING_SECRET: needed in HTTP mode to verify Slack's requests "
                "(or set SLACK_APP_TOKEN to use Socket Mode)"
            )
        return None
    if settings.discord_token:
        return None
    return NOTHING_TO_SERVE


@dataclass(frozen=True, kw_only=True)
class Role:
    """What one process of `assistant run` serves: all of it when it runs alone; as one worker
    of several, Slack's HTTP mode on the port the supervisor bound, and the single-connection
    surfaces (Socket Mode, the Discord gateway: one connection per token) only in one."""

    http_socket: socket.socket | None = None  # None: bind SLACK_PORT itself
    metrics_socket: socket.socket | None = None  # None: bind METRICS_PORT itself (when set)
    single_connections: bool = True
    schedules: bool = True  # stands for the scheduler's leader lock


def serves_http(settings: Settings) -> bool:
    """Whether a surface takes HTTP requests, which several processes can share."""
    return settings.slack_bot_token is not None and settings.slack_app_token is None


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, within its container's CPU quota
    (a 2-CPU pod on a 64-core node must not start 64 workers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, cpu_quota() or cores or 1))


def cpu_quota(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """The CPUs cgroup v2 allows this process, rounded up; None when unlimited or unknown."""
    try:
        quota, period = path.read_text().split()[:2]
        return math.ceil(int(quota) / int(period))
    except (OSError, ValueError):  # no cgroup v2 file, or "max": no limit
        return None


def worker_count(settings: Settings, asked: int | None) -> tuple[int, str | None]:
    """How many processes `run` starts, from `--workers` or WORKERS (`asked`), else one per
    usable core; and, when more were asked for than can share anything, why one runs."""
    if serves_http(settings):
        return asked or usable_cores(), None
    if asked is not None and asked > 1:
        return 1, (
            f"workers: running 1 process, not {asked}: Socket Mode and the Discord gateway "
            "hold one connection per token and there is no HTTP surface to share (Slack's HTTP "
            "mode is; see docs/operations.md, Scaling)"
        )
    return 1, None


async def serve(
    settings: Settings,
    runtime: Runtime,
    *,
    role: Role | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Run until SIGINT or SIGTERM, or until a platform connection fails for good; then stop
    every platform at once, each letting its answers under way finish. `ready` is called once
    every surface of `role` (default: all of them) is being served."""
    role = role or Role()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    running: list[SlackAdapter | DiscordAdapter] = []
    discord: DiscordAdapter | None = None
    scheduler: Scheduler | None = None
    upkeep: KeepAlive | None = None
    ops = ops_for(runtime, lambda: running)
    ops_server: OpsServer | None = None
    await runtime.assistant.owed.beat()  # alive before the first turn it accepts
    try:
        ops_server = await start_ops(settings, ops, role.metrics_socket)
        if settings.slack_bot_token and (role.single_connections or serves_http(settings)):
            mode = "Socket Mode" if settings.slack_app_token else f"HTTP on {settings.slack_port}"
            log.info("Slack: connecting (%s)", mode)
            routes = ops.routes() if ops_server is None else []  # on Slack's port, else not
            starting = start_slack(settings, runtime, role.http_socket, routes=routes)
            slack = await _unless_stopped(starting, stop)
            if slack is None:
                return
            running.append(slack)
        if settings.discord_token and role.single_connections:
            log.info("Discord: connecting")
            discord = await _unless_stopped(start_discord(settings, runtime), stop)
            if discord is None:
                return
            running.append(discord)
        recoveries = [TurnRecovery(runtime.assistant, adapter) for adapter in running]
        upkeep = KeepAlive(runtime.assistant, recoveries)
        upkeep.start()
        if role.schedules:
            scheduler = schedule_duties(settings, runtime, running)
            await scheduler.start()
        log.info("serving; stop with Ctrl-C or SIGTERM (answers under way are finished first)")
        if ready is not None:
            ready()
        watched: set[asyncio.Future[Any]] = {asyncio.ensure_future(stop.wait())}
        if discord is not None and discord.connection is not None:
            watched.add(discord.connection)
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if discord is not None:
            discord.raise_if_failed()
        log.info("stopping")
    finally:
        if scheduler is not None:
            await scheduler.stop()
        if upkeep is not None:
            await upkeep.stop()
        await asyncio.gather(*(adapter.close() for adapter in running))
        # what could not be finished stays owed: the next process to start answers it
        await runtime.assistant.owed.retire()
        if ops_server is not None:  # last: a scrape sees the stop's final figures
            await ops_server.close()


async def start_ops(
    settings: Settings, ops: Ops, sock: socket.socket | None = None
) -> OpsServer | None:
    """`/metrics`, `/healthz`, `/readyz` on METRICS_PORT (or `sock`, a worker's share of it)
    when it is set; None when it is not, and then Slack's HTTP port serves them, if any."""
    if settings.metrics_port is None:
        if not serves_http(settings):
            log.info("metrics: not served (set METRICS_PORT to serve /metrics and /readyz)")
        return None
    server = OpsServer(ops)
    try:
        await server.start(port=settings.metrics_port, sock=sock)
    except OSError as exc:
        raise ConfigError(
            f"METRICS_PORT: cannot listen on port {settings.metrics_port} ({exc.strerror}); "
            "is another process using it?"
        ) from None
    return server


async def _unless_stopped(starting: Coroutine[Any, Any, T], stop: asyncio.Event) -> T | None:
    """`starting`'s result, or None once a signal asked to stop first: connecting to a
    platform that does not answer must not keep the process from ending."""
    task = asyncio.ensure_future(starting)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    log.info("stopped while connecting")
    return None


async def start_slack(
    settings: Settings,
    runtime: Runtime,
    http_socket: socket.socket | None = None,
    *,
    routes: Sequence[web.RouteDef] = (),
) -> SlackAdapter:
    """Slack connected: Socket Mode, HTTP on SLACK_PORT, or HTTP on `http_socket` (a worker's
    share of the port its supervisor bound); `routes` served beside its events in HTTP mode."""
    from bots.slack_app import SlackAdapter  # slack-bolt: only when Slack is served

    assert settings.slack_bot_token is not None
    app_token = settings.slack_app_token
    secret = settings.slack_signing_secret
    adapter = SlackAdapter(
        assistant=runtime.assistant,
        commands=runtime.commands,
        bot_token=settings.slack_bot_token.get_secret_value(),
        signing_secret=secret.get_secret_value() if secret else None,
        api_url=settings.slack_api_url,
    )
    try:
        if app_token is not None:
            await adapter.connect_socket_mode(app_token.get_secret_value())
        else:
            await adapter.serve_http(port=settings.slack_port, sock=http_socket, routes=routes)
    except OSError as exc:  # HTTP mode's port (Socket Mode says its own failures)
        await adapter.close()
        raise ConfigError(
            f"SLACK_PORT: cannot listen on port {settings.slack_port} ({exc.strerror}); "
            "is another process using it?"
        ) from None
    except BaseException:  # refused, or stopped while connecting
        await adapter.close()
        raise
    return adapter


async def start_discord(settings: Settings, runtime: Runtime) -> DiscordAdapter:
    from bots.discord_app import DiscordAdapter, point_at  # discord.py: only when it is served

    assert settings.discord_token is not None
    point_at(settings.discord_api_url, settings.discord_gateway_url)
    adapter = DiscordAdapter(
        assistant=runtime.assistant,
        commands=runtime.commands,
        token=settings.discord_token.get_secret_value(),
        guild_id=settings.discord_guild_id,
        sharded=settings.discord_sharded,
    )
    try:
        await adapter.start()
    except BaseException:
        await adapter.close()
        raise
    return adapter


def schedule_duties(
    settings: Settings, runtime: Runtime, running: list[SlackAdapter | DiscordAdapter]
) -> Scheduler:
    """Evals, reports and alerts on their schedules, posted through the running adapters."""
    notifier = ChannelNotifier.over(running)
    duties = Duties(
        store=runtime.store,
        runner=runtime.runner,
        suites=runtime.suites,
        notifier=notifier,
        settings=DutySettings(
            channels=settings.report_channels,
            eval_cron=settings.eval_cron,
            report_cron=settings.report_cron,
            knowledge_cron=settings.knowledge_cron,
            daily_budget_usd=settings.daily_budget_usd,
            fake=runtime.fake,
        ),
        sync_knowledge=functools.partial(sync_knowledge, settings, runtime),
    )
    return Scheduler(engine=runtime.store.engine, jobs=duties.jobs())
