"""The graph's live figures from merged flows (`stats.flowview.merge_flows`): each route's,
and each gateway's callers, resolved from client addresses (`callers`) and added up per
caller. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from meshgate.callers import Caller, CallerIndex
from meshgate.model import Gateway
from meshgate.stats.flowview import Figures, add_figures, as_route_stats, empty_figures

RouteStats = dict[tuple[str, str], dict[str, Any]]
Callers = dict[tuple[str, str], list[tuple[Caller, Mapping[str, Any]]]]


def graph_figures(
    merged: Mapping[tuple[str, str], Any], gateways: Iterable[Gateway], index: CallerIndex
) -> tuple[RouteStats, Callers]:
    """Per gateway: its routes' stats and its callers (busiest first), for `build_graph`."""
    stats: RouteStats = {}
    callers: Callers = {}
    for gateway in gateways:
        key = (gateway.namespace, gateway.name)
        flows = merged.get(key)
        if flows is None:
            callers[key] = []
            continue
        stats[key] = {"routes": {route: as_route_stats(f) for route, f in flows["routes"].items()}}
        targets = frozenset(gateway.routes)
        found: dict[str, tuple[Caller, Figures]] = {}
        for node, address, figures in flows["callers"]:
            caller = index.resolve(
                address, namespace=gateway.namespace, node=node or None, targets=targets
            )
            into = found.setdefault(caller.id, (caller, empty_figures()))[1]
            add_figures(into, figures)
        ranked = sorted(found.values(), key=lambda item: (-item[1]["requests"], item[0].id))
        callers[key] = [(caller, as_route_stats(figures)) for caller, figures in ranked]
    return stats, callers
