"""Totals that never go backwards, from counters HAProxy resets; rates over a sliding window.

Every HAProxy process counts from zero: a reload starts a new worker (the old one finishes
its connections and exits), a restart a new master and workers, and a server removed and added
again at run time starts its counters over inside the same worker. So readings are kept per
source (a worker's pid) and per key (a backend or server), and a total is what was carried
forward plus the latest reading of every live source:

- a counter that reads lower than before was reset: its last value is carried forward;
- a source that is gone (its pid no longer listed) has its last values carried forward.

Readings are never dropped for being absent from one poll: a missing row is not a reset, and
counting it twice on its return would be worse than keeping a frozen value.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Hashable, Iterator, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class MonotonicTotals(Generic[K]):
    """Per key, a vector of `width` counters summed over sources, never decreasing."""

    def __init__(self, width: int) -> None:
        self.width = width
        self._live: dict[K, dict[int, list[int]]] = {}
        self._carried: dict[K, list[int]] = {}

    def observe(self, source: int, key: K, values: Sequence[int]) -> None:
        if len(values) != self.width:
            raise ValueError(f"expected {self.width} values, got {len(values)}")
        sources = self._live.setdefault(key, {})
        last = sources.get(source)
        if last is None:
            sources[source] = list(values)
            return
        carried = None
        for index, value in enumerate(values):
            if value < last[index]:
                if carried is None:
                    carried = self._carried.setdefault(key, [0] * self.width)
                carried[index] += last[index]
            last[index] = value

    def retire(self, live_sources: Collection[int]) -> None:
        """Carry forward the last readings of every source not in `live_sources`."""
        for key, sources in self._live.items():
            for source in [s for s in sources if s not in live_sources]:
                carried = self._carried.setdefault(key, [0] * self.width)
                for index, value in enumerate(sources.pop(source)):
                    carried[index] += value

    def total(self, key: K) -> tuple[int, ...]:
        result = list(self._carried.get(key, [0] * self.width))
        for values in self._live.get(key, {}).values():
            for index, value in enumerate(values):
                result[index] += value
        return tuple(result)

    def names(self) -> Iterator[K]:
        yield from self._live.keys() | self._carried.keys()

    def sources(self) -> set[int]:
        return {source for sources in self._live.values() for source in sources}


class History:
    """(time, total) samples of one growing counter, kept for `keep_s` seconds."""

    def __init__(self, keep_s: float = 70.0) -> None:
        self.keep_s = keep_s
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, total: int) -> None:
        self._samples.append((now, total))
        while len(self._samples) > 2 and self._samples[0][0] < now - self.keep_s:
            self._samples.popleft()

    def _base(self, window_s: float) -> tuple[float, int] | None:
        """The oldest sample no older than `window_s` before the newest one."""
        if not self._samples:
            return None
        newest = self._samples[-1][0]
        for sample in self._samples:
            if sample[0] >= newest - window_s:
                return sample
        return None  # unreachable: the newest sample itself qualifies

    def rate(self, window_s: float = 10.0) -> float:
        """Increase per second over (at most) the last `window_s` seconds of samples."""
        base = self._base(window_s)
        if base is None:
            return 0.0
        now, total = self._samples[-1]
        if now <= base[0]:
            return 0.0
        return (total - base[1]) / (now - base[0])

    def increase(self, window_s: float) -> tuple[int, float]:
        """(increase, seconds it spans) over (at most) the last `window_s` seconds."""
        base = self._base(window_s)
        if base is None:
            return 0, 0.0
        now, total = self._samples[-1]
        return total - base[1], now - base[0]
