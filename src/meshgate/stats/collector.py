"""The stats poller: reads every HAProxy process once a second, and on demand for the API.

A poll asks the master for its processes, reads each one's backend and server rows, and hands
them to a `Tally`; the result is the latest `Snapshot`. An API request asks for a snapshot no
older than a fraction of a second; concurrent requests share one poll. When HAProxy cannot be
read (not started yet, the master re-executing during a reload), the previous snapshot stays
and the poll is tried again on the next tick.

What an old worker serves after its last poll is recovered from its request-log lines (see
`counters`) as far as they are read before it exits: each poll reads the workers' rings (see
`stats.ring`), old workers' too; with the access log's forwarder instead, lines logged once
the soft stop has begun never arrive (HAProxy 2.6 closes the forwarder then, haproxy issue
#3436). Polling old workers every `OLD_WORKER_POLL_S` narrows the gap to requests finishing
in their last moments; counts stay monotonic regardless, and are exact whenever no reload
overlaps traffic.

A poll reads and parses a row per backend and server of every process on the node's event
loop: well under a millisecond for a few gateways, but about 130 ms for a thousand gateways of
two routes of two instances (6,000 rows; docs/benchmarks.md). The next poll waits at least
`COST_FACTOR` times as long as the last one took, so polling takes at most about 5 % of the
loop's time however large the configuration; rates and windows use the polls' actual times, so
a longer interval only makes them coarser. And a poll lets a change on its way to HAProxy go
first (`make_way`, the agent's), between its steps, so that it delays no change by more than
one step.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

from meshgate.compiler import ir
from meshgate.haproxy.commands import HaproxyError
from meshgate.haproxy.stat_csv import StatType
from meshgate.haproxy.stats_reader import StatsReader
from meshgate.stats.keeper import LogKeeper
from meshgate.stats.latency import LatencyBook
from meshgate.stats.ring import new_lines
from meshgate.stats.tally import Snapshot, Tally

log = structlog.get_logger("meshgate.stats")
OLD_WORKER_POLL_S = 0.1
COST_FACTOR = 20  # sleep at least this many times the last poll's duration
ROWS_A_STEP = 1000  # rows tallied, or backends and servers summed up, between two looks


class StatsCollector:
    def __init__(
        self,
        reader: StatsReader,
        dataplane: Callable[[], ir.DataPlane | None],
        *,
        latency: LatencyBook | None = None,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        keeper: LogKeeper | None = None,
        make_way: Callable[[], Awaitable[None]] | None = None,
        ring: str | None = None,
    ) -> None:
        self.reader = reader
        self.dataplane = dataplane
        self.latency = latency
        self.interval_s = interval_s
        self.clock = clock
        self.tally = Tally(recent_window_s=latency.window_s if latency else 60.0)
        self.snapshot = Snapshot(taken_at=clock())
        self.polls = 0
        self.failed_polls = 0
        self.poll_seconds = 0.0  # how long the last poll took
        self.workers: frozenset[int] = frozenset()  # current (not old) workers at the last poll
        # Sets the share of requests HAProxy logs after each periodic poll (None: all of them).
        self.keeper = keeper
        # Awaited before each step of a poll's work: changes on their way to HAProxy go first.
        self.make_way = make_way
        self._waited = 0.0  # time the current poll spent letting them
        self._lock = asyncio.Lock()
        self._running: ir.DataPlane | None = None
        # The ring each poll reads request lines from, for `latency` (None: they are streamed
        # to a receiver instead); per worker, the last line read and the requests counted then.
        self.ring = ring
        self._markers: dict[int, bytes | None] = {}
        self._ring_totals: dict[int, int] = {}
        self._lines_found: set[int] = set()

    async def run(self) -> None:
        """Poll every `interval_s` until cancelled; faster while old workers finish, since what
        they serve after their last poll is lost when they exit (see below); slower when a
        poll is expensive (see the module's docstring)."""
        while True:
            snapshot = await self.refresh(max_age_s=self.next_interval() / 2)
            if self.keeper is not None:
                await self.keeper.update(snapshot, self.workers)
            await asyncio.sleep(self.next_interval())

    def between_polls(self) -> asyncio.Lock:
        """Held by one poll from start to end: whoever holds it sees no poll half-done (memory
        snapshots, `memory_debug.snapshot_between`)."""
        return self._lock

    def next_interval(self) -> float:
        wanted = OLD_WORKER_POLL_S if self.snapshot.old_workers else self.interval_s
        return max(wanted, COST_FACTOR * self.poll_seconds)

    async def refresh(self, max_age_s: float = 0.25) -> Snapshot:
        """A snapshot at most `max_age_s` old, polling if the last one is older; or as old as
        the cost bound allows (`COST_FACTOR` times the last poll's duration), so that neither
        API requests nor the health poller can make polling take more than about 5 % of the
        time."""
        max_age_s = max(max_age_s, COST_FACTOR * self.poll_seconds)
        if self.clock() - self.snapshot.taken_at <= max_age_s and self.polls:
            return self.snapshot
        async with self._lock:
            # Another caller may have polled while this one waited for the lock.
            if self.clock() - self.snapshot.taken_at <= max_age_s and self.polls:
                return self.snapshot
            self._follow_dataplane()
            started = self.clock()
            self._waited = 0.0
            try:
                self.snapshot = await self._poll()
                self.polls += 1
                self._tick_flows(self.snapshot)
            except (HaproxyError, OSError) as exc:
                self.failed_polls += 1
                log.debug("stats poll failed", error=str(exc))
            # The poll's own cost: time spent letting a change go first is not.
            self.poll_seconds = max(0.0, self.clock() - started - self._waited)
            if self.latency is not None:
                self.latency.tick(self.snapshot.taken_at)
            return self.snapshot

    def _tick_flows(self, snapshot: Snapshot) -> None:
        """Hand the flow book each backend's counted requests: what its lines are shares of."""
        flows = self.latency.flows if self.latency is not None else None
        if flows is not None:
            totals = {name: stats.counts.requests for name, stats in snapshot.backends.items()}
            flows.tick(snapshot.taken_at, totals)

    def _follow_dataplane(self) -> None:
        """Tell the latency book which backends are routes, when the data plane changed."""
        running = self.dataplane()
        if running is self._running or self.latency is None:
            return
        self._running = running
        self.latency.accept([b.name for b in running.backends] if running else [])

    async def step(self) -> None:
        """Between two steps of a poll: let whatever is ready run (a request just received
        may be a change), then wait for the changes on their way."""
        if self.make_way is not None:
            await asyncio.sleep(0)
        await self._give_way()

    async def _give_way(self) -> None:
        if self.make_way is not None:
            started = self.clock()
            await self.make_way()
            self._waited += self.clock() - started

    async def _read_rings(self, ring: str, book: LatencyBook, totals: dict[int, int]) -> None:
        """New request lines of each worker whose request count moved since its ring was last
        read, or whose last read found lines: a line is written as its request ends, which may
        be just after the count was read."""
        due = [
            pid
            for pid, total in totals.items()
            if total != self._ring_totals.get(pid) or pid in self._lines_found
        ]
        dumps = await asyncio.gather(*(self.reader.worker_events(pid, ring) for pid in due))
        now = self.clock()
        self._lines_found = set()
        for pid, dump in zip(due, dumps, strict=True):
            await self._give_way()
            lines, self._markers[pid] = new_lines(dump, self._markers.get(pid))
            if lines:
                book.offer_lines(lines, now)
                self._lines_found.add(pid)
        self._ring_totals = totals
        self._markers = {pid: m for pid, m in self._markers.items() if pid in totals}

    async def _tally_worker(self, pid: int, *, current: bool) -> int:
        """Read and tally one process's rows; returns the sessions its backends counted."""
        served = 0
        first = True
        parts = self.reader.worker_parts(pid)
        async with contextlib.aclosing(parts):
            async for part in parts:
                await self.step()
                self.tally.observe_counted(pid, part, current=current, first=first)
                first = False
                served += sum(row.stot for row in part if row.type is StatType.BACKEND)
        if first:  # no rows: still a reading (a current worker serving no backend)
            self.tally.observe_counted(pid, (), current=current)
        return served

    async def _poll(self) -> Snapshot:
        await self._give_way()
        processes = await self.reader.processes()
        current = {worker.pid for worker in processes.workers}
        self.workers = frozenset(current)
        pids = [*current, *(worker.pid for worker in processes.old_workers)]
        # Each process's reply is tallied as it arrives, ROWS_A_STEP rows at a time, each
        # step after the changes on their way: at 10,000 gateways tallying a poll in one go
        # held the event loop for 300-500 ms, the slowest weight changes of a run; at 100,000
        # holding the reply whole, then its rows, held 300 MB. (Not in a thread: a change's
        # many small I/O steps then each waited for the interpreter lock.)
        self.tally.begin()
        served: dict[int, int] = {}  # pid -> sessions its backends counted, for the rings
        for pid in pids:
            served[pid] = await self._tally_worker(pid, current=pid in current)
        if self.ring is not None and self.latency is not None:
            await self._read_rings(self.ring, self.latency, served)
        await self.step()
        logged_backends, logged_servers = self.latency.logged() if self.latency else ({}, {})
        steps = self.tally.ending(
            pids,
            self.clock(),
            old_workers=len(processes.old_workers),
            logged_backends=logged_backends,
            logged_servers=logged_servers,
            keys_a_step=ROWS_A_STEP,
        )
        for _ in steps:
            await self.step()
        snapshot = self.tally.ended
        if self.latency is not None and self.tally.retired:
            self.latency.forget(self.tally.retired)
        if self.latency is not None and self.tally.forgotten_servers:
            self.latency.forget_servers(self.tally.forgotten_servers)
        return snapshot
