"""Readings of the routes a node serves, from its stats collector: the exact counters of
HAProxy and the latency histograms of its request log."""

from __future__ import annotations

from meshgate.rollouts.history import RouteKey
from meshgate.rollouts.readings import Reading, reading_of
from meshgate.stats import view
from meshgate.stats.collector import StatsCollector
from meshgate.stats.tally import Counts

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
        readings[backend.route.route] = backend_reading(stats, backend.name, found.counts)
    return readings


def backend_reading(stats: StatsCollector, backend: str, counts: Counts) -> Reading:
    """A route's reading: its backend's exact counters and its servers' latency histograms."""
    histograms = stats.latency.totals(backend) if stats.latency else []
    return reading_of(counts.requests, counts.responses, histograms)


class AllRoutes:
    """Readings of every route served, rebuilding a route's only when its request count moved
    (merging histograms of thousands of idle routes every few seconds would be waste). A
    reading up to `max_age_s` old will do: the collector's own polls keep one that fresh, so
    the analytics never make HAProxy answer an extra poll.

    Each route's key is the same tuple from one read to the next: the route history keeps a
    record of every route every 10 s for 10 minutes, and a fresh tuple per route and record
    was 60 copies of each key (8 MB at two thousand routes)."""

    def __init__(self, stats: StatsCollector, max_age_s: float = 2.0) -> None:
        self.stats = stats
        self.max_age_s = max_age_s
        self._last: dict[str, Reading] = {}
        self._keys: dict[str, RouteKey] = {}

    async def read(self) -> dict[RouteKey, Reading]:
        snapshot = await self.stats.refresh(max_age_s=self.max_age_s)
        dataplane = self.stats.dataplane()
        readings: dict[RouteKey, Reading] = {}
        last: dict[str, Reading] = {}
        keys: dict[str, RouteKey] = {}
        for backend in dataplane.backends if dataplane else ():
            found = snapshot.backends.get(backend.name)
            if found is None:
                continue
            counts = found.counts
            reading = self._last.get(backend.name)
            if reading is None or reading.requests != counts.requests:
                reading = backend_reading(self.stats, backend.name, counts)
            last[backend.name] = reading
            route = backend.route
            key = self._keys.get(backend.name)
            if key is None or key != (route.namespace, route.gateway, route.route):
                key = (route.namespace, route.gateway, route.route)
            keys[backend.name] = key
            readings[key] = reading
        self._last, self._keys = last, keys
        return readings
