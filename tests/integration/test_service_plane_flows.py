"""The dependency graph of the service plane (SPEC §6) on hosts of their own: service A on
host 1 calls B at localhost:PORT through its own node's agent, and B's versions run on hosts 2
and 3. A server's graph shows A -> gateway b -> B v1 / B v2, A found from the loopback address
its calls come from (the instance on host 1's address), at the rate A sent (±10 %)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration import test_service_plane_hosts as plane
from tests.integration.cluster_helpers import wait_for
from tests.integration.conftest import free_port
from tests.integration.flow_helpers import caller_edges
from tests.integration.test_many_nodes_hosts import Hosts, InNamespace
from tests.integration.test_many_nodes_hosts_flows import SENDER
from tests.integration.test_service_plane_hosts import FAST_CHECK, Cluster, hosts  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Metered(InNamespace):
    """An agent that serves `--metrics` on its own address: where a server reads its flows."""

    def __init__(self, log: Path, namespace: str, *args: str) -> None:
        address = args[args.index("--address") + 1]
        super().__init__(log, namespace, *args, "--metrics", f"{address}:{free_port()}")


def test_the_graph_shows_a_service_calling_through_its_own_nodes_agent(
    hosts: Hosts,  # noqa: F811 - the fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(plane, "InNamespace", Metered)
    cluster = Cluster(hosts, tmp_path)
    try:
        server = cluster.start()
        ports, plane_port = {"v1": free_port(), "v2": free_port()}, free_port()
        instances: dict[str, list[dict[str, Any]]] = {"v1": [], "v2": []}
        for version in instances:
            for host in (2, 3):
                address = cluster.backend(host, f"{version}@h{host}", ports[version])
                instances[version].append({"address": address, "port": ports[version]})
        server.apply(
            *(
                {"kind": "service", "name": f"b-{version}", "instances": listed,
                 "health_check": FAST_CHECK}
                for version, listed in instances.items()
            ),
            # A runs on host 1: its instance has host 1's address.
            {"kind": "service", "name": "a", "instances": [f"{hosts.addresses[0]}:8000"]},
            {
                "name": "b", "port": plane_port, "plane": "service",
                "routes": {"b-v1": {"weight": "80%"}, "b-v2": {"weight": "20%"}},
            },
        )  # fmt: skip
        server.wait_applied("gateways", "b", {"h1", "h2", "h3"}, timeout=30)
        url = f"http://localhost:{plane_port}/"
        wait_for(lambda: not plane.calls(hosts.names[0], url, 5)["failures"], 20)
        time.sleep(5.5)  # the settling calls fall into an older bucket than the window
        sender = subprocess.Popen(
            ["ip", "netns", "exec", hosts.names[0], sys.executable, "-c", SENDER,
             "127.0.0.1", str(plane_port), "20", "15"],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        time.sleep(12)
        response = server.api.get("/api/v1/graph", params={"window": "10s"})
        result = json.loads(sender.communicate(timeout=30)[0])
    finally:
        cluster.stop()
    assert result["failed"] == 0, result
    sent = result["sent"] / result["seconds"]
    assert response.status_code == 200, response.text
    graph = response.json()
    assert graph["flows"] is True and "unreachable" not in graph, graph
    callers = caller_edges(graph, "gateway:default/b")
    assert set(callers) == {"service:default/a"}, callers
    assert callers["service:default/a"]["rate"] == pytest.approx(sent, rel=0.10)
    routes = {e["route"]: e for e in graph["edges"] if e["source"] == "gateway:default/b"}
    assert {r: (e["target"], e["weight"]) for r, e in routes.items()} == {
        "b-v1": ("service:default/b-v1", 80),
        "b-v2": ("service:default/b-v2", 20),
    }
    assert routes["b-v1"]["rate"] + routes["b-v2"]["rate"] == pytest.approx(sent, rel=0.10)
    assert routes["b-v1"]["rate"] == pytest.approx(0.8 * sent, rel=0.2)
