"""`meshgate server`: the REST API over a shared etcd store, no HAProxy, no state of its own.
Any number of servers may run against one store and answer alike."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import structlog

from meshgate.api import create_app
from meshgate.api.cluster_stats import cluster_stats_router
from meshgate.api.flows import ClusterFlows
from meshgate.api.graph import graph_router
from meshgate.api.nodes import nodes_router
from meshgate.api.rollouts import rollout_commands_router
from meshgate.nodes.election import Election
from meshgate.nodes.readings import ClusterReadings
from meshgate.nodes.view import NodeStatuses
from meshgate.rollouts.controller import RolloutController
from meshgate.store.etcd import EtcdStore
from meshgate.store.target import EtcdTarget
from meshgate.ui import mount_ui
from meshgate.wiring import ApiServer, run_until_stopped

log = structlog.get_logger("meshgate.server")


@dataclass(frozen=True)
class ServerOptions:
    store: EtcdTarget
    api_host: str = "127.0.0.1"
    api_port: int = 7700
    allow_raw_acl: bool = False
    token: str | None = None


async def run_server(options: ServerOptions) -> None:
    store = await EtcdStore.open(options.store)
    try:
        statuses = NodeStatuses(store)
        # Once-only work, on the elected server: rollouts, judged on every node's traffic.
        identity = f"{socket.gethostname()}:{options.api_port}:{os.getpid()}"
        election = Election(store, identity)
        controller = RolloutController(store, ClusterReadings(statuses).read)

        async def readiness() -> dict[str, Any]:
            return {"elected": election.leading}

        app = create_app(
            store,
            allow_raw_acl=options.allow_raw_acl,
            token=options.token,
            extra_routers=[
                nodes_router(statuses),
                cluster_stats_router(store, statuses),
                rollout_commands_router(controller),
                graph_router(store, flows=ClusterFlows(statuses)),
            ],
            statuses=statuses,
            readiness=readiness,
        )
        mount_ui(app)
        server = ApiServer(app, options.api_host, options.api_port)
        log.info(
            "meshgate server is up",
            api=f"http://{options.api_host}:{options.api_port}",
            store=",".join(options.store.endpoints),
        )
        await run_until_stopped([], [election.run(controller.run)], [server])
    finally:
        await store.close()
        log.info("meshgate server stopped")
