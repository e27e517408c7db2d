"""Many nodes under faults, with real etcd members, servers, agents, HAProxy and traffic: the
whole store gone, a cluster's leader killed, history compacted while an agent was away."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from meshgate.haproxy.runtime import RuntimeClient
from tests.etcd_cluster import Cluster, Member, etcd_cluster
from tests.integration.cluster_helpers import (
    Agent,
    Server,
    Traffic,
    served_by,
    store_args,
    wait_for,
)
from tests.integration.conftest import Backends, free_port
from tests.integration.test_many_nodes import Mesh, ready
from tests.integration.test_routing import gateway, service

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def workers(agent: Agent) -> tuple[int, list[int]]:
    run = agent.data_dir.resolve() / "run"
    proc = asyncio.run(RuntimeClient(str(run / "admin.sock"), str(run / "master.sock")).proc())
    return proc.master_pid, sorted(w.pid for w in proc.workers)


def put_until_accepted(server: Server, document: dict[str, object], timeout: float) -> float:
    """PUT a gateway until the API takes it (503 while the store cannot); seconds it took."""
    start = time.monotonic()
    while True:
        response = server.api.put(f"/api/v1/gateways/{document['name']}", json=document)
        if response.status_code == 200:
            return time.monotonic() - start
        assert response.status_code == 503, response.text
        assert time.monotonic() - start < timeout, response.text
        time.sleep(0.1)


@pytest.fixture
def mesh_on(tmp_path: Path) -> Iterator[list[Mesh]]:
    made: list[Mesh] = []
    yield made
    for mesh in made:
        mesh.stop()


def test_agents_serve_through_a_store_outage_and_converge_after(
    tmp_path: Path, backends: Backends, mesh_on: list[Mesh]
) -> None:
    with etcd_cluster(tmp_path / "etcd") as etcd:
        mesh = Mesh(tmp_path, store_args(etcd, "/meshgate/"))
        mesh_on.append(mesh)
        server = mesh.server()
        a = mesh.agent("a", "127.0.0.11")
        mesh.agent("b", "127.0.0.12")
        wait_for(lambda: ready(server, "a", "b"), 20, lambda: str(server.nodes()))
        one, two = backends.start("one"), backends.start("two")
        port, later = free_port(), free_port()
        server.apply(
            service("svc-one", one), service("svc-two", two), gateway("gw", port, {"svc-one": {}})
        )
        server.wait_applied("gateways", "gw", {"a", "b"})
        urls = [f"http://127.0.0.11:{port}/", f"http://127.0.0.12:{port}/"]
        for url in urls:
            wait_for(lambda u=url: served_by(u) == "one", 10)
        before = workers(a)

        with Traffic(*urls) as load:
            etcd.stop()
            changed = gateway("gw", port, {"svc-two": {}})
            refused = server.api.put("/api/v1/gateways/gw", json=changed)
            assert refused.status_code == 503
            message = refused.json()["errors"][0]["message"]
            assert "the store is unavailable" in message and "no etcd member answers" in message
            time.sleep(3)  # heartbeats and watches fail meanwhile; traffic goes on
            etcd.start()
            # Back, with nothing changed for them: the agents reconnect without a reload.
            wait_for(lambda: ready(server, "a", "b"), 20, lambda: str(server.nodes()))
            time.sleep(1)
            assert workers(a) == before
            put_until_accepted(server, gateway("gw", port, {"svc-two": {}}), 10)
            server.apply(gateway("later", later, {"svc-one": {}}))
            for url in urls:
                wait_for(lambda u=url: served_by(u) == "two", 15)
            server.wait_applied("gateways", "later", {"a", "b"})
            for address in ("127.0.0.11", "127.0.0.12"):
                wait_for(lambda h=address: served_by(f"http://{h}:{later}/") == "one", 10)
        assert load.failures == []
        assert load.total > 50


def follower(cluster: Cluster) -> Member:
    leader = cluster.leader()
    return next(m for m in cluster.members if m is not leader)


def test_a_killed_leader_and_history_compacted_while_an_agent_was_cut_off(
    tmp_path: Path, backends: Backends, mesh_on: list[Mesh]
) -> None:
    with etcd_cluster(tmp_path / "etcd", size=3) as etcd:
        mesh = Mesh(tmp_path, store_args(etcd, "/meshgate/"))
        mesh_on.append(mesh)
        server = mesh.server()
        mesh.agent("a", "127.0.0.11")
        # Agent c reaches the store through one member only, so that stopping it cuts c off.
        lonely = follower(etcd)
        only = ["--store", f"etcd://{lonely.address}", "--store-prefix", "/meshgate/"]
        c = Agent(tmp_path, only, "c", "127.0.0.13")
        mesh.processes.append(c)
        c.start()
        wait_for(lambda: ready(server, "a", "c"), 20, lambda: str(server.nodes()))
        one, two = backends.start("one"), backends.start("two")
        port = free_port()
        server.apply(
            service("svc-one", one), service("svc-two", two), gateway("gw", port, {"svc-one": {}})
        )
        server.wait_applied("gateways", "gw", {"a", "c"})

        # The leader dies: writes work again once the others elect one, and no change is lost.
        leader = etcd.leader()
        leader.stop(signal.SIGKILL)
        took = put_until_accepted(server, gateway("gw", port, {"svc-two": {}}), 15)
        assert took < 10
        for address in ("127.0.0.11", "127.0.0.13"):
            wait_for(lambda h=address: served_by(f"http://{h}:{port}/") == "two", 15)
        etcd.restart(leader)
        etcd.wait_ready()

        # c's only member stops; meanwhile a change, and the history that held it compacted.
        lonely.stop()
        put_until_accepted(server, gateway("gw", port, {"svc-one": {}}), 10)
        live = next(m for m in etcd.members if m.running)
        revision = httpx.post(f"{live.client_url}/v3/kv/range", json={"key": "AA=="}).json()
        compact = {"revision": revision["header"]["revision"], "physical": True}
        assert httpx.post(f"{live.client_url}/v3/kv/compaction", json=compact).status_code == 200
        wait_for(lambda: served_by(f"http://127.0.0.11:{port}/") == "one", 15)
        assert served_by(f"http://127.0.0.13:{port}/") == "two"  # c still serves what it had
        etcd.restart(lonely)
        # c's watch resumes from a compacted revision: it lists afresh and converges.
        wait_for(lambda: served_by(f"http://127.0.0.13:{port}/") == "one", 20, c.log)
        assert "store history compacted" in c.log_path.read_text()
