"""Many nodes, the pure parts: names and labels, placement, and status merged across nodes."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from meshgate.agent.desired import Placement
from meshgate.cli import main
from meshgate.errors import ValidationFailed
from meshgate.model import Gateway, validate_resource
from meshgate.nodes.keys import check_node_name, node_status_key, parse_label
from meshgate.nodes.readings import added, reading_from_json, reading_to_json
from meshgate.nodes.stats import merge_gateway_stats
from meshgate.nodes.view import merged_status, node_view
from meshgate.rollouts.readings import Reading
from meshgate.stats.histogram import BUCKETS, Histogram, from_sparse, summary, to_sparse
from meshgate.store import Key


def gateway(**extra: Any) -> Gateway:
    found = validate_resource({"kind": "gateway", "name": "gw", "port": "8080/http", **extra})
    assert isinstance(found, Gateway)
    return found


def test_node_names_and_labels() -> None:
    assert check_node_name("edge-1") == "edge-1"
    for bad in ("", "Edge", "-a", "a-", "a.b", "a/b", "x" * 64):
        with pytest.raises(ValueError, match="is not a node name"):
            check_node_name(bad)
    assert parse_label("zone=eu-1") == ("zone", "eu-1")
    assert parse_label("empty=") == ("empty", "")
    for bad, message in [
        ("novalue", "is not KEY=VALUE"),
        ("=x", "label key"),
        ("k=a b", "value"),
        ("k=a\nfrontend x", "value"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_label(bad)


def test_per_node_status_keys_sort_after_every_resource_kind() -> None:
    """An agent's watch spans the resource kinds' keys only: no other node's reports."""
    key = node_status_key("a", Key("gateways", "default", "gw"))
    assert key == Key("status.node.a.gateways", "default", "gw")
    assert all(key.kind > kind for kind in ("certificates", "gateways", "instances", "services"))


def test_placement_by_labels_and_the_node_address() -> None:
    node = Placement({"zone": "a", "node": "n1"}, "127.0.0.11")
    placed = node.place(gateway())
    assert placed is not None and placed.bind == "127.0.0.11"
    assert node.place(gateway(nodes={"zone": "a"})) is not None
    assert node.place(gateway(nodes={"zone": "b"})) is None
    assert node.place(gateway(nodes={"zone": "a", "disk": "ssd"})) is None
    explicit = node.place(gateway(bind="127.0.0.99"))
    assert explicit is not None and explicit.bind == "127.0.0.99"
    anywhere = Placement({"node": "n1"}).place(gateway())
    assert anywhere is not None and anywhere.bind == "0.0.0.0"


def test_bad_node_selectors_are_refused_with_the_field() -> None:
    with pytest.raises(ValidationFailed) as failed:
        validate_resource(
            {"kind": "gateway", "name": "gw", "port": "8080/http", "nodes": {"zone": "a\nb"}}
        )
    assert failed.value.problems[0].path.startswith("nodes")


def test_applied_only_when_every_ready_node_runs_the_version() -> None:
    serving = {"applied_version": 7, "state": "serving", "errors": [], "routes": {"r": 1}}
    behind = {**serving, "applied_version": 5}
    refused = {"applied_version": 5, "state": "rejected", "errors": ["HAProxy rejected it: x"]}
    both = merged_status({"a": serving, "b": serving}, ready={"a", "b"})
    assert both["applied_version"] == 7 and both["routes"] == {"r": 1}
    assert both["nodes"]["b"] == {"version": 7, "state": "serving", "error": None}
    assert merged_status({"a": serving, "b": behind}, ready={"a", "b"})["applied_version"] is None
    # A node that is down is shown, but does not hold the others' work back.
    assert merged_status({"a": serving, "b": behind}, ready={"a"})["applied_version"] == 7
    mixed = merged_status({"a": serving, "b": refused}, ready={"a", "b"})
    assert mixed["applied_version"] is None
    assert mixed["nodes"]["b"] == {
        "version": 5,
        "state": "rejected",
        "error": "HAProxy rejected it: x",
    }
    assert merged_status({}, ready=set()) == {}
    service = {"applied_version": 3, "instances": [{"id": "i1", "status": "UP"}]}
    down = {"applied_version": 3, "instances": [{"id": "i1", "status": "DOWN"}]}
    health = merged_status({"a": service, "b": down}, ready={"a", "b"})["nodes"]
    assert (health["a"]["instances"], health["b"]["instances"]) == ({"i1": "UP"}, {"i1": "DOWN"})


def test_node_view() -> None:
    record = {"name": "a", "address": "10.0.0.1", "labels": {"node": "a"}, "versions": {}}
    alive = node_view(record, {"heartbeat": 1.0, "applied_revision": 9}, {})
    assert (alive["status"], alive["applied_revision"]) == ("Ready", 9)
    dead = node_view(record, None, {})
    assert (dead["status"], dead["applied_revision"], dead["heartbeat"]) == ("NotReady", None, None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--node", "Bad_Name"], "is not a node name"),
        (["--node", "a", "--address", "nowhere"], "is not an IP address"),
        (["--node", "a", "--label", "zone"], "is not KEY=VALUE"),
        (["--node", "a", "--label", "node=b"], "'node' is every node's own name"),
        (["--node", "a", "--metrics", "host:x"], "is not HOST:PORT"),
    ],
)
def test_agent_options_are_checked(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["agent", "--store", "etcd://127.0.0.1:1", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_store_url_errors_exit_1() -> None:
    result = CliRunner().invoke(main, ["server", "--store", "127.0.0.1:2379"])
    assert result.exit_code == 1
    assert "--store: expected etcd://" in result.output


def node_stats(requests: int, latencies: list[int], status: str = "UP") -> dict[str, Any]:
    histogram = Histogram()
    for ms in latencies:
        histogram.record(ms)
    return {
        "routes": {
            "svc": {
                "requests": requests,
                "rate": 1.5,
                "responses": {"2xx": requests - 1, "5xx": 1},
                "active": 1,
                "bytes_in": 10,
                "bytes_out": 100,
                "latency_ms": summary(histogram),
                "latency_histogram": to_sparse(histogram),
                "instances": [
                    {"id": "i1", "address": "10.0.0.1", "port": 80, "requests": requests,
                     "status": status},
                ],
            }
        }
    }  # fmt: skip


def test_stats_across_nodes_add_up_and_merge_percentiles() -> None:
    fast, slow = [1] * 90, [100] * 10
    merged = merge_gateway_stats(
        "default", "gw", {"a": node_stats(90, fast), "b": node_stats(10, slow, "DOWN")}
    )
    route = merged["routes"]["svc"]
    assert (route["requests"], route["bytes_out"], route["active"]) == (100, 200, 2)
    assert route["responses"] == {"2xx": 98, "5xx": 2}
    assert route["rate"] == 3.0
    # From the merged histogram: p50 is 1 ms, p99 100 ms. Averaging the nodes' p99 (1 and
    # 100) would say about 50.
    assert (route["latency_ms"]["p50"], route["latency_ms"]["p99"]) == (1, 100)
    assert route["latency_ms"]["avg"] == round((90 * 1 + 10 * 100) / 100, 1)
    (instance,) = route["instances"]
    assert instance["requests"] == 100
    assert (instance["status"], instance["nodes"]) == ("DOWN", {"a": "UP", "b": "DOWN"})
    assert merged["nodes"]["a"]["svc"]["requests"] == 90
    assert "latency_histogram" not in merged["nodes"]["a"]["svc"]


def test_histograms_travel_as_sparse_json() -> None:
    histogram = Histogram()
    for ms in (0, 3, 3, 250, 200_000):
        histogram.record(ms)
    back = from_sparse(to_sparse(histogram))
    assert (back.counts, back.count, back.sum, back.max) == (
        histogram.counts,
        histogram.count,
        histogram.sum,
        histogram.max,
    )
    for bad in (None, {"buckets": {"-1": 1}, "sum": 0, "max": 0}, {"buckets": {"0": "x"}}):
        with pytest.raises(ValueError):
            from_sparse(bad)


def test_readings_of_nodes_add_up() -> None:
    one = Reading(10, 1, (1, 2) + (0,) * (BUCKETS - 2), (0, 9, 0, 0, 1))
    two = Reading(5, 0, (0, 3) + (0,) * (BUCKETS - 2), (0, 5, 0, 0, 0))
    total = added([reading_from_json(reading_to_json(one)), two])
    assert (total.requests, total.errors) == (15, 1)
    assert total.latency[:3] == (1, 5, 0)
    assert total.responses == (0, 14, 0, 0, 1)
