"""What `up`, `server` and `agent` share: one node's data plane (HAProxy, the reconcile loop
feeding it from a store, stats, instance health, DNS), the API server, and running tasks
until a signal. The roots (`node`, `server`, `agent_node`) only choose which parts to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tracemalloc
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI

from meshgate import collection, memory_debug, stalls
from meshgate.agent import Agent, Driver
from meshgate.agent.health import InstanceHealth, poll_health
from meshgate.agent.state_log import StateReceiver
from meshgate.compiler import ir
from meshgate.discovery.dns import DnsFollower, Resolver
from meshgate.events import EventLog
from meshgate.haproxy.runtime import RuntimeClient
from meshgate.haproxy.stats_reader import StatsReader
from meshgate.haproxy.supervisor import HaproxySupervisor
from meshgate.lifecycle.readiness import health_report, readiness_report
from meshgate.metrics import ControlPlaneMetrics
from meshgate.process_metrics import HaproxyProcessMetrics
from meshgate.stats.accesslog import AccessLog
from meshgate.stats.collector import StatsCollector
from meshgate.stats.flows import FlowBook
from meshgate.stats.keeper import LogKeeper
from meshgate.stats.latency import LatencyBook
from meshgate.stats.logline import RING
from meshgate.stats.logs import LogReceiver
from meshgate.stats.prometheus import DataPlaneMetrics
from meshgate.stats.sampling import KeepController
from meshgate.store import Store

log = structlog.get_logger("meshgate.node")

# The node parses at most this many lines a second however many HAProxy sends (one in N above
# it): a bound on the agent's CPU while HAProxy's sampling catches up with a burst (it follows
# the polls, a second or more behind), and with `--log-budget 0`.
PARSE_FLOOR_PER_S = 20_000
# How long stopping waits for server changes still on their way to HAProxy, and for the files.
LANES_STOP_S = 10.0
STATES_SOCKET = "states.sock"  # HAProxy streams server state changes here (agent.state_log)


@dataclass(frozen=True)
class DataPlaneOptions:
    """How one node runs HAProxy and observes it (the options `up` and `agent` share)."""

    run_dir: Path
    haproxy_binary: str = "haproxy"
    hard_stop_after_ms: int = 30_000  # how long an old HAProxy worker may finish its connections
    latency: bool = True  # request lines from HAProxy for latency percentiles; off: counters only
    # Request lines per second HAProxy should log; above it, a random fraction of requests
    # (0: every request). An access log overrides it: it records every request.
    log_budget_per_s: int = 2_000
    access_log: str | None = None  # a file, or "-" for stdout: one JSON object per request
    dns_server: str | None = None  # "IP[:PORT]" for services' dns: names; else the system's
    # Who calls which gateway (the client's address in each request line; needs `latency`).
    flows: bool = True


@dataclass
class DataPlane:
    """One node's HAProxy and everything that feeds and watches it."""

    supervisor: HaproxySupervisor
    driver: Driver
    agent: Agent
    metrics: ControlPlaneMetrics
    stats: StatsCollector
    health: InstanceHealth
    follower: DnsFollower
    receiver: LogReceiver | None
    events: EventLog
    states: StateReceiver | None = None

    async def start(self) -> None:
        """Adopt the HAProxy an earlier meshgate left running on this run dir, if any; then
        listen for its request lines."""
        # Allocation snapshots (a leak hunt only) wait for a moment between two stats polls.
        if tracemalloc.is_tracing() or os.environ.get(memory_debug.ENVIRONMENT):
            memory_debug.snapshot_between(self.stats.between_polls)
        collection.tune_for_a_node()
        # What holds the event loop, when asked (a latency investigation only).
        stalls.watch_if_asked(asyncio.get_running_loop())
        if await self.supervisor.adopt():
            log.info("adopted the running HAProxy", master=self.supervisor.master_pid)
        if self.receiver is not None:
            # Listening before HAProxy starts, so its log forwarder connects at once.
            await self.receiver.start()
        if self.states is not None:
            await self.states.start()

    def work(self) -> list[Coroutine[Any, Any, None]]:
        """The loops that run until cancelled: the agent first (its end ends the node)."""
        return [
            self.agent.run(),
            self.stats.run(),
            self.follower.run(),
            poll_health(
                self.health,
                self.stats,
                self.agent.republish,
                events=self.events,
                states_seen=self.driver.refresh_dispatch,
            ),
        ]

    async def stop(self, *, keep_haproxy: bool = False) -> None:
        """Stop HAProxy, or with `keep_haproxy` leave it serving for the next start to adopt."""
        await self.driver.stop_lanes(LANES_STOP_S)
        if keep_haproxy:
            await self.supervisor.leave_running()
        else:
            await self.supervisor.stop()
        if self.receiver is not None:
            await self.receiver.stop()
        if self.states is not None:
            await self.states.stop()

    async def readiness(self) -> dict[str, Any]:
        """/healthz: the agent applies, HAProxy runs, and some gateway (if any) is served."""
        running = self.supervisor.running
        return {
            **health_report(self.agent, self.supervisor),
            "old_workers": await self.supervisor.old_worker_count() if running else 0,
        }

    def gateways_ready(self) -> dict[str, Any]:
        """/readyz: every gateway is served; those that are not, with why."""
        return readiness_report(self.agent, self.supervisor)


def build_data_plane(
    store: Store, options: DataPlaneOptions, *, status_prefix: str = "status"
) -> DataPlane:
    run_dir = options.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    supervisor = HaproxySupervisor(binary=options.haproxy_binary, run_dir=run_dir)
    runtime = RuntimeClient(str(run_dir / "admin.sock"), str(run_dir / "master.sock"))
    metrics = ControlPlaneMetrics()
    settings = ir.Settings(
        run_dir=str(run_dir),
        hard_stop_after_ms=options.hard_stop_after_ms,
        log_socket=str(run_dir / "log.sock") if options.latency else None,
        log_details=options.access_log is not None,
        flows=options.flows and options.latency,
        state_socket=str(run_dir / STATES_SOCKET),
    )
    driver = Driver(supervisor, runtime, settings, background=True)
    follower = DnsFollower(Resolver(options.dns_server), on_change=lambda: agent.request_pass())
    health = InstanceHealth(dns_errors=follower.errors)
    events = EventLog()
    agent = Agent(store, driver, metrics, health=health, events=events, status_prefix=status_prefix)
    agent.loader.dns = follower
    stats, receiver = _stats(options, driver, runtime)
    stats.make_way = agent.make_way  # a stats poll never holds up a change
    metrics.registry.register(DataPlaneMetrics(stats))
    metrics.registry.register(HaproxyProcessMetrics(lambda: supervisor.master_pid))
    states = StateReceiver(run_dir / STATES_SOCKET, driver.server_changed)
    return DataPlane(
        supervisor, driver, agent, metrics, stats, health, follower, receiver, events, states
    )


def _stats(
    options: DataPlaneOptions, driver: Driver, runtime: RuntimeClient
) -> tuple[StatsCollector, LogReceiver | None]:
    """The stats poller, and the receiver of HAProxy's request lines when latency is on."""
    run_dir = options.run_dir
    book = None
    keeper = None
    if options.latency:
        # An access log is a record of every request: it must not be thinned out, in HAProxy
        # (keep stays at every request) or here.
        budget = None if options.access_log else options.log_budget_per_s or None
        parse_budget = None if options.access_log else max(PARSE_FLOOR_PER_S, 2 * (budget or 0))
        book = LatencyBook(budget_per_s=parse_budget, flows=FlowBook() if options.flows else None)
        if budget is not None:
            keeper = LogKeeper(KeepController(budget), runtime.set_proc_var)
    # The access log wants every line, streamed as it is written; the statistics alone read
    # the ring with each poll, which costs HAProxy less (see `stats.ring`).
    reader = StatsReader(str(run_dir / "master.sock"))
    stats = StatsCollector(
        reader,
        lambda: driver.running,
        latency=book,
        keeper=keeper,
        ring=RING if book is not None and not options.access_log else None,
    )
    if book is None or not options.access_log:
        return stats, None
    access_log = AccessLog(options.access_log, lambda: driver.running)
    return stats, LogReceiver(run_dir / "log.sock", book, access_log=access_log)


class ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: the root stops everything it started itself."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        # Its lines go to the node's log, in the node's format (`logconfig`).
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", log_config=None)
        super().__init__(config)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_until_stopped(
    main: Sequence[Coroutine[Any, Any, None]],
    background: Sequence[Coroutine[Any, Any, None]],
    servers: Sequence[ApiServer] = (),
    *,
    on_hangup: Callable[[], None] | None = None,
) -> signal.Signals | None:
    """Run until SIGINT/SIGTERM or until one of `main` ends (a failure is raised); cancel
    `background`; let the API servers finish cleanly. Returns the signal that stopped it.
    SIGHUP calls `on_hangup` (and never ends the process)."""
    stop = asyncio.Event()
    stopped_by: list[signal.Signals] = []
    loop = asyncio.get_running_loop()

    def stop_on(signum: signal.Signals) -> None:
        stopped_by.append(signum)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop_on, signum)
    if on_hangup is not None:
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
    try:
        main_tasks = [asyncio.create_task(c) for c in main]
        serving = [asyncio.create_task(s.serve()) for s in servers]
        other = [asyncio.create_task(c) for c in background]
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([*main_tasks, *serving, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        for task in (*main_tasks, *other):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # uvicorn finishes its lifespan cleanly when asked to exit rather than cancelled.
        for server in servers:
            server.should_exit = True
        for task in serving:
            await task
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)
    return stopped_by[0] if stopped_by else None
