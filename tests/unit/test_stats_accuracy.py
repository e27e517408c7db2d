"""How far percentiles from a sample of request lines stray from exact ones over every request.

Above its budget HAProxy logs each request with probability keep/1024, drawn independently of
the request (`stats.sampling`). The lines below go through that draw and the latency book, and
the figures are compared with exact percentiles of the full log, the bound documented in
docs/benchmarks.md: the reported pX lies between the exact percentiles at X - e and X + e
(e = 3 standard errors of a quantile from n samples, sqrt(p (1 - p) / n)), the upper one
rounded up to its histogram bucket (at most 4.4 % above the value).
"""

from __future__ import annotations

import math
import random

import pytest

from meshgate.stats.histogram import BOUNDS_MS, bucket_of
from meshgate.stats.latency import LatencyBook
from meshgate.stats.sampling import KEEP_SCALE

BACKEND = b"default.gw.s1.3116af"
REQUESTS = 60_000
PERCENTILES = (0.5, 0.9, 0.99)


def full_log(seed: int) -> list[int]:
    """Total times (ms) of a route: mostly fast, a slow tail, a few very slow requests."""
    draw = random.Random(seed)
    times = []
    for _ in range(REQUESTS):
        kind = draw.random()
        if kind < 0.9:
            times.append(int(draw.lognormvariate(1.5, 0.6)))
        elif kind < 0.995:
            times.append(int(draw.lognormvariate(4.0, 0.8)))
        else:
            times.append(int(draw.uniform(1_000, 5_000)))
    return times


def exact(ordered: list[int], fraction: float) -> int:
    """The exact percentile over every request: the value at rank ceil(fraction * n)."""
    fraction = min(1.0, max(0.0, fraction))
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def sampled(times: list[int], keep: int, seed: int) -> LatencyBook:
    """The book after HAProxy's draw: `rand(1024)` below keep logs the request."""
    book = LatencyBook(budget_per_s=None)
    book.accept([BACKEND.decode()])
    draw = random.Random(seed + 1)
    lines = [
        b"7 %s a 200 0 %d %d" % (BACKEND, total, total)
        for total in times
        if draw.randrange(KEEP_SCALE) < keep
    ]
    book.offer_lines(lines, now=0.0)
    return book


@pytest.mark.parametrize("keep", [8, 64])
@pytest.mark.parametrize("seed", range(6))
def test_sampled_percentiles_stay_within_the_documented_bound_of_the_exact_ones(
    keep: int, seed: int
) -> None:
    times = full_log(seed)
    ordered = sorted(times)
    total = sampled(times, keep, seed).window(BACKEND.decode(), None, now=1.0).total
    assert total.count == pytest.approx(REQUESTS * keep / KEEP_SCALE, rel=0.2)
    for fraction in PERCENTILES:
        error = 3 * math.sqrt(fraction * (1 - fraction) / total.count)
        reported = total.percentile(fraction)
        low, high = exact(ordered, fraction - error), exact(ordered, fraction + error)
        assert reported is not None
        assert low <= reported <= BOUNDS_MS[bucket_of(high)], (fraction, low, reported, high)


def test_every_request_logged_gives_the_exact_percentiles_up_to_their_bucket() -> None:
    times = full_log(0)
    ordered = sorted(times)
    total = sampled(times, KEEP_SCALE, 0).window(BACKEND.decode(), None, now=1.0).total
    assert total.count == REQUESTS
    for fraction in PERCENTILES:
        assert total.percentile(fraction) == BOUNDS_MS[bucket_of(exact(ordered, fraction))]
