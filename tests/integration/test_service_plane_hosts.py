"""The service plane on three hosts: network namespaces the test makes (their own loopbacks,
a bridge between them), an agent in each, etcd on the bridge. Service A on host 1 calls
service B at localhost:PORT through its own node's agent; B's versions run on hosts 2 and 3.

What is measured: the 90/10 split between B's versions over 1,000 calls, conditions and
sticky routes as at the edge, locality (calls stay on the caller's node while its instance is
healthy, and move without a failed request when it is killed), and a second namespace that
cannot reach, bind or route into the first's service plane."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.integration.cluster_helpers import Meshgate, Server, wait_for
from tests.integration.conftest import free_port
from tests.integration.test_many_nodes_hosts import Hosts, InNamespace

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CALLS = 1000
FAST_CHECK = {"type": "http", "path": "/health", "interval": "1s", "rise": 1, "fall": 3}


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    made = Hosts(3)
    try:
        made.create()
        yield made
    finally:
        made.remove()


def in_host(namespace: str, *command: str) -> list[str]:
    return ["ip", "netns", "exec", namespace, sys.executable, *command]


def calls(namespace: str, url: str, count: int, *extra: str) -> dict[str, Any]:
    """Service A's calls from inside a host: answers by body, and failures."""
    done = subprocess.run(
        in_host(namespace, "-m", "tests.integration.plane_calls", url, str(count), *extra),
        capture_output=True, text=True, timeout=120, cwd=REPO, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def by_host(result: dict[str, Any]) -> dict[str, int]:
    assert result["failures"] == [], result
    answers: dict[str, int] = result["answers"]
    return answers


def by_version(answers: dict[str, int]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for body, count in answers.items():
        version = body.split("@")[0]
        counts[version] = counts.get(version, 0) + count
    return counts


def applied_everywhere(server: Server, namespace: str, name: str) -> bool:
    response = server.api.get(f"/api/v1/gateways/{name}", params={"namespace": namespace})
    status = response.json()["status"]
    return bool(status.get("applied")) and set(status.get("nodes", {})) == {"h1", "h2", "h3"}


class Cluster:
    """etcd on the bridge, a server in the test's namespace, an agent in each host."""

    def __init__(self, hosts: Hosts, root: Path) -> None:
        self.hosts = hosts
        self.root = root
        self.children: list[subprocess.Popen[bytes]] = []
        self.processes: list[Meshgate] = []
        self.backends: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> Server:
        store, etcd = self.hosts.start_etcd(self.root / "etcd")
        self.children.append(etcd)
        server = Server(self.root, ["--store", store])
        self.processes.append(server)
        server.start()
        for index, (namespace, address) in enumerate(
            zip(self.hosts.names, self.hosts.addresses, strict=True), start=1
        ):
            agent = InNamespace(
                self.root / f"agent-h{index}.log", namespace,
                "agent", "--store", store, "--node", f"h{index}", "--address", address,
                "--data-dir", str(self.root / f"agent-h{index}"),
            )  # fmt: skip
            self.processes.append(agent)
            agent.start()
        wait_for(
            lambda: sorted(n["status"] for n in server.nodes().values()) == ["Ready"] * 3,
            30,
            lambda: str(server.nodes()),
        )
        return server

    def backend(self, host: int, name: str, port: int) -> str:
        """A B instance answering `name`, listening on host `host`'s address."""
        address = self.hosts.addresses[host - 1]
        self.backends[name] = subprocess.Popen(
            in_host(self.hosts.names[host - 1], "-m", "meshgate.demo", "--name", name,
                    "--host", address, "--port", str(port)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
        )  # fmt: skip
        return address

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
            if isinstance(process, Server):
                process.api.close()
        for child in [*self.backends.values(), *self.children]:
            if child.poll() is None:
                child.terminate()
                child.wait(10)


def test_a_service_calls_its_dependency_through_its_own_node(hosts: Hosts, tmp_path: Path) -> None:
    cluster = Cluster(hosts, tmp_path)
    try:
        server = cluster.start()
        ports, plane_port = {"v1": free_port(), "v2": free_port()}, free_port()
        # B's versions on hosts 2 and 3. The manifest's instances say nothing of their node:
        # an instance at a node's address is on that node.
        instances: dict[str, list[dict[str, Any]]] = {"v1": [], "v2": []}
        for version in instances:
            for host in (2, 3):
                address = cluster.backend(host, f"{version}@h{host}", ports[version])
                instances[version].append(
                    {"address": address, "port": ports[version], "id": f"h{host}"}
                )
        retry = {"retries": 3, "retry_on": ["empty-response", "junk-response"]}
        server.apply(
            *(
                {"kind": "service", "name": f"b-{version}", "instances": listed,
                 "health_check": FAST_CHECK, **retry}
                for version, listed in instances.items()
            ),
            {
                "name": "b",
                "port": plane_port,
                "plane": "service",
                "locality": "prefer-local",
                "sticky": "route",
                "routes": {
                    "b-v1": {"weight": "90%"},
                    "b-v2": {"weight": "10%", "condition": "has header x-canary"},
                },
            },
        )  # fmt: skip
        server.wait_applied("gateways", "b", {"h1", "h2", "h3"}, timeout=30)
        url = f"http://localhost:{plane_port}/"
        for namespace in hosts.names:
            wait_for(lambda n=namespace: not calls(n, url, 5)["failures"], 20)

        # Host 1 has no instance of B: its agent balances over hosts 2 and 3, 90/10.
        result = calls(hosts.names[0], url, CALLS)
        assert result["failures"] == []
        versions = by_version(result["answers"])
        assert abs(versions.get("v2", 0) - CALLS * 0.10) <= CALLS * 0.05, versions
        assert abs(versions.get("v1", 0) - CALLS * 0.90) <= CALLS * 0.05, versions
        assert set(result["answers"]) == {"v1@h2", "v1@h3", "v2@h2", "v2@h3"}

        # Conditions and sticky routes work as at the edge.
        canary = calls(hosts.names[0], url, 20, "--header", "x-canary:1")
        assert by_version(canary["answers"]) == {"v2": 20}, canary
        pinned = calls(hosts.names[0], url, 30, "--keep-cookies")
        assert len(by_version(pinned["answers"])) == 1, pinned

        # On host 2 the local instances take every call while they are healthy.
        local = calls(hosts.names[1], url, 300)
        assert local["failures"] == []
        assert set(local["answers"]) == {"v1@h2", "v2@h2"}, local

        # Kill host 2's v1 while A there keeps calling: v1 moves to host 3 and no call fails.
        caller = subprocess.Popen(
            in_host(hosts.names[1], "-m", "tests.integration.plane_calls", url, "600",
                    "--pause-ms", "5"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        )  # fmt: skip
        assert caller.stderr is not None
        assert caller.stderr.readline().strip() == "answered"
        time.sleep(0.5)
        cluster.backends["v1@h2"].send_signal(signal.SIGKILL)
        out, _ = caller.communicate(timeout=120)
        failover = json.loads(out)
        assert failover["failures"] == [], failover
        assert failover["answers"].get("v1@h3", 0) > 0, failover
        assert failover["answers"].get("v1@h2", 0) > 0, failover
        after = calls(hosts.names[1], url, 100)
        assert after["failures"] == [] and "v1@h2" not in after["answers"], after
        assert set(after["answers"]) <= {"v1@h3", "v2@h2"}, after

        # A registration that names its node: an instance running on host 3 but said to be
        # on host 2 is local to host 2 (while host 3 keeps its own, by address).
        named_port = free_port()
        cluster.backend(3, "v1@named", named_port)
        response = server.api.post(
            f"/api/v1/services/{quote('b-v1', safe='')}/instances",
            json={"address": hosts.addresses[2], "port": named_port, "id": "named",
                  "node": "h2"},
        )  # fmt: skip
        assert response.status_code in (200, 201), response.text
        wait_for(lambda: "v1@named" in calls(hosts.names[1], url, 20)["answers"], 20)
        on_two = by_host(calls(hosts.names[1], url, 200))
        assert set(on_two) == {"v1@named", "v2@h2"}, on_two
        on_three = by_host(calls(hosts.names[2], url, 200))
        assert set(on_three) == {"v1@h3", "v2@h3"}, on_three
        # The API names each instance's node: as registered, else by the node's address.
        listed = server.api.get(f"/api/v1/services/{quote('b-v1', safe='')}/instances")
        nodes = {i["id"]: i["node"] for i in listed.json()["items"]}
        assert nodes == {"h2": "h2", "h3": "h3", "named": "h2"}, listed.text
        bad = server.api.post(
            f"/api/v1/services/{quote('b-v1', safe='')}/instances",
            json={"address": hosts.addresses[2], "port": named_port, "node": "Host 2"},
        )
        assert bad.status_code == 422 and "node" in bad.text, bad.text

        # An instance in a network namespace (here: host 3's own) is entered through HAProxy's
        # `namespace` on its node only; the other nodes reach it at its address.
        inner_port, inner_plane = free_port(), free_port()
        cluster.backend(3, "inner@h3", inner_port)
        inner = {"address": hosts.addresses[2], "port": inner_port, "netns": hosts.names[2],
                 "node": "h3"}  # fmt: skip
        server.apply(
            {"kind": "service", "name": "inner", "instances": [inner]},
            {"name": "c", "port": inner_plane, "plane": "service", "routes": {"inner": {}}},
        )
        server.wait_applied("gateways", "c", {"h1", "h2", "h3"}, timeout=30)
        inner_url = f"http://localhost:{inner_plane}/"
        for namespace in hosts.names:
            wait_for(lambda n=namespace: by_host(calls(n, inner_url, 3)) == {"inner@h3": 3}, 20)
        configs = {
            node: (tmp_path / f"agent-{node}" / "run" / "haproxy.cfg").read_text()
            for node in ("h1", "h3")
        }
        assert f"namespace {hosts.names[2]}" in configs["h3"]
        assert f"namespace {hosts.names[2]}" not in configs["h1"]

        # Another namespace: its own gateway resolves only its own services (it has no b-v1,
        # so the route has no instance), it cannot take B's port, nor route to it by address.
        other_port = free_port()
        server.apply(
            {"name": "b", "namespace": "team-b", "port": other_port, "plane": "service",
             "routes": {"b-v1": {}}},
        )  # fmt: skip
        wait_for(lambda: applied_everywhere(server, "team-b", "b"), 30, lambda: server.log())
        for namespace in hosts.names:
            answers = calls(namespace, f"http://localhost:{other_port}/", 3)
            assert answers["answers"] == {} and len(answers["failures"]) == 3, answers
            assert all("503" in f for f in answers["failures"]), answers
        taken = server.api.post(
            "/api/v1/apply",
            json=[{"name": "c", "namespace": "team-b", "port": plane_port, "plane": "service",
                   "virtual_hosts": ["b.internal"], "routes": {"x": {}}}],
        )  # fmt: skip
        assert taken.status_code == 422 and "namespace default" in taken.text, taken.text
        aimed = server.api.post(
            "/api/v1/apply",
            json=[{"name": "d", "namespace": "team-b", "port": free_port(), "plane": "service",
                   "routes": {f"[127.0.0.1:{plane_port}]": {}}}],
        )  # fmt: skip
        assert aimed.status_code == 422 and "namespace default" in aimed.text, aimed.text
    finally:
        cluster.stop()
