"""Latency histograms: bucket bounds, percentiles, windows by subtraction, Prometheus counts."""

from __future__ import annotations

from itertools import pairwise

import pytest

from meshgate.stats.histogram import (
    BOUNDS_MS,
    EXACT_UP_TO_MS,
    MAX_MS,
    OVERFLOW,
    PROMETHEUS_BOUNDS_MS,
    Histogram,
    bucket_of,
    merged,
    summary,
)


def histogram(*values: int) -> Histogram:
    result = Histogram()
    for value in values:
        result.record(value)
    return result


def test_bounds_are_every_millisecond_then_at_most_4_5_percent_above_any_value_inside() -> None:
    assert BOUNDS_MS[: EXACT_UP_TO_MS + 1] == tuple(range(EXACT_UP_TO_MS + 1))
    assert BOUNDS_MS[-1] == MAX_MS
    assert list(BOUNDS_MS) == sorted(set(BOUNDS_MS))
    for lower, upper in pairwise(BOUNDS_MS[EXACT_UP_TO_MS:]):
        # Times are whole milliseconds: the smallest value in (lower, upper] is lower + 1.
        assert upper / (lower + 1) <= 1.045, (lower, upper)
    assert set(PROMETHEUS_BOUNDS_MS) <= set(BOUNDS_MS)
    assert 200 < len(BOUNDS_MS) < 260


def test_a_value_falls_in_the_bucket_whose_upper_bound_is_the_first_not_below_it() -> None:
    assert bucket_of(0) == 0
    assert bucket_of(7) == 7
    assert BOUNDS_MS[bucket_of(33)] >= 33 > BOUNDS_MS[bucket_of(33) - 1]
    assert bucket_of(MAX_MS) == OVERFLOW - 1
    assert bucket_of(MAX_MS + 1) == OVERFLOW


def test_percentiles_are_exact_below_the_exact_limit() -> None:
    values = histogram(*range(1, 21))  # 1..20 ms
    assert values.percentile(0.5) == 10
    assert values.percentile(0.9) == 18
    assert values.percentile(0.99) == 20
    assert values.percentile(1.0) == 20
    assert values.percentile(0.01) == 1
    assert values.mean() == 10.5


def test_a_percentile_above_the_exact_limit_is_its_bucket_upper_bound() -> None:
    values = histogram(*([3] * 50), *([201] * 50))
    assert values.percentile(0.5) == 3
    upper = values.percentile(0.51)
    assert upper == BOUNDS_MS[bucket_of(201)]
    assert 201 <= upper <= 201 * 1.045


def test_values_above_the_largest_bound_report_the_largest_value_seen() -> None:
    values = histogram(5, MAX_MS + 5_000)
    assert values.percentile(0.99) == MAX_MS + 5_000


def test_empty_histogram_has_no_percentiles() -> None:
    assert Histogram().percentile(0.5) is None
    assert Histogram().mean() is None
    assert summary(Histogram()) == {"avg": None, "p50": None, "p90": None, "p99": None}
    assert summary(None) == {"avg": None, "p50": None, "p90": None, "p99": None}


def test_summary_is_avg_and_the_three_percentiles() -> None:
    assert summary(histogram(*range(1, 101))) == {
        "avg": 50.5,
        "p50": 50,
        "p90": BOUNDS_MS[bucket_of(90)],
        "p99": BOUNDS_MS[bucket_of(99)],
    }


def test_since_subtracts_an_earlier_copy() -> None:
    values = histogram(1, 2, 3)
    earlier = values.copy()
    for value in (100, 100, 2):
        values.record(value)
    window = values.since(earlier)
    assert window.count == 3
    assert window.sum == 202
    assert window.percentile(0.5) == BOUNDS_MS[bucket_of(100)]
    assert window.percentile(0.1) == 2
    assert values.since(values.copy()).count == 0


def test_merged_adds_bucket_by_bucket() -> None:
    total = merged([histogram(1, 2), histogram(3), Histogram()])
    assert total.count == 3
    assert total.sum == 6
    assert total.max == 3
    assert total.percentile(1.0) == 3


@pytest.mark.parametrize("values", [(), (0,), (1, 2, 5, 6, 99, 100, 101, 70_000)])
def test_prometheus_counts_are_cumulative_at_the_coarse_bounds(values: tuple[int, ...]) -> None:
    counts = histogram(*values).cumulative()
    expected = [sum(1 for v in values if v <= bound) for bound in PROMETHEUS_BOUNDS_MS]
    assert counts == expected
