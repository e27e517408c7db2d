"""Per-route stats (SPEC §3) against real HAProxy, real backends and real HTTP clients.

Counts are compared as differences from a reading taken before the traffic of each test, since
the node is shared by the module and health checks settle the routes first. The restart test
runs last: it kills the node's HAProxy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Backends, Node, count_served, free_port, quote
from tests.integration.test_routing import gateway, settle, wait_until

pytestmark = pytest.mark.integration
# Health checks that a busy machine does not fail: an instance marked down in the middle of a
# test would turn a request into a 503 and spoil an exact count.
TOLERANT_CHECK = {"type": "tcp", "interval": "1s", "rise": 1, "fall": 5}
T = TypeVar("T")


def service(name: str, *ports: int) -> dict[str, Any]:
    instances = [f"127.0.0.1:{port}" for port in ports]
    return {"kind": "service", "name": name, "instances": instances, "health_check": TOLERANT_CHECK}


def stats(node: Node, name: str) -> dict[str, Any]:
    response = node.api.get(f"/api/v1/gateways/{quote(name)}/stats")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def requests_by_route(node: Node, name: str) -> dict[str, int]:
    return {route: r["requests"] for route, r in stats(node, name)["routes"].items()}


def steady(read: Callable[[], T], hold_s: float = 1.0, timeout: float = 10.0) -> T:
    """What `read` returns once it has held still for `hold_s`. The API may answer from a
    reading up to max(0.25 s, 20 polls' duration) old, so after traffic stops, one read may
    still miss the last requests."""
    value, since = read(), time.monotonic()
    deadline = since + timeout
    while time.monotonic() - since < hold_s and time.monotonic() < deadline:
        time.sleep(0.1)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
    return value


def baseline(node: Node, name: str) -> dict[str, int]:
    """Request counts once every request answered so far is in them."""
    return steady(lambda: requests_by_route(node, name))


def wait_for(node: Node, name: str, expected: dict[str, int], timeout: float = 5.0) -> None:
    """Until the per-route request counts are exactly `expected` (each poll is fresh within a
    fraction of a second; the last request may be counted a moment after its answer)."""
    try:
        wait_until(lambda: requests_by_route(node, name) == expected, timeout)
    except TimeoutError:
        assert requests_by_route(node, name) == expected


@pytest.fixture(scope="module")
def split(node: Node) -> dict[str, Any]:
    """A 50/50 gateway over two backends called one and two, its routes settled."""
    pool = Backends()
    one, two = pool.start("one"), pool.start("two")
    port = free_port()
    node.apply(
        service("stats:one", one),
        service("stats:two", two),
        gateway("stats", port, {"stats:one": {"weight": 50}, "stats:two": {"weight": 50}}),
    )
    url = f"http://127.0.0.1:{port}/"
    settle(url, {"one", "two"})
    yield {"url": url, "port": port}
    pool.stop_all()


def test_route_counts_equal_what_each_backend_answered(node: Node, split: dict[str, Any]) -> None:
    before = baseline(node, "stats")
    served = count_served(split["url"], 120)
    assert set(served) == {"one", "two"}, served
    wait_for(
        node,
        "stats",
        {
            "stats:one": before["stats:one"] + served["one"],
            "stats:two": before["stats:two"] + served["two"],
        },
    )
    route = stats(node, "stats")["routes"]["stats:one"]
    instance = route["instances"][0]
    assert (instance["status"], instance["requests"]) == ("UP", route["requests"])
    assert route["bytes_in"] > 0 and route["bytes_out"] > 0


def test_responses_are_counted_by_class(node: Node, backends: Backends) -> None:
    port = free_port()
    node.apply(service("codes", backends.start("codes")), gateway("codes", port, {"codes": {}}))
    url = f"http://127.0.0.1:{port}/"
    settle(url, {"codes"})
    before = steady(lambda: stats(node, "codes")["routes"]["codes"]["responses"])
    assert count_served(url + "?status=503", 5) == {"503": 5}
    assert count_served(url + "?status=404", 3) == {"404": 3}
    assert count_served(url + "?status=302", 2) == {"302": 2}

    def counted() -> dict[str, int]:
        now = stats(node, "codes")["routes"]["codes"]["responses"]
        return {cls: now[cls] - before[cls] for cls in now}

    expected = {"1xx": 0, "2xx": 0, "3xx": 2, "4xx": 3, "5xx": 5}
    try:
        wait_until(lambda: counted() == expected, 5)
    except TimeoutError:
        assert counted() == expected


def test_a_slow_backend_shows_in_the_percentiles(node: Node, backends: Backends) -> None:
    port = free_port()
    routes = {
        "lat:fast": {"weight": 100},
        "lat:slow": {"weight": 0, "condition": "has query delay"},
    }
    node.apply(
        service("lat:fast", backends.start("fast")),
        service("lat:slow", backends.start("slow")),
        gateway("lat", port, routes),
    )
    url = f"http://127.0.0.1:{port}/"
    settle(url, {"fast"})
    assert count_served(url + "?delay=200", 12) == {"slow": 12}
    assert count_served(url, 30) == {"fast": 30}

    def latencies() -> dict[str, Any]:
        routes = stats(node, "lat")["routes"]
        return {name: route["latency_ms"] for name, route in routes.items()}

    wait_until(lambda: latencies()["lat:slow"]["p50"] is not None, 5)
    # The request log arrives a little after the responses. A line can be lost when an old
    # worker, still in its grace period after this test's reload, served the request: 2.6
    # stops forwarding a stopping worker's log ring (counts come from `show stat`, exact).
    wait_until(lambda: stats(node, "lat")["routes"]["lat:slow"]["sampling"]["samples"] >= 10, 5)
    slow = stats(node, "lat")["routes"]["lat:slow"]
    assert slow["latency_ms"]["p50"] >= 200, slow
    assert slow["latency_ms"]["p99"] >= 200, slow
    assert slow["response_ms"]["p50"] >= 200, slow
    assert slow["instances"][0]["latency_ms"]["p50"] >= 200, slow
    assert 10 <= slow["sampling"]["samples"] <= 12
    assert slow["requests"] == 12
    fast = stats(node, "lat")["routes"]["lat:fast"]["latency_ms"]
    assert fast["p50"] is not None and fast["p50"] < 50, fast
    assert fast["p99"] < slow["latency_ms"]["p50"], fast


def test_unknown_gateway_is_404(node: Node) -> None:
    assert node.api.get("/api/v1/gateways/nothing-here/stats").status_code == 404
    other = node.api.get("/api/v1/gateways/stats/stats", params={"namespace": "elsewhere"})
    assert other.status_code == 404


def test_metrics_parse_and_carry_the_labels(node: Node, split: dict[str, Any]) -> None:
    count_served(split["url"], 10)
    text = node.api.get("/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    routes = {
        sample.labels["route"]: sample.value
        for sample in families["meshgate_route_requests"].samples
        if sample.labels.get("gateway") == "stats" and sample.labels["namespace"] == "default"
    }
    assert set(routes) == {"stats:one", "stats:two"}
    assert sum(routes.values()) >= 10
    instances = [
        sample.labels
        for sample in families["meshgate_instance_requests"].samples
        if sample.labels["gateway"] == "stats"
    ]
    assert {labels["server"] for labels in instances} and all(
        set(labels) == {"namespace", "gateway", "route", "server"} for labels in instances
    )
    latency = families["meshgate_route_latency_seconds"]
    assert latency.type == "histogram"
    assert any(s.labels.get("le") == "+Inf" for s in latency.samples)
    assert "meshgate_reconciles" in families  # the control plane's own are still there
    assert "meshgate_haproxy_old_workers" in families


def test_cli_prints_a_table_per_gateway(node: Node, split: dict[str, Any]) -> None:
    command = [sys.executable, "-m", "meshgate", "--server", node.url, "stats"]
    one = subprocess.run([*command, "stats"], capture_output=True, text=True, timeout=30)
    assert one.returncode == 0, one.stderr
    lines = one.stdout.splitlines()
    assert lines[0] == "gateway default/stats"
    assert lines[1].split()[:3] == ["ROUTE", "RATE/S", "REQUESTS"]
    assert {line.split()[0] for line in lines[2:]} == {"stats:one", "stats:two"}
    every = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert every.returncode == 0, every.stderr
    assert "gateway default/stats" in every.stdout and "gateway default/lat" in every.stdout


def test_access_log_has_a_json_object_per_request(
    make_node: Callable[..., Node], backends: Backends, tmp_path: Path
) -> None:
    log = tmp_path / "access.jsonl"
    node = make_node("--access-log", str(log))
    port = free_port()
    node.apply(service("logged", backends.start("logged")), gateway("logged", port, {"logged": {}}))
    url = f"http://127.0.0.1:{port}"
    settle(url + "/", {"logged"})

    def entries() -> list[dict[str, Any]]:
        text = log.read_text() if log.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    def logged() -> bool:
        # Asked again until logged: a worker still finishing after a reload may have served it,
        # and HAProxy 2.6 stops forwarding a stopping worker's lines.
        httpx.get(url + "/some/path?status=404", timeout=5)
        return any(e["path"] == "/some/path" for e in entries())

    wait_until(logged, 5)
    entry = next(e for e in entries() if e["path"] == "/some/path")
    assert (entry["gateway"], entry["route"], entry["status"], entry["method"]) == (
        "logged", "logged", 404, "GET",
    )  # fmt: skip
    assert entry["instance"] and entry["client"] == "127.0.0.1" and entry["total_ms"] >= 0


def test_counters_do_not_go_backwards_across_a_reload(node: Node, split: dict[str, Any]) -> None:
    count_served(split["url"], 20)
    before = baseline(node, "stats")
    _, workers = node.haproxy_pids()
    # A new port needs a new listener, which only a reload brings.
    node.apply(gateway("stats-reload", free_port(), {"[127.0.0.1:1]": {}}))
    wait_until(lambda: node.haproxy_pids()[1] != workers, 10)
    after = baseline(node, "stats")
    assert all(after[route] >= before[route] for route in before), (before, after)
    served = count_served(split["url"], 24)
    wait_for(
        node,
        "stats",
        {route: after[route] + served[route.split(":")[1]] for route in after},
    )


def reloads(node: Node) -> float:
    families = text_string_to_metric_families(node.api.get("/metrics").text)
    family = next(f for f in families if f.name == "meshgate_haproxy_reloads")
    return sum(s.value for s in family.samples if s.name.endswith("_total"))


def test_counters_do_not_go_backwards_across_a_haproxy_restart(
    node: Node, split: dict[str, Any]
) -> None:
    count_served(split["url"], 20)
    before = baseline(node, "stats")
    reloaded = reloads(node)
    master, _ = node.haproxy_pids()
    os.kill(master, signal.SIGKILL)
    # The supervisor brings HAProxy back; the stats API keeps answering meanwhile.
    wait_until(lambda: node.haproxy_pids()[0] != master, 15)
    assert all(v >= before[k] for k, v in requests_by_route(node, "stats").items())
    # Then the agent reloads it with what was changed at run time since: wait for that too, so
    # that the exact count below does not straddle a reload (see StatsCollector).
    wait_until(lambda: reloads(node) > reloaded, 15)
    wait_until(lambda: httpx.get(split["url"], timeout=2).status_code == 200, 15)
    # The probe above is one more request: read once it is surely counted.
    settled = baseline(node, "stats")
    assert all(settled[route] >= before[route] for route in before), (before, settled)
    served = count_served(split["url"], 24)
    wait_for(
        node,
        "stats",
        {route: settled[route] + served[route.split(":")[1]] for route in settled},
    )
