"""`meshgate up`: the embedded store, the API, the agent and a supervised HAProxy in one process."""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from meshgate.api import create_app
from meshgate.api.bodies import MAX_BODY_BYTES
from meshgate.api.flows import LocalFlows, flows_router
from meshgate.api.graph import graph_router
from meshgate.api.rollouts import rollouts_router
from meshgate.api.stats import stats_router
from meshgate.certificate_files import inline_document
from meshgate.discovery.expiries import record_expiries
from meshgate.events import EventLog
from meshgate.lifecycle.hangup import Rereader
from meshgate.lifecycle.lock import DataDirLock
from meshgate.metrics import metrics_router
from meshgate.model import load_documents, parse_text, resource_key, to_document
from meshgate.model.rollout import Rollout
from meshgate.rollouts.analytics import AnomalyEvent, RouteAnalytics
from meshgate.rollouts.controller import RolloutController
from meshgate.rollouts.readings import Reading
from meshgate.rollouts.source import AllRoutes, gateway_readings
from meshgate.stats.collector import StatsCollector
from meshgate.store import Key, Put, SqliteStore, Store
from meshgate.ui import mount_ui
from meshgate.watchdir.poller import ManifestDirWatcher
from meshgate.wiring import ApiServer, DataPlaneOptions, build_data_plane, run_until_stopped

log = structlog.get_logger("meshgate.node")


@dataclass(frozen=True)
class NodeOptions:
    data_dir: Path = Path(".meshgate")
    api_host: str = "127.0.0.1"
    api_port: int = 7700
    manifests: Sequence[Path] = field(default_factory=list)
    allow_raw_acl: bool = False
    token: str | None = None
    cert_dir: Path | None = None  # certificates sent over the API may name files under it
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
    keep_haproxy: bool = False  # SIGTERM leaves HAProxy serving, for the next start to adopt
    max_body_bytes: int = MAX_BODY_BYTES  # larger API request bodies get a 413
    flows: bool = True  # record who calls which gateway (the client's address of each request)


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


def data_plane_options(options: NodeOptions, data_dir: Path) -> DataPlaneOptions:
    return DataPlaneOptions(
        run_dir=data_dir / "run",
        haproxy_binary=options.haproxy_binary,
        hard_stop_after_ms=options.hard_stop_after_ms,
        latency=options.latency,
        log_budget_per_s=options.log_budget_per_s,
        access_log=options.access_log,
        dns_server=options.dns_server,
        flows=options.flows,
    )


async def run_node(options: NodeOptions) -> None:
    data_dir = options.data_dir.resolve()
    lock = DataDirLock(data_dir)
    lock.acquire()  # before anything in the data dir is touched
    (data_dir / "run").mkdir(parents=True, exist_ok=True)
    store = await SqliteStore.open(private_file(data_dir / "store.db"))
    plane = build_data_plane(store, data_plane_options(options, data_dir))
    analytics, rollouts = _rollouts(store, plane.stats, options, plane.events)
    plane.metrics.registry.register(analytics)
    stopped_by: signal.Signals | None = None
    try:
        await plane.start()
        if options.manifests:
            changed = await seed_manifests(
                store, options.manifests, allow_raw_acl=options.allow_raw_acl
            )
            log.info("manifests applied", changed=changed)
        app = create_app(
            store,
            allow_raw_acl=options.allow_raw_acl,
            token=options.token,
            cert_dir=options.cert_dir,
            readiness=plane.readiness,
            gateways_ready=plane.gateways_ready,
            events=plane.events,
            max_body_bytes=options.max_body_bytes,
            extra_routers=[
                metrics_router(plane.metrics),
                stats_router(store, plane.stats),
                rollouts_router(store, rollouts, plane.stats, analytics),
                graph_router(store, plane.stats, analytics, LocalFlows(plane.stats)),
                flows_router(plane.stats),
            ],
        )
        mount_ui(app)
        server = ApiServer(app, options.api_host, options.api_port)
        agent, *background = plane.work()
        background += [record_expiries(store, plane.events), analytics.run(), rollouts.run()]
        if options.watch is not None:
            watcher = ManifestDirWatcher(store, options.watch, allow_raw_acl=options.allow_raw_acl)
            background.append(watcher.run())
        rereader = Rereader(
            lambda: seed_manifests(store, options.manifests, allow_raw_acl=options.allow_raw_acl)
        )
        log.info("meshgate is up", api=f"http://{options.api_host}:{options.api_port}")
        try:
            stopped_by = await run_until_stopped(
                [agent], background, [server], on_hangup=rereader.hangup
            )
        finally:
            await rereader.close()
    finally:
        await plane.stop(keep_haproxy=options.keep_haproxy and stopped_by == signal.SIGTERM)
        await store.close()
        lock.release()
        log.info("meshgate stopped")


def _rollouts(
    store: Store, stats: StatsCollector, options: NodeOptions, events: EventLog
) -> tuple[RouteAnalytics, RolloutController]:
    """Route analytics (windows, anomalies) and the rollouts judged by them; both record
    what they see and do as events."""

    def anomaly_event(event: AnomalyEvent) -> None:
        namespace, gateway, route = event.route
        message = f"route {route}: {event.description}"
        events.record("anomaly", message, kind="gateway", namespace=namespace, name=gateway)

    def rollout_event(rollout: Rollout, message: str) -> None:
        where = {"kind": "rollout", "namespace": rollout.namespace, "name": rollout.name}
        events.record("rollout", message, **where)

    analytics = RouteAnalytics(
        AllRoutes(stats).read, window_s=options.anomaly_window_s, on_event=anomaly_event
    )

    async def read_routes(namespace: str, gateway: str) -> dict[str, Reading]:
        return await gateway_readings(stats, namespace, gateway)

    controller = RolloutController(
        store, read_routes, anomaly=analytics.open_anomaly, on_event=rollout_event
    )
    return analytics, controller
