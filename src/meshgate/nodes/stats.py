"""A gateway's stats across nodes: each agent's figures, merged. Pure.

Counters add up exactly; latency percentiles come from the nodes' histograms added together
(every node uses the same buckets), never from averaging percentiles; each node's own figures
are kept under `nodes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshgate.stats.histogram import Histogram, from_sparse, summary

SUMMED = ("requests", "active", "bytes_in", "bytes_out")
_WORST_FIRST = ("DOWN", "MAINT", "UP")


def _instance_status(by_node: Mapping[str, str]) -> str:
    """UP when every node sees it UP; otherwise the worst any node sees."""
    for status in _WORST_FIRST:
        if status in by_node.values():
            return status
    return next(iter(by_node.values()), "DOWN")


def merge_gateway_stats(
    namespace: str, gateway: str, per_node: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    routes: dict[str, dict[str, Any]] = {}
    histograms: dict[str, Histogram] = {}
    instances: dict[str, dict[str, dict[str, Any]]] = {}
    for node in sorted(per_node):
        for route, figures in (per_node[node].get("routes") or {}).items():
            into = routes.setdefault(
                route, {**{name: 0 for name in SUMMED}, "rate": 0.0, "responses": {}}
            )
            for name in SUMMED:
                into[name] += int(figures.get(name) or 0)
            into["rate"] = round(into["rate"] + float(figures.get("rate") or 0.0), 2)
            for cls, count in (figures.get("responses") or {}).items():
                into["responses"][cls] = into["responses"].get(cls, 0) + int(count)
            sparse = figures.get("latency_histogram")
            if sparse is not None:
                histograms.setdefault(route, Histogram()).add(from_sparse(sparse))
            for instance in figures.get("instances") or []:
                merged = instances.setdefault(route, {}).setdefault(
                    str(instance.get("id")),
                    {
                        "id": instance.get("id"),
                        "address": instance.get("address"),
                        "port": instance.get("port"),
                        "requests": 0,
                        "nodes": {},
                    },
                )
                merged["requests"] += int(instance.get("requests") or 0)
                merged["nodes"][node] = instance.get("status", "DOWN")
    for route, into in routes.items():
        into["latency_ms"] = summary(histograms.get(route))
        listed = list(instances.get(route, {}).values())
        for instance in listed:
            instance["status"] = _instance_status(instance["nodes"])
        into["instances"] = listed
    return {
        "gateway": gateway,
        "namespace": namespace,
        "routes": routes,
        "nodes": {node: _without_histograms(per_node[node]) for node in sorted(per_node)},
    }


def _without_histograms(stats: Mapping[str, Any]) -> dict[str, Any]:
    return {
        route: {k: v for k, v in figures.items() if k != "latency_histogram"}
        for route, figures in (stats.get("routes") or {}).items()
    }
