"""The stats API's JSON (SPEC §3), from the running data plane, a snapshot and the latency book.

Pure. The data plane (the IR HAProxy runs) says which backend is which route and which server is
which instance; the snapshot has the counters; the latency book the recent histograms. Routes
and instances come from the IR, so a route that has not served anything yet is listed with
zeros rather than left out.
"""

from __future__ import annotations

from typing import Any

from meshgate.compiler import ir
from meshgate.stats.histogram import Histogram, summary, to_sparse
from meshgate.stats.latency import LatencyBook, Window
from meshgate.stats.tally import RESPONSE_CLASSES, BackendStats, Counts, ServerStats, Snapshot

_NO_COUNTS = Counts(responses=dict.fromkeys(RESPONSE_CLASSES, 0))


def gateway_backends(
    dataplane: ir.DataPlane | None, namespace: str, gateway: str
) -> list[ir.Backend]:
    if dataplane is None:
        return []
    return [
        b
        for b in dataplane.backends
        if b.route.namespace == namespace and b.route.gateway == gateway
    ]


def _responses(counts: Counts) -> dict[str, int]:
    return {cls: counts.responses.get(cls, 0) for cls in RESPONSE_CLASSES}


def _sampling(window: Window, recent_requests: int, logged: float) -> dict[str, Any]:
    """How many of the window's requests the percentiles rest on (`ratio`: HAProxy's random
    sample and the node's own thinning together), and the share of requests HAProxy logs now
    (`logged`, 1.0: every one)."""
    samples = window.total.count
    ratio = min(1.0, samples / recent_requests) if recent_requests else None
    return {
        "window_s": round(window.seconds, 1),
        "samples": samples,
        "requests": recent_requests,
        "ratio": round(ratio, 4) if ratio is not None else None,
        "logged": round(logged, 4),
    }


def _instance(
    server: ir.Server,
    stats: ServerStats | None,
    latency: Histogram | None,
) -> dict[str, Any]:
    counts = stats.counts if stats else _NO_COUNTS
    return {
        "id": server.name,
        "address": server.address,
        "port": server.port,
        # Not listed by HAProxy: not applied yet, or the process could not be read.
        "status": (stats.status if stats and stats.status else "DOWN"),
        "requests": counts.requests,
        "active": stats.active if stats else 0,
        "responses": _responses(counts),
        "latency_ms": summary(latency),
    }


def route_stats(
    backend: ir.Backend,
    snapshot: Snapshot,
    latency: LatencyBook | None,
    now: float,
    logged: float = 1.0,
    histograms: bool = False,
) -> dict[str, Any]:
    stats: BackendStats | None = snapshot.backends.get(backend.name)
    counts = stats.counts if stats else _NO_COUNTS
    window = latency.window(backend.name, None, now) if latency else None
    instances = []
    for server in backend.servers:
        server_window = latency.window(backend.name, server.name, now) if latency else None
        instances.append(
            _instance(
                server,
                snapshot.servers.get((backend.name, server.name)),
                server_window.total if server_window else None,
            )
        )
    result: dict[str, Any] = {
        "requests": counts.requests,
        "rate": round(stats.rate, 2) if stats else 0.0,
        "responses": _responses(counts),
        "latency_ms": summary(window.total if window else None),
        "connect_ms": summary(window.connect if window else None),
        "response_ms": summary(window.response if window else None),
        "active": stats.active if stats else 0,
        "bytes_in": counts.bytes_in,
        "bytes_out": counts.bytes_out,
        "instances": instances,
    }
    if window is not None:
        result["sampling"] = _sampling(window, stats.recent_requests if stats else 0, logged)
        if histograms:
            result["latency_histogram"] = to_sparse(window.total)
    return result


def gateway_stats(
    dataplane: ir.DataPlane | None,
    snapshot: Snapshot,
    latency: LatencyBook | None,
    namespace: str,
    gateway: str,
    *,
    logged: float = 1.0,
    histograms: bool = False,
) -> dict[str, Any]:
    """`{"gateway", "namespace", "routes": {ROUTE: {...}}}` for one gateway. Latency figures
    cover the latency window up to the snapshot's time and are null when nothing was sampled;
    without a latency book (logging off) they are null too and `sampling` is absent. `logged`
    is the fraction of requests HAProxy logs now."""
    routes = {
        backend.route.route: route_stats(
            backend, snapshot, latency, snapshot.taken_at, logged, histograms
        )
        for backend in gateway_backends(dataplane, namespace, gateway)
    }
    return {"gateway": gateway, "namespace": namespace, "routes": routes}
