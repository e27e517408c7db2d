"""The node's log: one format for meshgate's lines and HAProxy's messages (with their level),
one line per lifecycle event, nothing below the level asked for."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.conftest import Backends, Node, count_served, free_port
from tests.integration.test_routing import FAST_CHECK, gateway, service, wait_until

pytestmark = pytest.mark.integration


def json_lines(node: Node) -> list[dict[str, Any]]:
    """Every line of the node's output, each of which must be a JSON object."""
    text = (node.data_dir / "node.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_log_holds_lifecycle_events_and_haproxy_messages_with_their_level(
    make_node: Callable[..., Node], backends: Backends
) -> None:
    node = make_node("--log-format", "json")
    port = free_port()
    node.apply(
        service("logged", backends.start("l1"), health_check=FAST_CHECK),
        gateway("logged", port, {"logged": {}}),
    )
    wait_until(lambda: count_served(f"http://127.0.0.1:{port}/", 3) == {"l1": 3})
    # A port another process holds: the gateway is rejected, and the log says so once.
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        node.api.post("/api/v1/apply", json=[gateway("blocked", taken, {"logged": {}})])
        wait_until(lambda: any(e["event"] == "gateway rejected" for e in json_lines(node)))
    node.stop()

    entries = json_lines(node)  # would raise on a line that is not JSON
    assert all({"event", "level", "time", "logger"} <= set(e) for e in entries)
    events = [e["event"] for e in entries]
    assert "meshgate is up" in events
    assert any(e.startswith("revision ") and e.endswith(" applied") for e in events)
    (rejected,) = [e for e in entries if e["event"] == "gateway rejected"]
    assert rejected["gateway"] == "default/blocked" and rejected["level"] == "warning"
    haproxy = [e for e in entries if e["logger"] == "haproxy"]
    assert haproxy and all(not e["event"].startswith("[") for e in haproxy)
    assert {e["level"] for e in haproxy} <= {"info", "warning", "error", "critical"}
    assert all(isinstance(e.get("pid"), int) for e in haproxy if e["level"] == "info")
    assert not [e for e in entries if e["level"] == "debug"]


def test_text_log_at_warning_level_has_no_info_lines(make_node: Callable[..., Node]) -> None:
    node = make_node("--log-level", "warning")
    node.stop()
    text = (node.data_dir / "node.log").read_text()
    assert "meshgate is up" not in text and "stats poll failed" not in text
    assert text.strip() == "" or not re.search(r"^\S+ (info|debug) ", text, re.MULTILINE)
