"""`GET /api/v1/graph` (SPEC §6) and `GET /api/v1/gateways/{name}/history`: what the dashboard
draws, from the store, the recorded flows (this node's or every node's), the stats collector
and the route analytics' history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from meshgate.api.admission import stored_gateways
from meshgate.api.flows import DEFAULT_WINDOW, FlowSource, WindowParam, parse_window
from meshgate.api.params import parse_namespace, require_gateway
from meshgate.callers import CallerIndex, Endpoint
from meshgate.discovery.registry import from_value
from meshgate.errors import ValidationFailed
from meshgate.flowgraph import graph_figures
from meshgate.model import Service, validate_resource
from meshgate.model.names import DEFAULT_NAMESPACE
from meshgate.rollouts.analytics import RouteAnalytics
from meshgate.stats import view
from meshgate.stats.collector import StatsCollector
from meshgate.store import Record, Store
from meshgate.topology import build_graph

NameParam = Annotated[str, Path(description="gateway name; URL-encode it ('/' and ':')")]
NamespaceParam = Annotated[str | None, Query(description="only this namespace (default: all)")]


def caller_endpoints(
    services: list[tuple[Service, Record]], registered: list[Record]
) -> list[Endpoint]:
    """Every instance address a caller may be matched against: the manifests' instances and
    those registered at run time, with the node each names (the service plane's do)."""
    found = []
    for service, _ in services:
        for instance in service.instances:
            found.append(Endpoint(service.namespace, service.name, instance.address, instance.node))
    for record in registered:
        parsed = from_value(record.value) if isinstance(record.value, dict) else None
        if parsed is not None:
            name, instance = parsed
            found.append(Endpoint(record.key.namespace, name, instance.address, instance.node))
    return found


def graph_router(
    store: Store,
    stats: StatsCollector | None = None,
    analytics: RouteAnalytics | None = None,
    flows: FlowSource | None = None,
) -> APIRouter:
    """The graph, with the live figures of `flows` (who calls which gateway, routes' figures
    over the window) when recorded, else of `stats` (a node); without either, the
    configuration's edges alone; and `analytics`' anomalies and history when given."""
    router = APIRouter(prefix="/api/v1", tags=["graph"])

    @router.get("/graph", summary="Gateways, services and callers, with weights and traffic")
    async def graph(
        namespace: NamespaceParam = None, window: WindowParam = DEFAULT_WINDOW
    ) -> dict[str, Any]:
        space = parse_namespace(namespace)
        window_s = parse_window(window)
        gateways = stored_gateways(await store.list("gateways", space))
        services: list[tuple[Service, Record]] = []
        for record in await store.list("services", None):
            try:
                found = validate_resource(record.value, kind="service")
            except ValidationFailed:
                continue
            if isinstance(found, Service):
                services.append((found, record))
        reading = await flows.read(window_s, space) if flows is not None else None
        figures: dict[tuple[str, str], Any] = {}
        callers = None
        if reading is not None and reading.merged is not None:
            registered = await store.list("instances", None)
            index = CallerIndex(caller_endpoints(services, registered), reading.nodes)
            known = {(s.namespace, s.name) for s, _ in services}
            figures, callers = graph_figures(reading.merged, gateways, index, known)
        elif stats is not None:
            snapshot = await stats.refresh()
            dataplane = stats.dataplane()
            figures = {
                (g.namespace, g.name): view.gateway_stats(
                    dataplane, snapshot, stats.latency, g.namespace, g.name
                )
                for g in gateways
            }
        shown = [s for s, _ in services if space is None or s.namespace == space]
        graph = build_graph(gateways, shown, figures, callers)
        for edge in graph["edges"]:
            if edge["route"] is not None and analytics is not None:  # a route's edge
                edge["anomaly"] = analytics.open_anomaly(
                    edge["namespace"], edge["gateway"], edge["route"]
                )
        graph["window_s"] = window_s
        graph["flows"] = callers is not None
        if callers is not None and reading is not None:
            graph["span_s"] = reading.span_s
        if reading is not None and reading.unreachable:
            graph["unreachable"] = reading.unreachable
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
