"""Routes that start to misbehave: per route, a baseline of its request rate, error ratio and
p99 latency, learned online; a window far outside it opens an anomaly. Pure.

For each signal the baseline is an exponentially weighted mean and variance over past windows
(`ALPHA`: about the last ten windows count). A window is anomalous when it lies more than
`THRESHOLD` standard deviations from the mean, and also differs by a practical amount (a
floor per signal), so that a perfectly steady route, whose variance is close to zero, does not
alert on a blip of one request. Error ratio and latency alert only upwards; the rate in both
directions (a route that suddenly gets no traffic is news too).

A window's error ratio is a proportion of its requests: with few requests it jumps by
whole requests (3 errors in 50 is 6 %). So the error ratio is judged by the binomial test:
the window is anomalous when as many errors in as many requests would happen by chance less
than `ERROR_P` of the time at the usual ratio; and it needs at least `MIN_ERRORS` errors.
A p99 of a small window is close to its slowest request, and a rate dips when a client
pauses: those two open an anomaly only when `CONFIRM` windows in a row are anomalous, which a
burst of errors does not wait for.

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
MIN_ERRORS = 5
ERROR_P = 1e-6  # about as rare as 4.75 standard deviations of a normal distribution
CONFIRM: dict[Signal, int] = {"rate": 2, "error_ratio": 1, "p99": 2}


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


def observe(watch: RouteWatch, values: dict[Signal, float], requests: int = 0) -> list[Change]:
    """Judge one window's values (of `requests` requests) against the route's baselines, then
    learn from them."""
    changes = []
    for signal, value in values.items():
        baseline = watch.baselines[signal]
        verdict = _judge(signal, baseline, value, requests)
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
        if signal not in watch.open and baseline.anomalous >= CONFIRM[signal]:
            watch.open[signal] = verdict
            changes.append(Change(signal, verdict))
    return changes


def _judge(signal: Signal, baseline: Baseline, value: float, requests: int) -> Anomaly | None:
    if baseline.windows < WARMUP:
        return None
    difference = value - baseline.mean
    if signal != "rate" and difference <= 0:
        return None  # fewer errors or faster answers are never an incident
    if abs(difference) < _floor(signal, baseline.mean):
        return None
    spread = math.sqrt(baseline.variance)
    if signal == "error_ratio":
        errors = round(value * requests)
        usual = max(baseline.mean, 0.002)
        if errors < MIN_ERRORS or binomial_tail(errors, requests, usual) >= ERROR_P:
            return None
    elif abs(difference) < THRESHOLD * spread:
        return None
    return Anomaly(signal, value, baseline.mean, spread)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): exact for small expectations, normal above."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if n * p >= 30 and n * (1 - p) >= 30:
        z = (k - 0.5 - n * p) / math.sqrt(n * p * (1 - p))
        return 0.5 * math.erfc(z / math.sqrt(2))
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for j in range(k, n + 1):
        term = math.exp(
            math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1)
            + j * log_p + (n - j) * log_q
        )  # fmt: skip
        total += term
        if term < total * 1e-12:
            break  # the terms only shrink past the mean, which k is beyond here
    return min(1.0, total)
