"""Latency histograms and request counts per backend and server, from request-log lines. Pure.

Three histograms per (backend, server): `total` (Ta: the request's active time, or a tcp
connection's whole time), `connect` (Tc) and `response` (Tr: until the server's response
headers). Histograms are cumulative, which Prometheus wants; the stats API wants recent
figures, so a snapshot of every series is taken with each poll (every second) and a window is
"now minus the oldest snapshot inside the window", the same span the request counts of that
window cover.

Every line of a known backend is also counted per worker pid, server and status class, before
any sampling: these counts let `counters` account for what an old worker served between its last
poll and its exit.

Above its budget HAProxy logs a random sample of requests (see `sampling`), so most lines are
never written at all. Parsing what does arrive costs the agent CPU per line: above
`budget_per_s` lines per second the book parses one line in `stride`, a second line of defence
for the moments HAProxy's sampling lags behind a burst (it follows the stats polls). The
percentiles stay honest because the counts come from HAProxy's counters, never from these
lines, and the stats report how many requests the percentiles were computed from.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from meshgate.stats import logline
from meshgate.stats.flows import Cell, FlowBook
from meshgate.stats.histogram import BOUNDS_MS, Histogram, merged

COMPONENTS = ("total", "connect", "response")


class Series:
    __slots__ = ("connect", "records", "response", "total")

    def __init__(self) -> None:
        self.total = Histogram()
        self.connect = Histogram()
        self.response = Histogram()
        self.records = 0  # lines recorded: tells a snapshot whether anything changed

    def get(self, component: str) -> Histogram:
        histogram: Histogram = getattr(self, component)
        return histogram

    def copy(self) -> Series:
        other = Series()
        other.total, other.connect, other.response = (
            self.total.copy(), self.connect.copy(), self.response.copy(),
        )  # fmt: skip
        other.records = self.records
        return other


class _Entry:
    """What one (pid, backend, server) of the log feeds: its line counts (None once the pid's
    counts were handed over for good) and its backend and server's latency series."""

    __slots__ = ("counts", "series")

    def __init__(self, counts: list[int] | None, series: Series) -> None:
        self.counts = counts
        self.series = series


@dataclass(frozen=True)
class Window:
    """Histograms of one backend or server over the last `seconds`."""

    seconds: float
    total: Histogram
    connect: Histogram
    response: Histogram


class Sampler:
    """Decides which lines to parse: all of them until more than `budget_per_s` arrive in a
    second, then one in `stride`, with the stride set each second from the last second's count.

    Lines come in chunks: `start(now)` before a chunk, `take()` per line, `finish()` after."""

    def __init__(self, budget_per_s: int | None) -> None:
        self.budget_per_s = budget_per_s
        self.stride = 1
        self._second = -1
        self._seen_this_second = 0
        self.position = 0  # lines since the last one taken

    def start(self, now: float) -> None:
        second = int(now)
        if second != self._second:
            if self.budget_per_s is not None and self._second >= 0:
                rate = self._seen_this_second / max(1, second - self._second)
                self.stride = max(1, math.ceil(rate / self.budget_per_s))
            self._second = second
            self._seen_this_second = 0

    def take(self) -> bool:
        self._seen_this_second += 1
        self.position += 1
        if self.position >= self.stride:
            self.position = 0
            return True
        return False


class LatencyBook:
    def __init__(
        self,
        *,
        window_s: float = 60.0,
        snapshot_every_s: float = 1.0,  # the poll interval: windows line up with the counts
        budget_per_s: int | None = 20_000,
        flows: FlowBook | None = None,
    ) -> None:
        self.window_s = window_s
        # Who calls which gateway, from lines with the client's address (see `flows`).
        self.flows = flows
        self.snapshot_every_s = snapshot_every_s
        self.sampler = Sampler(budget_per_s)
        self._series: dict[tuple[bytes, bytes], Series] = {}
        self._servers: dict[bytes, dict[bytes, Series]] = {}  # the same series, by backend
        self._backends: frozenset[bytes] = frozenset()
        self._snapshots: deque[tuple[float, dict[tuple[bytes, bytes], Series]]] = deque()
        # (pid, backend, server) -> its line counts and its (backend, server) latency series.
        self._entries: dict[tuple[bytes, bytes, bytes], _Entry] = {}
        self._forgotten: dict[bytes, None] = {}  # pids whose counts were handed over for good
        self.lines = 0  # every line offered
        self.parsed = 0  # lines recorded into a histogram
        self.skipped = 0  # request lines left out by sampling
        self.ignored = 0  # lines that are not requests of a known route

    def accept(self, backends: Collection[str]) -> None:
        """The backends whose lines to record: the routes of the running data plane. Series of
        backends no longer among them are dropped."""
        names = frozenset(name.encode() for name in backends)
        if names == self._backends:
            return
        self._backends = names
        for key in [k for k in self._series if k[0] not in names]:
            del self._series[key]
        for entry_key in [k for k in self._entries if k[1] not in names]:
            del self._entries[entry_key]
        for backend in [b for b in self._servers if b not in names]:
            del self._servers[backend]

    def offer(self, line: bytes, now: float) -> list[bytes] | None:
        """Count and (if the sampler takes it) record one line; its fields when recorded."""
        recorded: list[list[bytes]] = []
        self.offer_lines([line], now, recorded)
        return recorded[0] if recorded else None

    def offer_lines(
        self, lines: Iterable[bytes], now: float, recorded: list[list[bytes]] | None = None
    ) -> None:
        """`offer` for many lines at once: the receiver's hot path, one pass with everything it
        touches in local variables. The fields of recorded lines are appended to `recorded`."""
        backends, entries, sampler = self._backends, self._entries, self.sampler
        flow_cell = self.flows.cell if self.flows is not None else None
        flow_client, detailed_client = logline.FLOW_CLIENT, logline.CLIENT
        flow_fields, detailed_fields = logline.FLOW_FIELDS, logline.TCP_FIELDS
        split_limit = logline.FIELDS - 1
        shapes = logline.SHAPES
        pid_at, backend_at, server_at = logline.PID, logline.BACKEND, logline.SERVER
        status_at, total_at = logline.STATUS, logline.TOTAL
        connect_at, response_at = logline.CONNECT, logline.RESPONSE
        sampler.start(now)
        take = sampler.take
        ignored = skipped = parsed = count = 0
        for line in lines:
            count += 1
            fields = line.split(b" ", split_limit)
            if len(fields) not in shapes or fields[backend_at] not in backends:
                ignored += 1
                continue
            key = (fields[pid_at], fields[backend_at], fields[server_at])
            entry = entries.get(key)
            if entry is None:
                entry = self._entry(key)
            counts = entry.counts
            if counts is not None:
                counts[0] += 1
                status = fields[status_at]
                if status and 49 <= status[0] <= 53:  # b"1" to b"5": the status class
                    counts[status[0] - 48] += 1
            cell: Cell | None = None
            if flow_cell is not None:
                shape = len(fields)
                if shape == flow_fields:
                    cell = flow_cell(fields[backend_at], fields[flow_client])
                elif shape >= detailed_fields:
                    cell = flow_cell(fields[backend_at], fields[detailed_client])
                if cell is not None:
                    cell.lines += 1
                    status = fields[status_at]
                    if status[:1] == b"5":
                        cell.errors += 1
            if not take():
                skipped += 1
                continue
            series = entry.series
            series.records += 1
            # Unrolled for the three components: this loop runs once per request.
            try:
                value = int(fields[total_at])
            except ValueError:
                value = -1
            if value >= 0:  # -1: the step did not happen
                histogram = series.total
                bucket = bisect_left(BOUNDS_MS, value)
                histogram.counts[bucket] += 1
                histogram.count += 1
                histogram.sum += value
                if value > histogram.max:
                    histogram.max = value
                if cell is not None:
                    cell.record_latency(bucket, value)
            try:
                value = int(fields[connect_at])
            except ValueError:
                value = -1
            if value >= 0:
                histogram = series.connect
                histogram.counts[bisect_left(BOUNDS_MS, value)] += 1
                histogram.count += 1
                histogram.sum += value
                if value > histogram.max:
                    histogram.max = value
            try:
                value = int(fields[response_at])
            except ValueError:
                value = -1  # "-": tcp lines have no response time
            if value >= 0:
                histogram = series.response
                histogram.counts[bisect_left(BOUNDS_MS, value)] += 1
                histogram.count += 1
                histogram.sum += value
                if value > histogram.max:
                    histogram.max = value
            parsed += 1
            if recorded is not None:
                recorded.append(fields)
        self.lines += count
        self.ignored += ignored
        self.skipped += skipped
        self.parsed += parsed

    def _entry(self, key: tuple[bytes, bytes, bytes]) -> _Entry:
        pid, backend, server = key
        series = self._series.get((backend, server))
        if series is None:
            series = self._series[(backend, server)] = Series()
            self._servers.setdefault(backend, {})[server] = series
        counts = None if pid in self._forgotten else [0, 0, 0, 0, 0, 0]
        entry = self._entries[key] = _Entry(counts, series)
        return entry

    def logged(
        self,
    ) -> tuple[dict[str, dict[int, list[int]]], dict[tuple[str, str], dict[int, list[int]]]]:
        """Lines counted per backend and per (backend, server), each by worker pid:
        [requests, 1xx, 2xx, 3xx, 4xx, 5xx]."""
        backends: dict[str, dict[int, list[int]]] = {}
        servers: dict[tuple[str, str], dict[int, list[int]]] = {}
        for (pid_text, backend_name, server_name), entry in self._entries.items():
            counts = entry.counts
            if counts is None:
                continue
            try:
                pid = int(pid_text)
            except ValueError:
                continue
            backend, server = backend_name.decode(), server_name.decode()
            total = backends.setdefault(backend, {}).setdefault(pid, [0] * len(counts))
            for index, value in enumerate(counts):
                total[index] += value
            servers.setdefault((backend, server), {})[pid] = list(counts)
        return backends, servers

    def forget(self, pids: Collection[int]) -> None:
        """Drop the counts of workers whose totals were carried forward, and ignore any line of
        theirs still to come, which would otherwise count again."""
        wanted = {str(pid).encode() for pid in pids}
        for key in [k for k in self._entries if k[0] in wanted]:
            del self._entries[key]
        for pid in wanted:
            self._forgotten[pid] = None
        while len(self._forgotten) > 1024:  # pids are reused, eventually: remember the recent
            del self._forgotten[next(iter(self._forgotten))]

    def forget_servers(self, servers: Iterable[tuple[str, str]]) -> None:
        """Drop the series and line counts of servers that are gone (a registration that
        lapsed, an instance removed): the stats stopped reporting them."""
        gone = {(backend.encode(), server.encode()) for backend, server in servers}
        for backend, server in gone:
            if self._series.pop((backend, server), None) is not None:
                by_server = self._servers.get(backend, {})
                by_server.pop(server, None)
                if not by_server:
                    self._servers.pop(backend, None)
        for key in [k for k in self._entries if (k[1], k[2]) in gone]:
            del self._entries[key]

    def tick(self, now: float) -> None:
        """Take a snapshot if one is due; forget those older than the window needs."""
        if self._snapshots and now - self._snapshots[-1][0] < self.snapshot_every_s:
            return
        previous = self._snapshots[-1][1] if self._snapshots else {}
        snapshot = {}
        for key, series in self._series.items():
            before = previous.get(key)
            # Unchanged series share the previous snapshot's copy: idle routes cost nothing.
            if before is not None and before.records == series.records:
                snapshot[key] = before
            else:
                snapshot[key] = series.copy()
        self._snapshots.append((now, snapshot))
        while len(self._snapshots) > 1 and self._snapshots[1][0] <= now - self.window_s:
            self._snapshots.popleft()

    def _base(self, now: float) -> tuple[float | None, dict[tuple[bytes, bytes], Series]]:
        """The oldest snapshot inside the window; (None, {}) before the first one."""
        for taken, snapshot in self._snapshots:
            if taken >= now - self.window_s:
                return taken, snapshot
        return None, {}

    def window(self, backend: str, server: str | None, now: float) -> Window:
        """Recent histograms of a server, or of a whole backend (server None)."""
        taken, base = self._base(now)
        wanted = backend.encode()
        servers = self._servers.get(wanted, {})
        if server is not None:
            one = servers.get(server.encode())
            servers = {server.encode(): one} if one is not None else {}
        parts: dict[str, list[Histogram]] = {c: [] for c in COMPONENTS}
        for name, series in servers.items():
            before = base.get((wanted, name))
            for component in COMPONENTS:
                current = series.get(component)
                parts[component].append(
                    current.since(before.get(component)) if before else current.copy()
                )
        seconds = self.window_s if taken is None else max(0.0, now - taken)
        return Window(
            seconds=seconds,
            total=merged(parts["total"]),
            connect=merged(parts["connect"]),
            response=merged(parts["response"]),
        )

    def totals(self, backend: str) -> list[Histogram]:
        """The cumulative request-time histograms of a backend's servers."""
        return [series.total for series in self._servers.get(backend.encode(), {}).values()]

    def cumulative(self) -> Iterable[tuple[str, str, Series]]:
        """(backend, server, series) of everything recorded since the start.

        Safe to call from another thread (a /metrics scrape is formatted in one) while lines
        are recorded: the items are copied first, in one step under the GIL."""
        for (backend, server), series in list(self._series.items()):
            yield backend.decode(), server.decode(), series
