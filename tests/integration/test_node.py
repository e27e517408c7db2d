"""`meshgate up` as a whole: rejected changes, isolation of a bad gateway, restarts, shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable

import httpx
import pytest

from tests.integration.conftest import Backends, Node, count_served, free_port
from tests.integration.test_routing import gateway, service, wait_until

pytestmark = pytest.mark.integration


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_rejected_change_leaves_the_data_plane_untouched(node: Node, backends: Backends) -> None:
    a = backends.start("kept")
    port = free_port()
    node.apply(service("keep:svc", a), gateway("keep", port, {"keep:svc": {}}))
    url = f"http://127.0.0.1:{port}/"
    wait_until(lambda: count_served(url, 3) == {"kept": 3})
    before = node.haproxy_pids()
    version = node.get("gateways", "keep")["version"]
    config = (node.data_dir / "run" / "haproxy.cfg").read_text()
    bad = gateway("keep", port, {"keep:svc": {"weight": "150%"}})
    response = node.api.put("/api/v1/gateways/keep", json=bad)
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == "routes.keep:svc.weight"
    injected = gateway("keep", port, {"keep:svc": {"condition": "has cookie a\nfrontend x"}})
    assert node.api.put("/api/v1/gateways/keep", json=injected).status_code == 422
    time.sleep(0.5)  # give a (wrongly) triggered reconcile time to act
    assert node.haproxy_pids() == before
    assert node.get("gateways", "keep")["version"] == version
    assert (node.data_dir / "run" / "haproxy.cfg").read_text() == config
    assert count_served(url, 3) == {"kept": 3}


def test_a_gateway_haproxy_rejects_does_not_block_others(
    make_node: Callable[..., Node], backends: Backends
) -> None:
    node = make_node("--allow-raw-acl")
    a = backends.start("good")
    good_port, bad_port = free_port(), free_port()
    node.apply(service("iso:svc", a), gateway("iso-good", good_port, {"iso:svc": {}}))
    # Parses as a raw ACL, but HAProxy has no such fetch: only `haproxy -c` can tell.
    bad = gateway("iso-bad", bad_port, {"iso:svc": {"condition": "< no_such_fetch(x) >"}})
    response = node.api.post("/api/v1/gateways", json=bad)
    assert response.status_code == 201, response.text
    wait_until(lambda: node.get("gateways", "iso-bad")["status"].get("state") == "rejected")
    status = node.get("gateways", "iso-bad")["status"]
    assert status["applied"] is False
    assert "HAProxy rejected it" in status["errors"][0]
    # The good gateway is served, and keeps being changed while the bad one sits there.
    assert count_served(f"http://127.0.0.1:{good_port}/", 3) == {"good": 3}
    other_port = free_port()
    node.apply(gateway("iso-other", other_port, {"iso:svc": {}}))
    assert count_served(f"http://127.0.0.1:{other_port}/", 3) == {"good": 3}
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{bad_port}/")


def test_two_bad_gateways_among_many_are_found_by_halves(
    make_node: Callable[..., Node], backends: Backends
) -> None:
    node = make_node("--allow-raw-acl")
    a = backends.start("many")
    port = free_port()
    bad = {"iso:svc": {"condition": "< no_such_fetch(x) >"}}
    documents = [service("iso:svc", a)]
    documents += [
        gateway(f"g{n:02}", port, bad if n in (5, 17) else {"iso:svc": {}},
                virtual_hosts=[f"g{n}.example.com"])
        for n in range(24)
    ]  # fmt: skip
    response = node.api.post("/api/v1/apply", json=documents)
    assert response.status_code == 200, response.text
    for name in ("g05", "g17"):
        wait_until(lambda n=name: node.get("gateways", n)["status"].get("state") == "rejected")
        assert "HAProxy rejected it" in node.get("gateways", name)["status"]["errors"][0]
    served = count_served(f"http://127.0.0.1:{port}/", 3, headers={"Host": "g6.example.com"})
    assert served == {"many": 3}
    assert node.get("gateways", "g06")["status"]["state"] == "serving"


def test_restart_on_the_same_data_dir_serves_the_same_configuration(
    make_node: Callable[..., Node], backends: Backends, tmp_path: object
) -> None:
    node = make_node()
    a = backends.start("persisted")
    port = free_port()
    node.apply(service("persist:svc", a), gateway("persist", port, {"persist:svc": {}}))
    url = f"http://127.0.0.1:{port}/"
    wait_until(lambda: count_served(url, 2) == {"persisted": 2})
    master, _ = node.haproxy_pids()
    node.stop()
    assert not pid_alive(master), "stopping meshgate stops its HAProxy"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)
    node.start()
    wait_until(lambda: count_served(url, 2) == {"persisted": 2})
    assert node.get("gateways", "persist")["status"]["applied"] is True


def test_haproxy_is_restarted_when_it_dies(node: Node, backends: Backends) -> None:
    a = backends.start("phoenix")
    port = free_port()
    node.apply(service("phoenix:svc", a), gateway("phoenix", port, {"phoenix:svc": {}}))
    url = f"http://127.0.0.1:{port}/"
    wait_until(lambda: count_served(url, 2) == {"phoenix": 2})
    master, _ = node.haproxy_pids()
    os.kill(master, signal.SIGKILL)
    wait_until(lambda: node.haproxy_pids()[0] != master, timeout=15)
    wait_until(lambda: count_served(url, 2) == {"phoenix": 2})


def test_up_applies_manifests_and_stops_on_sigterm(
    make_node: Callable[..., Node], backends: Backends, tmp_path: object
) -> None:
    from pathlib import Path

    directory = Path(str(tmp_path)) / "manifests"
    directory.mkdir()
    a = backends.start("from-file")
    port = free_port()
    (directory / "app.yaml").write_text(
        f"kind: service\nname: file:svc\ninstances: ['127.0.0.1:{a}']\n---\n"
        f"name: file\nport: {port}/http\nroutes:\n  file:svc: {{}}\n"
    )
    node = make_node("-f", str(directory))
    node.wait_applied("gateways", "file")
    url = f"http://127.0.0.1:{port}/"
    wait_until(lambda: count_served(url, 2) == {"from-file": 2})
    assert node.process is not None
    node.process.send_signal(signal.SIGTERM)
    assert node.process.wait(timeout=15) == 0
    assert subprocess.run(["pgrep", "-f", str(node.data_dir)], check=False).returncode == 1


def test_a_port_held_by_another_process_rejects_only_that_gateway(
    node: Node, backends: Backends
) -> None:
    a = backends.start("bound")
    taken, open_port = free_port(), free_port()
    with socket.socket() as squatter:  # no SO_REUSEPORT: HAProxy cannot share this port
        squatter.bind(("0.0.0.0", taken))
        squatter.listen()
        node.api.post("/api/v1/services", json=service("held:svc", a))
        response = node.api.post("/api/v1/gateways", json=gateway("held", taken, {"held:svc": {}}))
        assert response.status_code == 201, response.text
        wait_until(lambda: node.get("gateways", "held")["status"].get("state") == "rejected")
        assert "cannot be bound" in node.get("gateways", "held")["status"]["errors"][0]
        # Everything else keeps being applied.
        node.apply(gateway("held-other", open_port, {"held:svc": {}}))
        assert count_served(f"http://127.0.0.1:{open_port}/", 3) == {"bound": 3}
    # Once the port is free, the agent tries the gateway again by itself (every 5 s).
    wait_until(lambda: node.get("gateways", "held")["status"].get("applied") is True, timeout=20)
    assert count_served(f"http://127.0.0.1:{taken}/", 3) == {"bound": 3}
