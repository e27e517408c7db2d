"""One node's flows over a window, per gateway, as JSON: what the graph is built from. Pure.

For each gateway the data plane serves: its routes (requests HAProxy counted in the window,
errors, latency) and its callers by client address (each one's estimated share, see `flows`).
Every figure is a count or a sparse histogram, so a server adds up the documents of many nodes
exactly (`merge_flows`); rates are per second of the node's window.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from meshgate.compiler import ir
from meshgate.stats.flows import Cell, FlowWindow
from meshgate.stats.histogram import Histogram, from_sparse, summary, to_sparse

Figures = dict[str, Any]


def _figures(requests: float, errors: float, cell: Cell | None, seconds: float) -> Figures:
    return {
        "requests": round(requests),
        "rate": round(requests / seconds, 3) if seconds > 0 else 0.0,
        "errors": round(errors, 2),
        "latency_histogram": to_sparse(cell.histogram() if cell else Histogram()),
    }


def flow_document(
    window: FlowWindow, dataplane: ir.DataPlane | None, namespace: str | None = None
) -> dict[str, Any]:
    """`{"window_s", "gateways": [{"namespace", "gateway", "routes": {ROUTE: figures},
    "callers": {ADDRESS: figures}}]}`; figures: requests, rate, errors, latency_histogram."""
    seconds = window.seconds
    gateways: dict[tuple[str, str], dict[str, Any]] = {}
    refs = {b.name: b.route for b in dataplane.backends} if dataplane else {}
    per_backend: dict[str, Cell] = {}
    callers: dict[tuple[str, str], dict[str, tuple[float, float, Cell]]] = {}
    for (backend, client), cell in window.cells.items():
        ref = refs.get(backend)
        if ref is None or (namespace is not None and ref.namespace != namespace):
            continue
        per_backend.setdefault(backend, Cell()).add(cell)
        requests = window.estimated(backend, cell.lines)
        errors = window.estimated(backend, cell.errors)
        by_client = callers.setdefault((ref.namespace, ref.gateway), {})
        before, before_errors, into = by_client.get(client, (0.0, 0.0, Cell()))
        into.add(cell)
        by_client[client] = (before + requests, before_errors + errors, into)
    for backend, ref in refs.items():
        if namespace is not None and ref.namespace != namespace:
            continue
        entry = gateways.setdefault(
            (ref.namespace, ref.gateway),
            {"namespace": ref.namespace, "gateway": ref.gateway, "routes": {}, "callers": {}},
        )
        lines = per_backend.get(backend)
        requests = window.requests.get(backend, 0)
        errors = window.estimated(backend, lines.errors) if lines else 0.0
        entry["routes"][ref.route] = _figures(requests, errors, lines, seconds)
    for key, by_client in callers.items():
        if key in gateways:
            gateways[key]["callers"] = {
                client: _figures(requests, errors, cell, seconds)
                for client, (requests, errors, cell) in sorted(by_client.items())
            }
    return {"window_s": round(seconds, 1), "gateways": list(gateways.values())}


def add_figures(into: Figures, figures: Mapping[str, Any]) -> None:
    """Add a node's figures (with `latency_histogram`) or merged ones (with `histogram`)."""
    into["requests"] += int(figures.get("requests") or 0)
    into["rate"] = round(into["rate"] + float(figures.get("rate") or 0.0), 3)
    into["errors"] = round(into["errors"] + float(figures.get("errors") or 0.0), 2)
    histogram = figures.get("histogram")
    if isinstance(histogram, Histogram):
        into["histogram"].add(histogram)
        return
    with contextlib.suppress(ValueError):  # a node without latencies for this edge
        into["histogram"].add(from_sparse(figures.get("latency_histogram")))


def empty_figures() -> Figures:
    return {"requests": 0, "rate": 0.0, "errors": 0.0, "histogram": Histogram()}


def scaled(figures: Figures, share: float) -> Figures:
    """`share` of merged figures' traffic (the latency histogram stays: a sample of it)."""
    return {
        "requests": round(figures["requests"] * share),
        "rate": round(figures["rate"] * share, 3),
        "errors": round(figures["errors"] * share, 2),
        "histogram": figures["histogram"],
    }


def merge_flows(documents: Mapping[str, Mapping[str, Any]]) -> dict[tuple[str, str], Any]:
    """Many nodes' documents, keyed by node name, added up per gateway: `{(namespace,
    gateway): {"routes": {ROUTE: figures}, "callers": [(node, address, figures)],
    "node_routes": {NODE: {ROUTE: requests}}}}`, figures with a `histogram`. Callers stay per
    node: the same loopback address is a different caller on each node."""
    merged: dict[tuple[str, str], Any] = {}
    for node in sorted(documents):
        for gateway in documents[node].get("gateways") or []:
            key = (str(gateway.get("namespace")), str(gateway.get("gateway")))
            into = merged.setdefault(key, {"routes": {}, "callers": [], "node_routes": {}})
            for route, figures in (gateway.get("routes") or {}).items():
                add_figures(into["routes"].setdefault(route, empty_figures()), figures)
                counted = into["node_routes"].setdefault(node, {})
                counted[route] = counted.get(route, 0) + int(figures.get("requests") or 0)
            for address, figures in (gateway.get("callers") or {}).items():
                one = empty_figures()
                add_figures(one, figures)
                into["callers"].append((node, address, one))
    return merged


def local_flows(document: Mapping[str, Any]) -> dict[tuple[str, str], Any]:
    """One node's document (a node of its own, `up`) in `merge_flows`' shape."""
    return merge_flows({"": document})


def as_route_stats(figures: Mapping[str, Any]) -> dict[str, Any]:
    """Merged figures in the shape of the stats API's routes, which `topology` reads."""
    histogram: Histogram = figures["histogram"]
    return {
        "requests": figures["requests"],
        "rate": figures["rate"],
        "responses": {"5xx": round(figures["errors"])},
        "latency_ms": summary(histogram),
    }
