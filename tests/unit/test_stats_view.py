"""The stats JSON (SPEC §3), the /metrics families and the CLI table, from known inputs."""

from __future__ import annotations

import dataclasses
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from meshgate.cli.stats import stats_table
from meshgate.compiler import ir
from meshgate.haproxy.stat_csv import StatRow, StatType
from meshgate.stats.latency import LatencyBook
from meshgate.stats.prometheus import IDLE_ROUTES_SHOWN, DataPlaneMetrics
from meshgate.stats.tally import Snapshot, Tally
from meshgate.stats.view import gateway_stats

V1, V2 = "default.gw.v1.aaaaaa", "default.gw.v2.bbbbbb"
HEALTH = ir.HealthCheck("tcp", 2000, 2, 3)


def backend(name: str, route: str, *servers: str) -> ir.Backend:
    return ir.Backend(
        name=name,
        mode="http",
        route=ir.RouteRef("default", "gw", route),
        balance="roundrobin",
        servers=tuple(ir.Server(s, "127.0.0.1", 8000 + i, 1) for i, s in enumerate(servers)),
        health=HEALTH,
    )


DATAPLANE = ir.DataPlane(
    ir.Settings(run_dir="/run"),
    backends=(
        backend(V1, "v1", "a", "b"),
        backend(V2, "v2", "c"),
        ir.Backend(
            name="other.x.y.cccccc",
            mode="http",
            route=ir.RouteRef("other", "gw", "y"),
            balance="roundrobin",
            servers=(),
            health=HEALTH,
        ),
    ),
)


def row(proxy: str, name: str, kind: StatType, **counters: Any) -> StatRow:
    return StatRow(proxy, name, kind, counters.pop("status", "UP"), "", "", "http", **counters)


def snapshot() -> Snapshot:
    tally = Tally()
    tally.begin()
    tally.observe(
        1,
        [
            row(V1, "BACKEND", StatType.BACKEND, req_tot=10, hrsp_2xx=7, hrsp_4xx=1, hrsp_5xx=2,
                bin=1000, bout=5000, scur=1),
            row(V1, "a", StatType.SERVER, req_tot=6, hrsp_2xx=6),
            row(V1, "b", StatType.SERVER, req_tot=4, hrsp_2xx=1, hrsp_5xx=2, status="DOWN"),
        ],
        current=True,
    )  # fmt: skip
    return tally.end([1], 100.0)


def latency() -> LatencyBook:
    book = LatencyBook()
    book.accept([V1, V2])
    for total, server in ((3, "a"), (5, "a"), (250, "b")):
        book.offer(f"1 {V1} {server} 200 1 {total} {total}".encode(), 99.0)
    return book


def test_gateway_stats_have_the_shape_of_the_contract() -> None:
    result = gateway_stats(DATAPLANE, snapshot(), latency(), "default", "gw")
    assert result["gateway"] == "gw"
    assert set(result["routes"]) == {"v1", "v2"}
    v1 = result["routes"]["v1"]
    assert v1["requests"] == 10
    assert v1["responses"] == {"1xx": 0, "2xx": 7, "3xx": 0, "4xx": 1, "5xx": 2}
    assert (v1["active"], v1["bytes_in"], v1["bytes_out"]) == (1, 1000, 5000)
    assert isinstance(v1["rate"], float)
    assert set(v1["latency_ms"]) == {"avg", "p50", "p90", "p99"}
    assert v1["latency_ms"]["p50"] == 5
    assert v1["latency_ms"]["p99"] >= 250
    assert v1["connect_ms"]["p99"] == 1
    assert [(i["id"], i["status"], i["requests"]) for i in v1["instances"]] == [
        ("a", "UP", 6),
        ("b", "DOWN", 4),
    ]
    assert v1["instances"][0]["address"] == "127.0.0.1"
    assert v1["instances"][1]["latency_ms"]["p50"] >= 250
    assert v1["sampling"]["samples"] == 3
    assert v1["sampling"]["logged"] == 1.0  # HAProxy logs every request unless told otherwise


def test_the_share_haproxy_logs_is_reported() -> None:
    result = gateway_stats(DATAPLANE, snapshot(), latency(), "default", "gw", logged=0.125)
    assert result["routes"]["v1"]["sampling"]["logged"] == 0.125


def test_a_route_without_traffic_is_listed_with_zeros_and_no_latency() -> None:
    v2 = gateway_stats(DATAPLANE, snapshot(), latency(), "default", "gw")["routes"]["v2"]
    assert v2["requests"] == 0
    assert v2["responses"] == dict.fromkeys(("1xx", "2xx", "3xx", "4xx", "5xx"), 0)
    assert v2["latency_ms"] == {"avg": None, "p50": None, "p90": None, "p99": None}
    assert v2["instances"][0]["status"] == "DOWN"  # HAProxy does not list it (yet)


def test_without_latency_there_is_no_sampling_report() -> None:
    v1 = gateway_stats(DATAPLANE, snapshot(), None, "default", "gw")["routes"]["v1"]
    assert "sampling" not in v1
    assert v1["latency_ms"]["p50"] is None


def test_unknown_gateways_and_an_empty_data_plane_have_no_routes() -> None:
    assert gateway_stats(DATAPLANE, snapshot(), None, "default", "nope")["routes"] == {}
    assert gateway_stats(None, snapshot(), None, "default", "gw")["routes"] == {}


class Polled:
    """Stands in for the collector: the /metrics collector only reads these attributes."""

    def __init__(self) -> None:
        self.snapshot = snapshot()
        self.latency = latency()
        self.keeper = None

    def dataplane(self) -> ir.DataPlane:
        return DATAPLANE


def test_metrics_parse_and_carry_the_route_and_instance_labels() -> None:
    registry = CollectorRegistry()
    registry.register(DataPlaneMetrics(Polled()))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = {
        (s.labels["namespace"], s.labels["gateway"], s.labels["route"]): s.value
        for s in families["meshgate_route_requests"].samples
    }
    assert requests == {
        ("default", "gw", "v1"): 10,
        ("default", "gw", "v2"): 0,
        ("other", "gw", "y"): 0,
    }
    by_instance = {
        s.labels["server"]: s.value for s in families["meshgate_instance_requests"].samples
    }
    assert by_instance == {"a": 6, "b": 4, "c": 0}
    up = {s.labels["server"]: s.value for s in families["meshgate_instance_up"].samples}
    assert up == {"a": 1, "b": 0, "c": 0}
    latency = families["meshgate_route_latency_seconds"]
    assert latency.type == "histogram"
    count = next(
        s.value
        for s in latency.samples
        if s.name.endswith("_count")
        and s.labels["route"] == "v1"
        and s.labels["component"] == "total"
    )
    assert count == 3
    # A route nothing was sampled on has no latency series yet, as an unobserved labelled
    # histogram of prometheus_client has none: idle routes cost a scrape nothing.
    assert {s.labels["route"] for s in latency.samples} == {"v1"}
    instances = families["meshgate_instance_latency_seconds"].samples
    assert {s.labels["server"] for s in instances} <= {"a", "b"}
    fives = {
        s.labels["code"]: s.value
        for s in families["meshgate_route_responses"].samples
        if s.labels["route"] == "v1"
    }
    assert fives["5xx"] == 2
    assert families["meshgate_haproxy_old_workers"].samples[0].value == 0
    assert families["meshgate_access_log_keep_ratio"].samples[0].value == 1.0


def test_the_cli_table_has_a_row_per_route() -> None:
    result = gateway_stats(DATAPLANE, snapshot(), latency(), "default", "gw")
    lines = stats_table(result).splitlines()
    assert lines[0] == "gateway default/gw"
    assert lines[1].split() == [
        "ROUTE", "RATE/S", "REQUESTS", "2XX", "4XX", "5XX", "ERR%", "P50", "P99", "SAMPLED", "UP",
    ]  # fmt: skip
    v1 = lines[2].split()
    assert v1[0] == "v1"
    assert v1[2:7] == ["10", "7", "1", "2", "20.0%"]
    assert v1[7] == "5ms"
    assert v1[-1] == "1/2"
    v2 = lines[3].split()
    assert v2[0] == "v2" and v2[6:9] == ["-", "-", "-"] and v2[-1] == "0/1"


def test_the_cli_table_of_a_gateway_without_routes_says_so() -> None:
    text = stats_table({"gateway": "gw", "namespace": "default", "routes": {}})
    assert "no routes" in text


def scrape(polled: Polled, idle: int) -> tuple[dict[str, Any], int]:
    """The families of a scrape, and its size, with `idle` more idle routes."""
    extra = [backend(f"default.idle.r{n}.dddddd", f"r{n}", "x") for n in range(idle)]
    many = dataclasses.replace(DATAPLANE, backends=(*DATAPLANE.backends, *extra))
    polled.dataplane = lambda: many  # type: ignore[method-assign]
    registry = CollectorRegistry()
    registry.register(DataPlaneMetrics(polled))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}, len(text)


def test_above_a_bound_idle_routes_are_left_out_and_counted() -> None:
    """Thousands of idle routes would each cost a scrape about 17 lines of zeros (200 MB at
    100,000 gateways): past `IDLE_ROUTES_SHOWN` idle routes only the routes with traffic are
    exported, and the scrape's size stops growing with the idle ones."""
    polled = Polled()  # v1 has traffic; v2 (no request, no latency sample) and y are idle
    families, _ = scrape(polled, IDLE_ROUTES_SHOWN - 2)
    assert len(families["meshgate_route_requests"].samples) == 1 + IDLE_ROUTES_SHOWN
    assert families["meshgate_routes_idle"].samples[0].value == 0
    for more in (1, 10 * IDLE_ROUTES_SHOWN):
        families, size = scrape(polled, IDLE_ROUTES_SHOWN - 2 + more)
        routes = {s.labels["route"] for s in families["meshgate_route_requests"].samples}
        assert routes == {"v1"}
        assert {s.labels["server"] for s in families["meshgate_instance_up"].samples} == {"a", "b"}
        assert families["meshgate_routes_idle"].samples[0].value == IDLE_ROUTES_SHOWN + more
        assert size < 20_000
