"""Isolation: namespaces keep equal names apart in traffic and in the API, a gateway bound to
127.0.0.1 is not reachable on other local addresses, and instances inside another Linux network
namespace are reached through HAProxy's `namespace` server keyword."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import Backends, Node, count_served, free_port
from tests.integration.discovery_helpers import Demos, instances_url, register
from tests.integration.test_routing import FAST_CHECK, gateway, service, wait_until

pytestmark = pytest.mark.integration


def test_the_same_names_in_two_namespaces_never_mix(node: Node, backends: Backends) -> None:
    ports = {"team-a": free_port(), "team-b": free_port()}
    for team in ports:
        backend = backends.start(f"{team} api")
        node.apply(
            {**service("api", backend), "namespace": team},
            {**gateway("web", ports[team], {"api": {}}), "namespace": team},
        )
    for team, port in ports.items():
        wait_until(lambda p=port, t=team: count_served(f"http://127.0.0.1:{p}/", 10)
                   == {f"{t} api": 10})  # fmt: skip

    # The API: each namespace sees its own resource, registrations stay in theirs.
    extra = backends.start("team-a extra")
    register(node, "api", namespace="team-a", address="127.0.0.1", port=extra, id="extra")
    listed = {
        team: [i["id"] for i in node.api.get(instances_url("api"), params={"namespace": team})
               .json()["items"]]
        for team in ports
    }  # fmt: skip
    assert "extra" in listed["team-a"] and "extra" not in listed["team-b"]
    assert node.api.get("/api/v1/services/api").status_code == 404  # not in "default"
    wait_until(lambda: "team-a extra" in count_served(f"http://127.0.0.1:{ports['team-a']}/", 20))
    assert count_served(f"http://127.0.0.1:{ports['team-b']}/", 20) == {"team-b api": 20}

    # Deleting one namespace's gateway leaves the other's serving.
    node.delete("gateways", "web", namespace="team-a")
    wait_until(lambda: _refused(ports["team-a"]))
    assert count_served(f"http://127.0.0.1:{ports['team-b']}/", 5) == {"team-b api": 5}


def _refused(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except OSError:
        return True


def test_a_gateway_bound_to_127_0_0_1_is_not_reachable_on_other_addresses(
    node: Node, backends: Backends
) -> None:
    backend = backends.start("local-only")
    port = free_port()
    node.apply(service("local", backend), gateway("local", port, {"local": {}}, bind="127.0.0.1"))
    wait_until(lambda: count_served(f"http://127.0.0.1:{port}/", 3) == {"local-only": 3})
    assert _refused(port, "127.0.0.2")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.2:{port}/", timeout=2)


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    version = subprocess.run(["haproxy", "-vv"], capture_output=True, text=True, check=False)
    if "network namespace support" not in version.stdout:
        return "this HAProxy was built without network namespace support"
    probe = f"mg-probe-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False)
    if made.returncode != 0:
        return f"this machine does not allow network namespaces: {made.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=False)
    return None


@pytest.fixture
def netns() -> Iterator[str]:
    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    name = f"mg-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        # Only the namespace's own loopback: all traffic stays on this machine.
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_an_instance_in_another_network_namespace_is_reached_there(node: Node, netns: str) -> None:
    demos = Demos()
    try:
        port = free_port()
        # The same address and port on both sides: only the namespace tells them apart.
        demos.start("host side", port)
        _, inside = demos.start("inside the namespace", port, netns=netns)
        probe = ["ip", "netns", "exec", netns, "python3", "-c",
                 f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)"]  # fmt: skip
        wait_until(lambda: subprocess.run(probe, capture_output=True).returncode == 0)
        gw_port = free_port()
        instance = {"address": "127.0.0.1", "port": port, "netns": netns}
        node.apply(
            {**service("isolated", health_check=FAST_CHECK), "instances": [instance]},
            gateway("isolated", gw_port, {"isolated": {}}),
        )
        url = f"http://127.0.0.1:{gw_port}/"
        wait_until(lambda: count_served(url, 5) == {"inside the namespace": 5})
        config = (node.data_dir / "run" / "haproxy.cfg").read_text()
        assert f"namespace {netns}" in config
        assert inside.poll() is None
    finally:
        demos.stop_all()
