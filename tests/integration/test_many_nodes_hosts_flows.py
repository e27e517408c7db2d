"""The dependency graph across hosts of their own (network namespaces, as in
test_many_nodes_hosts): service A on host a calls gateway B through its own node's agent; a
process on host b calls it both through host a's agent and through its own. A server's graph
merges both agents' records: A -> gateway b -> B v1 / B v2, node b -> gateway b, at the rates
sent (±10 %)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.cluster_helpers import Meshgate, Server, served_by, wait_for
from tests.integration.conftest import free_port
from tests.integration.flow_helpers import caller_edges, node_kinds
from tests.integration.test_many_nodes_hosts import Hosts, InNamespace, hosts  # noqa: F401
from tests.integration.test_routing import gateway

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# A client at a steady rate (a fresh connection per request), run inside a host's namespace;
# prints how many it sent and over how long.
SENDER = """
import json, socket, sys, time
host, port, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
request = f"GET / HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n".encode()
sent = failed = 0
start = time.monotonic()
while time.monotonic() - start < seconds:
    pause = start + sent / rate - time.monotonic()
    if pause > 0:
        time.sleep(pause)
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(request)
            ok = s.recv(64).startswith(b"HTTP/1.1 200")
            while s.recv(65536):
                pass
        failed += not ok
    except OSError:
        failed += 1
    sent += 1
print(json.dumps({"sent": sent, "failed": failed, "seconds": time.monotonic() - start}))
"""


def sender(
    namespace: str, host: str, port: int, rate: float, seconds: float
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", SENDER,
         host, str(port), str(rate), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_a_service_calling_through_its_own_agent_shows_in_the_servers_graph(
    hosts: Hosts,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    processes: list[Meshgate] = []
    children: list[subprocess.Popen[bytes]] = []
    try:
        store, etcd = hosts.start_etcd(tmp_path / "etcd")
        children.append(etcd)
        versions = {}
        for name in ("v1", "v2"):
            versions[name] = free_port()
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "meshgate.demo", "--name", name,
                     "--port", str(versions[name]), "--host", hosts.gateway_address],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        server = Server(tmp_path, ["--store", store])
        processes.append(server)
        server.start()
        for name, namespace, address in zip("ab", hosts.names, hosts.addresses, strict=True):
            agent = InNamespace(
                tmp_path / f"agent-{name}.log", namespace,
                "agent", "--store", store, "--node", name, "--address", address,
                "--data-dir", str(tmp_path / f"agent-{name}"),
                "--metrics", f"{address}:{free_port()}",
            )  # fmt: skip
            processes.append(agent)
            agent.start()
        wait_for(
            lambda: [n["status"] for n in server.nodes().values()] == ["Ready", "Ready"],
            30,
            lambda: str(server.nodes()),
        )
        host_a, host_b = hosts.addresses
        port = free_port()
        bridge = hosts.gateway_address
        server.apply(
            {"kind": "service", "name": "b:v1", "instances": [f"{bridge}:{versions['v1']}"]},
            {"kind": "service", "name": "b:v2", "instances": [f"{bridge}:{versions['v2']}"]},
            {"kind": "service", "name": "a", "instances": [f"{host_a}:8000"]},
            gateway("b", port, {"b:v1": {"weight": 70}, "b:v2": {"weight": 30}}),
        )
        server.wait_applied("gateways", "b", {"a", "b"}, timeout=30)
        for address in hosts.addresses:
            wait_for(lambda a=address: served_by(f"http://{a}:{port}/") in ("v1", "v2"), 15)
        time.sleep(5.5)  # the settling requests fall into an older bucket than the window
        ns_a, ns_b = hosts.names
        senders = [
            sender(ns_a, host_a, port, 20.0, 15.0),  # A, through its own node's agent
            sender(ns_b, host_a, port, 8.0, 15.0),  # host b, through host a's agent
            sender(ns_b, host_b, port, 6.0, 15.0),  # host b, through its own agent
        ]
        time.sleep(12)
        response = server.api.get("/api/v1/graph", params={"window": "10s"})
        results = [json.loads(s.communicate(timeout=30)[0]) for s in senders]
    finally:
        for process in reversed(processes):
            process.stop()
            if isinstance(process, Server):
                process.api.close()
        for child in children:
            child.terminate()
            child.wait(10)
    assert all(r["failed"] == 0 for r in results), results
    rates = [r["sent"] / r["seconds"] for r in results]
    assert response.status_code == 200, response.text
    graph = response.json()
    assert graph["flows"] is True and "unreachable" not in graph, graph
    gateway_id = "gateway:default/b"
    callers = caller_edges(graph, gateway_id)
    assert set(callers) == {"service:default/a", "node:b"}, callers
    assert node_kinds(graph)["service:default/a"] == "service"
    assert callers["service:default/a"]["rate"] == pytest.approx(rates[0], rel=0.10)
    # Host b's two streams, recorded by two agents, merged into one caller.
    assert callers["node:b"]["rate"] == pytest.approx(rates[1] + rates[2], rel=0.10)
    routes = {e["route"]: e for e in graph["edges"] if e["source"] == gateway_id}
    assert (routes["b:v1"]["target"], routes["b:v2"]["target"]) == (
        "service:default/b:v1", "service:default/b:v2",
    )  # fmt: skip
    assert {r: e["weight"] for r, e in routes.items()} == {"b:v1": 70, "b:v2": 30}
    total = sum(rates)
    assert routes["b:v1"]["rate"] + routes["b:v2"]["rate"] == pytest.approx(total, rel=0.10)
    assert routes["b:v1"]["rate"] == pytest.approx(0.7 * total, rel=0.2)
