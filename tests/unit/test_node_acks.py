"""What a node reports it applied and refused (ACK/NACK), and how `get nodes` shows a node
that is stale or refusing. Pure parts."""

from __future__ import annotations

from pathlib import Path

from meshgate.agent.files import RunFiles
from meshgate.cli.output import table
from meshgate.compiler.build import CompileMemo
from meshgate.nodes.view import STALE_AFTER_S, node_view
from tests.unit.test_run_files import SERVICES, compile_with, gateway

RECORD = {"name": "a", "address": "10.0.0.1", "labels": {"node": "a"}, "versions": {}}
NOW = 1_000_000.0


def beat(**fields: object) -> dict[str, object]:
    return {
        "heartbeat": NOW - 1,
        "applied_revision": 40,
        "applied_hash": "sha256:0123456789abcdef",
        "current_at": NOW - 2,
        "attempted_revision": 40,
        "error": None,
        **fields,
    }


def test_a_current_node_is_neither_stale_nor_refusing() -> None:
    node = node_view(RECORD, beat(), {}, now=NOW)
    assert (node["stale"], node["refusing"], node["problems"]) == (False, False, [])
    assert node["applied_hash"] == "sha256:0123456789abcdef"
    assert "STALE" not in table("nodes", [node]) and "REFUSING" not in table("nodes", [node])


def test_a_node_behind_for_long_or_with_a_late_heartbeat_is_stale() -> None:
    behind = node_view(RECORD, beat(current_at=NOW - STALE_AFTER_S - 5), {}, now=NOW)
    assert behind["stale"] and "not known to run the store's state for 65 s" in str(
        behind["problems"]
    )
    late = node_view(RECORD, beat(heartbeat=NOW - 8), {}, now=NOW)
    assert late["stale"] and late["problems"] == ["stale: no heartbeat for 8 s"]
    never = node_view(RECORD, beat(current_at=None), {}, now=NOW)
    assert never["stale"]
    # An agent too old to report current_at is not called stale for it.
    old = node_view(RECORD, {"heartbeat": NOW - 1, "applied_revision": 9}, {}, now=NOW)
    assert not old["stale"]
    assert "Ready STALE" in table("nodes", [behind])
    # A node that is down is NotReady, not stale.
    assert node_view(RECORD, None, {}, now=NOW)["stale"] is False


def test_a_refusing_node_says_what_it_tried_and_why() -> None:
    error = "HAProxy rejected the configuration: [ALERT] ..."
    node = node_view(RECORD, beat(attempted_revision=44, error=error), {}, now=NOW)
    assert node["refusing"] and node["applied_revision"] == 40
    assert node["problems"] == [f"refusing revision 44: {error}"]
    shown = table("nodes", [node])
    assert "Ready REFUSING" in shown and "REFUSING revision 44" in shown
    gateways = {"default/gw": {"version": 3, "state": "rejected", "error": "port in use"}}
    refusing_gateway = node_view(RECORD, beat(), gateways, now=NOW)
    assert refusing_gateway["refusing"] and "REFUSING default/gw" in table(
        "nodes", [refusing_gateway]
    )


def test_the_config_hash_follows_the_files(tmp_path: Path) -> None:
    memo = CompileMemo()
    one, two = RunFiles(tmp_path / "one"), RunFiles(tmp_path / "two")
    one.write(compile_with(memo, gateway(90), *SERVICES, run_dir=tmp_path / "one"))
    two.write(compile_with(CompileMemo(), gateway(90), *SERVICES, run_dir=tmp_path / "one"))
    assert one.digest() == two.digest()  # the same data plane hashes alike on every node
    assert one.digest().startswith("sha256:") and len(one.digest()) == 23
    before = one.digest()
    one.write(compile_with(memo, gateway(80), *SERVICES, run_dir=tmp_path / "one"))
    assert one.digest() != before  # a weight change is a map change
