"""Who calls which gateway: request lines counted per (backend, client address). Pure.

Flow recording adds the client's address to the compact request line (`logline`). The latency
book hands every line of a known backend to `FlowBook.cell`, before its own sampling, and the
latency of each line it parses to the cell as well. Lines are a random sample of requests
(HAProxy logs a fraction of them above its budget, see `sampling`, and a full ring loses some),
so they tell each client's *share* of a backend's requests; the exact number of requests comes
from HAProxy's counters, handed to `tick` with every stats poll. A client's requests over a
window are its share of the lines times the backend's counted requests: exact in total, and
an unbiased estimate per client whatever fraction HAProxy logs.

Lines go into buckets of `bucket_s` seconds, opened by `tick`; each bucket keeps the backends'
counts as it began, so a window is the buckets since its start. Memory is bounded twice: buckets
older than `keep_s` are dropped, and a bucket holds at most `max_cells` (backend, client) pairs;
lines of further clients count under `OTHER`, so many clients (a scan, a crowd of external
addresses) cost a bounded table, never one entry each.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from meshgate.stats.histogram import BUCKETS, Histogram

OTHER = b"other"  # the client of lines beyond a bucket's table
BUCKET_S = 5.0
MAX_WINDOW_S = 300.0
MAX_CELLS = 512


class Cell:
    """One (backend, client)'s lines in a bucket: how many, how many 5xx, and the sampled
    latencies (Ta) as sparse histogram buckets."""

    __slots__ = ("errors", "latency", "lines", "max_ms", "sum_ms")

    def __init__(self) -> None:
        self.lines = 0
        self.errors = 0
        self.latency: dict[int, int] = {}
        self.sum_ms = 0
        self.max_ms = 0

    def record_latency(self, bucket: int, ms: int) -> None:
        latency = self.latency
        latency[bucket] = latency.get(bucket, 0) + 1
        self.sum_ms += ms
        if ms > self.max_ms:
            self.max_ms = ms

    def add(self, other: Cell) -> None:
        self.lines += other.lines
        self.errors += other.errors
        for bucket, count in other.latency.items():
            self.latency[bucket] = self.latency.get(bucket, 0) + count
        self.sum_ms += other.sum_ms
        self.max_ms = max(self.max_ms, other.max_ms)

    def histogram(self) -> Histogram:
        histogram = Histogram()
        for bucket, count in self.latency.items():
            if 0 <= bucket < BUCKETS:
                histogram.counts[bucket] += count
        histogram.count = sum(self.latency.values())
        histogram.sum, histogram.max = self.sum_ms, self.max_ms
        return histogram


@dataclass
class _Bucket:
    start: float
    totals: Mapping[str, int]  # each backend's counted requests as the bucket began
    cells: dict[tuple[bytes, bytes], Cell] = field(default_factory=dict)


@dataclass(frozen=True)
class FlowWindow:
    """What the buckets of a window add up to."""

    seconds: float  # the time the window covers (from its oldest bucket to the last poll)
    requests: dict[str, int]  # backend -> requests counted by HAProxy in the window
    lines: dict[str, int]  # backend -> lines recorded in the window
    cells: dict[tuple[str, str], Cell]  # (backend, client) -> its lines

    def estimated(self, backend: str, lines: int) -> float:
        """Requests that `lines` of `backend`'s lines stand for: their share of its lines
        times its counted requests."""
        recorded = self.lines.get(backend, 0)
        return lines * self.requests.get(backend, 0) / recorded if recorded else 0.0


class FlowBook:
    def __init__(
        self,
        *,
        bucket_s: float = BUCKET_S,
        keep_s: float = MAX_WINDOW_S,
        max_cells: int = MAX_CELLS,
    ) -> None:
        self.bucket_s = bucket_s
        self.keep_s = keep_s
        self.max_cells = max_cells
        # Lines arriving before the first tick wait here, then belong to the first bucket.
        self._cells: dict[tuple[bytes, bytes], Cell] = {}
        self._buckets: deque[_Bucket] = deque()
        self._latest: tuple[float, Mapping[str, int]] | None = None
        self.overflowed = 0  # lines counted under OTHER because a bucket's table was full

    def cell(self, backend: bytes, client: bytes) -> Cell:
        """The current bucket's cell of a line: the hot path, once per line."""
        cells = self._cells
        key = (backend, client)
        found = cells.get(key)
        if found is not None:
            return found
        if len(cells) >= self.max_cells:
            self.overflowed += 1
            key = (backend, OTHER)
            found = cells.get(key)
            if found is not None:
                return found
        found = cells[key] = Cell()
        return found

    def tick(self, now: float, totals: Mapping[str, int]) -> None:
        """A stats poll at `now` counted `totals` requests (cumulative) per backend: open a
        bucket if one is due, drop those no window needs any more."""
        self._latest = (now, dict(totals))
        if self._buckets and now - self._buckets[-1].start < self.bucket_s:
            return
        if self._buckets:
            self._cells = {}
        self._buckets.append(_Bucket(now, dict(totals), self._cells))
        while len(self._buckets) > 1 and self._buckets[1].start <= now - self.keep_s:
            self._buckets.popleft()

    def window(self, seconds: float) -> FlowWindow:
        """The buckets that began within `seconds` of the last poll (at least the current
        one), added up."""
        if self._latest is None or not self._buckets:
            return FlowWindow(0.0, {}, {}, {})
        now, latest = self._latest
        chosen = [b for b in self._buckets if b.start >= now - seconds] or [self._buckets[-1]]
        requests: dict[str, int] = {}
        for backend, total in latest.items():
            base = next((b.totals[backend] for b in chosen if backend in b.totals), 0)
            if total > base:
                requests[backend] = total - base
        lines: dict[str, int] = {}
        cells: dict[tuple[str, str], Cell] = {}
        for bucket in chosen:
            for (backend_name, client_name), cell in bucket.cells.items():
                backend = backend_name.decode("ascii", "replace")
                key = (backend, client_name.decode("ascii", "replace"))
                into = cells.get(key)
                if into is None:
                    into = cells[key] = Cell()
                into.add(cell)
                lines[backend] = lines.get(backend, 0) + cell.lines
        return FlowWindow(max(0.0, now - chosen[0].start), requests, lines, cells)
