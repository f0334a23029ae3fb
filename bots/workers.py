"""`assistant run --workers N`: N processes answering on one port, with one database.

The port. The supervisor binds SLACK_PORT once per worker, each socket with SO_REUSEPORT, and
hands each worker its own; the kernel spreads new connections evenly among them (by a hash of
the client's address and port). Not one socket inherited by all: asyncio accepts every
connection waiting on a socket each time it wakes, so a burst (a load balancer opening its
pool) lands whole in whichever worker woke first; we measured one worker taking all of it.
Bound by the supervisor rather than by each worker:
- a port in use is found once, before any worker starts, and said in one line;
- a worker's socket outlives the worker: connections the kernel queued for one that died wait
  for its replacement (a second or two) instead of being reset.
What SO_REUSEPORT allows: another process of the same user binding the port with it too
would take a share of the connections (the same port for two installations is a mistake
this cannot see).

Supervision. Workers are `multiprocessing` processes of the spawn context: fresh interpreters,
with no event loop, thread or connection pool copied from the supervisor. Each tells the
supervisor over a pipe that it is ready, or its one-line start-up error. The supervisor
- forwards SIGINT and SIGTERM (each worker lets its answers under way finish), then waits;
- starts again a worker that ends unexpectedly, after a back-off doubling from 1 s to 60 s
  (back to 1 s once a worker has served for a minute), and logs why;
- stops every worker and exits with the line (exit code 2) when a worker fails before its
  first start is ready (a token, a database, a surface set up wrong), rather than looping.
A worker never outlives its supervisor: killing the supervisor kills them, as it would kill
one process; the answers they owed are answered by the next process to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_any
from multiprocessing.process import BaseProcess

from assistant.config import ConfigError, Settings
from assistant.observability.metrics import process_ended, shared_across_processes
from assistant.runtime import open_runtime
from assistant.testing import FakeLlm
from bots import services
from bots.slack_http import listening_socket

log = logging.getLogger(__name__)

FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0
HEALTHY_SECONDS = 60.0  # a worker that served this long starts its back-off afresh
LOG_FORMAT = "%(asctime)s %(levelname)s [{who}] %(name)s: %(message)s"
_SPAWN = multiprocessing.get_context("spawn")


@dataclass(frozen=True, kw_only=True)
class WorkerPlan:
    """What one worker is to serve; sent to its process (its socket on the port as a copy)."""

    index: int  # 1..N, in the log as [worker N]
    settings: Settings
    http_socket: socket.socket
    single_connections: bool  # Socket Mode and the Discord gateway: worker 1 only
    schedules: bool  # a candidate for the scheduler's leader lock
    base_url: str | None  # the model server (`--fake`: the supervisor's fake)
    fake: bool
    user_errors: tuple[type[BaseException], ...]  # said in one line, not as a traceback
    metrics_socket: socket.socket | None = None  # its share of METRICS_PORT, when set


class WorkerFailed(ConfigError):
    """A worker could not start; the message is its one line."""


async def supervise(
    settings: Settings, count: int, *, fake: bool, user_errors: tuple[type[BaseException], ...]
) -> None:
    """Bind the port, migrate and store the prompts once, then serve with `count` workers until
    SIGINT or SIGTERM. With `fake`, one fake model here answers every worker."""
    with contextlib.ExitStack() as sockets:
        bound = bind(settings, count, sockets)
        metrics_sockets = bind_metrics(settings, count, sockets)
        # every worker's figures in one folder: a scrape of any worker shows all of them
        sockets.enter_context(shared_across_processes())
        async with contextlib.AsyncExitStack() as stack:
            base_url = None
            if fake:
                fake_llm = await FakeLlm().start()
                stack.push_async_callback(fake_llm.stop)
                base_url = fake_llm.base_url
            # the migrations and the prompt versions, once: workers find them done
            runtime = await open_runtime(settings, base_url=base_url, fake=fake, mcp=False)
            await runtime.close()
            log.info("starting %d workers on port %d", count, settings.slack_port)
            work_plans = plans(
                settings, bound, base_url=base_url, fake=fake, user_errors=user_errors
            )
            if metrics_sockets:
                work_plans = [
                    dataclasses.replace(plan, metrics_socket=shared)
                    for plan, shared in zip(work_plans, metrics_sockets, strict=True)
                ]
            await Supervisor(work_plans).run()


def plans(
    settings: Settings,
    sockets: list[socket.socket],
    *,
    base_url: str | None,
    fake: bool,
    user_errors: tuple[type[BaseException], ...],
) -> list[WorkerPlan]:
    """Every worker serves HTTP; worker 1 also holds the single-connection surfaces. Any worker
    holding every surface a notice may go to may lead the schedule (the lock picks one)."""
    single = settings.discord_token is not None  # Socket Mode never shares a process with HTTP
    return [
        WorkerPlan(
            index=index,
            settings=settings,
            http_socket=http_socket,
            single_connections=index == 1,
            schedules=index == 1 or not single,
            base_url=base_url,
            fake=fake,
            user_errors=user_errors,
        )
        for index, http_socket in enumerate(sockets, start=1)
    ]


def bind(settings: Settings, count: int, stack: contextlib.ExitStack) -> list[socket.socket]:
    """SLACK_PORT, bound once per worker (closed with `stack`); ConfigError in one line when
    it is taken."""
    try:
        _nobody_listens(settings.slack_port)
        return [stack.enter_context(listening_socket(settings.slack_port)) for _ in range(count)]
    except OSError as exc:
        raise ConfigError(
            f"SLACK_PORT: cannot listen on port {settings.slack_port} ({exc.strerror}); "
            "is another process using it?"
        ) from None


def bind_metrics(
    settings: Settings, count: int, stack: contextlib.ExitStack
) -> list[socket.socket]:
    """METRICS_PORT, when set, bound once per worker as SLACK_PORT is; ConfigError in one line
    when it is taken."""
    if settings.metrics_port is None:
        return []
    try:
        _nobody_listens(settings.metrics_port)
        return [stack.enter_context(listening_socket(settings.metrics_port)) for _ in range(count)]
    except OSError as exc:
        raise ConfigError(
            f"METRICS_PORT: cannot listen on port {settings.metrics_port} ({exc.strerror}); "
            "is another process using it?"
        ) from None


def _nobody_listens(port: int) -> None:
    """OSError when another process holds `port`, whether or not it shares it: SO_REUSEPORT
    would let a second `assistant run` (an old one not yet stopped, another checkout) bind
    beside the first and quietly take half of Slack's events. A plain bind is refused."""
    with socket.create_server(("0.0.0.0", port)):  # noqa: S104 - where the workers listen
        pass


class Supervisor:
    """Starts the workers, keeps them running, and stops them together."""

    def __init__(self, plans: list[WorkerPlan]) -> None:
        self._plans = plans
        self._processes: dict[int, BaseProcess] = {}
        self._stopping = asyncio.Event()
        self._ready: set[int] = set()

    async def run(self) -> None:
        """Until SIGINT or SIGTERM (forwarded to every worker, then waited for); WorkerFailed
        when a worker cannot start, once the others have stopped."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop)
        keepers = [asyncio.create_task(self._keep(plan)) for plan in self._plans]
        try:
            await asyncio.gather(*keepers)
        except WorkerFailed:
            self.stop()
            await asyncio.gather(*keepers, return_exceptions=True)
            raise
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    def stop(self) -> None:
        """Ask every worker to stop gracefully (each finishes the answers it has under way)."""
        if not self._stopping.is_set():
            log.info("stopping %d workers", len(self._processes))
        self._stopping.set()
        for process in self._processes.values():
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    async def _keep(self, plan: WorkerPlan) -> None:
        """Run one worker for as long as the supervisor runs, starting it again when it ends
        unexpectedly; WorkerFailed when its first start fails."""
        backoff = FIRST_BACKOFF_SECONDS
        served_once = False
        while not self._stopping.is_set():
            started = time.monotonic()
            ready, error, exitcode = await self._run_once(plan)
            if self._stopping.is_set():
                return
            if not served_once and not ready:
                raise WorkerFailed(error or f"worker {plan.index} ended at start ({exitcode})")
            served_once = True
            if time.monotonic() - started >= HEALTHY_SECONDS:
                backoff = FIRST_BACKOFF_SECONDS
            why = error or exitcode
            log.warning(
                "worker %d ended unexpectedly (%s); starting it again in %.0f s",
                plan.index,
                why,
                backoff,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def _run_once(self, plan: WorkerPlan) -> tuple[bool, str | None, str]:
        """Start the worker and wait until it ends: whether it got ready, its one-line error,
        and how it ended."""
        receiver, sender = _SPAWN.Pipe(duplex=False)
        process = _SPAWN.Process(target=work, args=(plan, sender), name=f"worker {plan.index}")
        process.start()
        sender.close()  # the worker holds the only writing end: end of file when it ends
        self._processes[plan.index] = process
        log.info("worker %d started (pid %s)", plan.index, process.pid)
        if self._stopping.is_set():  # a stop that came while it was being started
            self.stop()
        ready, error = False, None
        with receiver:
            while (message := await _receive(receiver)) is not None:
                kind, *detail = message
                ready = ready or kind == "ready"
                error = detail[0] if kind == "error" else error
                if kind == "ready":
                    self._ready_now(plan.index)
        await asyncio.to_thread(process.join)
        process_ended(process.pid)  # its turns in flight are no longer
        return ready, error, _ending(process.exitcode)

    def _ready_now(self, index: int) -> None:
        fresh = index not in self._ready
        self._ready.add(index)
        if fresh and len(self._ready) == len(self._plans):
            log.info("all %d workers are serving", len(self._plans))


async def _receive(receiver: Connection) -> tuple[str, ...] | None:
    """The worker's next message; None at the end of the pipe (the worker has ended)."""
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(receiver.fileno(), wake)
    try:
        await readable
    finally:
        loop.remove_reader(receiver.fileno())
    try:
        message: tuple[str, ...] = receiver.recv()
    except EOFError:
        return None
    return message


def _ending(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode}"


# ---- in the worker's own process


def work(plan: WorkerPlan, status: Connection) -> None:
    """A worker's life: the target of its spawned process. Exit code 2 after a one-line error
    (sent to the supervisor, which says it), 0 after a graceful stop."""
    _die_with_parent()
    who = f"worker {plan.index}"
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT.format(who=who))
    try:
        asyncio.run(_serve(plan, status))
    except plan.user_errors as exc:
        status.send(("error", str(exc)))
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C reaches every process of the terminal's group
        sys.exit(130)


async def _serve(plan: WorkerPlan, status: Connection) -> None:
    runtime = await open_runtime(plan.settings, base_url=plan.base_url, fake=plan.fake)
    role = services.Role(
        http_socket=plan.http_socket,
        metrics_socket=plan.metrics_socket,
        single_connections=plan.single_connections,
        schedules=plan.schedules,
    )
    try:
        await services.serve(
            plan.settings, runtime, role=role, ready=lambda: status.send(("ready",))
        )
    finally:
        await runtime.close()


def _die_with_parent() -> None:
    """End this worker the moment its supervisor ends, however it ends (SIGKILL too): an
    orphan would keep the port and answer on, unsupervised."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait_for_any([parent.sentinel])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()
