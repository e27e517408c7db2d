"""`GET /api/v1/gateways/{name}/stats` (SPEC §3): per-route counters, rates and latencies.

Mounted through `create_app(extra_routers=...)`, ahead of the resource routes, so the path is
not read as a gateway called ".../stats". A gateway the store does not hold is 404; one that is
stored but not (yet) served has no routes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from meshgate.api.params import parse_namespace, require_gateway
from meshgate.model.names import DEFAULT_NAMESPACE
from meshgate.stats import view
from meshgate.stats.collector import StatsCollector
from meshgate.store import Store

NameParam = Annotated[str, Path(description="gateway name; URL-encode it ('/' and ':')")]
NamespaceParam = Annotated[
    str | None, Query(description=f"namespace (default {DEFAULT_NAMESPACE!r})")
]


def stats_router(store: Store, stats: StatsCollector) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["stats"])

    @router.get(
        "/gateways/{name:path}/stats",
        summary="Per-route requests, response classes, rate, latency percentiles, instances",
    )
    async def gateway_stats(name: NameParam, namespace: NamespaceParam = None) -> dict[str, Any]:
        space = parse_namespace(namespace) or DEFAULT_NAMESPACE
        await require_gateway(store, space, name)
        snapshot = await stats.refresh()
        logged = stats.keeper.fraction if stats.keeper else 1.0
        return view.gateway_stats(
            stats.dataplane(), snapshot, stats.latency, space, name, logged=logged
        )

    return router
