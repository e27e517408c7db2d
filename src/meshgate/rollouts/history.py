"""Every route's reading every `every_s` for the last `keep_s`: what a comparison over a window
and the anomaly detector's windows are differences of. Pure: the caller brings the readings
and the time.

A route that served nothing since the last record shares its reading object with it, so idle
routes cost a reference per record, not a histogram. And a record holds its readings alone, in
the order of a key index that records of the same routes share (`Record`): a dictionary per
record was 30-50 bytes a route, and 60 of them at 100,000 routes 200-300 MB.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping

from meshgate.rollouts.readings import Reading

RouteKey = tuple[str, str, str]  # namespace, gateway, route


class Record(Mapping[RouteKey, Reading]):
    """One record's readings, by route: `in_order[index[key]]`."""

    __slots__ = ("in_order", "index")

    def __init__(self, index: Mapping[RouteKey, int], in_order: tuple[Reading, ...]) -> None:
        self.index = index
        self.in_order = in_order

    def __getitem__(self, key: RouteKey) -> Reading:
        return self.in_order[self.index[key]]

    def __contains__(self, key: object) -> bool:
        return key in self.index

    def __iter__(self) -> Iterator[RouteKey]:
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)


_EMPTY = Record({}, ())


class RouteHistory:
    def __init__(self, *, every_s: float = 10.0, keep_s: float = 600.0) -> None:
        self.every_s = every_s
        self.keep_s = keep_s
        self._records: deque[tuple[float, Record]] = deque()

    def due(self, now: float) -> bool:
        return not self._records or now - self._records[-1][0] >= self.every_s

    def record(self, now: float, readings: Mapping[RouteKey, Reading]) -> None:
        previous = self._records[-1][1] if self._records else _EMPTY
        if previous.index.keys() == readings.keys():  # the same routes: share the index
            index = previous.index
            kept = tuple(
                before if before == reading else reading
                for before, reading in zip(
                    previous.in_order, map(readings.__getitem__, index), strict=True
                )
            )
        else:
            index = {key: position for position, key in enumerate(readings)}
            kept = tuple(
                before if (before := previous.get(key)) == reading else reading
                for key, reading in readings.items()
            )
        self._records.append((now, Record(index, kept)))
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
