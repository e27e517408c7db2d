"""Routes that start to misbehave: per route, a baseline of its request rate, error ratio and
p99 latency, learned online; a window far outside it opens an anomaly. Pure.

For each signal the baseline is an exponentially weighted mean and variance over past windows
(`ALPHA`: about the last ten windows count). A window is anomalous when it lies more than
`THRESHOLD` standard deviations from the mean, and also differs by a practical amount (a
floor per signal), so that a perfectly steady route, whose variance is close to zero, does not
alert on a blip of one request. Error ratio and latency alert only upwards; the rate in both
directions (a route that suddenly gets no traffic is news too).

Anomalous windows do not teach the baseline, so an incident stays open while it lasts; one that
lasts `ACCEPT_AFTER` windows is taken as the new normal and the baseline restarts from it.
Nothing is judged during the first `WARMUP` windows of a route, or on a window with too few
requests to say anything (`MIN_REQUESTS`; `MIN_SAMPLES` latency samples for the p99).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from meshgate.rollouts.readings import Reading

Signal = Literal["rate", "error_ratio", "p99"]
SIGNALS: tuple[Signal, ...] = ("rate", "error_ratio", "p99")
ALPHA = 0.2
THRESHOLD = 4.0
WARMUP = 6
ACCEPT_AFTER = 30
MIN_REQUESTS = 20
MIN_SAMPLES = 20


def _floor(signal: Signal, mean: float) -> float:
    """The smallest change worth an alert, whatever the variance."""
    if signal == "rate":
        return max(1.0, 0.5 * mean)  # requests per second
    if signal == "error_ratio":
        return 0.05  # five points of error ratio
    return max(20.0, 0.5 * mean)  # milliseconds


@dataclass
class Baseline:
    mean: float = 0.0
    variance: float = 0.0
    windows: int = 0  # windows learned from
    anomalous: int = 0  # consecutive anomalous windows

    def learn(self, value: float) -> None:
        if self.windows == 0:
            self.mean, self.variance = value, 0.0
        else:
            difference = value - self.mean
            increment = ALPHA * difference
            self.mean += increment
            self.variance = (1 - ALPHA) * (self.variance + difference * increment)
        self.windows += 1

    def deviation(self, value: float) -> float:
        """How many standard deviations `value` lies from the mean; a flat baseline makes any
        change infinitely unusual, and `_floor` alone decides whether it matters."""
        spread = math.sqrt(self.variance)
        return (value - self.mean) / max(spread, 1e-9)


@dataclass(frozen=True)
class Anomaly:
    signal: Signal
    value: float
    mean: float
    sigma: float

    def describe(self) -> str:
        unit = {"rate": " req/s", "error_ratio": "", "p99": " ms"}[self.signal]
        if self.signal == "error_ratio":
            return f"error ratio {self.value:.1%} against a usual {self.mean:.1%}"
        return f"{self.signal} {self.value:.1f}{unit} against a usual {self.mean:.1f}{unit}"


@dataclass
class RouteWatch:
    baselines: dict[Signal, Baseline] = field(
        default_factory=lambda: {signal: Baseline() for signal in SIGNALS}
    )
    open: dict[Signal, Anomaly] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    """An anomaly opened (`anomaly` set) or closed (None) on a signal of a route."""

    signal: Signal
    anomaly: Anomaly | None


def window_values(window: Reading, seconds: float) -> dict[Signal, float]:
    """The signals of one window that there is enough traffic to judge."""
    values: dict[Signal, float] = {"rate": window.requests / seconds if seconds > 0 else 0.0}
    if window.requests >= MIN_REQUESTS:
        values["error_ratio"] = window.errors / window.requests
    histogram = window.histogram()
    if histogram.count >= MIN_SAMPLES:
        p99 = histogram.percentile(0.99)
        if p99 is not None:
            values["p99"] = float(p99)
    return values


def observe(watch: RouteWatch, values: dict[Signal, float]) -> list[Change]:
    """Judge one window's values against the route's baselines, then learn from them."""
    changes = []
    for signal, value in values.items():
        baseline = watch.baselines[signal]
        verdict = _judge(signal, baseline, value)
        if verdict is None:
            baseline.anomalous = 0
            baseline.learn(value)
            if signal in watch.open:
                del watch.open[signal]
                changes.append(Change(signal, None))
            continue
        baseline.anomalous += 1
        if baseline.anomalous >= ACCEPT_AFTER:
            # Not an incident any more but how the route is now: learn it afresh.
            watch.baselines[signal] = fresh = Baseline()
            fresh.learn(value)
            if signal in watch.open:
                del watch.open[signal]
                changes.append(Change(signal, None))
            continue
        if signal not in watch.open:
            watch.open[signal] = verdict
            changes.append(Change(signal, verdict))
    return changes


def _judge(signal: Signal, baseline: Baseline, value: float) -> Anomaly | None:
    if baseline.windows < WARMUP:
        return None
    difference = value - baseline.mean
    if signal != "rate" and difference <= 0:
        return None  # fewer errors or faster answers are never an incident
    if abs(difference) < _floor(signal, baseline.mean):
        return None
    if abs(baseline.deviation(value)) < THRESHOLD:
        return None
    return Anomaly(signal, value, baseline.mean, math.sqrt(baseline.variance))
