"""From `show stat` rows of every HAProxy process to snapshots: reloads, restarts, health."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence

import pytest

from meshgate.compiler import ir
from meshgate.haproxy.processes import ProcEntry, ProcInfo
from meshgate.haproxy.stat_csv import CountedRow, StatRow, StatType, counted
from meshgate.haproxy.stats_reader import ROWS_A_STEP
from meshgate.haproxy.transport import RuntimeUnavailable
from meshgate.stats.collector import StatsCollector
from meshgate.stats.latency import LatencyBook
from meshgate.stats.tally import Tally, server_status

BE = "default.gw.v1.abc123"


def backend_row(requests: int, *, xx2: int = 0, xx5: int = 0, scur: int = 0) -> StatRow:
    return StatRow(
        BE, "BACKEND", StatType.BACKEND, "UP", "", "", "http",
        req_tot=requests, stot=requests, hrsp_2xx=xx2, hrsp_5xx=xx5, bin=10 * requests,
        bout=100 * requests, scur=scur,
    )  # fmt: skip


def server_row(name: str, requests: int, status: str = "UP") -> StatRow:
    return StatRow(
        BE, name, StatType.SERVER, status, "", "127.0.0.1:1", "http",
        req_tot=requests, stot=requests, hrsp_2xx=requests,
    )  # fmt: skip


def test_a_reload_adds_the_new_worker_to_the_old_one_until_the_old_one_is_gone() -> None:
    tally = Tally()
    tally.begin()
    tally.observe(100, [backend_row(10, xx2=10)], current=True)
    assert tally.end([100], 1.0).backends[BE].counts.requests == 10
    tally.begin()
    tally.observe(200, [backend_row(2, xx2=2)], current=True)  # new worker
    tally.observe(100, [backend_row(11, xx2=11, scur=1)], current=False)  # old one finishing
    snapshot = tally.end([200, 100], 2.0, old_workers=1)
    assert snapshot.backends[BE].counts.requests == 13
    assert snapshot.backends[BE].counts.responses["2xx"] == 13
    assert snapshot.backends[BE].active == 1
    assert (snapshot.workers, snapshot.old_workers) == (1, 1)
    tally.begin()
    tally.observe(200, [backend_row(3, xx2=3)], current=True)
    snapshot = tally.end([200], 3.0)
    assert snapshot.backends[BE].counts.requests == 14
    assert snapshot.backends[BE].counts.bytes_in == 140


def test_a_restart_never_makes_a_total_go_down() -> None:
    tally = Tally()
    seen = []
    for pid, requests in ((100, 5), (100, 50), (300, 1), (300, 7)):
        tally.begin()
        tally.observe(pid, [backend_row(requests)], current=True)
        seen.append(tally.end([pid], float(len(seen))).backends[BE].counts.requests)
    assert seen == [5, 50, 51, 57]


def test_a_reload_under_traffic_loses_nothing_the_old_worker_logged() -> None:
    tally = Tally(grace_s=3.0)
    tally.begin()
    tally.observe(100, [backend_row(10)], current=True)
    tally.end([100], 0.0)
    # Reload: worker 100 served 4 more requests, then exited before the next poll.
    logged = {BE: {100: [14, 0, 0, 0, 0, 0], 200: [1, 0, 0, 0, 0, 0]}}
    tally.begin()
    tally.observe(200, [backend_row(1)], current=True)
    snapshot = tally.end([200], 1.0, logged_backends=logged)
    assert snapshot.backends[BE].counts.requests == 15
    assert tally.retired == set()  # still inside the grace period: late lines may come
    tally.begin()
    tally.observe(200, [backend_row(2)], current=True)
    logged = {BE: {100: [14, 0, 0, 0, 0, 0], 200: [2, 0, 0, 0, 0, 0]}}
    snapshot = tally.end([200], 4.5, logged_backends=logged)
    assert tally.retired == {100}
    assert snapshot.backends[BE].counts.requests == 16
    tally.begin()
    tally.observe(200, [backend_row(2)], current=True)
    after = tally.end([200], 5.5, logged_backends={BE: {200: [2, 0, 0, 0, 0, 0]}})
    assert after.backends[BE].counts.requests == 16


def test_servers_report_health_from_the_current_worker() -> None:
    tally = Tally()
    tally.begin()
    current = [server_row("a", 1, "DOWN 1/2"), server_row("b", 1, "no check")]
    tally.observe(200, current, current=True)
    tally.observe(100, [server_row("a", 9, "UP")], current=False)
    snapshot = tally.end([200, 100], 1.0, old_workers=1)
    assert snapshot.servers[(BE, "a")].status == "DOWN"
    assert snapshot.servers[(BE, "a")].counts.requests == 10
    assert snapshot.servers[(BE, "b")].status == "UP"


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("UP", "UP"), ("UP 1/3", "UP"), ("no check", "UP"), ("NOLB", "UP"),
        ("DOWN", "DOWN"), ("DOWN 1/2", "DOWN"), ("MAINT", "MAINT"), ("MAINT (via x/y)", "MAINT"),
        ("DRAIN", "MAINT"), ("", "DOWN"),
    ],
)  # fmt: skip
def test_server_status_words(text: str, status: str) -> None:
    assert server_status(text) == status


def test_rates_come_from_the_request_history() -> None:
    tally = Tally(rate_window_s=10.0)
    for second in range(12):
        tally.begin()
        tally.observe(1, [backend_row(second * 20)], current=True)
        snapshot = tally.end([1], float(second))
    assert snapshot.backends[BE].rate == 20.0
    assert snapshot.backends[BE].recent_requests == 220


def test_routes_that_never_had_a_request_share_one_reading_and_keep_no_history() -> None:
    import dataclasses

    other = "default.gw2.v1.def456"
    tally = Tally(rate_window_s=10.0)
    for second in range(3):
        tally.begin()
        rows = [backend_row(0), dataclasses.replace(backend_row(0), pxname=other)]
        tally.observe(1, [*rows, server_row("i1", 0), server_row("i2", 0)], current=True)
        snapshot = tally.end([1], float(second))
    assert snapshot.backends[BE] is snapshot.backends[other]
    assert snapshot.servers[(BE, "i1")] is snapshot.servers[(BE, "i2")]
    assert snapshot.backends[BE].rate == 0.0 and not tally._history
    # The first requests count from the last poll that saw none.
    tally.begin()
    tally.observe(1, [backend_row(30)], current=True)
    snapshot = tally.end([1], 3.0)
    assert snapshot.backends[BE].recent_requests == 30 and snapshot.backends[BE].rate == 30.0
    assert set(tally._history) == {BE}


class FakeReader:
    """What the master would answer: a script of (workers, old workers, rows per pid)."""

    def __init__(self) -> None:
        self.workers: list[int] = []
        self.old: list[int] = []
        self.rows: dict[int, Sequence[StatRow]] = {}
        self.down = False
        self.events: dict[int, bytes] = {}  # each worker's ring, as `show events` dumps it
        self.events_read: list[int] = []

    async def processes(self) -> ProcInfo:
        if self.down:
            raise RuntimeUnavailable("master.sock", "connection refused", sent=False)

        def entry(pid: int, kind: str) -> ProcEntry:
            return ProcEntry(pid, kind, 0, 1, "2.6")

        return ProcInfo(
            master=entry(1, "master"),
            failed_reloads=0,
            workers=[entry(p, "worker") for p in self.workers],
            old_workers=[entry(p, "worker") for p in self.old],
            programs=[],
        )

    async def worker_stats(self, pid: int) -> list[StatRow]:
        return list(self.rows.get(pid, []))

    async def worker_parts(self, pid: int) -> AsyncIterator[list[CountedRow]]:
        """As `StatsReader` hands them: parts of `ROWS_A_STEP` rows."""
        rows = [counted(row) for row in await self.worker_stats(pid)]
        for start in range(0, len(rows), ROWS_A_STEP):
            yield rows[start : start + ROWS_A_STEP]

    async def worker_events(self, pid: int, ring: str) -> bytes:
        assert ring == "meshgate_log"
        self.events_read.append(pid)
        return self.events.get(pid, b"")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def dataplane() -> ir.DataPlane:
    backend = ir.Backend(
        name=BE,
        mode="http",
        route=ir.RouteRef("default", "gw", "v1"),
        balance="roundrobin",
        servers=(ir.Server("a", "127.0.0.1", 1, 1),),
        health=ir.HealthCheck("tcp", 2000, 2, 3),
    )
    return ir.DataPlane(ir.Settings(run_dir="/run"), backends=(backend,))


async def test_the_collector_polls_every_process_and_keeps_the_last_snapshot_on_failure() -> None:
    reader, clock = FakeReader(), Clock()
    running = dataplane()
    book = LatencyBook()
    collector = StatsCollector(
        reader,  # type: ignore[arg-type]
        lambda: running,
        latency=book,
        clock=clock,
    )
    reader.workers, reader.rows = [100], {100: [backend_row(4)]}
    assert (await collector.refresh()).backends[BE].counts.requests == 4
    assert book.offer(f"100 {BE} a 200 0 1 1".encode(), 0.0) is not None
    reader.workers, reader.old = [200], [100]
    reader.rows = {100: [backend_row(5)], 200: [backend_row(1)]}
    assert (await collector.refresh()).backends[BE].counts.requests == 4  # still fresh: cached
    clock.now = 1.0
    assert (await collector.refresh()).backends[BE].counts.requests == 6
    reader.down = True
    clock.now = 2.0
    snapshot = await collector.refresh()
    assert snapshot.backends[BE].counts.requests == 6
    assert snapshot.taken_at == 1.0
    assert collector.failed_polls == 1


async def test_an_expensive_poll_spaces_the_next_ones_out() -> None:
    class SlowReader(FakeReader):
        async def processes(self) -> ProcInfo:
            clock.now += 0.2  # a poll that takes 200 ms
            return await super().processes()

    clock = Clock()
    reader = SlowReader()
    reader.workers, reader.rows = [100], {100: [backend_row(4)]}
    collector = StatsCollector(reader, lambda: None, clock=clock)  # type: ignore[arg-type]
    assert collector.next_interval() == 1.0
    await collector.refresh()
    assert collector.poll_seconds == pytest.approx(0.2)
    assert collector.workers == frozenset({100})
    # At most about 5 % of the time polling: 20 x 200 ms.
    assert collector.next_interval() == pytest.approx(4.0)


async def test_callers_cannot_poll_more_often_than_the_cost_bound() -> None:
    class SlowReader(FakeReader):
        async def processes(self) -> ProcInfo:
            clock.now += 0.2
            return await super().processes()

    clock = Clock()
    reader = SlowReader()
    reader.workers, reader.rows = [100], {100: [backend_row(4)]}
    collector = StatsCollector(reader, lambda: None, clock=clock)  # type: ignore[arg-type]
    await collector.refresh()
    clock.now += 1.0  # the API wants a reading no older than 0.25 s; 4 s is the bound
    await collector.refresh(max_age_s=0.25)
    assert collector.polls == 1
    clock.now += 3.5  # past 4 s since the last reading
    await collector.refresh(max_age_s=0.25)
    assert collector.polls == 2


async def test_a_poll_lets_changes_go_first_and_does_not_count_that_time() -> None:
    class SlowReader(FakeReader):
        async def processes(self) -> ProcInfo:
            clock.now += 0.2
            return await super().processes()

    steps: list[str] = []

    async def make_way() -> None:
        steps.append(f"wait at {len(reader_calls)} reads")
        clock.now += 1.0  # a pass of the agent under way: one second

    clock = Clock()
    reader = SlowReader()
    reader_calls: list[int] = []
    original = reader.worker_stats

    async def counted(pid: int) -> list[StatRow]:
        reader_calls.append(pid)
        return await original(pid)

    reader.worker_stats = counted  # type: ignore[method-assign]
    reader.workers, reader.old = [200], [100]
    reader.rows = {100: [backend_row(5)], 200: [backend_row(1)]}
    collector = StatsCollector(
        reader,  # type: ignore[arg-type]
        lambda: None,
        clock=clock,
        make_way=make_way,
    )
    snapshot = await collector.refresh()
    assert snapshot.backends[BE].counts.requests == 6
    # Before reading, before tallying each process's part as it arrives, before finishing.
    assert steps == ["wait at 0 reads", "wait at 1 reads", "wait at 2 reads", "wait at 2 reads"]
    # The poll's own cost is what the bound spaces polls by, not the time spent waiting.
    assert collector.poll_seconds == pytest.approx(0.2)


class LinesSeen(LatencyBook):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bytes] = []

    def offer_lines(
        self, lines: Iterable[bytes], now: float, recorded: list[list[bytes]] | None = None
    ) -> None:
        lines = list(lines)
        self.seen += lines
        super().offer_lines(lines, now, recorded)


async def test_rings_are_read_when_requests_were_counted_and_once_more_after_lines() -> None:
    reader, clock, book = FakeReader(), Clock(), LinesSeen()
    running = dataplane()
    collector = StatsCollector(
        reader,  # type: ignore[arg-type]
        lambda: running,
        latency=book,
        clock=clock,
        ring="meshgate_log",
    )

    def line(number: int) -> bytes:
        return f"{number}:fe 100 {BE} a 200 0 1 1\n".encode()

    async def poll(requests: int, *numbers: int) -> None:
        reader.workers, reader.rows = [100], {100: [backend_row(requests)]}
        reader.events = {100: b"".join(line(n) for n in numbers) + b"\n"}
        clock.now += 1.0
        await collector.refresh()

    await poll(2, 0, 1)
    assert book.seen == [f"100 {BE} a 200 0 1 1".encode()] * 2
    await poll(2, 0, 1)  # the count stood still, but the last read found lines: read again
    await poll(2, 0, 1)  # nothing new twice: the ring is left alone
    assert reader.events_read == [100, 100]
    await poll(3, 0, 1, 2)
    assert reader.events_read == [100, 100, 100]
    assert len(book.seen) == 3  # only line 2 was new


async def test_without_a_ring_the_collector_reads_no_events() -> None:
    reader, clock = FakeReader(), Clock()
    running = dataplane()
    collector = StatsCollector(
        reader,  # type: ignore[arg-type]
        lambda: running,
        latency=LatencyBook(),
        clock=clock,
    )
    reader.workers, reader.rows = [100], {100: [backend_row(4)]}
    await collector.refresh()
    assert reader.events_read == []


def test_servers_and_backends_gone_from_every_process_are_forgotten_after_ten_seconds() -> None:
    """A registration that lapsed, a gateway deleted: their rows leave `show stat`, and ten
    seconds later their counts, request history and latency series leave the node too (without this,
    every instance id ever registered stayed in memory and in every snapshot)."""
    other = "default.gw.v2.def456"
    tally = Tally()
    book = LatencyBook()
    book.accept([BE, other])
    for pid_text in (b"100",):
        for server in (b"a", b"lapsed"):
            book.offer(b" ".join([pid_text, BE.encode(), server, b"200", b"1", b"1", b"1"]), 0.0)
    rows = [backend_row(2), server_row("a", 1), server_row("lapsed", 1)]
    other_rows = [StatRow(other, "BACKEND", StatType.BACKEND, "UP", "", "", "http", stot=1)]
    tally.begin()
    tally.observe(100, [*rows, *other_rows], current=True)
    tally.end([100], 0.0)
    for second in (1.0, 5.0, 11.0):
        tally.begin()
        tally.observe(100, [backend_row(2), server_row("a", 1)], current=True)
        snapshot = tally.end([100], second)
    assert tally.forgotten_servers == [(BE, "lapsed")]
    assert set(snapshot.servers) == {(BE, "a")}
    assert set(snapshot.backends) == {BE}
    assert set(tally._history) == {BE}
    book.forget_servers(tally.forgotten_servers)
    assert [server for _, server, _ in book.cumulative()] == ["a"]


async def test_route_readings_keep_one_key_tuple_per_route_across_reads() -> None:
    """The route history keeps ten minutes of records: each must not hold its own copy of
    every route's key."""
    from meshgate.rollouts.source import AllRoutes

    reader, clock = FakeReader(), Clock()
    running = dataplane()
    collector = StatsCollector(reader, lambda: running, latency=LatencyBook(), clock=clock)  # type: ignore[arg-type]
    reader.workers, reader.rows = [100], {100: [backend_row(4)]}
    routes = AllRoutes(collector, max_age_s=0.0)
    first = await routes.read()
    clock.now, reader.rows = 5.0, {100: [backend_row(9)]}
    second = await routes.read()
    assert list(first) == list(second) == [("default", "gw", "v1")]
    assert next(iter(first)) is next(iter(second))
    assert first[("default", "gw", "v1")] != second[("default", "gw", "v1")]  # counts moved


async def test_a_poll_of_many_rows_lets_changes_go_first_every_step_of_rows() -> None:
    """A poll of thousands of rows is tallied `ROWS_A_STEP` rows (and backends, and servers)
    at a time, looking for changes on their way before each step; the snapshot is the one
    tallying it in one go gives."""
    from meshgate.stats.collector import ROWS_A_STEP

    count = 3 * ROWS_A_STEP
    names = [f"default.g{n}.r.abcdef" for n in range(count)]
    rows = [
        row
        for n, name in enumerate(names)
        for row in (
            StatRow(name, "BACKEND", StatType.BACKEND, "UP", "", "", "http", req_tot=n),
            StatRow(name, "s", StatType.SERVER, "DOWN", "", "127.0.0.1:1", "http", req_tot=n),
        )
    ]
    looks = 0

    async def make_way() -> None:
        nonlocal looks
        looks += 1

    reader = FakeReader()
    reader.workers, reader.rows = [100], {100: rows}
    collector = StatsCollector(
        reader,  # type: ignore[arg-type]
        lambda: None,
        clock=Clock(),
        make_way=make_way,
    )
    snapshot = await collector.refresh()
    # rows: 6 steps; backends: 3 and servers: 3; and the few steps of any poll.
    assert looks >= 6 + 3 + 3
    tally = Tally()
    tally.begin()
    tally.observe(100, rows, current=True)
    alone = tally.end([100], 0.0)
    assert snapshot.backends == alone.backends and snapshot.servers == alone.servers
    assert snapshot.servers[(names[-1], "s")].status == "DOWN"
    assert snapshot.backends[names[-1]].counts.requests == count - 1
