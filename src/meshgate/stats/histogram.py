"""Latency histograms with fixed logarithmic buckets: cheap to record, to add and to subtract.

HAProxy reports times in whole milliseconds, so every bucket bound is an integer: one bucket per
millisecond up to `EXACT_UP_TO_MS`, then bounds 2^(1/16) apart (about 4.4 %) up to `MAX_MS`,
and one overflow bucket above. The bounds are the same for every histogram, so histograms of
instances add up to their route's, and a window is the difference of two cumulative histograms
(no per-interval state to rotate). A percentile is reported as the upper bound of the bucket it
falls in: never below the true value, and at most 4.4 % above it.

The bounds Prometheus sees (`PROMETHEUS_BOUNDS_MS`) are among the fine bounds, so the coarse
cumulative counts are exact sums of fine buckets.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence

EXACT_UP_TO_MS = 32
STEPS_PER_DOUBLING = 16
MAX_MS = 120_000
PROMETHEUS_BOUNDS_MS = (
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000,
)  # fmt: skip


def _bounds() -> tuple[int, ...]:
    bounds = set(range(EXACT_UP_TO_MS + 1))
    value = float(EXACT_UP_TO_MS)
    step = 2 ** (1 / STEPS_PER_DOUBLING)
    while value < MAX_MS:
        value *= step
        bounds.add(min(MAX_MS, math.ceil(value)))
    bounds.update(PROMETHEUS_BOUNDS_MS)
    return tuple(sorted(bounds))


# Inclusive upper bounds: bucket i holds values v with BOUNDS_MS[i-1] < v <= BOUNDS_MS[i].
BOUNDS_MS = _bounds()
OVERFLOW = len(BOUNDS_MS)  # the bucket of values above MAX_MS
BUCKETS = OVERFLOW + 1


def bucket_of(ms: int) -> int:
    return bisect_left(BOUNDS_MS, ms)


class Histogram:
    """Counts per bucket, plus the count, sum and largest value recorded."""

    __slots__ = ("count", "counts", "max", "sum")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.count = 0
        self.sum = 0
        self.max = 0

    def record(self, ms: int) -> None:
        self.counts[bisect_left(BOUNDS_MS, ms)] += 1
        self.count += 1
        self.sum += ms
        if ms > self.max:
            self.max = ms

    def copy(self) -> Histogram:
        other = Histogram()
        other.counts = self.counts.copy()
        other.count, other.sum, other.max = self.count, self.sum, self.max
        return other

    def add(self, other: Histogram) -> None:
        counts = self.counts
        for index, value in enumerate(other.counts):
            if value:
                counts[index] += value
        self.count += other.count
        self.sum += other.sum
        self.max = max(self.max, other.max)

    def since(self, earlier: Histogram) -> Histogram:
        """What was recorded after `earlier`, a copy of this histogram taken before.

        The maximum cannot be subtracted; the later one is kept, which is only used to cap
        the overflow bucket's report."""
        window = Histogram()
        window.counts = [now - then for now, then in zip(self.counts, earlier.counts, strict=True)]
        window.count = self.count - earlier.count
        window.sum = self.sum - earlier.sum
        window.max = self.max if window.count else 0
        return window

    def percentile(self, fraction: float) -> int | None:
        """The upper bound of the bucket holding the value at `fraction` (0 < fraction <= 1)
        of the recorded values; None when nothing was recorded."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(fraction * self.count))
        seen = 0
        for index, value in enumerate(self.counts):
            seen += value
            if seen >= rank:
                return BOUNDS_MS[index] if index < OVERFLOW else self.max
        return self.max  # unreachable while counts add up to count

    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def cumulative(self, bounds_ms: Sequence[int] = PROMETHEUS_BOUNDS_MS) -> list[int]:
        """Counts of values <= each bound (each bound must be one of BOUNDS_MS), as Prometheus
        histograms expose them; the +Inf count is `count`."""
        result = []
        seen = 0
        index = 0
        for bound in bounds_ms:
            stop = bisect_left(BOUNDS_MS, bound) + 1
            seen += sum(self.counts[index:stop])
            index = stop
            result.append(seen)
        return result


def merged(histograms: Iterable[Histogram]) -> Histogram:
    total = Histogram()
    for histogram in histograms:
        total.add(histogram)
    return total


def summary(histogram: Histogram | None) -> dict[str, float | int | None]:
    """`{"avg", "p50", "p90", "p99"}` in milliseconds; None values when nothing was recorded."""
    if histogram is None or histogram.count == 0:
        return {"avg": None, "p50": None, "p90": None, "p99": None}
    mean = histogram.mean()
    return {
        "avg": round(mean, 1) if mean is not None else None,
        "p50": histogram.percentile(0.50),
        "p90": histogram.percentile(0.90),
        "p99": histogram.percentile(0.99),
    }


def to_sparse(histogram: Histogram) -> dict[str, object]:
    """The histogram as JSON: counts by bucket index, only the buckets that hold any. What a
    node sends so that a server can merge percentiles across nodes exactly."""
    return {
        "buckets": {str(i): n for i, n in enumerate(histogram.counts) if n},
        "count": histogram.count,
        "sum": histogram.sum,
        "max": histogram.max,
    }


def from_sparse(data: object) -> Histogram:
    """The inverse of `to_sparse`; ValueError for anything else."""
    if not isinstance(data, dict) or not isinstance(data.get("buckets"), dict):
        raise ValueError("not a histogram")
    histogram = Histogram()
    for index, count in data["buckets"].items():
        position = int(index)
        if not 0 <= position < BUCKETS or not isinstance(count, int) or count < 0:
            raise ValueError(f"bad histogram bucket {index!r}: {count!r}")
        histogram.counts[position] = count
    histogram.count = sum(histogram.counts)
    for field in ("sum", "max"):
        if not isinstance(data.get(field), int):
            raise ValueError(f"histogram {field} must be an integer")
    histogram.sum, histogram.max = data["sum"], data["max"]
    return histogram
