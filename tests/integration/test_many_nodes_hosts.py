"""Agents on hosts of their own: network namespaces the test makes, each with its own loopback
and ports, joined by veth pairs to a bridge on which etcd, the server's store and the backends
are reachable. Traffic goes only to those test hosts' addresses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.cluster_helpers import Meshgate, Server, served_by, wait_for
from tests.integration.conftest import free_port
from tests.integration.test_routing import gateway

pytestmark = [pytest.mark.integration, pytest.mark.slow]

if os.geteuid() != 0 or shutil.which("ip") is None:  # pragma: no cover - CI runs as root
    pytest.skip("network namespaces need root and iproute2", allow_module_level=True)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Hosts:
    """A bridge with address SUBNET.1 and one namespace per host at SUBNET.11, .12, ..."""

    def __init__(self, count: int) -> None:
        tag = uuid.uuid4().hex[:6]
        self.bridge = f"mgbr{tag}"
        self.subnet = f"10.{200 + int(tag[:2], 16) % 50}.{int(tag[2:4], 16)}"
        self.gateway_address = f"{self.subnet}.1"
        self.names = [f"mg{tag}h{i}" for i in range(count)]
        self.addresses = [f"{self.subnet}.{11 + i}" for i in range(count)]

    def create(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway_address}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for index, (name, address) in enumerate(zip(self.names, self.addresses, strict=True)):
            outside, inside = f"{self.bridge}v{index}", f"{self.bridge}p{index}"
            ip("netns", "add", name)
            ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            ip("link", "set", inside, "netns", name)
            ip("link", "set", outside, "master", self.bridge)
            ip("link", "set", outside, "up")
            ip("-n", name, "addr", "add", f"{address}/24", "dev", inside)
            ip("-n", name, "link", "set", inside, "up")
            ip("-n", name, "link", "set", "lo", "up")

    def start_etcd(self, data_dir: Path) -> tuple[str, subprocess.Popen[bytes]]:
        """One etcd member listening on the bridge, reachable from every host: the `--store`
        URL naming it, and its process (the caller stops it)."""
        client_port, peer_port = free_port(), free_port()
        listen = f"http://{self.gateway_address}:{client_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        process = subprocess.Popen(
            [
                "etcd", "--name", "solo", "--data-dir", str(data_dir),
                "--listen-client-urls", listen, "--advertise-client-urls", listen,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"solo={peer}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        return f"etcd://{self.gateway_address}:{client_port}", process

    def remove(self) -> None:
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=10)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    made = Hosts(2)
    try:
        made.create()
        yield made
    finally:
        made.remove()


class InNamespace(Meshgate):
    """A meshgate agent run inside a namespace with `ip netns exec`."""

    def __init__(self, log: Path, namespace: str, *args: str) -> None:
        super().__init__(log, *args)
        self.prefix = ("ip", "netns", "exec", namespace)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "meshgate", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
            )


def test_agents_on_hosts_of_their_own(hosts: Hosts, tmp_path: Path) -> None:
    processes: list[Meshgate] = []
    children: list[subprocess.Popen[bytes]] = []
    try:
        # etcd and the backend on the bridge, reachable from every host.
        store, etcd = hosts.start_etcd(tmp_path / "etcd")
        children.append(etcd)
        backend_port = free_port()
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "meshgate.demo", "--name", "bridge",
                 "--port", str(backend_port), "--host", hosts.gateway_address],
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
            )  # fmt: skip
            processes.append(agent)
            agent.start()
        wait_for(
            lambda: [n["status"] for n in server.nodes().values()] == ["Ready", "Ready"],
            30,
            lambda: str(server.nodes()),
        )
        port = free_port()
        server.apply(
            {
                "kind": "service",
                "name": "svc",
                "instances": [f"{hosts.gateway_address}:{backend_port}"],
            },
            gateway("gw", port, {"svc": {}}),
        )
        server.wait_applied("gateways", "gw", {"a", "b"}, timeout=30)
        for address in hosts.addresses:
            wait_for(lambda a=address: served_by(f"http://{a}:{port}/") == "bridge", 15)
            answers = [served_by(f"http://{address}:{port}/") for _ in range(10)]
            assert answers == ["bridge"] * 10
        # Each host listens in its own namespace: nothing on this one's port.
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    finally:
        for process in reversed(processes):
            process.stop()
            if isinstance(process, Server):
                process.api.close()
        for child in children:
            child.terminate()
            child.wait(10)
