"""The anomaly detector: quiet on steady traffic with noise, open on a burst, closed after."""

from __future__ import annotations

import random

from meshgate.rollouts import anomaly
from meshgate.rollouts.analytics import RouteAnalytics
from meshgate.rollouts.history import RouteKey
from meshgate.rollouts.readings import Reading
from meshgate.stats.histogram import BUCKETS, bucket_of


def window(requests: int, errors: int, latency_ms: int) -> Reading:
    counts = [0] * BUCKETS
    counts[bucket_of(latency_ms)] = requests
    return Reading(requests, errors, tuple(counts))


def steady(rng: random.Random) -> dict[anomaly.Signal, float]:
    requests = rng.randint(180, 220)
    errors = sum(rng.random() < 0.01 for _ in range(requests))
    return anomaly.window_values(window(requests, errors, rng.randint(8, 14)), 10.0)


def test_steady_noisy_traffic_raises_nothing() -> None:
    rng = random.Random(1)
    watch = anomaly.RouteWatch()
    changes = [change for _ in range(600) for change in anomaly.observe(watch, steady(rng))]
    assert changes == []


def test_error_burst_opens_then_closes() -> None:
    rng = random.Random(2)
    watch = anomaly.RouteWatch()
    for _ in range(20):
        assert anomaly.observe(watch, steady(rng)) == []
    burst = anomaly.window_values(window(200, 60, 10), 10.0)
    opened = anomaly.observe(watch, burst)
    assert [c.signal for c in opened] == ["error_ratio"]
    assert opened[0].anomaly is not None
    assert "error ratio 30.0%" in opened[0].anomaly.describe()
    assert anomaly.observe(watch, burst) == []  # still open: reported once
    closed = anomaly.observe(watch, steady(rng))
    assert [(c.signal, c.anomaly) for c in closed] == [("error_ratio", None)]


def test_slow_answers_and_lost_traffic_are_anomalies() -> None:
    rng = random.Random(3)
    watch = anomaly.RouteWatch()
    for _ in range(20):
        anomaly.observe(watch, steady(rng))
    slow = anomaly.observe(watch, anomaly.window_values(window(200, 2, 400), 10.0))
    assert [c.signal for c in slow] == ["p99"]
    gone = anomaly.observe(watch, anomaly.window_values(window(0, 0, 10), 10.0))
    assert ("rate", True) in [(c.signal, c.anomaly is not None) for c in gone]


def test_a_lasting_change_becomes_the_new_normal() -> None:
    rng = random.Random(4)
    watch = anomaly.RouteWatch()
    for _ in range(20):
        anomaly.observe(watch, steady(rng))
    slow = anomaly.window_values(window(200, 2, 400), 10.0)
    seen = [c for _ in range(anomaly.ACCEPT_AFTER + 5) for c in anomaly.observe(watch, slow)]
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
