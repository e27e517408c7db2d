"""`GET /api/v1/gateways/{name}/stats` (SPEC §3): per-route counters, rates and latencies.

Mounted through `create_app(extra_routers=...)`, ahead of the resource routes, so the path is
not read as a gateway called ".../stats". A gateway the store does not hold is 404; one that is
stored but not (yet) served has no routes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from meshgate.api.resources import api_error
from meshgate.errors import Problem, ValidationFailed
from meshgate.model.names import DEFAULT_NAMESPACE, check_namespace
from meshgate.stats import view
from meshgate.stats.collector import StatsCollector
from meshgate.store import Key, Store

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
    async def gateway_stats(
        name: NameParam,
        namespace: NamespaceParam = None,
        histograms: Annotated[
            bool, Query(description="add each route's latency histogram (for merging)")
        ] = False,
    ) -> dict[str, Any]:
        try:
            space = check_namespace(namespace) if namespace is not None else DEFAULT_NAMESPACE
        except ValueError as exc:
            raise ValidationFailed([Problem("namespace", str(exc))]) from None
        try:
            key = Key("gateways", space, name)
        except ValueError:
            key = None  # a name no gateway can have
        if key is None or await store.get(key) is None:
            raise api_error(404, f"gateway {space}/{name} not found")
        snapshot = await stats.refresh()
        logged = stats.keeper.fraction if stats.keeper else 1.0
        return view.gateway_stats(
            stats.dataplane(),
            snapshot,
            stats.latency,
            space,
            name,
            logged=logged,
            histograms=histograms,
        )

    return router
