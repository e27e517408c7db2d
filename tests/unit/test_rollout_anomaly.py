"""The anomaly detector: quiet on steady traffic with noise, open on a burst, closed after."""

from __future__ import annotations

import math
import random

import pytest

from meshgate.rollouts import anomaly
from meshgate.rollouts.analytics import RouteAnalytics
from meshgate.rollouts.history import RouteKey
from meshgate.rollouts.readings import Reading
from meshgate.stats.histogram import BUCKETS, bucket_of


def window(requests: int, errors: int, latency_ms: int) -> Reading:
    counts = [0] * BUCKETS
    counts[bucket_of(latency_ms)] = requests
    return Reading(requests, errors, tuple(counts))


def feed(watch: anomaly.RouteWatch, reading: Reading) -> list[anomaly.Change]:
    """One window of ten seconds."""
    return anomaly.observe(watch, anomaly.window_values(reading, 10.0), reading.requests)


def steady(rng: random.Random, requests: int = 200) -> Reading:
    count = rng.randint(requests * 9 // 10, requests * 11 // 10)
    errors = sum(rng.random() < 0.01 for _ in range(count))
    return window(count, errors, rng.randint(8, 14))


def test_steady_noisy_traffic_raises_nothing() -> None:
    rng = random.Random(1)
    watch = anomaly.RouteWatch()
    changes = [change for _ in range(600) for change in feed(watch, steady(rng))]
    assert changes == []


def test_small_windows_with_chance_errors_raise_nothing() -> None:
    # 50 requests a window, 1 % errors: 3 errors (6 %) now and then is chance, not news.
    rng = random.Random(5)
    watch = anomaly.RouteWatch()
    changes = [change for _ in range(2000) for change in feed(watch, steady(rng, 50))]
    assert [c for c in changes if c.signal == "error_ratio"] == []


def test_error_burst_opens_then_closes() -> None:
    rng = random.Random(2)
    watch = anomaly.RouteWatch()
    for _ in range(20):
        assert feed(watch, steady(rng)) == []
    burst = window(200, 60, 10)
    opened = feed(watch, burst)
    assert [c.signal for c in opened] == ["error_ratio"]
    assert opened[0].anomaly is not None
    assert "error ratio 30.0%" in opened[0].anomaly.describe()
    assert feed(watch, burst) == []  # still open: reported once
    closed = feed(watch, steady(rng))
    assert [(c.signal, c.anomaly) for c in closed] == [("error_ratio", None)]


def test_slow_answers_and_lost_traffic_are_anomalies() -> None:
    rng = random.Random(3)
    watch = anomaly.RouteWatch()
    for _ in range(20):
        feed(watch, steady(rng))
    slow = window(200, 2, 400)
    assert feed(watch, slow) == []  # one slow window may be a pause: two in a row are news
    assert [c.signal for c in feed(watch, slow)] == ["p99"]
    feed(watch, window(0, 0, 10))
    gone = feed(watch, window(0, 0, 10))
    assert ("rate", True) in [(c.signal, c.anomaly is not None) for c in gone]


def test_a_lasting_change_becomes_the_new_normal() -> None:
    rng = random.Random(4)
    watch = anomaly.RouteWatch()
    for _ in range(20):
        feed(watch, steady(rng))
    slow = window(200, 2, 400)
    seen = [c for _ in range(anomaly.ACCEPT_AFTER + 5) for c in feed(watch, slow)]
    assert [(c.signal, c.anomaly is None) for c in seen] == [("p99", False), ("p99", True)]


async def test_analytics_records_windows_and_reports_events() -> None:
    key: RouteKey = ("default", "sava", "sava:1.1")
    clock = [0.0]
    totals = [0, 0]
    events = []

    async def read_all() -> dict[RouteKey, Reading]:
        return {key: window(totals[0], totals[1], 10)}

    analytics = RouteAnalytics(read_all, window_s=1.0, clock=lambda: clock[0])
    analytics.on_event = events.append
    for second in range(30):
        clock[0] = float(second)
        totals[0] += 100
        totals[1] += 0 if second < 20 else 40
        await analytics.record()
    assert [(e.signal, e.opened) for e in events] == [("error_ratio", True)]
    assert analytics.open_anomaly(*key) is not None
    readings, covered = analytics.window(
        "default", "sava", 5.0, {"sava:1.1": window(3000, 400, 10)}
    )
    assert covered == 5.0
    assert readings["sava:1.1"].requests == 500
    assert next(iter(analytics.collect())).samples[0].labels["signal"] == "error_ratio"


def test_binomial_tail_matches_exact_sums() -> None:
    assert anomaly.binomial_tail(1, 10, 0.5) == pytest.approx(1 - 1 / 1024)
    exact = sum(math.comb(54, j) * 0.01**j * 0.99 ** (54 - j) for j in range(5, 55))
    assert anomaly.binomial_tail(5, 54, 0.01) == pytest.approx(exact, rel=1e-9)
    assert anomaly.binomial_tail(0, 5, 0.1) == 1.0
    assert anomaly.binomial_tail(6, 5, 0.1) == 0.0
    # The normal approximation, for large windows: 1,100 errors in 10,000 at 10 %.
    assert anomaly.binomial_tail(1100, 10_000, 0.1) == pytest.approx(4.3e-4, rel=0.2)
