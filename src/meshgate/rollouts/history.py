"""Every route's reading every `every_s` for the last `keep_s`: what a comparison over a window
and the anomaly detector's windows are differences of. Pure: the caller brings the readings
and the time.

A route that served nothing since the last record shares its reading object with it, so idle
routes cost a dictionary entry per record, not a histogram.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from meshgate.rollouts.readings import Reading

RouteKey = tuple[str, str, str]  # namespace, gateway, route


class RouteHistory:
    def __init__(self, *, every_s: float = 10.0, keep_s: float = 600.0) -> None:
        self.every_s = every_s
        self.keep_s = keep_s
        self._records: deque[tuple[float, Mapping[RouteKey, Reading]]] = deque()

    def due(self, now: float) -> bool:
        return not self._records or now - self._records[-1][0] >= self.every_s

    def record(self, now: float, readings: Mapping[RouteKey, Reading]) -> None:
        previous = self._records[-1][1] if self._records else {}
        kept = {}
        for key, reading in readings.items():
            before = previous.get(key)
            kept[key] = before if before == reading else reading
        self._records.append((now, kept))
        while len(self._records) > 1 and self._records[1][0] <= now - self.keep_s:
            self._records.popleft()

    def records(self) -> list[tuple[float, Mapping[RouteKey, Reading]]]:
        return list(self._records)

    def latest(self) -> tuple[float, Mapping[RouteKey, Reading]] | None:
        return self._records[-1] if self._records else None

    def previous(self) -> tuple[float, Mapping[RouteKey, Reading]] | None:
        return self._records[-2] if len(self._records) > 1 else None

    def at_or_before(self, when: float) -> tuple[float, Mapping[RouteKey, Reading]] | None:
        """The newest record taken at or before `when`, else the oldest one kept."""
        found = None
        for taken, readings in self._records:
            if taken > when:
                break
            found = (taken, readings)
        if found is None and self._records:
            return self._records[0]
        return found
