"""The A/B tests: known cases computed by hand or by a statistics package's definition."""

from __future__ import annotations

import random

import pytest

from meshgate.rollouts import compare
from meshgate.rollouts.readings import Reading
from meshgate.stats.histogram import BUCKETS, bucket_of


def reading(requests: int, errors: int, latencies: list[int] | None = None) -> Reading:
    counts = [0] * BUCKETS
    for ms in latencies or []:
        counts[bucket_of(ms)] += 1
    return Reading(requests, errors, tuple(counts))


def test_wilson_interval_matches_the_textbook() -> None:
    low, high = compare.wilson_interval(95, 100) or (0, 0)
    # Wilson 95 % for 95/100: 0.8882 - 0.9785.
    assert low == pytest.approx(0.8882, abs=1e-4)
    assert high == pytest.approx(0.9785, abs=1e-4)
    assert compare.wilson_interval(0, 0) is None
    assert compare.wilson_interval(10, 10) == (pytest.approx(0.7225, abs=1e-4), pytest.approx(1.0))


def test_two_proportions_finds_1_vs_10_percent() -> None:
    result = compare.two_proportions(10, 1000, 100, 1000)
    assert result.p_value is not None and result.p_value < 1e-10
    assert result.statistic is not None and result.statistic > 0
    same = compare.two_proportions(10, 1000, 11, 1000)
    assert same.p_value is not None and same.p_value > 0.5
    assert compare.two_proportions(0, 100, 0, 100).p_value is None


def test_requests_needed_is_the_usual_sample_size() -> None:
    # 1 % vs 2 %: about 2,300 per arm at 80 % power and the 5 % level.
    needed = compare.requests_needed(0.01, 0.02)
    assert needed is not None and 2200 <= needed <= 2400
    assert compare.requests_needed(0.05, 0.05) is None


def test_mann_whitney_sees_a_slower_route_and_not_an_equal_one() -> None:
    rng = random.Random(7)
    fast = reading(400, 0, [rng.randint(5, 15) for _ in range(400)])
    slow = reading(400, 0, [rng.randint(12, 22) for _ in range(400)])
    twin = reading(400, 0, [rng.randint(5, 15) for _ in range(400)])
    result = compare.mann_whitney(fast.latency, slow.latency)
    assert result.p_value is not None and result.p_value < 1e-6
    assert result.statistic is not None and result.statistic > 0
    equal = compare.mann_whitney(fast.latency, twin.latency)
    assert equal.p_value is not None and equal.p_value > 0.01
    assert compare.mann_whitney(fast.latency, reading(0, 0).latency).p_value is None


def test_mann_whitney_agrees_with_the_exact_u_on_distinct_values() -> None:
    a = reading(3, 0, [1, 2, 3])
    b = reading(3, 0, [4, 5, 6])
    # B above every A: U_B = 9, mean 4.5, sd sqrt(3*3*7/12) = 2.291.
    result = compare.mann_whitney(a.latency, b.latency)
    assert result.statistic == pytest.approx((9 - 4.5) / (9 * 7 / 12) ** 0.5)


def test_verdicts_read_as_sentences() -> None:
    stable = reading(2000, 20, [10] * 2000)
    canary = reading(2000, 200, [10] * 2000)
    pair = compare.compare_pair("sava:1.0", stable, "sava:1.1", canary)
    assert pair["error_rate"]["verdict"].startswith(
        "sava:1.1 has a higher error rate than sava:1.0 (10.00% vs 1.00%, p < 0.001)"
    )
    few = compare.compare_pair("a", reading(50, 1), "b", reading(50, 2))
    assert "need ~" in few["error_rate"]["verdict"]
    assert few["latency"]["verdict"] == "not enough latency samples to compare"


def test_compare_routes_lists_every_pair() -> None:
    result = compare.compare_routes({"a": reading(10, 0), "b": reading(10, 0), "c": reading(1, 0)})
    assert [(p["a"], p["b"]) for p in result["pairs"]] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert result["routes"]["a"]["success_rate"] == 1.0
