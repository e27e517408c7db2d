"""The graph's live figures from merged flows (`stats.flowview.merge_flows`): each route's,
and each gateway's callers, resolved from client addresses (`callers`) and added up per
caller. Pure.

A gateway chained behind another (a route whose target is a gateway) is called by HAProxy
itself, from 127.0.0.1 on the same node: that traffic is already the configuration's edge
between the two gateways, with its figures, so as many of the local address's requests as the
chaining routes sent on that node are taken off the local caller; what remains is a local
process's own traffic."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from meshgate.callers import LOCAL, Caller, CallerIndex, canonical
from meshgate.model import Gateway
from meshgate.stats.flowview import Figures, add_figures, as_route_stats, empty_figures, scaled

RouteStats = dict[tuple[str, str], dict[str, Any]]
Callers = dict[tuple[str, str], list[tuple[Caller, Mapping[str, Any]]]]


def chained_requests(
    merged: Mapping[tuple[str, str], Any],
    gateways: Iterable[Gateway],
    services: set[tuple[str, str]],
) -> dict[tuple[str, str], dict[str, int]]:
    """Per gateway, per node: requests that other gateways' routes sent it."""
    listed = list(gateways)
    known = {(g.namespace, g.name) for g in listed}
    found: dict[tuple[str, str], dict[str, int]] = {}
    for gateway in listed:
        flows = merged.get((gateway.namespace, gateway.name))
        if flows is None:
            continue
        for route in gateway.routes:
            target = (gateway.namespace, route)
            if (
                target not in known
                or target in services
                or target == (gateway.namespace, gateway.name)
            ):
                continue
            for node, counted in flows.get("node_routes", {}).items():
                into = found.setdefault(target, {})
                into[node] = into.get(node, 0) + int(counted.get(route, 0))
    return found


def graph_figures(
    merged: Mapping[tuple[str, str], Any],
    gateways: Iterable[Gateway],
    index: CallerIndex,
    services: set[tuple[str, str]] | None = None,
) -> tuple[RouteStats, Callers]:
    """Per gateway: its routes' stats and its callers (busiest first), for `build_graph`.
    `services`: (namespace, name) of the services (a route of that name is not a chain)."""
    listed = list(gateways)
    chained = chained_requests(merged, listed, services or set())
    stats: RouteStats = {}
    callers: Callers = {}
    for gateway in listed:
        key = (gateway.namespace, gateway.name)
        flows = merged.get(key)
        if flows is None:
            callers[key] = []
            continue
        stats[key] = {"routes": {route: as_route_stats(f) for route, f in flows["routes"].items()}}
        targets = frozenset(gateway.routes)
        from_chains = dict(chained.get(key, {}))
        found: dict[str, tuple[Caller, Figures]] = {}
        for node, address, figures in flows["callers"]:
            if canonical(address) in LOCAL and from_chains.get(node, 0) > 0:
                taken = min(from_chains[node], figures["requests"])
                from_chains[node] -= taken
                if taken >= figures["requests"]:
                    continue
                figures = scaled(figures, 1 - taken / figures["requests"])
            caller = index.resolve(
                address, namespace=gateway.namespace, node=node or None, targets=targets
            )
            into = found.setdefault(caller.id, (caller, empty_figures()))[1]
            add_figures(into, figures)
        ranked = sorted(found.values(), key=lambda item: (-item[1]["requests"], item[0].id))
        callers[key] = [(caller, as_route_stats(figures)) for caller, figures in ranked]
    return stats, callers
