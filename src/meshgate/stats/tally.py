"""From `show stat` rows of every HAProxy process to per-backend and per-server figures. Pure.

One poll reads each live process (current and old workers) and ends with the set of live pids
and the request-log counts; `Tally` turns that into a `Snapshot`: monotonic counters (see
`counters`), request rates, the current sessions summed over processes, and each server's health
as the current worker sees it. Keys are HAProxy names (backend, server); mapping them to routes
and instances is `view`'s job.

A worker that leaves the process list is retired only after `grace_s`: the last lines it logged
may still be on their way, and they are what counts the requests it served after its last poll.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from meshgate.haproxy.stat_csv import CountedRow, StatRow, StatType, counted
from meshgate.stats.counters import History, Logged, MonotonicTotals

K = TypeVar("K", bound=Hashable)

# What a row contributes to the monotonic totals, in this order (`CountedRow.counters`).
COUNTERS = ("requests", "1xx", "2xx", "3xx", "4xx", "5xx", "bytes_in", "bytes_out")
RESPONSE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def server_status(text: str) -> str:
    """`show stat`'s status column as UP, DOWN or MAINT (SPEC §3). "UP 1/3" is up and going
    down, "DOWN 1/2" down and coming up; a server without a health check counts as up;
    draining (no new traffic, by an operator's decision) counts as maintenance."""
    if text.startswith(("MAINT", "DRAIN")):
        return "MAINT"
    if text.startswith(("UP", "no check", "NOLB")):
        return "UP"
    return "DOWN"


@dataclass(frozen=True, slots=True)
class Counts:
    requests: int = 0
    responses: Mapping[str, int] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0

    @classmethod
    def of(cls, values: tuple[int, ...]) -> Counts:
        if not any(values):
            # Most routes are idle at any moment: one all-zero Counts for all of them (a
            # dict of response classes each was 40 MB a poll at 100,000 gateways).
            return _ZERO
        return cls(
            requests=values[0],
            responses=dict(zip(RESPONSE_CLASSES, values[1:6], strict=True)),
            bytes_in=values[6],
            bytes_out=values[7],
        )


_ZERO = Counts(responses=dict.fromkeys(RESPONSE_CLASSES, 0))


@dataclass(frozen=True, slots=True)  # one a backend or server: 200,000 at 100,000 gateways
class BackendStats:
    counts: Counts
    active: int  # sessions in progress, all processes
    rate: float  # requests per second over the rate window
    recent_requests: int  # requests over the latency window, to compare with latency samples
    recent_seconds: float


@dataclass(frozen=True, slots=True)  # one a backend or server: 200,000 at 100,000 gateways
class ServerStats:
    counts: Counts
    active: int
    status: str  # UP, DOWN, MAINT; "" when the current worker does not list the server


# Shared by the backends that never had a request and the idle servers of each status.
_IDLE_BACKEND = BackendStats(_ZERO, 0, 0.0, 0, 0.0)
_IDLE_SERVERS = {status: ServerStats(_ZERO, 0, status) for status in ("UP", "DOWN", "MAINT", "")}


@dataclass(frozen=True)
class Snapshot:
    taken_at: float  # the clock's time (monotonic) of the poll
    backends: Mapping[str, BackendStats] = field(default_factory=dict)
    servers: Mapping[tuple[str, str], ServerStats] = field(default_factory=dict)
    workers: int = 0
    old_workers: int = 0


class Tally:
    def __init__(
        self,
        *,
        rate_window_s: float = 10.0,
        recent_window_s: float = 60.0,
        grace_s: float = 3.0,
    ) -> None:
        self.rate_window_s = rate_window_s
        self.recent_window_s = recent_window_s
        self.grace_s = grace_s
        self._gone: dict[int, float] = {}  # pid -> when it was first missing
        self.retired: set[int] = set()  # pids retired by the last `end`
        self.forgotten_servers: list[tuple[str, str]] = []  # by the last `end`: gone for good
        self._backends: MonotonicTotals[str] = MonotonicTotals(len(COUNTERS))
        self._servers: MonotonicTotals[tuple[str, str]] = MonotonicTotals(len(COUNTERS))
        self._history: dict[str, History] = {}
        self._active: dict[str, int] = {}
        self._server_active: dict[tuple[str, str], int] = {}
        self._status: dict[tuple[str, str], str] = {}
        self.ended = Snapshot(taken_at=0.0)  # what the last `ending` made
        self._last_poll: float | None = None  # when it was taken, once there was one

    def begin(self) -> None:
        """Start a poll: gauges are summed afresh over the processes it reads."""
        self._active = {}
        self._server_active = {}

    def observe(
        self, pid: int, rows: Iterable[StatRow], *, current: bool, first: bool = True
    ) -> None:
        """The rows of one process; `current` for the newest worker, whose view of server
        health is the one reported. A process's rows may come in several parts: `first` for
        the first of them."""
        self.observe_counted(pid, map(counted, rows), current=current, first=first)

    def observe_counted(
        self, pid: int, rows: Iterable[CountedRow], *, current: bool, first: bool = True
    ) -> None:
        """`observe`, of the counted columns alone (`StatStream`'s rows)."""
        if current and first:
            self._status = {}
        for kind, pxname, svname, status, scur, _, values in rows:
            if kind is StatType.BACKEND:
                self._backends.observe(pid, pxname, values)
                self._active[pxname] = self._active.get(pxname, 0) + scur
            elif kind is StatType.SERVER:
                key = (pxname, svname)
                self._servers.observe(pid, key, values)
                self._server_active[key] = self._server_active.get(key, 0) + scur
                if current:
                    self._status[key] = server_status(status)

    def end(
        self,
        live_pids: Collection[int],
        now: float,
        *,
        old_workers: int = 0,
        logged_backends: Logged[str] | None = None,
        logged_servers: Logged[tuple[str, str]] | None = None,
    ) -> Snapshot:
        """Finish a poll. Processes not in `live_pids` for `grace_s` are retired for good."""
        steps = self.ending(
            live_pids,
            now,
            old_workers=old_workers,
            logged_backends=logged_backends,
            logged_servers=logged_servers,
        )
        for _ in steps:
            pass
        return self.ended

    def ending(
        self,
        live_pids: Collection[int],
        now: float,
        *,
        old_workers: int = 0,
        logged_backends: Logged[str] | None = None,
        logged_servers: Logged[tuple[str, str]] | None = None,
        keys_a_step: int = 1000,
    ) -> Iterator[None]:
        """`end` in steps of `keys_a_step` backends or servers, for a caller that lets other
        work run between them (at 10,000 gateways the whole took 200-300 ms); the snapshot
        is `ended` once the steps are done. Nothing else may use the tally meanwhile."""
        logged_backends, logged_servers = logged_backends or {}, logged_servers or {}
        known = self._backends.sources() | self._servers.sources()
        known |= {pid for by_pid in logged_backends.values() for pid in by_pid}
        for pid in known:
            if pid in live_pids:
                self._gone.pop(pid, None)
            else:
                self._gone.setdefault(pid, now)
        self.retired = {pid for pid, since in self._gone.items() if now - since >= self.grace_s}
        if self.retired:
            self._backends.retire(self.retired, logged_backends)
            self._servers.retire(self.retired, logged_servers)
            for pid in self.retired:
                del self._gone[pid]
            logged_backends = _without(logged_backends, self.retired)
            logged_servers = _without(logged_servers, self.retired)
        # What this poll observed: every backend and server row of every process read. A
        # server forgotten here must go from the request-log counts too (`forgotten_servers`),
        # or they would bring it back.
        for name in self._backends.forget_absent(self._active, now):
            self._history.pop(name, None)
        self.forgotten_servers = self._servers.forget_absent(self._server_active, now)
        if self.forgotten_servers:
            gone = set(self.forgotten_servers)
            logged_servers = {k: v for k, v in logged_servers.items() if k not in gone}
        backends = {}
        for done, name in enumerate(set(self._backends.names()) | logged_backends.keys()):
            if done and done % keys_a_step == 0:
                yield
            values = self._backends.total(name, logged_backends)
            active = self._active.get(name, 0)
            history = self._history.get(name)
            if history is None and not values[0]:
                # Never a request: no history kept, and one object for all of them (most
                # route backends at 100,000 gateways: 1.1 M objects).
                backends[name] = (
                    _IDLE_BACKEND
                    if not active and not any(values)
                    else BackendStats(Counts.of(values), active, 0.0, 0, 0.0)
                )
                continue
            if history is None:
                history = self._history[name] = History(keep_s=self.recent_window_s + 10)
                if self._last_poll is not None:
                    history.add(self._last_poll, 0)  # none yet at the last poll
            history.add(now, values[0])
            recent, seconds = history.increase(self.recent_window_s)
            backends[name] = BackendStats(
                counts=Counts.of(values),
                active=active,
                rate=history.rate(self.rate_window_s),
                recent_requests=recent,
                recent_seconds=seconds,
            )
        servers = {}
        for done, key in enumerate(set(self._servers.names()) | logged_servers.keys()):
            if done % keys_a_step == 0:
                yield
            counts = Counts.of(self._servers.total(key, logged_servers))
            active = self._server_active.get(key, 0)
            status = self._status.get(key, "")
            idle = _IDLE_SERVERS.get(status) if counts is _ZERO and not active else None
            servers[key] = idle or ServerStats(counts=counts, active=active, status=status)
        workers = len(live_pids) - old_workers
        self.ended = Snapshot(now, backends, servers, workers=workers, old_workers=old_workers)
        self._last_poll = now


def _without(logged: Logged[K], pids: Collection[int]) -> dict[K, dict[int, Sequence[int]]]:
    return {
        key: {pid: values for pid, values in by_pid.items() if pid not in pids}
        for key, by_pid in logged.items()
    }
