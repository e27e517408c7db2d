"""Who calls which gateway on one `meshgate up` (SPEC §6), against real HAProxy and real
clients: callers sending from distinct loopback addresses registered as instances of services
show as those services, an unregistered address as `external`, each with the rate it sent."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from tests.integration.conftest import Backends, Node, free_port
from tests.integration.flow_helpers import PacedClient, caller_edges, node_kinds
from tests.integration.test_routing import gateway, settle
from tests.integration.test_stats import service

pytestmark = pytest.mark.integration


def caller_service(name: str, address: str) -> dict[str, object]:
    """A service whose instance lives at `address`: its requests come from there. Nothing
    routes to it, so it is never checked."""
    return {"kind": "service", "name": name, "instances": [f"{address}:8000"]}


def test_graph_shows_each_caller_with_the_rate_it_sent(
    make_node: Callable[..., Node], backends: Backends
) -> None:
    node = make_node()
    v1, v2 = backends.start("v1"), backends.start("v2")
    port = free_port()
    node.apply(
        service("api:v1", v1),
        service("api:v2", v2),
        caller_service("web", "127.0.0.21"),
        caller_service("batch", "127.0.0.22"),
        gateway("api", port, {"api:v1": {"weight": 80}, "api:v2": {"weight": 20}}),
    )
    url = f"http://127.0.0.1:{port}/"
    settle(url, {"v1", "v2"})
    time.sleep(5.5)  # the settling requests fall into an older bucket than the window
    rates = {"127.0.0.21": 30.0, "127.0.0.22": 15.0, "127.0.0.40": 8.0}
    clients = [PacedClient(url, source, rate) for source, rate in rates.items()]
    for client in clients:
        client.__enter__()
    try:
        time.sleep(12)
        response = node.api.get("/api/v1/graph", params={"window": "10s"})
        achieved = {c.source: c.achieved() for c in clients}
    finally:
        for client in clients:
            client.__exit__()
    assert response.status_code == 200, response.text
    graph = response.json()
    assert graph["flows"] is True and graph["window_s"] == 10
    assert all(c.failed == 0 for c in clients)
    gateway_id = "gateway:default/api"
    callers = caller_edges(graph, gateway_id)
    kinds = node_kinds(graph)
    expected = {
        "service:default/web": achieved["127.0.0.21"],
        "service:default/batch": achieved["127.0.0.22"],
        "external:default/external": achieved["127.0.0.40"],
    }
    assert set(callers) == set(expected), callers
    assert kinds["service:default/web"] == kinds["service:default/batch"] == "service"
    assert kinds["external:default/external"] == "external"
    for caller, sent in expected.items():
        edge = callers[caller]
        assert edge["rate"] == pytest.approx(sent, rel=0.10), (caller, edge, sent)
        assert edge["error_ratio"] == 0 and edge["p99_ms"] is not None
    # The configuration's edges carry the routes' figures over the same window.
    routes = {e["route"]: e for e in graph["edges"] if e["source"] == gateway_id}
    assert {r: e["weight"] for r, e in routes.items()} == {"api:v1": 80, "api:v2": 20}
    total = sum(achieved.values())
    assert routes["api:v1"]["rate"] + routes["api:v2"]["rate"] == pytest.approx(total, rel=0.10)
    assert routes["api:v1"]["rate"] == pytest.approx(0.8 * total, rel=0.15)

    # `meshgate graph`: the same graph as a tree, as DOT and as JSON.
    def cli(*args: str) -> str:
        command = [sys.executable, "-m", "meshgate", "--server", node.url, "graph", *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    text = cli("--window", "30s")
    assert "gateway default/api" in text and "service web" in text and "external" in text
    assert "api:v1  80%  → service api:v1" in text
    assert '"service:default/web" -> "gateway:default/api"' in cli("-o", "dot")
    listed = json.loads(cli("-o", "json", "-n", "default"))
    assert {n["id"] for n in listed["nodes"]} >= set(expected)
    refused = subprocess.run(
        [sys.executable, "-m", "meshgate", "--server", node.url, "graph", "--window", "1d"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 1 and "window: must be from 1s to 300s" in refused.stderr


def test_graph_window_is_validated(make_node: Callable[..., Node]) -> None:
    node = make_node()
    for value, reason in [
        ("soon", "not a duration"),
        ("0s", "shorter than one millisecond"),
        ("500ms", "from 1s to 300s"),
        ("10m", "from 1s to 300s"),
    ]:
        response = node.api.get("/api/v1/graph", params={"window": value})
        assert response.status_code == 422, (value, response.text)
        [error] = response.json()["errors"]
        assert error["path"] == "window" and reason in error["message"], (value, error)
    response = node.api.get("/api/v1/flows", params={"window": "1h"})
    assert response.status_code == 422 and response.json()["errors"][0]["path"] == "window"
    assert node.api.get("/api/v1/graph", params={"window": "5m"}).status_code == 200


def test_without_flows_one_external_edge_carries_the_traffic(
    make_node: Callable[..., Node], backends: Backends
) -> None:
    node = make_node("--no-flows")
    v1 = backends.start("v1")
    port = free_port()
    node.apply(service("api:v1", v1), gateway("api", port, {"api:v1": {"weight": 100}}))
    url = f"http://127.0.0.1:{port}/"
    settle(url, {"v1"})
    assert node.api.get("/api/v1/flows").json() == {
        "window_s": 0.0, "gateways": [], "recording": False,
    }  # fmt: skip
    config = (node.data_dir / "run" / "haproxy.cfg").read_text()
    assert "%ci" not in config  # HAProxy formats no client address
    graph = node.api.get("/api/v1/graph").json()
    assert graph["flows"] is False
    callers = caller_edges(graph, "gateway:default/api")
    assert set(callers) == {"external:default/external"}
    assert callers["external:default/external"]["requests"] > 0
