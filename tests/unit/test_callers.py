"""Callers from client addresses, the graph's caller edges, and the graph as text."""

from __future__ import annotations

from typing import Any

import pytest

from meshgate.api.flows import parse_window
from meshgate.callers import CallerIndex, Endpoint, canonical
from meshgate.cli.graph_text import dot, tree
from meshgate.errors import ValidationFailed
from meshgate.flowgraph import graph_figures
from meshgate.model import Gateway, Service, validate_resource
from meshgate.stats.flowview import merge_flows
from meshgate.topology import build_graph

INDEX = CallerIndex(
    [
        Endpoint("default", "web", "127.0.0.21"),
        Endpoint("default", "shared-a", "10.0.0.5"),
        Endpoint("default", "shared-b", "10.0.0.5"),
        Endpoint("other", "batch", "10.0.0.9"),
        Endpoint("default", "api:v1", "10.0.0.30"),
        Endpoint("default", "sidecar", "127.0.0.1", node="a"),
        Endpoint("default", "by-name", "backend.example"),
        Endpoint("default", "on-c", "192.168.1.12"),
        Endpoint("default", "placed", "10.1.1.1", node="d"),
    ],
    nodes={"a": "192.168.1.10", "b": "192.168.1.11", "c": "192.168.1.12"},
)


@pytest.mark.parametrize(
    ("client", "node", "expected"),
    [
        ("127.0.0.21", "a", "service:default/web"),
        ("::ffff:127.0.0.21", None, "service:default/web"),  # IPv4 mapped into IPv6
        ("10.0.0.9", "a", "service:other/batch"),  # another namespace's, when the only one
        ("10.0.0.5", "a", "external:default/external"),  # two services: neither
        ("10.0.0.30", "a", "external:default/external"),  # the gateway's own target
        ("192.168.1.11", "a", "node:b"),  # a node's address
        ("127.0.0.1", "a", "service:default/sidecar"),  # local: instances on that node
        ("127.0.0.1", "b", "node:b"),  # local, no instance there: the node itself
        ("127.0.0.1", "c", "service:default/on-c"),  # local: an instance at the node's address
        ("127.0.0.1", "d", "service:default/placed"),  # local: an instance placed on the node
        ("127.0.0.1", None, "service:default/sidecar"),  # one node of its own (`up`)
        ("127.0.0.40", "a", "external:default/external"),  # other loopback: a host
        ("203.0.113.7", "a", "external:default/external"),
        ("other", "a", "external:default/other"),  # beyond the flow book's table
        ("unix", "a", "external:default/external"),
    ],
)
def test_a_client_address_is_a_service_a_node_or_external(
    client: str, node: str | None, expected: str
) -> None:
    caller = INDEX.resolve(client, namespace="default", node=node, targets=frozenset({"api:v1"}))
    assert caller.id == expected


def test_the_namespace_of_the_gateway_is_preferred() -> None:
    index = CallerIndex([Endpoint("default", "web", "10.0.0.1"), Endpoint("x", "web", "10.0.0.1")])
    assert index.resolve("10.0.0.1", namespace="x").id == "service:x/web"
    assert index.resolve("10.0.0.1", namespace="y").id == "external:y/external"  # ambiguous


def test_canonical_addresses() -> None:
    assert canonical("[::1]") == "::1" and canonical("::ffff:10.0.0.1") == "10.0.0.1"
    assert canonical("host.example") is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [("soon", "not a duration"), ("500ms", "from 1s"), ("301s", "from 1s"), ("", "duration")],
)
def test_a_bad_window_names_the_parameter(value: str, reason: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_window(value)
    [problem] = caught.value.problems
    assert problem.path == "window" and reason in problem.message


def test_windows_in_range() -> None:
    assert (parse_window("1s"), parse_window("60s"), parse_window("5m")) == (1.0, 60.0, 300.0)


def gateway(document: dict[str, Any]) -> Gateway:
    found = validate_resource(document)
    assert isinstance(found, Gateway)
    return found


def service(name: str, address: str = "127.0.0.1") -> Service:
    found = validate_resource({"kind": "service", "name": name, "instances": [f"{address}:1"]})
    assert isinstance(found, Service)
    return found


def figures(requests: int, rate: float, errors: float = 0.0) -> dict[str, Any]:
    return {
        "requests": requests,
        "rate": rate,
        "errors": errors,
        "latency_histogram": {"buckets": {"5": requests}, "count": requests, "sum": 0, "max": 5},
    }


EDGE = gateway({"name": "edge", "port": 80, "routes": {"api": {"weight": 100}}})
API = gateway({"name": "api", "port": 81, "routes": {"v1": {"weight": 90}, "v2": {"weight": 10}}})


def test_callers_resolved_and_a_chained_gateways_traffic_taken_off_the_local_caller() -> None:
    documents = {
        "a": {
            "gateways": [
                {
                    "namespace": "default",
                    "gateway": "edge",
                    "routes": {"api": figures(40, 4.0)},
                    "callers": {"127.0.0.21": figures(40, 4.0)},
                },
                {
                    "namespace": "default",
                    "gateway": "api",
                    "routes": {"v1": figures(90, 9.0, 9), "v2": figures(10, 1.0)},
                    # 40 from the edge gateway (HAProxy itself, from 127.0.0.1), 10 local
                    "callers": {"127.0.0.1": figures(50, 5.0), "10.9.9.9": figures(50, 5.0)},
                },
            ]
        }
    }
    index = CallerIndex([Endpoint("default", "web", "127.0.0.21")], {"a": "10.0.0.1"})
    services = [service("v1"), service("v2"), service("web", "127.0.0.21")]
    known = {(s.namespace, s.name) for s in services}
    stats, callers = graph_figures(merge_flows(documents), [EDGE, API], index, known)
    assert [(c.id, f["requests"]) for c, f in callers[("default", "edge")]] == [
        ("service:default/web", 40)
    ]
    assert [(c.id, f["requests"]) for c, f in callers[("default", "api")]] == [
        ("external:default/external", 50),
        ("node:a", 10),
    ]
    graph = build_graph([EDGE, API], services, stats, callers)
    edges = {(e["source"], e["target"]): e for e in graph["edges"]}
    assert edges[("gateway:default/api", "service:default/v1")]["error_ratio"] == 0.1
    assert edges[("gateway:default/edge", "gateway:default/api")]["rate"] == 4.0
    assert edges[("service:default/web", "gateway:default/edge")]["p99_ms"] == 5
    assert edges[("node:a", "gateway:default/api")]["rate"] == 1.0
    kinds = {n["id"]: n["kind"] for n in graph["nodes"]}
    assert kinds["node:a"] == "node" and kinds["external:default/external"] == "external"

    text = tree(graph)
    assert "gateway default/api  :81/http" in text
    assert "service web  4.0/s  errors 0.0%  p99 5ms" in text
    assert "v1  90%  → service v1  9.0/s  errors 10.0%  p99 5ms" in text
    graphviz = dot(graph)
    assert graphviz.startswith("digraph meshgate {") and graphviz.endswith("}")
    assert '"service:default/web" -> "gateway:default/edge"' in graphviz
    assert 'label="v1 90%\\n9.0/s  errors 10.0%  p99 5ms"' in graphviz


def test_a_gateway_without_traffic_has_no_caller_edges_but_its_configuration() -> None:
    stats, callers = graph_figures({}, [API], CallerIndex([]))
    graph = build_graph([API], [], stats, callers)
    assert [e["route"] for e in graph["edges"]] == ["v1", "v2"]
    assert "(no traffic)" in tree(graph)
    # Without flows recorded (None), one external edge carries the gateway's traffic.
    assert any(
        e["source"] == "external:default/external" for e in build_graph([API], [], {})["edges"]
    )
