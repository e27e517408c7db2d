"""A route's cumulative figures at one moment, and what happened between two of them. Pure.

Rollouts, comparisons and the anomaly detector all judge a stretch of one route's traffic:
the difference of two readings of its counters (requests, 5xx answers) and of its latency
histogram, which are cumulative and never go backwards while meshgate runs. A reading is
small enough to keep in a rollout's status, so a step's start survives a restart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshgate.stats.histogram import BUCKETS, Histogram, merged
from meshgate.stats.tally import RESPONSE_CLASSES


@dataclass(frozen=True, slots=True)  # one a route alive, 100,000 at 100,000 gateways
class Reading:
    """Cumulative counts of one route. `latency` holds the per-bucket counts of its request
    time histogram (the buckets of `stats.histogram`), which may rest on a sample of the
    requests; `requests` and `errors` are exact."""

    requests: int = 0
    errors: int = 0  # 5xx answers
    latency: tuple[int, ...] = (0,) * BUCKETS
    responses: tuple[int, ...] = (0,) * len(RESPONSE_CLASSES)  # 1xx..5xx

    def since(self, earlier: Reading) -> Reading | None:
        """What happened after `earlier`; None when the counters went backwards (meshgate or
        HAProxy started afresh in between), so the stretch cannot be measured."""
        if self.requests < earlier.requests or self.errors < earlier.errors:
            return None
        latency = tuple(now - then for now, then in zip(self.latency, earlier.latency, strict=True))
        responses = tuple(
            now - then for now, then in zip(self.responses, earlier.responses, strict=True)
        )
        if any(value < 0 for value in latency) or any(value < 0 for value in responses):
            return None
        return Reading(
            self.requests - earlier.requests, self.errors - earlier.errors, latency, responses
        )

    def histogram(self) -> Histogram:
        histogram = Histogram()
        histogram.counts = list(self.latency)
        histogram.count = sum(self.latency)
        return histogram

    def percentile_ms(self, fraction: float) -> int | None:
        return self.histogram().percentile(fraction)

    @property
    def success_rate(self) -> float | None:
        return None if self.requests == 0 else 1 - self.errors / self.requests

    def to_json(self) -> dict[str, Any]:
        """Compact: only the buckets that hold something."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "latency": [[index, count] for index, count in enumerate(self.latency) if count],
            "responses": list(self.responses),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reading:
        counts = [0] * BUCKETS
        for index, count in data.get("latency", ()):
            if 0 <= int(index) < BUCKETS:
                counts[int(index)] = int(count)
        responses = [int(value) for value in data.get("responses", ())][: len(RESPONSE_CLASSES)]
        responses += [0] * (len(RESPONSE_CLASSES) - len(responses))
        return cls(
            int(data.get("requests", 0)),
            int(data.get("errors", 0)),
            tuple(counts),
            tuple(responses),
        )


def reading_of(
    requests: int, responses: Mapping[str, int], histograms: Sequence[Histogram]
) -> Reading:
    """A reading from a route's counters (`responses` by class, "1xx".."5xx") and the latency
    histograms of its instances."""
    classes = tuple(int(responses.get(name, 0)) for name in RESPONSE_CLASSES)
    latency = tuple(merged(histograms).counts)
    # A route with no latency recorded (idle, or a node without latency) shares one tuple of
    # zeros: a tuple of every bucket each was 2 kB a route, 200 MB at 100,000 routes.
    if not any(latency):
        latency = _NO_LATENCY
    if not any(classes):
        if not requests and latency is _NO_LATENCY:
            return _IDLE  # a route that never had a request: most of them, one object
        classes = _NO_RESPONSES
    return Reading(requests, classes[-1], latency, classes)


_NO_LATENCY = (0,) * BUCKETS
_NO_RESPONSES = (0,) * len(RESPONSE_CLASSES)
_IDLE = Reading(0, 0, _NO_LATENCY, _NO_RESPONSES)
