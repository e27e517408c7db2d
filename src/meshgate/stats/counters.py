"""Totals that never go backwards, from counters HAProxy resets; rates over a sliding window.

Every HAProxy process counts from zero: a reload starts a new worker (the old one finishes
its connections and exits), a restart a new master and workers, and a server removed and added
again at run time starts its counters over inside the same worker. So readings are kept per
source (a worker's pid) and per key (a backend or server):

- a counter that reads lower than before in the same source was reset: what it had counted is
  kept as that source's base, and the source's count is base + the latest reading;
- a source that is gone has its count carried forward into the key's total for good.

Polling cannot see what an old worker serves between its last poll and its exit. The request
log can: each line names the worker's pid. So a source's count is the larger of what was polled
and what was logged, counter by counter. While it runs, polls are ahead (HAProxy counts a request
when it starts, logs it when it ends); once it is gone, its log has the last word. Either alone
only grows, so the larger of the two only grows too. Lost or sampled log lines just leave the
polled counts in charge. So while HAProxy logs a sample of requests (above the node's budget
of lines, see `sampling`), a worker's logged count falls behind its polled one and what it
serves after its last poll goes uncounted: requests of at most one poll interval, and only
when a worker ends while traffic is over the budget; the collector's fast polls of old
workers are what keeps that gap small.

Readings are never dropped for being absent from one poll: a missing row is not a reset, and
counting it twice on its return would be worse than keeping a frozen value. A key absent from
every poll for `forget_after_s` (ten polls) is gone, though (a deleted gateway's backend, the
server of a registration that lapsed): it is forgotten with its counts, or every name ever
served would be kept, and reported, for the life of the process.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Hashable, Iterator, Mapping, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

# Log counts per key, then per source: each a vector no longer than the polled one (the counters
# a log line can tell; the others come from polls only).
Logged = Mapping[K, Mapping[int, Sequence[int]]]


def _larger(polled: Sequence[int], logged: Sequence[int] | None) -> list[int]:
    result = list(polled)
    for index, value in enumerate(logged or ()):
        if value > result[index]:
            result[index] = value
    return result


class _Source:
    """One source's readings of one key: the latest, and what counters it reset had counted
    before (None until one is reset, as most never are: at 100,000 route backends, a list of
    zeros each was 50 MB). A key's sources are a chain (`other`): nearly every key has one
    source, and a dict of sources for each was about 230 bytes more a key (46 MB at 100,000
    gateways' backends and servers)."""

    __slots__ = ("base", "last", "other", "pid")

    def __init__(self, pid: int, values: Sequence[int], other: _Source | None) -> None:
        self.pid = pid
        self.base: list[int] | None = None
        self.last: Sequence[int] = _kept(values)
        self.other = other  # the key's next source, if any

    def counted(self) -> list[int]:
        if self.base is None:
            return list(self.last)
        return [b + v for b, v in zip(self.base, self.last, strict=True)]

    def read(self, values: Sequence[int]) -> None:
        last = self.last
        for index, value in enumerate(values):
            if value < last[index]:
                if self.base is None:
                    self.base = [0] * len(last)
                self.base[index] += last[index]
        self.last = _kept(values)


def _chain(first: _Source | None) -> Iterator[_Source]:
    while first is not None:
        yield first
        first = first.other


def _linked(sources: Sequence[_Source]) -> _Source | None:
    """`sources` as a chain; None for none."""
    for source, after in itertools.pairwise(sources):
        source.other = after
    if sources:
        sources[-1].other = None
        return sources[0]
    return None


_ZEROS: dict[int, tuple[int, ...]] = {}


def _kept(values: Sequence[int]) -> tuple[int, ...]:
    """`values` as kept: all zeros (an idle route's, most of them) as one shared tuple."""
    if any(values):
        return tuple(values)
    width = len(values)
    found = _ZEROS.get(width)
    if found is None:
        found = _ZEROS[width] = (0,) * width
    return found


class MonotonicTotals(Generic[K]):
    """Per key, a vector of `width` counters summed over sources, never decreasing."""

    def __init__(self, width: int, forget_after_s: float = 10.0) -> None:
        self.width = width
        self.forget_after_s = forget_after_s
        # Each key's chain of sources; None for a key whose every source was retired (its
        # counts are carried).
        self._live: dict[K, _Source | None] = {}
        self._carried: dict[K, list[int]] = {}
        self._absent: dict[K, float] = {}  # key -> when a poll first did not see it

    def observe(self, source: int, key: K, values: Sequence[int]) -> None:
        if len(values) != self.width:
            raise ValueError(f"expected {self.width} values, got {len(values)}")
        first = known = self._live.get(key)
        while known is not None and known.pid != source:
            known = known.other
        if known is None:
            self._live[key] = _Source(source, values, first)
            return
        known.read(values)

    def retire(self, gone: Collection[int], logged: Logged[K] | None = None) -> None:
        """Carry forward, for good, the counts of every source in `gone`: the larger of the
        polled and the logged ones."""
        logged = logged or {}
        for key in self._live.keys() | logged.keys():
            sources = {s.pid: s for s in _chain(self._live.get(key))}
            lines = logged.get(key, {})
            retired = {s for s in sources if s in gone} | {s for s in lines if s in gone}
            if not retired:
                continue
            # Every carried key is in `_live` too.
            self._live[key] = _linked([s for pid, s in sources.items() if pid not in gone])
            carried = self._carried.setdefault(key, [0] * self.width)
            for source in retired:
                polled = sources[source].counted() if source in sources else [0] * self.width
                for index, value in enumerate(_larger(polled, lines.get(source))):
                    carried[index] += value

    def total(self, key: K, logged: Logged[K] | None = None) -> tuple[int, ...]:
        first = self._live.get(key)
        lines = logged.get(key) if logged else None
        if first is not None and first.other is None and not lines and key not in self._carried:
            return tuple(first.counted())  # the usual key: one source, nothing logged or carried
        result = list(self._carried.get(key, [0] * self.width))
        sources = {s.pid: s for s in _chain(first)}
        lines = lines or {}
        for source in sources.keys() | lines.keys():
            polled = sources[source].counted() if source in sources else [0] * self.width
            for index, value in enumerate(_larger(polled, lines.get(source))):
                result[index] += value
        return tuple(result)

    def names(self) -> Iterator[K]:
        yield from self._live.keys()  # carried keys included

    def forget_absent(self, observed: Collection[K], now: float) -> list[K]:
        """Forget keys that no poll has observed for `forget_after_s`; returns them. Observed
        keys are all in `_live`, and so is every carried key: when a poll observed as many
        keys as `_live` holds, none is absent, and the usual poll costs a comparison of two
        lengths instead of a walk over every key."""
        if len(observed) == len(self._live) and not self._absent:
            return []
        forgotten = []
        for key in list(self._live):
            if key in observed:
                self._absent.pop(key, None)
            elif now - self._absent.setdefault(key, now) >= self.forget_after_s:
                del self._live[key]
                self._carried.pop(key, None)
                del self._absent[key]
                forgotten.append(key)
        return forgotten

    def sources(self) -> set[int]:
        return {source.pid for first in self._live.values() for source in _chain(first)}


class History:
    """(time, total) samples of one growing counter, kept for `keep_s` seconds.

    A run of equal totals keeps only its first and last samples: an idle counter costs three
    samples instead of one per poll, and a node has one per route backend, most of them idle
    at any moment (a thousand gateways' worth of per-second samples was 14 MB). A window that
    starts inside such a run starts at its edge, as if the dropped samples were there."""

    __slots__ = ("_samples", "keep_s")

    def __init__(self, keep_s: float = 70.0) -> None:
        self.keep_s = keep_s
        # A list, not a deque: an idle counter's two or three samples cost 90 bytes in a list
        # and 600 in a deque (one per route backend: 60 MB at 100,000 gateways); a busy one
        # holds a poll's worth of samples for `keep_s`, a few dozen, cheap to shift.
        self._samples: list[tuple[float, int]] = []

    def add(self, now: float, total: int) -> None:
        samples = self._samples
        if len(samples) >= 2 and samples[-1][1] == total and samples[-2][1] == total:
            samples[-1] = (now, total)  # the run goes on: its last sample moves
        else:
            samples.append((now, total))
        edge = now - self.keep_s
        popped = None
        old = 0
        while len(samples) - old > 2 and samples[old][0] < edge:
            popped = samples[old]
            old += 1
        if old:
            del samples[:old]
        if popped is not None and samples[0][1] == popped[1] and samples[0][0] > edge:
            samples.insert(0, (edge, popped[1]))  # a run that began before the edge covers it

    def __len__(self) -> int:
        return len(self._samples)

    def _base(self, window_s: float) -> tuple[float, int] | None:
        """The oldest sample no older than `window_s` before the newest one; inside a run of
        equal totals, the run at the window's edge."""
        if not self._samples:
            return None
        edge = self._samples[-1][0] - window_s
        previous: tuple[float, int] | None = None
        for sample in self._samples:
            if sample[0] >= edge:
                if previous is not None and previous[1] == sample[1]:
                    return (max(edge, previous[0]), sample[1])
                return sample
            previous = sample
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
