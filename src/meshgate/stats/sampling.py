"""How many request lines HAProxy should log: the keep fraction, from the request rate. Pure.

Formatting a log line and writing it to the ring costs HAProxy a few microseconds per request,
whatever happens to the line afterwards (its `log ... sample 1:N` samples after formatting). A
stream whose log level is set to silent is not formatted at all, so each HTTP (and tcp)
frontend starts with

    http-request set-log-level silent if { rand(1024),sub(proc.mg_log_keep) ge 0 }

which logs a request with probability keep/1024. The frontend's configuration declares keep
at 1024 (every request); the node lowers it at run time with `set var` when traffic exceeds its
budget of lines per second, so the value never appears in the compiled configuration and a
change never reloads HAProxy. A new worker (after a reload or restart) starts at 1024 again,
so the node sets the value again whenever the current worker changes.

Each request is kept or dropped at random, independently of its route, status and latency, so
the latency percentiles computed from the kept lines estimate those of all requests; the stats
report how many requests the figures rest on. Request counts never come from these lines.

The rule runs for every request, so it tests nothing else: an exemption for old workers
(`!{ stopping }`, so that they log all their last requests) cost 190 to 440 instructions a
request, up to 0.8 % of an HTTP/2 request over TLS (bench/instructions.py), for lines that
only ever stand in for polled counts (see `counters`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

KEEP_VAR = "proc.mg_log_keep"  # declared in `global`, read by every frontend's silent rule
KEEP_SCALE = 1024  # keep is in 1/1024ths: `rand(1024)` draws 0..1023
KEEP_MIN = 1  # never silence everything: percentiles need some lines at any rate
# A change smaller than this fraction of the current value is not worth a command: rates move
# a little every second, and the percentiles do not care about 1/8 more or fewer samples.
HYSTERESIS = 0.125
# Rates measured over less time than this (polls come faster while old workers finish) are
# too noisy to act on; the previous measurement stands until enough time has passed.
MIN_SPAN_S = 0.5


def keep_for(rate_per_s: float, budget_per_s: int | None) -> int:
    """The keep value (in 1/1024ths) that logs about `budget_per_s` lines a second at this
    request rate: everything at or under the budget, else budget/rate, never below 1/1024.
    No budget (None or 0): everything."""
    if not budget_per_s or rate_per_s <= budget_per_s:
        return KEEP_SCALE
    return max(KEEP_MIN, min(KEEP_SCALE, math.floor(KEEP_SCALE * budget_per_s / rate_per_s)))


@dataclass
class KeepController:
    """Follows the exact request count (HAProxy's counters, summed over routes, from each stats
    poll) and says which keep value HAProxy should have."""

    budget_per_s: int | None
    keep: int = KEEP_SCALE
    rate: float = 0.0  # requests per second over the last measured span
    _since: tuple[float, int] | None = None  # (time, total) the current span started at

    def observe(self, now: float, total_requests: int) -> int:
        """One poll's total of requests (monotonic); returns the keep value wanted now."""
        if self._since is None or total_requests < self._since[1]:
            self._since = (now, total_requests)
            return self.keep
        began, base = self._since
        if now - began < MIN_SPAN_S:
            return self.keep
        self.rate = (total_requests - base) / (now - began)
        self._since = (now, total_requests)
        if self.rate == 0:
            # Nothing to log while idle, whatever the value: holding it means a burst after a
            # pause starts at the fraction the last one needed, instead of logging every request
            # for the poll or two the controller takes to catch up. Any traffic at all after
            # the pause moves it toward where that traffic's rate wants it (see below).
            return self.keep
        # Down at once (HAProxy pays for every line), up by at most double a poll: the span of
        # the poll that sees a burst end is partly silence, and taking its rate at face value
        # would leave the next burst logging many times the budget until the poll after it
        # starts (about 4 % more HAProxy instructions a request while every request is logged).
        wanted = min(keep_for(self.rate, self.budget_per_s), 2 * self.keep)
        if wanted == KEEP_SCALE or abs(wanted - self.keep) > self.keep * HYSTERESIS:
            self.keep = wanted
        return self.keep

    @property
    def fraction(self) -> float:
        return self.keep / KEEP_SCALE
