"""Flow recording: lines counted per (backend, client) in bounded buckets, estimated from
HAProxy's counts, merged over nodes; the log formats with the client's address."""

from __future__ import annotations

import pytest

from meshgate.compiler import ir
from meshgate.stats import logline
from meshgate.stats.flows import OTHER, FlowBook
from meshgate.stats.flowview import flow_document, merge_flows
from meshgate.stats.histogram import Histogram
from meshgate.stats.latency import LatencyBook

BACKEND = "default.api.v1.3116af"
OTHER_BACKEND = "default.api.v2.aa11bb"


def flow_line(client: str, *, status: int = 200, total: int = 5, backend: str = BACKEND) -> bytes:
    return f"7 {backend} a {status} 0 {total} {total} {client}".encode()


def book(flows: FlowBook, **options: object) -> LatencyBook:
    latency = LatencyBook(flows=flows, **options)  # type: ignore[arg-type]
    latency.accept([BACKEND, OTHER_BACKEND])
    return latency


def test_the_compact_format_with_flows_ends_with_the_client() -> None:
    http_format, tcp_format = logline.log_formats(False, flows=True)
    for text in (http_format, tcp_format):
        fields = text.removeprefix(logline.MARK).split(" ")
        assert len(fields) == logline.FLOW_FIELDS and fields[logline.FLOW_CLIENT] == "%ci"
    assert logline.log_formats(False) == logline.log_formats(False, flows=False)
    # The detailed line has the client already: flows change nothing there.
    assert logline.log_formats(True, flows=True) == logline.log_formats(True)
    split = logline.split(flow_line("10.0.0.1"))
    assert split is not None and logline.client_of(split) == b"10.0.0.1"
    assert logline.record(split) is None  # not an access-log record


def test_a_clients_requests_are_its_share_of_lines_times_the_counted_requests() -> None:
    flows = FlowBook(bucket_s=5.0)
    latency = book(flows)
    flows.tick(0.0, {BACKEND: 0})
    # HAProxy logged one request in four: 30 lines from .21, 10 from .22, 1 a 5xx.
    lines = [flow_line("127.0.0.21") for _ in range(30)]
    lines += [flow_line("127.0.0.22") for _ in range(9)] + [flow_line("127.0.0.22", status=503)]
    latency.offer_lines(lines, now=1.0)
    flows.tick(2.0, {BACKEND: 160})
    window = flows.window(60.0)
    assert window.seconds == 2.0
    assert window.requests == {BACKEND: 160} and window.lines == {BACKEND: 40}
    web = window.cells[(BACKEND, "127.0.0.21")]
    assert window.estimated(BACKEND, web.lines) == 120
    batch = window.cells[(BACKEND, "127.0.0.22")]
    assert (window.estimated(BACKEND, batch.lines), batch.errors) == (40, 1)
    assert web.histogram().count == 30  # every line parsed: latency per caller too


def test_compact_lines_without_a_client_record_no_flow() -> None:
    flows = FlowBook()
    latency = book(flows)
    latency.offer_lines([f"7 {BACKEND} a 200 0 5 5".encode()], now=0.0)
    flows.tick(1.0, {BACKEND: 1})
    assert flows.window(60.0).cells == {}


def test_a_detailed_line_gives_its_client_too() -> None:
    flows = FlowBook()
    latency = book(flows)
    detailed = f"7 {BACKEND} a 200 0 5 5 0 10 20 ---- 10.1.2.3 GET /x".encode()
    latency.offer_lines([detailed], now=0.0)
    flows.tick(1.0, {BACKEND: 1})
    assert set(flows.window(60.0).cells) == {(BACKEND, "10.1.2.3")}


def test_a_window_is_the_buckets_since_its_start() -> None:
    flows = FlowBook(bucket_s=5.0, keep_s=30.0)
    latency = book(flows)
    flows.tick(0.0, {BACKEND: 0})
    latency.offer_lines([flow_line("10.0.0.1")] * 10, now=1.0)
    flows.tick(5.0, {BACKEND: 10})  # a new bucket
    latency.offer_lines([flow_line("10.0.0.2")] * 4, now=6.0)
    flows.tick(8.0, {BACKEND: 14})
    recent = flows.window(5.0)
    assert (recent.seconds, recent.requests, set(recent.cells)) == (
        3.0, {BACKEND: 4}, {(BACKEND, "10.0.0.2")},
    )  # fmt: skip
    whole = flows.window(60.0)
    assert (whole.seconds, whole.requests[BACKEND], len(whole.cells)) == (8.0, 14, 2)
    flows.tick(40.0, {BACKEND: 14})  # buckets that ended before keep_s ago go
    longest = flows.window(300.0)
    assert (longest.seconds, longest.requests) == (35.0, {BACKEND: 4})


def test_clients_beyond_the_table_count_as_other() -> None:
    flows = FlowBook(max_cells=3)
    latency = book(flows)
    latency.offer_lines([flow_line(f"10.0.0.{i}") for i in range(10)], now=0.0)
    flows.tick(1.0, {BACKEND: 10})
    cells = flows.window(60.0).cells
    assert len(cells) == 4 and cells[(BACKEND, OTHER.decode())].lines == 7
    assert flows.overflowed == 7


def dataplane() -> ir.DataPlane:
    def backend(name: str, route: str) -> ir.Backend:
        return ir.Backend(
            name=name,
            mode="http",
            route=ir.RouteRef("default", "api", route),
            balance="roundrobin",
            servers=(),
            health=ir.HealthCheck("tcp", 2000, 2, 3),
        )

    return ir.DataPlane(
        settings=ir.Settings(run_dir="/tmp"),
        backends=(backend(BACKEND, "v1"), backend(OTHER_BACKEND, "v2")),
    )


def test_documents_of_two_nodes_add_up() -> None:
    flows = FlowBook()
    latency = book(flows)
    flows.tick(0.0, {BACKEND: 0, OTHER_BACKEND: 0})
    latency.offer_lines(
        [flow_line("10.0.0.1")] * 3 + [flow_line("10.0.0.1", backend=OTHER_BACKEND, total=90)],
        now=1.0,
    )
    flows.tick(10.0, {BACKEND: 30, OTHER_BACKEND: 10})
    document = flow_document(flows.window(60.0), dataplane())
    [api] = document["gateways"]
    assert api["routes"]["v1"]["requests"] == 30 and api["routes"]["v2"]["rate"] == 1.0
    assert api["callers"]["10.0.0.1"]["requests"] == 40
    assert flow_document(flows.window(60.0), dataplane(), "other")["gateways"] == []
    merged = merge_flows({"a": document, "b": document})
    figures = merged[("default", "api")]
    assert figures["routes"]["v1"]["requests"] == 60 and figures["routes"]["v1"]["rate"] == 6.0
    histogram: Histogram = figures["routes"]["v2"]["histogram"]
    assert histogram.count == 2 and histogram.max == 90
    assert [(node, address) for node, address, _ in figures["callers"]] == [
        ("a", "10.0.0.1"), ("b", "10.0.0.1"),
    ]  # fmt: skip
    assert figures["node_routes"] == {"a": {"v1": 30, "v2": 10}, "b": {"v1": 30, "v2": 10}}


@pytest.mark.parametrize("seconds", [1.0, 60.0])
def test_no_ticks_yet_is_an_empty_window(seconds: float) -> None:
    window = FlowBook().window(seconds)
    assert (window.seconds, window.requests, window.cells) == (0.0, {}, {})
