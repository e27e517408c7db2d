"""The dependency and traffic graph (SPEC §6) of what a node serves. Pure.

Nodes are gateways, services (a route's target: a registered service, an address or inline
targets) and callers; edges gateway → target come from the configuration, with the route's
weight, and carry the route's live figures when it has served traffic; edges caller → gateway
carry the traffic of each caller: a service, a node or `external` (see `callers`), when flows
are recorded; without them, one edge from `external` carries all of the gateway's traffic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from meshgate.callers import Caller
from meshgate.model import Gateway, Service
from meshgate.model.gateway import inline_endpoint

EXTERNAL = "external"


def node_id(kind: str, namespace: str, name: str) -> str:
    return f"{kind}:{namespace}/{name}"


def _figures(route: Mapping[str, Any] | None) -> dict[str, Any]:
    """rate, error_ratio and p99_ms of a route's stats (None when it has none)."""
    if not route:
        return {"rate": 0.0, "error_ratio": None, "p99_ms": None, "requests": 0}
    requests = int(route.get("requests") or 0)
    errors = int((route.get("responses") or {}).get("5xx") or 0)
    return {
        "rate": round(float(route.get("rate") or 0.0), 2),
        "error_ratio": round(errors / requests, 4) if requests else None,
        "p99_ms": (route.get("latency_ms") or {}).get("p99"),
        "requests": requests,
    }


def _summed(routes: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    figures = [_figures(route) for route in routes]
    requests = sum(f["requests"] for f in figures)
    errored = sum(f["error_ratio"] * f["requests"] for f in figures if f["error_ratio"] is not None)
    p99s = [f["p99_ms"] for f in figures if f["p99_ms"] is not None]
    return {
        "rate": round(sum(f["rate"] for f in figures), 2),
        "error_ratio": round(errored / requests, 4) if requests else None,
        "p99_ms": max(p99s) if p99s else None,  # the slowest route's: an upper bound
        "requests": requests,
    }


def build_graph(
    gateways: Iterable[Gateway],
    services: Iterable[Service],
    stats: Mapping[tuple[str, str], Mapping[str, Any]],
    callers: Mapping[tuple[str, str], list[tuple[Caller, Mapping[str, Any]]]] | None = None,
) -> dict[str, Any]:
    """`stats` maps (namespace, gateway) to the gateway's per-route stats (`routes` of the
    stats API); a gateway without an entry has served nothing yet. `callers` maps it to its
    callers, each with figures in the shape of a route's stats; None: flows not recorded."""
    known_services = {(s.namespace, s.name) for s in services}
    listed = list(gateways)
    known_gateways = {(g.namespace, g.name) for g in listed}
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, Any]] = []
    for service in services:
        nodes[node_id("service", service.namespace, service.name)] = {
            "id": node_id("service", service.namespace, service.name),
            "kind": "service",
            "name": service.name,
            "namespace": service.namespace,
            "instances": len(service.instances),
        }
    for gateway in listed:
        space = gateway.namespace
        gateway_id = node_id("gateway", space, gateway.name)
        nodes[gateway_id] = {
            "id": gateway_id,
            "kind": "gateway",
            "name": gateway.name,
            "namespace": space,
            "port": str(gateway.port),
        }
        routes = (stats.get((space, gateway.name)) or {}).get("routes") or {}
        weights = gateway.route_weights()
        for name, route in gateway.routes.items():
            target, kind = _target(
                space, name, route.targets is not None, known_services, known_gateways
            )
            if target not in nodes:
                nodes[target] = {"id": target, "kind": kind, "name": name, "namespace": space}
                if kind == "service" and (space, name) not in known_services:
                    nodes[target]["unresolved"] = True
            edges.append(
                {
                    "source": gateway_id,
                    "target": target,
                    "namespace": space,
                    "gateway": gateway.name,
                    "route": name,
                    "weight": weights[name],
                    "condition": route.condition,
                    **_figures(routes.get(name)),
                }
            )
        caller = node_id("external", space, EXTERNAL)
        nodes.setdefault(
            caller, {"id": caller, "kind": "external", "name": EXTERNAL, "namespace": space}
        )  # always there, traffic or not: a page drawing the graph keeps its layout
        if callers is not None:
            for found, figures in callers.get((space, gateway.name), []):
                node = {"id": found.id, "kind": found.kind, "name": found.name}
                nodes.setdefault(found.id, {**node, "namespace": found.namespace})
                edges.append(
                    {
                        "source": found.id,
                        "target": gateway_id,
                        "route": None,
                        "weight": None,
                        **_figures(figures),
                    }
                )
            continue
        edges.append(
            {
                "source": caller,
                "target": gateway_id,
                "route": None,
                "weight": None,
                **_summed(routes.values()),
            }
        )
    return {"nodes": list(nodes.values()), "edges": edges}


def _target(
    namespace: str,
    route: str,
    inline: bool,
    services: set[tuple[str, str]],
    gateways: set[tuple[str, str]],
) -> tuple[str, str]:
    """The graph node a route leads to, and its kind."""
    if inline or inline_endpoint(route) is not None:
        return node_id("address", namespace, route), "address"
    if (namespace, route) in gateways and (namespace, route) not in services:
        return node_id("gateway", namespace, route), "gateway"
    return node_id("service", namespace, route), "service"
