"""Operating a node: `apply --wait` against real HAProxy (live, or rejected with the reason),
events recorded where they happen, `describe`, and a degraded gateway becoming whole."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Backends, Node, count_served, free_port
from tests.integration.test_routing import gateway, service, wait_until

pytestmark = pytest.mark.integration


def meshgate(node: Node, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshgate", "--server", node.url, *args],
        input=stdin, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def manifest(*documents: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump_all(list(documents))


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another process (this one) listens on, as a stray server would."""
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        yield holder.getsockname()[1]


def events(node: Node, **filters: Any) -> list[dict[str, Any]]:
    response = node.api.get("/api/v1/events", params=filters)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_apply_wait_returns_when_traffic_flows(node: Node, backends: Backends) -> None:
    port = free_port()
    documents = manifest(
        service("waited", backends.start("waited")), gateway("waited", port, {"waited": {}})
    )
    started = time.monotonic()
    result = meshgate(node, "apply", "-f", "-", "--wait", "--timeout", "30s", stdin=documents)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "every resource is live"
    assert time.monotonic() - started < 30
    # Live means listening and routing: the first request after the exit is served.
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text.startswith("waited")
    applied = events(node, kind="gateway", name="waited", type="applied")
    assert (
        applied
        and applied[-1]["message"] == f"version {node.get('gateways', 'waited')['version']} is live"
    )


def test_apply_wait_exits_1_with_the_reason_when_the_port_is_taken(
    node: Node, held_port: int
) -> None:
    documents = manifest(gateway("squatted", held_port, {"[127.0.0.1:9]": {}}))
    result = meshgate(node, "apply", "-f", "-", "--wait", "--timeout", "30s", stdin=documents)
    assert result.returncode == 1
    assert (
        f"gateway/default/squatted rejected: port {held_port} on 0.0.0.0 cannot be bound"
        in result.stderr
    )
    assert "Address already in use" in result.stderr
    rejected = events(node, kind="gateway", name="squatted", type="rejected")
    assert rejected and "cannot be bound" in rejected[-1]["message"]
    described = meshgate(node, "describe", "gateway", "squatted")
    assert "State:      rejected" in described.stdout and "cannot be bound" in described.stdout
    node.delete("gateways", "squatted")


def described_rows(node: Node) -> list[list[str]]:
    """The words of each line of `meshgate describe gateway whole`."""
    described = meshgate(node, "describe", "gateway", "whole")
    assert described.returncode == 0, described.stderr
    return [line.split() for line in described.stdout.splitlines()]


def test_a_degraded_gateway_becomes_whole_and_health_changes_are_events(
    node: Node, backends: Backends
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    first = backends.start("whole:a")
    node.apply(
        gateway("whole", port, {"whole:a": {"weight": 50}, "whole:b": {"weight": 50}}),
        service("whole:a", first),
    )
    status = node.get("gateways", "whole")["status"]
    assert status["state"] == "degraded" and "'whole:b'" in status["errors"][0]
    assert [e["type"] for e in events(node, kind="gateway", name="whole")][-2:] == [
        "applied",
        "warning",
    ]

    second = backends.start("whole:b")
    result = meshgate(
        node, "apply", "-f", "-", "--wait", stdin=manifest(service("whole:b", second))
    )
    assert result.returncode == 0, result.stderr
    wait_until(lambda: node.get("gateways", "whole")["status"]["state"] == "serving")
    assert node.get("gateways", "whole")["status"]["errors"] == []
    wait_until(lambda: set(count_served(url, 20)) == {"whole:a", "whole:b"})
    # Health events come from the stats poll: stop the instance only once a poll has seen it
    # up, or it can go down between two polls, which then never saw it up.
    wait_until(lambda: ["whole:b", "whole:b", "service", "50%", "1", "1"] in described_rows(node))

    backends.stop(second)
    wait_until(
        lambda: any(
            "is DOWN (was UP)" in e["message"]
            for e in events(node, kind="service", name="whole:b", type="health")
        )
    )
    rows = described_rows(node)
    assert ["whole:a", "whole:a", "service", "50%", "1", "1"] in rows
    assert ["whole:b", "whole:b", "service", "50%", "1", "0"] in rows

    refused = meshgate(node, "delete", "service", "whole:b")
    assert refused.returncode == 1 and "gateway whole (route whole:b)" in refused.stderr
    assert meshgate(node, "delete", "service", "whole:b", "--force").returncode == 0
    wait_until(lambda: node.get("gateways", "whole")["status"]["state"] == "degraded")
    assert any(e["type"] == "reload" for e in events(node))
