"""Many nodes: `meshgate server` and `meshgate agent` processes on a real etcd, serving real
traffic on distinct loopback addresses (127.0.0.11, .12, ...)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.etcd_cluster import Cluster, etcd_cluster
from tests.integration.cluster_helpers import (
    Agent,
    Server,
    Traffic,
    served_by,
    store_args,
    wait_for,
)
from tests.integration.conftest import Backends, free_port
from tests.integration.test_routing import gateway, service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with etcd_cluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


@pytest.fixture
def store(etcd: Cluster) -> list[str]:
    """`--store` arguments for a prefix of this test's own."""
    return store_args(etcd, f"/meshgate-{uuid.uuid4().hex[:12]}/")


class Mesh:
    def __init__(self, root: Path, store: list[str]) -> None:
        self.root = root
        self.store = store
        self.processes: list[Server | Agent] = []

    def server(self) -> Server:
        started = Server(self.root, self.store)
        self.processes.append(started)
        started.start()
        return started

    def agent(self, name: str, address: str, *extra: str) -> Agent:
        started = Agent(self.root, self.store, name, address, *extra)
        self.processes.append(started)
        started.start()
        return started

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
            if isinstance(process, Server):
                process.api.close()


@pytest.fixture
def mesh(tmp_path: Path, store: list[str]) -> Iterator[Mesh]:
    running = Mesh(tmp_path, store)
    try:
        yield running
    finally:
        running.stop()


def ready(server: Server, *names: str) -> bool:
    nodes = server.nodes()
    return all(nodes.get(n, {}).get("status") == "Ready" for n in names)


def test_agents_serve_what_the_server_stores(mesh: Mesh, backends: Backends) -> None:
    server = mesh.server()
    mesh.agent("a", "127.0.0.11", "--label", "zone=a")
    mesh.agent("b", "127.0.0.12", "--label", "zone=b")
    wait_for(lambda: ready(server, "a", "b"), 20, lambda: str(server.nodes()))

    one, two = backends.start("one"), backends.start("two")
    port, zoned = free_port(), free_port()
    weights = {"svc-one": {"weight": "100%"}, "svc-two": {"weight": "0%"}}
    server.apply(
        service("svc-one", one),
        service("svc-two", two),
        gateway("everywhere", port, weights),
        gateway("zone-b", zoned, {"svc-two": {}}, nodes={"zone": "b"}),
    )
    # Placement: every node, or the nodes whose labels match; status says which run it.
    server.wait_applied("gateways", "everywhere", {"a", "b"})
    server.wait_applied("gateways", "zone-b", {"b"})
    status = server.get("gateways", "everywhere")["status"]
    version = server.get("gateways", "everywhere")["version"]
    assert status["nodes"]["a"] == {"version": version, "state": "serving", "error": None}

    # `bind` defaults to each node's --address: one port, two nodes on one machine.
    for address in ("127.0.0.11", "127.0.0.12"):
        wait_for(lambda a=address: served_by(f"http://{a}:{port}/") == "one", 10)
    wait_for(lambda: served_by(f"http://127.0.0.12:{zoned}/") == "two", 10)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.11:{zoned}/", timeout=3)

    # A weight change reaches every node; `apply?wait=` answers once every node runs it.
    flipped = {"svc-one": {"weight": "0%"}, "svc-two": {"weight": "100%"}}
    waited = server.api.post(
        "/api/v1/apply", params={"wait": "20s"}, json=[gateway("everywhere", port, flipped)]
    )
    assert waited.status_code == 200, waited.text
    assert waited.json()["wait"]["done"] is True, waited.text
    status = server.get("gateways", "everywhere")["status"]
    assert status["applied"] and {n["version"] for n in status["nodes"].values()} == {
        server.get("gateways", "everywhere")["version"]
    }
    for address in ("127.0.0.11", "127.0.0.12"):
        wait_for(
            lambda a=address: {served_by(f"http://{a}:{port}/") for _ in range(6)} == {"two"},
            15,
        )

    nodes = server.nodes()
    assert nodes["a"]["labels"] == {"zone": "a", "node": "a"}
    assert nodes["b"]["address"] == "127.0.0.12"
    assert nodes["a"]["applied_revision"] > 0
    assert set(nodes["b"]["gateways"]) == {"default/everywhere", "default/zone-b"}
    assert set(nodes["a"]["gateways"]) == {"default/everywhere"}

    listing = subprocess.run(
        [sys.executable, "-m", "meshgate", "--server", server.url, "get", "nodes"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    rows = {line.split()[0]: line.split() for line in listing.splitlines()[1:]}
    assert rows["a"][1:3] == ["Ready", "127.0.0.11"]
    assert rows["b"][1:3] == ["Ready", "127.0.0.12"]

    # The server serves the dashboard, the configuration's graph and the rollout commands.
    page = server.api.get("/ui/")
    assert page.status_code == 200 and "<title>meshgate</title>" in page.text
    graph = server.api.get("/api/v1/graph").json()
    routes = {(e["source"], e["route"]): e["weight"] for e in graph["edges"] if e["route"]}
    assert routes[("gateway:default/everywhere", "svc-two")] == 100
    missing = server.api.post("/api/v1/rollouts/nothing/pause")
    assert missing.status_code == 404, missing.text


def test_a_dead_agent_is_not_ready_and_ready_when_back(mesh: Mesh, backends: Backends) -> None:
    server = mesh.server()
    a = mesh.agent("a", "127.0.0.11")
    mesh.agent("b", "127.0.0.12")
    wait_for(lambda: ready(server, "a", "b"), 20, lambda: str(server.nodes()))
    one = backends.start("one")
    port = free_port()
    server.apply(service("svc", one), gateway("gw", port, {"svc": {}}))
    server.wait_applied("gateways", "gw", {"a", "b"})
    wait_for(lambda: served_by(f"http://127.0.0.12:{port}/") == "one", 10)

    with Traffic(f"http://127.0.0.12:{port}/", f"http://127.0.0.11:{port}/") as load:
        a.stop(signal.SIGKILL)
        took = wait_for(lambda: server.nodes()["a"]["status"] == "NotReady", 20)
    assert took < 15
    assert server.nodes()["b"]["status"] == "Ready"
    # The other node never failed a request; the dead agent's own HAProxy kept serving.
    assert load.failures == [] and load.answers == {"one": load.total} and load.total > 50

    # Back on the same data dir: the same node, Ready again, serving again.
    a.start()
    wait_for(lambda: server.nodes()["a"]["status"] == "Ready", 20, a.log)
    wait_for(lambda: served_by(f"http://127.0.0.11:{port}/") == "one", 15, a.log)


def test_bad_store_urls_and_a_name_in_use_exit_1(
    mesh: Mesh, etcd: Cluster, store: list[str], tmp_path: Path
) -> None:
    base = ["--node", "x", "--data-dir", str(tmp_path / "x")]
    wrong = Agent(tmp_path, [], "x", "127.0.0.13")
    for args, message in [
        (["--store", "http://127.0.0.1:2379"], "expected etcd://"),
        (["--store", f"etcd://127.0.0.1:{free_port()}"], "no etcd member answers"),
        (["--store", "etcds://127.0.0.1:2379", "--store-ca", "/nonexistent"], "--store-ca"),
    ]:
        wrong.args = ("agent", *args, *base)
        result = wrong.run()
        assert result.returncode == 1, result.stderr
        assert message in result.stderr

    mesh.agent("taken", "127.0.0.11")
    server = mesh.server()
    wait_for(lambda: ready(server, "taken"), 20)
    second = Agent(tmp_path / "elsewhere", store, "taken", "127.0.0.12")
    result = second.run()
    assert result.returncode == 1
    assert "another agent is live under this name" in result.stderr


def test_stats_from_any_server_cover_every_node(mesh: Mesh, backends: Backends) -> None:
    first, second = mesh.server(), mesh.server()
    metrics = {name: free_port() for name in ("a", "b")}
    mesh.agent("a", "127.0.0.11", "--metrics", f"127.0.0.1:{metrics['a']}")
    mesh.agent("b", "127.0.0.12", "--metrics", f"127.0.0.1:{metrics['b']}")
    wait_for(lambda: ready(first, "a", "b"), 20, lambda: str(first.nodes()))
    one = backends.start("one")
    port = free_port()
    first.apply(service("svc", one), gateway("gw", port, {"svc": {}}))
    first.wait_applied("gateways", "gw", {"a", "b"})
    sent = {"a": 30, "b": 12}
    for address in ("127.0.0.11", "127.0.0.12"):
        wait_for(lambda h=address: served_by(f"http://{h}:{port}/") == "one", 10)

    def counts() -> dict[str, int]:
        return {
            name: httpx.get(
                f"http://127.0.0.1:{metrics[name]}/api/v1/gateways/gw/stats", timeout=5
            ).json()["routes"]["svc"]["requests"]
            for name in sent
        }

    # A node answers from a stats reading up to a poll old (a second, more on a busy machine):
    # the baseline is read once the counts hold still for well over a poll.
    base = counts()
    while True:
        time.sleep(2.5)
        if (now := counts()) == base:
            break
        base = now
    for name, address in (("a", "127.0.0.11"), ("b", "127.0.0.12")):
        for _ in range(sent[name]):
            assert served_by(f"http://{address}:{port}/") == "one"

    def merged_counts() -> bool:
        stats = second.api.get("/api/v1/gateways/gw/stats").json()
        per_node = {n: r["svc"]["requests"] - base[n] for n, r in stats["nodes"].items()}
        total = stats["routes"]["svc"]["requests"]
        return per_node == sent and total == sum(base.values()) + sum(sent.values())

    wait_for(merged_counts, 15, lambda: str(second.api.get("/api/v1/gateways/gw/stats").json()))
    stats = first.api.get("/api/v1/gateways/gw/stats").json()
    assert stats["unreachable"] == {}
    assert stats["routes"]["svc"]["latency_ms"]["p99"] is not None
    assert stats["routes"]["svc"]["instances"][0]["nodes"] == {"a": "UP", "b": "UP"}
    exposition = httpx.get(f"http://127.0.0.1:{metrics['a']}/metrics", timeout=5).text
    assert 'gateway="gw"' in exposition
    assert second.api.get("/api/v1/gateways/nope/stats").status_code == 404


def test_a_second_server_takes_over_the_elected_work(mesh: Mesh) -> None:
    servers = [mesh.server(), mesh.server()]

    def elected() -> list[bool]:
        return [bool(s.api.get("/healthz").json().get("elected")) for s in servers if s.running]

    wait_for(lambda: sorted(elected()) == [False, True], 15, lambda: str(elected()))
    leader = next(s for s in servers if s.api.get("/healthz").json()["elected"])
    other = next(s for s in servers if s is not leader)
    leader.stop(signal.SIGKILL)
    took = wait_for(lambda: other.api.get("/healthz").json()["elected"] is True, 15)
    assert took < 5.0 + 2  # the lease's TTL, and a poll or two
    # The survivor answers alike meanwhile.
    assert other.api.get("/api/v1/gateways").status_code == 200
