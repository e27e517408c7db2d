"""meshgate as a daemon: one process per data dir, SIGHUP, and restarts that cost no request."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Backends, Background, Node, count_served, free_port
from tests.integration.test_health import backend_of, haproxy_view
from tests.integration.test_routing import gateway, service, wait_until

pytestmark = pytest.mark.integration


class Client(Background):
    """GETs on loopback in a loop, a new connection each, until stopped (bounded to 60 s);
    keeps every failure: its time and what went wrong."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.total = 0
        self.failed: list[tuple[float, str]] = []

    def _run(self) -> None:
        with httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as http:
            while self.running():
                try:
                    status = http.get(self.url).status_code
                    error = "" if status == 200 else f"HTTP {status}"
                except httpx.HTTPError as exc:
                    error = repr(exc)
                self.total += 1
                if error:
                    self.failed.append((time.monotonic(), error))


def failures(client: Client) -> tuple[int, int]:
    if client.failed:
        print(f"\nfirst failure: {client.failed[0]}, last: {client.failed[-1]}")
    return len(client.failed), client.total


def test_a_second_up_on_the_same_data_dir_exits_naming_the_holder(
    node: Node, backends: Backends
) -> None:
    a = backends.start("first")
    port = free_port()
    node.apply(service("lock:svc", a), gateway("lock", port, {"lock:svc": {}}))
    before = node.haproxy_pids()
    assert node.process is not None
    second = subprocess.run(
        [sys.executable, "-m", "meshgate", "up", "--data-dir", str(node.data_dir),
         "--api", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert second.returncode == 1
    assert f"in use by process {node.process.pid}" in second.stderr
    assert node.haproxy_pids() == before
    assert count_served(f"http://127.0.0.1:{port}/", 2) == {"first": 2}


def test_sighup_applies_the_manifests_again(
    make_node: Callable[..., Node], backends: Backends, tmp_path: Path
) -> None:
    a, b = backends.start("before"), backends.start("after")
    port = free_port()
    manifest = tmp_path / "app.yaml"

    def write(instance: int) -> None:
        manifest.write_text(
            f"kind: service\nname: hup:svc\ninstances: ['127.0.0.1:{instance}']\n---\n"
            f"name: hup\nport: {port}/http\nroutes:\n  hup:svc: {{}}\n"
        )

    write(a)
    node = make_node("-f", str(manifest))
    url = f"http://127.0.0.1:{port}/"
    wait_until(lambda: count_served(url, 2) == {"before": 2})
    assert node.process is not None
    manifest.write_text("kind: service\nname: [broken\n")
    node.process.send_signal(signal.SIGHUP)
    wait_until(lambda: "manifests not applied on SIGHUP" in node.log())
    assert count_served(url, 2) == {"before": 2}
    write(b)
    node.process.send_signal(signal.SIGHUP)
    wait_until(lambda: count_served(url, 2) == {"after": 2})
    assert node.process.poll() is None


def test_kill_9_and_restart_of_meshgate_fails_no_request(
    make_node: Callable[..., Node], backends: Backends
) -> None:
    a = backends.start("adopted")
    port = free_port()
    node = make_node()
    node.apply(service("adopt:svc", a), gateway("adopt", port, {"adopt:svc": {}}))
    url = f"http://127.0.0.1:{port}/"
    wait_until(lambda: count_served(url, 2) == {"adopted": 2})
    master, workers = node.haproxy_pids()
    assert node.process is not None
    try:
        with Client(url) as client:
            time.sleep(0.3)
            node.process.kill()
            node.process.wait()
            time.sleep(0.5)  # meshgate is gone; HAProxy serves on
            node.start()
            node.wait_applied("gateways", "adopt")
            time.sleep(0.5)
        failed, total = failures(client)
        print(f"\nkill -9 of meshgate + restart: {failed} of {total} requests failed")
        assert failed == 0 and total > 50
        assert node.haproxy_pids() == (master, workers), "adopted, and not even reloaded"
        assert "adopted, already running it" in node.log()
        assert "took over the data dir lock" in node.log()
        assert "adopted the running HAProxy" in node.log()
    finally:
        if node.process is None:
            os.killpg(master, signal.SIGKILL)


def test_sigterm_with_keep_haproxy_leaves_it_serving_for_the_next_start(
    make_node: Callable[..., Node], backends: Backends
) -> None:
    a = backends.start("kept")
    port = free_port()
    node = make_node("--keep-haproxy")
    node.apply(service("keep:svc", a), gateway("keepha", port, {"keep:svc": {}}))
    url = f"http://127.0.0.1:{port}/"
    wait_until(lambda: count_served(url, 2) == {"kept": 2})
    master, workers = node.haproxy_pids()
    with Client(url) as client:
        time.sleep(0.3)
        node.stop()  # SIGTERM
        assert count_served(url, 2) == {"kept": 2}
        node.start()
        node.wait_applied("gateways", "keepha")
        time.sleep(0.3)
    failed, total = failures(client)
    print(f"\nSIGTERM (--keep-haproxy) + restart: {failed} of {total} requests failed")
    assert failed == 0 and total > 50
    assert node.haproxy_pids() == (master, workers)  # adopted without a reload
    assert node.process is not None
    node.process.send_signal(signal.SIGINT)  # stops HAProxy too
    node.process.wait(timeout=15)
    wait_until(lambda: not Path(f"/proc/{master}").exists())


def outage_s(client: Client) -> float:
    return client.failed[-1][0] - client.failed[0][0] if client.failed else 0.0


@pytest.mark.parametrize("victim", ["worker", "master"])
def test_a_haproxy_crash_does_not_bring_back_stale_health(
    node: Node, backends: Backends, victim: str
) -> None:
    """The state file saved at a reload while an instance was down must not keep it down
    (for rise x interval) in the HAProxy restarted after a crash."""
    instance = free_port()
    backends.start("healthy", instance)
    port = free_port()
    check = {"type": "tcp", "interval": "1s", "fall": 1, "rise": 3}
    node.apply(
        service(f"crash-{victim}", instance, health_check=check),
        gateway(f"crash-{victim}", port, {f"crash-{victim}": {}}),
    )
    url = f"http://127.0.0.1:{port}/"
    wait_until(lambda: count_served(url, 2) == {"healthy": 2})
    backend = backend_of(node, f"crash-{victim}", f"crash-{victim}")
    backends.stop(instance)
    wait_until(lambda: "DOWN" in haproxy_view(node, backend).values(), timeout=10)
    # A reload while the instance is down saves its DOWN state in the state file.
    node.apply(gateway(f"crash-{victim}-other", free_port(), {f"crash-{victim}": {}}))
    backends.start("healthy", instance)
    wait_until(lambda: count_served(url, 2) == {"healthy": 2}, timeout=10)
    master, workers = node.haproxy_pids()
    with Client(url) as client:
        time.sleep(0.3)
        os.kill(master if victim == "master" else workers[0], signal.SIGKILL)
        wait_until(lambda: node.haproxy_pids()[0] != master, timeout=15)
        time.sleep(1.5)
    failed, total = failures(client)
    errors = {error for _, error in client.failed}
    print(f"\nkill -9 of the HAProxy {victim}: {failed} of {total} requests failed over "
          f"{outage_s(client):.2f} s ({sorted(errors)})")  # fmt: skip
    assert total > 50
    assert "HTTP 503" not in errors, "the instance came back DOWN from stale state"
    assert outage_s(client) < 1.0


def test_health_and_readiness_tell_when_gateways_are_not_served(
    make_node: Callable[..., Node], backends: Backends
) -> None:
    node = make_node()
    a = backends.start("ready")
    taken = free_port()
    with socket.socket() as squatter:  # no SO_REUSEPORT: HAProxy cannot share this port
        squatter.bind(("0.0.0.0", taken))
        squatter.listen()
        node.api.post("/api/v1/services", json=service("ready:svc", a))
        node.api.post("/api/v1/gateways", json=gateway("squatted", taken, {"ready:svc": {}}))
        wait_until(lambda: node.get("gateways", "squatted")["status"].get("state") == "rejected")
        # Nothing applied is served: not healthy, whatever the API and HAProxy say.
        health = node.api.get("/healthz")
        assert health.status_code == 503, health.text
        assert health.json()["gateways"] == {"total": 1, "serving": 0}
        port = free_port()
        node.apply(gateway("served", port, {"ready:svc": {}}))
        assert node.api.get("/healthz").status_code == 200
        ready = node.api.get("/readyz")
        assert ready.status_code == 503
        reason = ready.json()["not_serving"]["default/squatted"]
        assert f"port {taken}" in reason and "Address already in use" in reason
        assert list(ready.json()["not_serving"]) == ["default/squatted"]
    node.api.delete("/api/v1/gateways/squatted")
    wait_until(lambda: node.api.get("/readyz").status_code == 200)
    assert node.api.get("/readyz").json() == {
        "status": "ok", "agent": "ok", "haproxy": "running",
        "gateways": {"total": 1, "serving": 1}, "not_serving": {},
    }  # fmt: skip
