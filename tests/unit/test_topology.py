"""The dependency and traffic graph from the configuration and the stats."""

from __future__ import annotations

from typing import Any

from meshgate.model import Gateway, Service, validate_resource
from meshgate.topology import build_graph


def gateway(document: dict[str, Any]) -> Gateway:
    found = validate_resource(document)
    assert isinstance(found, Gateway)
    return found


def service(name: str) -> Service:
    found = validate_resource({"kind": "service", "name": name, "instances": ["127.0.0.1:1"]})
    assert isinstance(found, Service)
    return found


def test_configuration_edges_carry_weights_even_without_traffic() -> None:
    edge_gw = gateway({"name": "edge", "port": 80, "routes": {"api": {"weight": 100}}})
    api = gateway(
        {
            "name": "api",
            "port": 81,
            "routes": {"v1": {"weight": 90}, "v2": {"weight": 10}, "[127.0.0.1:9]": {"weight": 0}},
        }
    )
    graph = build_graph([edge_gw, api], [service("v1")], {})
    kinds = {node["id"]: node["kind"] for node in graph["nodes"]}
    assert kinds == {
        "service:default/v1": "service",
        "gateway:default/edge": "gateway",
        "gateway:default/api": "gateway",  # the edge gateway's route chains to it
        "service:default/v2": "service",
        "address:default/[127.0.0.1:9]": "address",
        "external:default/external": "external",
    }
    unresolved = [n["name"] for n in graph["nodes"] if n.get("unresolved")]
    assert unresolved == ["v2"]
    routes = {(e["source"], e["route"]): (e["target"], e["weight"]) for e in graph["edges"]}
    assert routes["gateway:default/edge", "api"] == ("gateway:default/api", 100)
    assert routes["gateway:default/api", "v2"] == ("service:default/v2", 10)
    assert routes["external:default/external", None] == ("gateway:default/api", None)


def test_traffic_figures_come_from_the_routes_stats() -> None:
    api = gateway({"name": "api", "port": 81, "routes": {"v1": {"weight": 50}, "v2": {}}})
    stats = {
        ("default", "api"): {
            "routes": {
                "v1": {
                    "requests": 100,
                    "rate": 2.5,
                    "responses": {"5xx": 5},
                    "latency_ms": {"p99": 40},
                },
                "v2": {
                    "requests": 300,
                    "rate": 7.5,
                    "responses": {"5xx": 0},
                    "latency_ms": {"p99": 12},
                },
            }
        }
    }
    graph = build_graph([api], [service("v1"), service("v2")], stats)
    by_route = {e["route"]: e for e in graph["edges"]}
    assert (by_route["v1"]["rate"], by_route["v1"]["error_ratio"], by_route["v1"]["p99_ms"]) == (
        2.5, 0.05, 40,
    )  # fmt: skip
    caller = by_route[None]
    assert (caller["rate"], caller["error_ratio"], caller["requests"]) == (10.0, 0.0125, 400)
    assert caller["p99_ms"] == 40
