"""`meshgate agent`: one node of many. Its own HAProxy, fed from the shared etcd store exactly
as `up` feeds it, reporting under its node name; on `--metrics`, its Prometheus metrics, stats
and health."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from meshgate.agent.desired import Placement
from meshgate.api.flows import flows_router
from meshgate.api.stats import stats_router
from meshgate.lifecycle.lock import DataDirLock
from meshgate.metrics import metrics_router
from meshgate.nodes.keys import status_prefix
from meshgate.nodes.readings import reading_to_json
from meshgate.nodes.registration import Registration, instance_id
from meshgate.rollouts.source import gateway_readings
from meshgate.store.etcd import EtcdStore
from meshgate.store.target import EtcdTarget
from meshgate.wiring import (
    ApiServer,
    DataPlane,
    DataPlaneOptions,
    build_data_plane,
    run_until_stopped,
)

log = structlog.get_logger("meshgate.agent")

# A pass without any event this often: etcd 3.4 can lose watch events around compactions.
RELIST_S = 30.0
# Status keys per transaction: below etcd's default --max-txn-ops (128).
STATUS_BATCH = 100


@dataclass(frozen=True)
class AgentOptions:
    store: EtcdTarget
    node: str
    data_dir: Path
    plane: DataPlaneOptions
    address: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    metrics: tuple[str, int] | None = None


def metrics_app(plane: DataPlane, store: EtcdStore) -> FastAPI:
    """What an agent serves on `--metrics`: /metrics, its gateways' stats, flows and rollout
    readings (for servers), /healthz."""
    app = FastAPI(title="meshgate agent", docs_url=None, redoc_url=None)
    app.include_router(metrics_router(plane.metrics))
    app.include_router(stats_router(store, plane.stats))
    app.include_router(flows_router(plane.stats))

    @app.get("/api/v1/gateways/{name:path}/readings", include_in_schema=False)
    async def readings(name: str, namespace: str = "default") -> dict[str, Any]:
        found = await gateway_readings(plane.stats, namespace, name)
        return {route: reading_to_json(reading) for route, reading in found.items()}

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        report: dict[str, Any] = await plane.readiness()
        return JSONResponse(report, 200 if report.get("ok") else 503)

    return app


def metrics_url(options: AgentOptions) -> str | None:
    """Where servers reach `--metrics`: a wildcard host means the node's address."""
    if options.metrics is None:
        return None
    host, port = options.metrics
    if host in ("0.0.0.0", "::"):
        host = options.address or "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def run_agent(options: AgentOptions) -> None:
    data_dir = options.data_dir.resolve()
    lock = DataDirLock(data_dir)
    lock.acquire()  # one agent (or `up`) per data dir, before anything in it is touched
    store = await EtcdStore.open(options.store)
    plane: DataPlane | None = None
    try:
        plane = build_data_plane(store, options.plane, status_prefix=status_prefix(options.node))
        agent = plane.agent
        labels = {**options.labels, "node": options.node}
        agent.loader.placement = Placement(labels, options.address)
        agent.relist_s = RELIST_S
        agent.status_batch = STATUS_BATCH
        agent.hash_config = True
        registration = Registration(
            store,
            options.node,
            options.address,
            options.labels,
            options.versions,
            instance_id(data_dir),
            report=agent.acknowledgement,
            metrics=metrics_url(options),
        )
        await registration.register()
        await plane.start()
        servers = []
        if options.metrics is not None:
            servers.append(ApiServer(metrics_app(plane, store), *options.metrics))
        work, *background = plane.work()
        log.info("meshgate agent is up", node=options.node, address=options.address)
        await run_until_stopped([work, registration.run()], background, servers)
    finally:
        if plane is not None:
            await plane.stop()
        await store.close()
        lock.release()
        log.info("meshgate agent stopped", node=options.node)
