"""`GET /api/v1/graph` (SPEC §6) and `GET /api/v1/gateways/{name}/history`: what the dashboard
draws, from the store, the stats collector and the route analytics' history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from meshgate.api.admission import stored_gateways
from meshgate.api.params import parse_namespace, require_gateway
from meshgate.errors import ValidationFailed
from meshgate.model import Service, validate_resource
from meshgate.model.names import DEFAULT_NAMESPACE
from meshgate.rollouts.analytics import RouteAnalytics
from meshgate.stats import view
from meshgate.stats.collector import StatsCollector
from meshgate.store import Store
from meshgate.topology import build_graph

NameParam = Annotated[str, Path(description="gateway name; URL-encode it ('/' and ':')")]
NamespaceParam = Annotated[str | None, Query(description="only this namespace (default: all)")]


def graph_router(
    store: Store, stats: StatsCollector | None = None, analytics: RouteAnalytics | None = None
) -> APIRouter:
    """The graph, with the live figures of `stats` and `analytics` when given (a node);
    without them (a server) the configuration's edges alone, and no history."""
    router = APIRouter(prefix="/api/v1", tags=["graph"])

    @router.get("/graph", summary="Gateways, services and callers, with weights and traffic")
    async def graph(namespace: NamespaceParam = None) -> dict[str, Any]:
        space = parse_namespace(namespace)
        gateways = stored_gateways(await store.list("gateways", space))
        services = []
        for record in await store.list("services", space):
            try:
                found = validate_resource(record.value, kind="service")
            except ValidationFailed:
                continue
            if isinstance(found, Service):
                services.append(found)
        figures = {}
        if stats is not None:
            snapshot = await stats.refresh()
            dataplane = stats.dataplane()
            figures = {
                (g.namespace, g.name): view.gateway_stats(
                    dataplane, snapshot, stats.latency, g.namespace, g.name
                )
                for g in gateways
            }
        graph = build_graph(gateways, services, figures)
        for edge in graph["edges"]:
            if edge["route"] is not None and analytics is not None:  # a route's edge
                edge["anomaly"] = analytics.open_anomaly(
                    edge["namespace"], edge["gateway"], edge["route"]
                )
        return graph

    if analytics is None:
        return router

    history_of = analytics

    @router.get(
        "/gateways/{name:path}/history",
        summary="Each route window by window: rate, responses by class, p50 and p99",
    )
    async def history(name: NameParam, namespace: NamespaceParam = None) -> dict[str, Any]:
        space = parse_namespace(namespace) or DEFAULT_NAMESPACE
        await require_gateway(store, space, name)
        return {
            "gateway": name,
            "namespace": space,
            "window_s": history_of.history.every_s,
            "routes": history_of.series(space, name),
        }

    return router
