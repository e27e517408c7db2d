"""Is route B better than route A? Per-route figures with confidence intervals, and a verdict for
each pair of routes from two tests. Pure.

- **Error rates**: the two-proportion z-test (pooled), two-sided. It is the standard test for
  "did a larger share fail", valid when each route has a few failures and successes, which
  is the case by the time a difference matters. When the test does not find a difference,
  the verdict says roughly how many more requests would show the difference observed (80 %
  power at the 5 % level), so "no difference" reads as "not yet" where that is what it is.
- **Latency**: the Mann-Whitney U test on the two latency histograms (ranks with ties: all
  values of one bucket share a rank), normal approximation with the tie correction. It asks
  whether a request of one route tends to take longer than one of the other, without
  assuming a distribution, and works on bucketed values, where a t-test on means would be
  dominated by a few slow requests.

A success rate's 95 % interval is Wilson's score interval, which stays inside [0, 1] and is
honest for rates near 100 %, where the normal approximation is not.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meshgate.rollouts.readings import Reading

Z_95 = 1.959964  # two-sided 5 %
Z_80_POWER = 0.841621
SIGNIFICANT = 0.05


def normal_two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2))


def wilson_interval(successes: int, total: int, z: float = Z_95) -> tuple[float, float] | None:
    if total == 0:
        return None
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class TestResult:
    p_value: float | None  # None: the test cannot say anything (no data, or no variance)
    statistic: float | None


def two_proportions(errors_a: int, total_a: int, errors_b: int, total_b: int) -> TestResult:
    if total_a == 0 or total_b == 0:
        return TestResult(None, None)
    pooled = (errors_a + errors_b) / (total_a + total_b)
    variance = pooled * (1 - pooled) * (1 / total_a + 1 / total_b)
    if variance == 0:
        return TestResult(None, None)  # both all-failed or all-succeeded: nothing to compare
    z = (errors_b / total_b - errors_a / total_a) / math.sqrt(variance)
    return TestResult(normal_two_sided_p(z), z)


def requests_needed(rate_a: float, rate_b: float) -> int | None:
    """Requests per route for the difference between two error rates to be found (5 % level,
    80 % power); None when they are equal."""
    difference = abs(rate_b - rate_a)
    if difference == 0:
        return None
    mean = (rate_a + rate_b) / 2
    spread = Z_95 * math.sqrt(2 * mean * (1 - mean)) + Z_80_POWER * math.sqrt(
        rate_a * (1 - rate_a) + rate_b * (1 - rate_b)
    )
    return math.ceil((spread / difference) ** 2)


def mann_whitney(a: tuple[int, ...], b: tuple[int, ...]) -> TestResult:
    """U test on two histograms over the same buckets. The statistic is z: positive when B's
    values tend to be larger than A's."""
    n_a, n_b = sum(a), sum(b)
    if n_a == 0 or n_b == 0:
        return TestResult(None, None)
    n = n_a + n_b
    below = 0  # values of both histograms in lower buckets
    rank_sum_b = 0.0
    ties = 0.0
    for count_a, count_b in zip(a, b, strict=True):
        tied = count_a + count_b
        if tied == 0:
            continue
        mid_rank = below + (tied + 1) / 2
        rank_sum_b += count_b * mid_rank
        ties += tied**3 - tied
        below += tied
    u_b = rank_sum_b - n_b * (n_b + 1) / 2
    mean = n_a * n_b / 2
    variance = n_a * n_b / 12 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0
    if variance <= 0:
        return TestResult(None, None)  # every value in one bucket: no order to test
    z = (u_b - mean) / math.sqrt(variance)
    return TestResult(normal_two_sided_p(z), z)


def _p_text(p: float) -> str:
    for bound in (0.001, 0.01, 0.05):
        if p < bound:
            return f"p < {bound}"
    return f"p = {p:.2f}"


def route_summary(reading: Reading) -> dict[str, Any]:
    successes = reading.requests - reading.errors
    interval = wilson_interval(successes, reading.requests)
    histogram = reading.histogram()
    return {
        "requests": reading.requests,
        "errors": reading.errors,
        "success_rate": None if reading.success_rate is None else round(reading.success_rate, 5),
        "success_rate_95": None if interval is None else [round(v, 5) for v in interval],
        "latency_samples": histogram.count,
        "p50_ms": histogram.percentile(0.50),
        "p99_ms": histogram.percentile(0.99),
    }


def compare_pair(name_a: str, a: Reading, name_b: str, b: Reading) -> dict[str, Any]:
    """Both tests for one pair, and a sentence for each."""
    errors = two_proportions(a.errors, a.requests, b.errors, b.requests)
    latency = mann_whitney(a.latency, b.latency)
    rate_a = a.errors / a.requests if a.requests else 0.0
    rate_b = b.errors / b.requests if b.requests else 0.0
    if errors.p_value is not None and errors.p_value < SIGNIFICANT:
        higher, lower = (name_b, name_a) if rate_b > rate_a else (name_a, name_b)
        error_verdict = (
            f"{higher} has a higher error rate than {lower} "
            f"({max(rate_a, rate_b):.2%} vs {min(rate_a, rate_b):.2%}, {_p_text(errors.p_value)})"
        )
    else:
        needed = requests_needed(rate_a, rate_b)
        have = min(a.requests, b.requests)
        if needed is not None and needed > have:
            error_verdict = (
                f"no significant difference in error rate yet (need ~{needed - have} more "
                "requests per route to tell the difference seen)"
            )
        else:
            error_verdict = "no significant difference in error rate"
    if latency.p_value is not None and latency.p_value < SIGNIFICANT:
        assert latency.statistic is not None
        slower, faster = (name_b, name_a) if latency.statistic > 0 else (name_a, name_b)
        latency_verdict = f"{slower} is slower than {faster} ({_p_text(latency.p_value)})"
    elif latency.p_value is None:
        latency_verdict = "not enough latency samples to compare"
    else:
        latency_verdict = "no significant difference in latency"
    return {
        "a": name_a,
        "b": name_b,
        "error_rate": {
            "test": "two-proportion z-test",
            "z": None if errors.statistic is None else round(errors.statistic, 3),
            "p_value": None if errors.p_value is None else round(errors.p_value, 6),
            "verdict": error_verdict,
        },
        "latency": {
            "test": "Mann-Whitney U",
            "z": None if latency.statistic is None else round(latency.statistic, 3),
            "p_value": None if latency.p_value is None else round(latency.p_value, 6),
            "verdict": latency_verdict,
        },
    }


def compare_routes(readings: Mapping[str, Reading]) -> dict[str, Any]:
    """Every route's summary, and every pair (in route order) compared."""
    return {
        "routes": {name: route_summary(reading) for name, reading in readings.items()},
        "pairs": [
            compare_pair(name_a, a, name_b, b)
            for (name_a, a), (name_b, b) in itertools.combinations(readings.items(), 2)
        ],
    }
