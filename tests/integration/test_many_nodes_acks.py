"""Many nodes: what each node reports it applied and refused, a quiet node's revision kept
current, an apply larger than one etcd transaction, and a compaction that changes nothing for
an agent. Real etcd (3.4, default --max-txn-ops), servers, agents and HAProxy."""

from __future__ import annotations

import base64
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.etcd_cluster import Cluster, etcd_cluster
from tests.integration.cluster_helpers import served_by, store_args, wait_for
from tests.integration.conftest import Backends, free_port
from tests.integration.test_many_nodes import Mesh, ready

# Fixtures, imported under their own names so pytest finds them here too.
from tests.integration.test_many_nodes import etcd as etcd
from tests.integration.test_many_nodes import mesh as mesh
from tests.integration.test_many_nodes import store as store
from tests.integration.test_many_nodes_faults import workers
from tests.integration.test_routing import gateway, service

pytestmark = pytest.mark.integration


def etcd_revision(cluster: Cluster) -> int:
    member = next(m for m in cluster.members if m.running)
    reply = httpx.post(f"{member.client_url}/v3/kv/range", json={"key": "AA=="}, timeout=5)
    return int(reply.json()["header"]["revision"])


def etcd_put(cluster: Cluster, key: str, value: str) -> None:
    """A write outside every meshgate prefix: it moves the cluster's revision on."""
    member = next(m for m in cluster.members if m.running)
    body = {"key": _b64(key), "value": _b64(value)}
    assert httpx.post(f"{member.client_url}/v3/kv/put", json=body, timeout=5).status_code == 200


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def get_nodes(server_url: str, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "meshgate", "--server", server_url, "get", "nodes", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


def test_nodes_report_what_they_applied_and_what_they_refuse(
    mesh: Mesh, etcd: Cluster, backends: Backends
) -> None:
    server = mesh.server()
    mesh.agent("a", "127.0.0.11")
    mesh.agent("b", "127.0.0.12")
    wait_for(lambda: ready(server, "a", "b"), 20, lambda: str(server.nodes()))
    one = backends.start("one")
    port = free_port()
    server.apply(service("svc", one), gateway("gw", port, {"svc": {}}))
    server.wait_applied("gateways", "gw", {"a", "b"})
    version = server.get("gateways", "gw")["version"]

    def acked() -> bool:
        nodes = server.nodes()
        return all(
            n["applied_revision"] >= version and n["applied_hash"] and n["error"] is None
            for n in nodes.values()
        )

    wait_for(acked, 10, lambda: str(server.nodes()))
    nodes = server.nodes()
    for node in nodes.values():
        assert (node["stale"], node["refusing"], node["problems"]) == (False, False, [])
        assert node["applied_hash"].startswith("sha256:")
        assert node["attempted_revision"] >= version
        assert time.time() - node["current_at"] < 10
    hash_a = nodes["a"]["applied_hash"]

    # Nothing changes for the agents, but the cluster's revision moves on: etcd's progress
    # notifications carry it to them, and their applied revision follows.
    etcd_put(etcd, "/elsewhere/key", "1")
    moved = etcd_revision(etcd)
    wait_for(
        lambda: all(n["applied_revision"] >= moved for n in server.nodes().values()),
        10,
        lambda: f"store at {moved}: {server.nodes()}",
    )
    assert served_by(f"http://127.0.0.11:{port}/") == "one"
    assert server.nodes()["a"]["applied_hash"] == hash_a  # nothing new was rendered

    # Node b cannot serve a gateway whose port another process holds there: b refuses it,
    # loudly; a serves it, and its hash changes with what it runs.
    taken = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.12", taken))
        holder.listen()
        server.apply(gateway("gw2", taken, {"svc": {}}))

        def b_refuses() -> bool:
            return server.nodes()["b"]["refusing"] is True

        wait_for(b_refuses, 15, lambda: str(server.nodes()["b"]))
        nodes = server.nodes()
        assert "refusing gateways: default/gw2" in nodes["b"]["problems"]
        assert nodes["a"]["refusing"] is False
        wait_for(lambda: server.nodes()["a"]["applied_hash"] != hash_a, 10)
        listing = get_nodes(server.url)
        rows = {line.split()[0]: line.split() for line in listing.splitlines()[1:]}
        assert rows["b"][1:3] == ["Ready", "REFUSING"]
        assert rows["b"][-2:] == ["REFUSING", "default/gw2"]
        assert rows["a"][1:3] == ["Ready", "127.0.0.11"]
        yaml_out = get_nodes(server.url, "b", "-o", "yaml")
        assert "applied_hash: sha256:" in yaml_out and "refusing: true" in yaml_out


def test_300_documents_in_one_apply_on_a_default_etcd(mesh: Mesh, backends: Backends) -> None:
    server = mesh.server()
    mesh.agent("a", "127.0.0.11")
    wait_for(lambda: ready(server, "a"), 20, lambda: str(server.nodes()))
    one = backends.start("one")
    port = free_port()
    documents = [
        {"kind": "service", "name": f"s{i:03}", "instances": [f"127.0.0.1:{one}"]}
        for i in range(299)
    ]
    documents.append(gateway("gw", port, {"s298": {}}))
    response = server.api.post("/api/v1/apply", params={"wait": "60s"}, json=documents, timeout=90)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["wait"]["done"] is True, answer["wait"]
    versions = [entry["version"] for entry in answer["applied"]]
    assert len(versions) == 300 and len(set(versions)) == 3  # transactions of 128, 128, 44
    assert versions == sorted(versions)
    assert server.get("services", "s000")["version"] == versions[0]
    assert server.get("gateways", "gw")["version"] == versions[-1]
    wait_for(lambda: served_by(f"http://127.0.0.11:{port}/") == "one", 15)
    # Applying the same 300 again changes nothing: one answer, no transaction.
    again = server.api.post("/api/v1/apply", json=documents, timeout=60).json()["applied"]
    assert {entry["result"] for entry in again} == {"unchanged"}


@pytest.mark.slow
def test_a_compaction_that_changes_nothing_for_an_agent_costs_no_reload(
    tmp_path: Path, backends: Backends
) -> None:
    with etcd_cluster(tmp_path / "etcd") as cluster:
        mesh = Mesh(tmp_path, store_args(cluster, "/meshgate/"))
        try:
            server = mesh.server()
            agent = mesh.agent("a", "127.0.0.11")
            wait_for(lambda: ready(server, "a"), 20, lambda: str(server.nodes()))
            one = backends.start("one")
            port = free_port()
            server.apply(service("svc", one), gateway("gw", port, {"svc": {}}))
            server.wait_applied("gateways", "gw", {"a"})
            wait_for(lambda: served_by(f"http://127.0.0.11:{port}/") == "one", 10)
            before = workers(agent)

            # The agent sleeps; its member dies and comes back, so its watch must resume; the
            # history it would resume from is written over and compacted meanwhile.
            assert agent.process is not None
            agent.process.send_signal(signal.SIGSTOP)
            try:
                member = cluster.members[0]
                member.stop(signal.SIGKILL)
                cluster.restart(member)
                cluster.wait_ready()
                for step in range(5):
                    etcd_put(cluster, "/elsewhere/key", str(step))
                compacted = etcd_revision(cluster)
                compact = {"revision": str(compacted), "physical": True}
                reply = httpx.post(f"{member.client_url}/v3/kv/compaction", json=compact)
                assert reply.status_code == 200, reply.text
            finally:
                agent.process.send_signal(signal.SIGCONT)

            wait_for(lambda: "store history compacted" in agent.log_path.read_text(), 20)
            # It listed at one revision past the compaction, found what it runs, and ran it on.
            wait_for(lambda: server.nodes()["a"]["applied_revision"] >= compacted, 15)
            assert served_by(f"http://127.0.0.11:{port}/") == "one"
            assert workers(agent) == before  # no reload: the same master and worker
            node = server.nodes()["a"]
            assert (node["stale"], node["refusing"]) == (False, False), node
        finally:
            mesh.stop()
