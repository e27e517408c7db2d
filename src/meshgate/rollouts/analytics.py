"""Route analytics on a node: records every route's reading each window, feeds the windows to
the anomaly detector, and answers comparisons over a recent stretch of time."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric

from meshgate.rollouts import anomaly
from meshgate.rollouts.history import RouteHistory, RouteKey
from meshgate.rollouts.readings import Reading
from meshgate.stats.tally import RESPONSE_CLASSES

log = structlog.get_logger("meshgate.analytics")

ReadAll = Callable[[], Awaitable[dict[RouteKey, Reading]]]
MAX_EVENTS = 200
DETECT_CHUNK = 500  # routes compared between two looks at the event loop's other work


@dataclass(frozen=True)
class AnomalyEvent:
    at: float  # wall-clock seconds
    route: RouteKey
    signal: anomaly.Signal
    opened: bool
    description: str

    def to_json(self) -> dict[str, Any]:
        namespace, gateway, route = self.route
        return {
            "at": self.at,
            "namespace": namespace,
            "gateway": gateway,
            "route": route,
            "signal": self.signal,
            "state": "open" if self.opened else "closed",
            "description": self.description,
        }


class RouteAnalytics:
    def __init__(
        self,
        read_all: ReadAll,
        *,
        window_s: float = 10.0,
        keep_s: float = 600.0,
        on_event: Callable[[AnomalyEvent], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.read_all = read_all
        self.history = RouteHistory(every_s=window_s, keep_s=keep_s)
        self.on_event = on_event
        self.clock = clock
        self.wall_clock = wall_clock
        self.watches: dict[RouteKey, anomaly.RouteWatch] = {}
        self.events: deque[AnomalyEvent] = deque(maxlen=MAX_EVENTS)

    async def run(self) -> None:
        while True:
            try:
                await self.record()
            except Exception as exc:  # a failed read is one missed window, not the end
                log.debug("route analytics: reading failed", error=str(exc))
            await asyncio.sleep(self.history.every_s / 4)

    def collect(self) -> Iterator[Metric]:
        """`meshgate_route_anomaly`, for the node's Prometheus registry."""
        family = GaugeMetricFamily(
            "meshgate_route_anomaly",
            "1 while a signal of a route (rate, error_ratio, p99) is far outside its baseline",
            labels=["namespace", "gateway", "route", "signal"],
        )
        for (namespace, gateway, route), found in self.open_anomalies():
            family.add_metric([namespace, gateway, route, found.signal], 1.0)
        yield family

    async def record(self) -> None:
        now = self.clock()
        if not self.history.due(now):
            return
        readings = await self.read_all()
        previous = self.history.latest()
        self.history.record(now, readings)
        if previous is not None:
            await self._detect(now - previous[0], previous[1], readings)

    async def _detect(
        self, seconds: float, before: Mapping[RouteKey, Reading], now: Mapping[RouteKey, Reading]
    ) -> None:
        for key in self.watches.keys() - now.keys():
            del self.watches[key]  # a route that is gone
        for count, (key, reading) in enumerate(now.items(), 1):
            if count % DETECT_CHUNK == 0:
                # 10,000 routes took tens of milliseconds on the event loop, which a weight
                # change landing then waited for; in chunks it waits for one chunk at most.
                await asyncio.sleep(0)
            earlier = before.get(key)
            window = reading.since(earlier) if earlier is not None else None
            if window is None:
                continue
            watch = self.watches.get(key)
            if watch is None:
                if not window.requests:
                    continue  # a route that never had traffic has no baseline to keep yet
                watch = self.watches[key] = anomaly.RouteWatch()
            values = anomaly.window_values(window, seconds)
            for change in anomaly.observe(watch, values, window.requests):
                self._report(key, change)

    def _report(self, key: RouteKey, change: anomaly.Change) -> None:
        if change.anomaly is not None:
            description = change.anomaly.describe()
        else:
            description = f"{change.signal} is back within its usual range"
        event = AnomalyEvent(
            self.wall_clock(), key, change.signal, change.anomaly is not None, description
        )
        self.events.append(event)
        namespace, gateway, route = key
        log.warning(
            "route anomaly" if event.opened else "route anomaly over",
            gateway=f"{namespace}/{gateway}",
            route=route,
            signal=change.signal,
            description=description,
        )
        if self.on_event is not None:
            self.on_event(event)

    def open_anomaly(self, namespace: str, gateway: str, route: str) -> str | None:
        watch = self.watches.get((namespace, gateway, route))
        if watch is None or not watch.open:
            return None
        return "; ".join(found.describe() for found in watch.open.values())

    def open_anomalies(self) -> Iterator[tuple[RouteKey, anomaly.Anomaly]]:
        for key, watch in list(self.watches.items()):
            for found in watch.open.values():
                yield key, found

    def series(self, namespace: str, gateway: str) -> dict[str, list[dict[str, Any]]]:
        """Each route of the gateway window by window over the history kept: the window's end
        (wall-clock seconds), requests per second, responses per class, p50 and p99."""
        records = self.history.records()
        offset = self.wall_clock() - self.clock()
        result: dict[str, list[dict[str, Any]]] = {}
        for (before_at, before), (taken, after) in itertools.pairwise(records):
            seconds = taken - before_at
            for (space, name, route), reading in after.items():
                if (space, name) != (namespace, gateway):
                    continue
                earlier = before.get((space, name, route))
                window = reading.since(earlier) if earlier is not None else None
                if window is None or seconds <= 0:
                    continue
                histogram = window.histogram()
                result.setdefault(route, []).append(
                    {
                        "at": round(taken + offset, 1),
                        "rate": round(window.requests / seconds, 2),
                        "responses": dict(zip(RESPONSE_CLASSES, window.responses, strict=True)),
                        "p50_ms": histogram.percentile(0.50),
                        "p99_ms": histogram.percentile(0.99),
                    }
                )
        return result

    def window(
        self, namespace: str, gateway: str, seconds: float, current: dict[str, Reading]
    ) -> tuple[dict[str, Reading], float]:
        """The gateway's routes over about the last `seconds` (as far back as the history
        reaches), given their `current` readings; and the span actually covered."""
        now = self.clock()
        found = self.history.at_or_before(now - seconds)
        if found is None:
            return dict(current), 0.0
        taken, earlier = found
        result = {}
        for route, reading in current.items():
            before = earlier.get((namespace, gateway, route))
            window = reading.since(before) if before is not None else reading
            result[route] = window if window is not None else reading
        return result, max(0.0, now - taken)
