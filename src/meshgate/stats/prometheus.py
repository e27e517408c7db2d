"""Data-plane series for /metrics, labelled namespace, gateway, route (and server: the instance).

A custom collector on the node's registry: at scrape time it reads the collector's latest
snapshot and the latency book, both already in memory, so a scrape never waits on HAProxy.
Latencies are Prometheus histograms in seconds: per route for each component (total, connect,
response), per instance for the total only, to keep the number of series down. Idle routes are
exported at zero while there are at most `IDLE_ROUTES_SHOWN` of them, and left out (counted in
`meshgate_routes_idle`) above that. A histogram
appears once it has an observation, as a labelled prometheus_client histogram does: a node with
thousands of idle routes would otherwise format tens of thousands of zero buckets per scrape,
on the event loop that also applies changes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from meshgate.compiler import ir
from meshgate.stats.collector import StatsCollector
from meshgate.stats.histogram import PROMETHEUS_BOUNDS_MS, Histogram, merged
from meshgate.stats.latency import COMPONENTS, Series
from meshgate.stats.tally import RESPONSE_CLASSES, Counts, Snapshot

ROUTE = ["namespace", "gateway", "route"]
# Not "instance": Prometheus sets that label to the scrape target's address and would rename
# this one to exported_instance.
INSTANCE = [*ROUTE, "server"]
_LE = [f"{bound / 1000:g}" for bound in PROMETHEUS_BOUNDS_MS]
# Idle routes are exported at zero up to this many (so that `rate()` sees a route's first
# requests); above it, only routes with traffic are (see `_exported`).
IDLE_ROUTES_SHOWN = 1000


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    counts = histogram.cumulative()
    return [*zip(_LE, map(float, counts), strict=True), ("+Inf", float(histogram.count))]


class _Families:
    """The families of one scrape, created empty and filled route by route."""

    def __init__(self) -> None:
        c, g, h = CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        self.requests = c("meshgate_route_requests", "Requests (tcp: connections)", labels=ROUTE)
        self.responses = c(
            "meshgate_route_responses", "Responses by status class", labels=[*ROUTE, "code"]
        )
        self.bytes_in = c("meshgate_route_received_bytes", "Bytes from clients", labels=ROUTE)
        self.bytes_out = c("meshgate_route_sent_bytes", "Bytes to clients", labels=ROUTE)
        self.active = g("meshgate_route_active", "Requests in progress", labels=ROUTE)
        self.latency = h(
            "meshgate_route_latency_seconds",
            "Sampled latency: total (active time), connect, response (until headers)",
            labels=[*ROUTE, "component"],
        )
        self.instance_requests = c(
            "meshgate_instance_requests", "Requests per instance", labels=INSTANCE
        )
        self.instance_responses = c(
            "meshgate_instance_responses",
            "Responses per instance by status class",
            labels=[*INSTANCE, "code"],
        )
        self.instance_active = g(
            "meshgate_instance_active", "Requests in progress per instance", labels=INSTANCE
        )
        self.instance_up = g(
            "meshgate_instance_up", "1 when the instance is UP, else 0", labels=INSTANCE
        )
        self.instance_latency = h(
            "meshgate_instance_latency_seconds",
            "Sampled total latency per instance",
            labels=INSTANCE,
        )

        self.idle = g(
            "meshgate_routes_idle",
            f"Routes left out of the per-route and per-instance series: no request since the "
            f"node started, while more than {IDLE_ROUTES_SHOWN} routes are idle",
        )

    def add_counts(self, labels: list[str], counts: Counts, *, instance: bool) -> None:
        requests = self.instance_requests if instance else self.requests
        responses = self.instance_responses if instance else self.responses
        requests.add_metric(labels, counts.requests)
        for cls in RESPONSE_CLASSES:
            responses.add_metric([*labels, cls], counts.responses.get(cls, 0))
        if not instance:
            self.bytes_in.add_metric(labels, counts.bytes_in)
            self.bytes_out.add_metric(labels, counts.bytes_out)

    def all(self) -> list[Metric]:
        return list(vars(self).values())


def _exported(
    backends: Sequence[ir.Backend], snapshot: Snapshot, series: Mapping[str, Mapping[str, Series]]
) -> Sequence[ir.Backend]:
    """The routes whose series a scrape shows: every route while at most `IDLE_ROUTES_SHOWN`
    are idle (no request counted, none in progress, no latency sample); above that, only the
    routes that carried traffic. Each route costs about 17 lines (2 kB): at 100,000 gateways
    a scrape of every route was 200 MB and took minutes to format, and most of those series
    would only ever be zero. A series left out appears with the route's first request."""
    stats = snapshot.backends
    busy = [
        b
        for b in backends
        if ((found := stats.get(b.name)) is not None and (found.counts.requests or found.active))
        or any(one.total.count for one in series.get(b.name, {}).values())
    ]
    return backends if len(backends) - len(busy) <= IDLE_ROUTES_SHOWN else busy


class DataPlaneMetrics(Collector):
    def __init__(self, stats: StatsCollector) -> None:
        self.stats = stats

    def describe(self) -> list[Metric]:
        # Without describe(), registering would call collect() once, before anything runs.
        return []

    def collect(self) -> Iterator[Metric]:
        snapshot = self.stats.snapshot
        running = self.stats.dataplane()
        latency = self.stats.latency
        series: dict[str, dict[str, Series]] = {}
        if latency is not None:
            for backend_name, server_name, one in latency.cumulative():
                series.setdefault(backend_name, {})[server_name] = one
        families = _Families()
        backends = running.backends if running else ()
        shown = _exported(backends, snapshot, series)
        families.idle.add_metric([], len(backends) - len(shown))
        for backend in shown:
            route = backend.route
            labels = [route.namespace, route.gateway, route.route]
            stats = snapshot.backends.get(backend.name)
            families.add_counts(labels, stats.counts if stats else Counts(), instance=False)
            families.active.add_metric(labels, stats.active if stats else 0)
            mine = series.get(backend.name, {})
            if latency is not None:
                for component in COMPONENTS:
                    histogram = merged(s.get(component) for s in mine.values())
                    if histogram.count:
                        families.latency.add_metric(
                            [*labels, component], _buckets(histogram), histogram.sum / 1000
                        )
            for server in backend.servers:
                instance = [*labels, server.name]
                server_stats = snapshot.servers.get((backend.name, server.name))
                counts = server_stats.counts if server_stats else Counts()
                families.add_counts(instance, counts, instance=True)
                families.instance_active.add_metric(
                    instance, server_stats.active if server_stats else 0
                )
                up = 1 if server_stats and server_stats.status == "UP" else 0
                families.instance_up.add_metric(instance, up)
                own = mine.get(server.name)
                if own is not None and own.total.count:
                    families.instance_latency.add_metric(
                        instance, _buckets(own.total), own.total.sum / 1000
                    )
        yield from families.all()
        yield GaugeMetricFamily(
            "meshgate_haproxy_old_workers",
            "HAProxy processes still finishing connections after a reload",
            value=snapshot.old_workers,
        )
        if latency is not None:
            lines = CounterMetricFamily(
                "meshgate_access_log_lines",
                "Access-log lines received from HAProxy, by what became of them",
                labels=["outcome"],
            )
            lines.add_metric(["recorded"], latency.parsed)
            lines.add_metric(["sampled_out"], latency.skipped)
            lines.add_metric(["ignored"], latency.ignored)
            yield lines
            yield GaugeMetricFamily(
                "meshgate_access_log_stride",
                "One access-log line in this many is parsed (1: all)",
                value=latency.sampler.stride,
            )
            keeper = self.stats.keeper
            yield GaugeMetricFamily(
                "meshgate_access_log_keep_ratio",
                "Fraction of requests HAProxy logs, a random sample (1: all)",
                value=keeper.fraction if keeper else 1.0,
            )
            if latency.flows is not None:
                yield CounterMetricFamily(
                    "meshgate_flow_lines_overflowed",
                    "Request lines counted under the caller `other`: their time bucket's table "
                    "of (route, client address) pairs was full",
                    value=latency.flows.overflowed,
                )
