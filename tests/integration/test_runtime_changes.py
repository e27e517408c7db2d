"""Changes that reach HAProxy without a reload, and reloads that no client notices (issue 3)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Backends, Node, count_served, free_port
from tests.integration.test_routing import gateway, service, wait_until

pytestmark = pytest.mark.integration


def test_weights_instances_and_aliases_change_without_touching_haproxy(
    node: Node, backends: Backends
) -> None:
    v1, v2, v2b = backends.start("v1"), backends.start("v2"), backends.start("v2b")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    host = {"Host": "rt.example.com"}

    def routes(w1: int, w2: int) -> dict[str, Any]:
        return {"rt:v1": {"weight": w1}, "rt:v2": {"weight": w2}}

    node.apply(
        service("rt:v1", v1),
        service("rt:v2", v2),
        gateway("rt", port, routes(100, 0), virtual_hosts=["rt.example.com"]),
    )
    wait_until(lambda: count_served(url, 5, headers=host) == {"v1": 5})
    pids = node.haproxy_pids()

    node.apply(gateway("rt", port, routes(0, 100), virtual_hosts=["rt.example.com"]))
    assert count_served(url, 20, headers=host) == {"v2": 20}

    node.apply(service("rt:v2", v2, v2b))
    wait_until(lambda: set(count_served(url, 10, headers=host)) == {"v2", "v2b"})

    node.apply(service("rt:v2", v2b))
    assert count_served(url, 20, headers=host) == {"v2b": 20}

    aliases = ["rt.example.com", "alias.example.com", "*.rt.example.com"]
    node.apply(gateway("rt", port, routes(0, 100), virtual_hosts=aliases))
    assert count_served(url, 5, headers={"Host": "alias.example.com"}) == {"v2b": 5}
    assert count_served(url, 5, headers={"Host": "x.rt.example.com"}) == {"v2b": 5}

    assert node.haproxy_pids() == pids, "no change above may restart or reload HAProxy"
    metrics = node.api.get("/metrics").text
    assert "meshgate_runtime_commands_total" in metrics


class Load:
    """Two clients on loopback until stopped (or 120 s): one keep-alive, one new connection each."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url, self.headers = url, headers
        self.results: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(keep_alive,)) for keep_alive in (True, False)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, keep_alive: bool) -> None:
        deadline = time.monotonic() + 120
        limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
        with httpx.Client(limits=limits, timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    response = client.get(self.url, headers=self.headers)
                    self.results[str(response.status_code)] += 1
                    if response.status_code != 200:
                        self.failures.append(
                            f"{time.monotonic():.3f} status {response.status_code}: {response.text}"
                        )
                except httpx.HTTPError as exc:
                    self.results["error"] += 1
                    self.failures.append(repr(exc))


def test_fifty_mixed_changes_under_load_fail_no_request(node: Node, backends: Backends) -> None:
    stable = [backends.start(f"s{n}") for n in range(2)]
    spare = [backends.start(f"x{n}") for n in range(3)]
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    host = {"Host": "load.example.com"}
    node.apply(
        service("load:a", *stable),
        service("load:b", stable[0]),
        gateway(
            "load",
            port,
            {"load:a": {"weight": 50}, "load:b": {"weight": 50}},
            virtual_hosts=["load.example.com"],
        ),
    )
    wait_until(lambda: count_served(url, 10, headers=host).keys() <= {"s0", "s1"})
    reloads_before = _reloads(node)
    extra_ports: list[int] = []
    with Load(url, host) as load:
        for step in range(50):
            kind = step % 5
            if kind == 0:
                weight = (step * 7) % 101
                routes = {"load:a": {"weight": weight}, "load:b": {"weight": 100 - weight}}
                node.apply(
                    gateway("load", port, routes, virtual_hosts=["load.example.com"]),
                )
            elif kind == 1:
                node.apply(service("load:a", *stable, spare[step % 3]))
            elif kind == 2:
                node.apply(service("load:a", *stable))
            elif kind == 3:
                hosts = ["load.example.com", f"alias{step}.example.com"]
                weights = {"load:a": {"weight": 50}, "load:b": {"weight": 50}}
                node.apply(gateway("load", port, weights, virtual_hosts=hosts))
            else:
                # A new gateway on a new port: this one needs a reload.
                extra_ports.append(free_port())
                node.apply(gateway(f"load-extra-{step}", extra_ports[-1], {"load:b": {}}))
    assert load.failures == [], load.failures[:5]
    assert load.results["200"] > 200, load.results
    assert _reloads(node) - reloads_before >= 10  # the extra gateways did reload
    for extra in extra_ports:
        node.delete("gateways", f"load-extra-{extra_ports.index(extra) * 5 + 4}")


def _reloads(node: Node) -> float:
    for line in node.api.get("/metrics").text.splitlines():
        if line.startswith("meshgate_haproxy_reloads_total "):
            return float(line.split()[1])
    raise AssertionError("no reload counter in /metrics")


def test_a_burst_of_changes_costs_one_reload(node: Node, backends: Backends) -> None:
    a = backends.start("burst")
    node.apply(service("burst:svc", a))
    before = _reloads(node)
    ports: list[int] = []
    while len(ports) < 10:  # free_port picks at random: the same port may come twice
        port = free_port()
        if port not in ports:
            ports.append(port)
    for index, port in enumerate(ports):  # ten separate API calls, as fast as they go
        response = node.api.post(
            "/api/v1/gateways", json=gateway(f"burst-{index}", port, {"burst:svc": {}})
        )
        assert response.status_code == 201, response.text
    for index in range(10):
        node.wait_applied("gateways", f"burst-{index}")
    assert _reloads(node) - before <= 1
    # Re-applying identical documents changes nothing at all.
    pids = node.haproxy_pids()
    for index, port in enumerate(ports):
        node.apply(gateway(f"burst-{index}", port, {"burst:svc": {}}))
    assert _reloads(node) - before <= 1
    assert node.haproxy_pids() == pids
    for index in range(10):
        node.delete("gateways", f"burst-{index}")


def test_runtime_changes_survive_a_haproxy_restart(node: Node, backends: Backends) -> None:
    first, second = backends.start("before"), backends.start("after")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    node.apply(service("survive:svc", first), gateway("survive", port, {"survive:svc": {}}))
    wait_until(lambda: count_served(url, 3) == {"before": 3})
    pids = node.haproxy_pids()
    node.apply(service("survive:svc", second))  # a runtime change: no reload
    assert count_served(url, 3) == {"after": 3}
    assert node.haproxy_pids() == pids

    os.kill(pids[0], signal.SIGKILL)
    # The watchdog restarts HAProxy from its last reload; the agent then brings back what was
    # changed at run time since.
    wait_until(lambda: node.haproxy_pids()[0] != pids[0], timeout=15)
    wait_until(lambda: count_served(url, 3) == {"after": 3}, timeout=15)
    # The agent's reload leaves the restarted worker (which still has "before") accepting for
    # its grace period; once it is gone, every request goes to "after". It usually leaves at
    # once, but a connection it still serves keeps it until hard-stop-after (30 s by default).
    wait_until(lambda: node.api.get("/healthz").json()["old_workers"] == 0, timeout=40)
    assert count_served(url, 20) == {"after": 20}
