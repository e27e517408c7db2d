"""`meshgate up`: the embedded store, the API, the agent and a supervised HAProxy in one process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import uvicorn

from meshgate.agent import Agent, Driver
from meshgate.agent.health import InstanceHealth, poll_health
from meshgate.api import create_app
from meshgate.api.graph import graph_router
from meshgate.api.rollouts import rollouts_router
from meshgate.api.stats import stats_router
from meshgate.certificate_files import inline_document
from meshgate.compiler import ir
from meshgate.discovery.dns import DnsFollower, Resolver
from meshgate.discovery.expiries import record_expiries
from meshgate.events import EventLog
from meshgate.haproxy.runtime import RuntimeClient
from meshgate.haproxy.stats_reader import StatsReader
from meshgate.haproxy.supervisor import HaproxySupervisor
from meshgate.metrics import ControlPlaneMetrics, metrics_router
from meshgate.model import load_documents, parse_text, resource_key, to_document
from meshgate.rollouts.analytics import RouteAnalytics
from meshgate.rollouts.controller import RolloutController
from meshgate.rollouts.readings import Reading
from meshgate.rollouts.source import AllRoutes, gateway_readings
from meshgate.stats.accesslog import AccessLog
from meshgate.stats.collector import StatsCollector
from meshgate.stats.keeper import LogKeeper
from meshgate.stats.latency import LatencyBook
from meshgate.stats.logline import RING
from meshgate.stats.logs import LogReceiver
from meshgate.stats.prometheus import DataPlaneMetrics
from meshgate.stats.sampling import KeepController
from meshgate.store import Key, Put, SqliteStore, Store
from meshgate.ui import mount_ui
from meshgate.watchdir.poller import ManifestDirWatcher

log = structlog.get_logger("meshgate.node")


@dataclass(frozen=True)
class NodeOptions:
    data_dir: Path = Path(".meshgate")
    api_host: str = "127.0.0.1"
    api_port: int = 7700
    manifests: Sequence[Path] = field(default_factory=list)
    allow_raw_acl: bool = False
    token: str | None = None
    haproxy_binary: str = "haproxy"
    hard_stop_after_ms: int = 30_000  # how long an old HAProxy worker may finish its connections
    latency: bool = True  # request lines from HAProxy for latency percentiles; off: counters only
    # Request lines per second HAProxy should log; above it, a random fraction of requests
    # (0: every request). An access log overrides it: it records every request.
    log_budget_per_s: int = 2_000
    access_log: str | None = None  # a file, or "-" for stdout: one JSON object per request
    watch: Path | None = None  # a manifest directory applied as its files change
    dns_server: str | None = None  # "IP[:PORT]" for services' dns: names; else the system's
    anomaly_window_s: float = 10.0  # route anomalies are judged on windows this long


def manifest_files(paths: Sequence[Path]) -> list[Path]:
    """Files as given; directories contribute their *.yaml, *.yml and *.json files, sorted."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
        else:
            files.append(path)
    return files


async def seed_manifests(store: Store, paths: Sequence[Path], *, allow_raw_acl: bool) -> int:
    """Apply manifests given on the command line; documents already stored as-is are left alone."""
    documents = []
    for path in manifest_files(paths):
        documents += [inline_document(d) for d in parse_text(path.read_text(), str(path))]
    ops = []
    for resource in load_documents(documents, allow_raw_acl=allow_raw_acl):
        key = Key(*resource_key(resource))
        document = to_document(resource)
        existing = await store.get(key)
        if existing is None or existing.value != document:
            ops.append(Put(key, document))
    if ops:
        await store.commit(ops)
    return len(ops)


def private_file(path: Path) -> Path:
    """Make `path` (and SQLite's -wal/-shm companions, which copy its mode) readable by its
    owner only: the store holds certificates' private keys."""
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for companion in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if companion.exists():
            companion.chmod(0o600)
    return path


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: the node stops everything it started itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_node(options: NodeOptions) -> None:
    data_dir = options.data_dir.resolve()
    run_dir = data_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    store = await SqliteStore.open(private_file(data_dir / "store.db"))
    supervisor = HaproxySupervisor(binary=options.haproxy_binary, run_dir=run_dir)
    runtime = RuntimeClient(str(run_dir / "admin.sock"), str(run_dir / "master.sock"))
    metrics = ControlPlaneMetrics()
    settings = ir.Settings(
        run_dir=str(run_dir),
        hard_stop_after_ms=options.hard_stop_after_ms,
        log_socket=str(run_dir / "log.sock") if options.latency else None,
        log_details=options.access_log is not None,
    )
    driver = Driver(supervisor, runtime, settings)
    follower = DnsFollower(Resolver(options.dns_server), on_change=lambda: agent.request_pass())
    health = InstanceHealth(dns_errors=follower.errors)
    events = EventLog()
    agent = Agent(store, driver, metrics, health=health, events=events)
    agent.loader.dns = follower
    stats, receiver = _stats(options, run_dir, driver, runtime)
    stats.make_way = agent.make_way  # a stats poll never holds up a change
    metrics.registry.register(DataPlaneMetrics(stats))
    analytics, rollouts = _rollouts(store, stats, options)
    metrics.registry.register(analytics)
    try:
        if receiver is not None:
            # Listening before HAProxy starts, so its log forwarder connects at once.
            await receiver.start()
        if options.manifests:
            changed = await seed_manifests(
                store, options.manifests, allow_raw_acl=options.allow_raw_acl
            )
            log.info("manifests applied", changed=changed)

        async def readiness() -> dict[str, Any]:
            return {
                "ok": agent.healthy and supervisor.running,
                "agent": "ok" if agent.healthy else (agent.last_error or "starting"),
                "haproxy": "running" if supervisor.running else "stopped",
                "old_workers": await supervisor.old_worker_count() if supervisor.running else 0,
            }

        app = create_app(
            store,
            allow_raw_acl=options.allow_raw_acl,
            token=options.token,
            readiness=readiness,
            events=events,
            extra_routers=[
                metrics_router(metrics),
                stats_router(store, stats),
                rollouts_router(store, rollouts, stats, analytics),
                graph_router(store, stats, analytics),
            ],
        )
        mount_ui(app)
        server = _ApiServer(
            uvicorn.Config(app, host=options.api_host, port=options.api_port, log_level="warning")
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        tasks = [asyncio.create_task(agent.run()), asyncio.create_task(server.serve())]
        poller = asyncio.create_task(stats.run())
        background = [
            asyncio.create_task(follower.run()),
            asyncio.create_task(poll_health(health, stats, agent.republish, events=events)),
            asyncio.create_task(record_expiries(store, events)),
            asyncio.create_task(analytics.run()),
            asyncio.create_task(rollouts.run()),
        ]
        if options.watch is not None:
            watcher = ManifestDirWatcher(store, options.watch, allow_raw_acl=options.allow_raw_acl)
            background.append(asyncio.create_task(watcher.run()))
        log.info("meshgate is up", api=f"http://{options.api_host}:{options.api_port}")
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        agent_task, server_task = tasks
        for task in (agent_task, poller, *background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # uvicorn finishes its lifespan cleanly when asked to exit rather than cancelled.
        server.should_exit = True
        await server_task
    finally:
        await supervisor.stop()
        if receiver is not None:
            await receiver.stop()
        await store.close()
        log.info("meshgate stopped")


def _rollouts(
    store: Store, stats: StatsCollector, options: NodeOptions
) -> tuple[RouteAnalytics, RolloutController]:
    """Route analytics (windows, anomalies) and the rollouts judged by them."""
    analytics = RouteAnalytics(AllRoutes(stats).read, window_s=options.anomaly_window_s)

    async def read_routes(namespace: str, gateway: str) -> dict[str, Reading]:
        return await gateway_readings(stats, namespace, gateway)

    controller = RolloutController(store, read_routes, anomaly=analytics.open_anomaly)
    return analytics, controller


# The node parses at most this many lines a second however many HAProxy sends (one in N above
# it): a bound on the agent's CPU while HAProxy's sampling catches up with a burst (it follows
# the polls, a second or more behind), and with `--log-budget 0`.
PARSE_FLOOR_PER_S = 20_000


def _stats(
    options: NodeOptions, run_dir: Path, driver: Driver, runtime: RuntimeClient
) -> tuple[StatsCollector, LogReceiver | None]:
    """The stats poller, and the receiver of HAProxy's request lines when latency is on."""
    book = None
    keeper = None
    if options.latency:
        # An access log is a record of every request: it must not be thinned out, in HAProxy
        # (keep stays at every request) or here.
        budget = None if options.access_log else options.log_budget_per_s or None
        parse_budget = None if options.access_log else max(PARSE_FLOOR_PER_S, 2 * (budget or 0))
        book = LatencyBook(budget_per_s=parse_budget)
        if budget is not None:
            keeper = LogKeeper(KeepController(budget), runtime.set_proc_var)
    # The access log wants every line, streamed as it is written; the statistics alone read
    # the ring with each poll, which costs HAProxy less (see `stats.ring`).
    stats = StatsCollector(
        StatsReader(str(run_dir / "master.sock")),
        lambda: driver.running,
        latency=book,
        keeper=keeper,
        ring=RING if book is not None and not options.access_log else None,
    )
    if book is None or not options.access_log:
        return stats, None
    access_log = AccessLog(options.access_log, lambda: driver.running)
    return stats, LogReceiver(run_dir / "log.sock", book, access_log=access_log)
