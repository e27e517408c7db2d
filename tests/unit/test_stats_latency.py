"""The latency book: which lines it records, windows from snapshots, sampling under load."""

from __future__ import annotations

from meshgate.stats.histogram import BOUNDS_MS, bucket_of
from meshgate.stats.latency import LatencyBook, Sampler

BACKEND = "default.gw.s1.3116af"


def line(total: int, *, connect: int = 0, response: int | None = None, server: str = "a") -> bytes:
    response = total if response is None else response
    return f"7 {BACKEND} {server} 200 {connect} {response} {total}".encode()


def book(**options: object) -> LatencyBook:
    latency = LatencyBook(**options)  # type: ignore[arg-type]
    latency.accept([BACKEND])
    return latency


def test_lines_of_known_backends_are_recorded_by_component_and_server() -> None:
    latency = book()
    latency.offer(line(200, connect=3, response=150, server="a"), now=0.0)
    latency.offer(line(10, connect=1, response=5, server="b"), now=0.0)
    route = latency.window(BACKEND, None, now=1.0)
    assert (route.total.count, route.connect.count, route.response.count) == (2, 2, 2)
    assert route.total.percentile(1.0) == BOUNDS_MS[bucket_of(200)]
    assert route.connect.percentile(1.0) == 3
    one = latency.window(BACKEND, "b", now=1.0)
    assert one.total.count == 1 and one.total.percentile(0.5) == 10
    assert latency.window(BACKEND, "nobody", now=1.0).total.count == 0
    assert latency.parsed == 2


def test_steps_that_did_not_happen_are_left_out_of_their_histogram() -> None:
    latency = book()
    latency.offer(f"7 {BACKEND} <NOSRV> 503 -1 -1 0".encode(), 0.0)
    window = latency.window(BACKEND, None, now=0.0)
    assert (window.total.count, window.connect.count, window.response.count) == (1, 0, 0)


def test_other_lines_and_other_backends_are_ignored() -> None:
    latency = book()
    assert latency.offer(b"Proxy default.gw.s1.3116af started.", 0.0) is None
    assert latency.offer(b"Server default.gw.s1.3116af/a is UP, reason: Layer4 check.", 0.0) is None
    assert latency.offer(line(5).replace(BACKEND.encode(), b"meshgate_probe"), 0.0) is None
    assert (latency.ignored, latency.parsed) == (3, 0)


def test_backends_leaving_the_data_plane_are_forgotten() -> None:
    latency = book()
    latency.offer(line(5), 0.0)
    latency.accept(["another"])
    assert latency.window(BACKEND, None, 0.0).total.count == 0
    assert list(latency.cumulative()) == []


def test_the_window_holds_only_what_came_after_the_oldest_snapshot_inside_it() -> None:
    latency = book(window_s=10.0, snapshot_every_s=1.0)
    latency.tick(0.0)
    latency.offer(line(500), 0.5)
    for second in range(1, 12):
        latency.tick(float(second))
        latency.offer(line(5), second + 0.5)
    window = latency.window(BACKEND, None, now=11.0)
    # The snapshot at 1 is the oldest inside [1, 11]: the 500 ms request (at 0.5) is out, the
    # eleven 5 ms ones (1.5 to 11.5) are in.
    assert window.seconds == 10.0
    assert window.total.count == 11
    assert window.total.percentile(1.0) == 5
    cumulative = {server: s for _, server, s in latency.cumulative()}
    assert cumulative["a"].total.count == 12


def test_before_the_first_snapshot_the_window_is_everything() -> None:
    latency = book()
    latency.offer(line(5), 0.0)
    window = latency.window(BACKEND, None, now=0.0)
    assert window.total.count == 1
    assert window.seconds == latency.window_s


def take(sampler: Sampler, now: float, lines: int) -> int:
    sampler.start(now)
    return sum(sampler.take() for _ in range(lines))


def test_the_sampler_takes_everything_under_its_budget() -> None:
    sampler = Sampler(budget_per_s=100)
    assert take(sampler, 0.5, 100) == 100
    assert sampler.stride == 1


def test_over_budget_the_sampler_takes_one_line_in_stride() -> None:
    sampler = Sampler(budget_per_s=100)
    take(sampler, 0.5, 1000)  # a second of 1000 lines
    assert take(sampler, 1.5, 1000) == 100
    assert sampler.stride == 10
    # Back under budget, the next second takes every line again.
    take(sampler, 2.5, 50)
    assert sampler.stride == 10
    assert take(sampler, 3.5, 50) == 50
    assert sampler.stride == 1


def test_without_a_budget_every_line_is_taken() -> None:
    sampler = Sampler(budget_per_s=None)
    assert sum(take(sampler, float(second), 1000) for second in range(10)) == 10_000


def test_the_book_counts_lines_sampling_left_out() -> None:
    latency = book(budget_per_s=10)
    for _ in range(100):
        latency.offer(line(5), 0.5)
    for _ in range(100):
        latency.offer(line(5), 1.5)
    assert latency.parsed == 100 + 10
    assert latency.skipped == 90


def test_every_line_of_a_known_backend_is_counted_by_pid_server_and_class() -> None:
    latency = book(budget_per_s=1)  # sampling leaves lines out of the histograms, not the counts
    for now in (0.5, 1.5):  # in the second second, one line in four is parsed
        for status, server in ((200, "a"), (503, "a"), (404, "b")):
            latency.offer(line(1, server=server).replace(b" 200 ", f" {status} ".encode()), now)
        latency.offer(f"8 {BACKEND} <NOSRV> 503 -1 -1 0 -1 1 1 SC ::1 GET /".encode(), now)
    assert latency.skipped == 3
    backends, servers = latency.logged()
    assert backends == {BACKEND: {7: [6, 0, 2, 0, 2, 2], 8: [2, 0, 0, 0, 0, 2]}}
    assert servers[(BACKEND, "a")] == {7: [4, 0, 2, 0, 0, 2]}
    assert servers[(BACKEND, "<NOSRV>")] == {8: [2, 0, 0, 0, 0, 2]}


def test_forgotten_workers_are_no_longer_counted() -> None:
    latency = book()
    latency.offer(line(1), 0.0)
    latency.forget([7])
    latency.offer(line(1), 0.0)  # a late line of the retired worker
    assert latency.logged() == ({}, {})
    assert latency.parsed == 2  # its latency still counts
