"""Readings of the routes a node serves, from its stats collector: the exact counters of
HAProxy and the latency histograms of its request log."""

from __future__ import annotations

from meshgate.rollouts.history import RouteKey
from meshgate.rollouts.readings import Reading, reading_of
from meshgate.stats import view
from meshgate.stats.collector import StatsCollector

# A reading this old is fresh enough to judge a step or a window of ten seconds.
MAX_AGE_S = 0.5


async def gateway_readings(
    stats: StatsCollector, namespace: str, gateway: str
) -> dict[str, Reading]:
    """Each served route of the gateway, by route name; routes not served yet are absent."""
    snapshot = await stats.refresh(max_age_s=MAX_AGE_S)
    readings = {}
    for backend in view.gateway_backends(stats.dataplane(), namespace, gateway):
        found = snapshot.backends.get(backend.name)
        if found is None:
            continue
        counts = found.counts
        histograms = stats.latency.totals(backend.name) if stats.latency else []
        readings[backend.route.route] = reading_of(counts.requests, counts.responses, histograms)
    return readings


class AllRoutes:
    """Readings of every route served, rebuilding a route's only when its request count moved
    (merging histograms of thousands of idle routes every few seconds would be waste)."""

    def __init__(self, stats: StatsCollector) -> None:
        self.stats = stats
        self._last: dict[str, tuple[int, Reading]] = {}

    async def read(self) -> dict[RouteKey, Reading]:
        snapshot = await self.stats.refresh(max_age_s=MAX_AGE_S)
        dataplane = self.stats.dataplane()
        readings: dict[RouteKey, Reading] = {}
        last: dict[str, tuple[int, Reading]] = {}
        for backend in dataplane.backends if dataplane else ():
            found = snapshot.backends.get(backend.name)
            if found is None:
                continue
            counts = found.counts
            cached = self._last.get(backend.name)
            if cached is not None and cached[0] == counts.requests:
                reading = cached[1]
            else:
                histograms = self.stats.latency.totals(backend.name) if self.stats.latency else []
                reading = reading_of(counts.requests, counts.responses, histograms)
            last[backend.name] = (counts.requests, reading)
            route = backend.route
            readings[(route.namespace, route.gateway, route.route)] = reading
        self._last = last
        return readings
