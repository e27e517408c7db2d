"""The dependency graph over many nodes (SPEC §6): each agent records who calls its gateways,
and a server's `GET /api/v1/graph` merges every agent's records, resolving callers to services,
nodes and `external`. Agents on 127.0.0.11 and .12 stand in for hosts."""

from __future__ import annotations

import time

import pytest

from tests.integration.cluster_helpers import served_by, wait_for
from tests.integration.conftest import Backends, free_port
from tests.integration.flow_helpers import PacedClient, caller_edges, node_kinds
from tests.integration.test_many_nodes import (  # noqa: F401 - fixtures
    Mesh,
    etcd,
    mesh,
    ready,
    store,
)
from tests.integration.test_routing import gateway, service

pytestmark = pytest.mark.integration


def test_the_server_graph_merges_every_agents_callers(
    mesh: Mesh,  # noqa: F811 - the fixture
    backends: Backends,
) -> None:
    server = mesh.server()
    mesh.agent("a", "127.0.0.11", "--metrics", f"127.0.0.11:{free_port()}")
    mesh.agent("b", "127.0.0.12", "--metrics", f"127.0.0.12:{free_port()}")
    wait_for(lambda: ready(server, "a", "b"), 20, lambda: str(server.nodes()))
    v1, v2 = backends.start("v1"), backends.start("v2")
    port = free_port()
    server.apply(
        service("b:v1", v1),
        service("b:v2", v2),
        {"kind": "service", "name": "a", "instances": ["127.0.0.21:8000"]},
        gateway("b", port, {"b:v1": {"weight": 70}, "b:v2": {"weight": 30}}),
    )
    server.wait_applied("gateways", "b", {"a", "b"})
    for address in ("127.0.0.11", "127.0.0.12"):
        wait_for(lambda a=address: served_by(f"http://{a}:{port}/") in ("v1", "v2"), 15)
    time.sleep(5.5)  # the settling requests fall into an older bucket than the window
    # Service A (127.0.0.21) calls B through its node's agent (a); on node b, a client no
    # instance has (external) and node a itself (its address) call the same gateway.
    senders = [
        PacedClient(f"http://127.0.0.11:{port}/", "127.0.0.21", 20.0),
        PacedClient(f"http://127.0.0.12:{port}/", "127.0.0.40", 10.0),
        PacedClient(f"http://127.0.0.12:{port}/", "127.0.0.11", 6.0),
    ]
    for sender in senders:
        sender.__enter__()
    try:
        time.sleep(12)
        response = server.api.get("/api/v1/graph", params={"window": "10s"})
        achieved = [s.achieved() for s in senders]
    finally:
        for sender in senders:
            sender.__exit__()
    assert response.status_code == 200, response.text
    graph = response.json()
    assert graph["flows"] is True and "unreachable" not in graph, graph
    gateway_id = "gateway:default/b"
    callers = caller_edges(graph, gateway_id)
    kinds = node_kinds(graph)
    expected = {
        "service:default/a": achieved[0],
        "external:default/external": achieved[1],
        "node:a": achieved[2],
    }
    assert set(callers) == set(expected), callers
    assert (kinds["service:default/a"], kinds["node:a"]) == ("service", "node")
    for caller, sent in expected.items():
        assert callers[caller]["rate"] == pytest.approx(sent, rel=0.10), (caller, callers)
    # A -> gateway -> B v1 / B v2: the configuration's weights, both nodes' traffic.
    routes = {e["route"]: e for e in graph["edges"] if e["source"] == gateway_id}
    assert routes["b:v1"]["target"] == "service:default/b:v1"
    assert {r: e["weight"] for r, e in routes.items()} == {"b:v1": 70, "b:v2": 30}
    total = sum(achieved)
    assert routes["b:v1"]["rate"] + routes["b:v2"]["rate"] == pytest.approx(total, rel=0.10)
    assert routes["b:v1"]["rate"] == pytest.approx(0.7 * total, rel=0.2)
    # Each agent's own record, as the server read it.
    node_a = server.nodes()["a"]
    assert node_a["status"] == "Ready"
