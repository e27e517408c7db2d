"""Every route's reading every `every_s` for the last `keep_s`: what a comparison over a window
and the anomaly detector's windows are differences of. Pure: the caller brings the readings
and the time.

A route that served nothing since the last record shares its reading object with it, so idle
routes cost a reference per record, not a histogram. And a record holds its readings alone, in
the order of a key index that records of the same routes share (`Record`): a dictionary per
record was 30-50 bytes a route, and 60 of them at 100,000 routes 200-300 MB. The readings are
in chunks of `CHUNK`, and a chunk in which no route moved is the previous record's: at 100,000
routes a record of references alone was 0.8 MB, 48 MB for the 60 kept, where most routes are
idle most of the time.
"""

from __future__ import annotations

import itertools
import operator
from collections import deque
from collections.abc import Iterable, Iterator, Mapping

from meshgate.rollouts.readings import Reading

RouteKey = tuple[str, str, str]  # namespace, gateway, route


CHUNK = 1024  # readings a chunk


class Record(Mapping[RouteKey, Reading]):
    """One record's readings, by route: the `index[key]`-th reading of the chunks in order."""

    __slots__ = ("chunks", "index")

    def __init__(
        self, index: Mapping[RouteKey, int], chunks: tuple[tuple[Reading, ...], ...]
    ) -> None:
        self.index = index
        self.chunks = chunks

    def __getitem__(self, key: RouteKey) -> Reading:
        position = self.index[key]
        return self.chunks[position // CHUNK][position % CHUNK]

    def __contains__(self, key: object) -> bool:
        return key in self.index

    def __iter__(self) -> Iterator[RouteKey]:
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)


_EMPTY = Record({}, ())


def _chunked(
    readings: Iterable[Reading], before: tuple[tuple[Reading, ...], ...]
) -> tuple[tuple[Reading, ...], ...]:
    """`readings` in chunks, each one of `before` where it holds the very same readings."""
    chunks: list[tuple[Reading, ...]] = []
    found = iter(readings)
    while chunk := tuple(itertools.islice(found, CHUNK)):
        number = len(chunks)
        if number < len(before) and _same(before[number], chunk):
            chunk = before[number]
        chunks.append(chunk)
    return tuple(chunks)


def _same(one: tuple[Reading, ...], other: tuple[Reading, ...]) -> bool:
    return len(one) == len(other) and all(map(operator.is_, one, other))


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
            kept = _chunked(
                (
                    before if before == reading else reading
                    for before, reading in zip(
                        itertools.chain.from_iterable(previous.chunks),
                        map(readings.__getitem__, index),
                        strict=True,
                    )
                ),
                previous.chunks,
            )
        else:
            index = {key: position for position, key in enumerate(readings)}
            kept = _chunked(
                (
                    before if (before := previous.get(key)) == reading else reading
                    for key, reading in readings.items()
                ),
                (),
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
