"""One health check per instance per node, against real HAProxy and a real instance that counts
the checks it answers: fifty gateways route to it, and it is checked about once per interval,
not fifty times; its health still reaches every gateway's server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from meshgate.haproxy.runtime import RuntimeClient
from tests.integration.conftest import Node, free_port
from tests.integration.discovery_helpers import instances_url, register
from tests.integration.test_routing import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GATEWAYS = 50
INTERVAL_S = 0.2
SERVICE = "counted"


class CountingInstance:
    """An HTTP instance on a fixed port that answers its name and counts `/health` requests;
    stopped and started again on the same port."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.health_requests = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                if self.path == "/health":
                    with owner._lock:
                        owner.health_requests += 1
                body = owner.name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                return  # HAProxy closing a check connection early is no news

        self._server = Quiet(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def checks_in(self, seconds: float) -> int:
        before = self.health_requests
        time.sleep(seconds)
        return self.health_requests - before


@pytest.fixture
def counted() -> Iterator[CountingInstance]:
    instance = CountingInstance("counted")
    instance.start()
    yield instance
    instance.stop()


def host(index: int) -> str:
    return f"g{index:02d}.checks.test"


def answers(port: int) -> list[str]:
    """One request through each gateway: its answer, or the status."""
    found = []
    with httpx.Client(timeout=5) as client:
        for index in range(GATEWAYS):
            response = client.get(f"http://127.0.0.1:{port}/", headers={"Host": host(index)})
            ok = response.status_code == 200
            found.append(response.text.strip() if ok else str(response.status_code))
    return found


def route_servers(node: Node, server: str) -> dict[str, str]:
    """backend -> status of `server` in every route backend that has it (checkers left out)."""
    run = node.data_dir.resolve() / "run"
    client = RuntimeClient(str(run / "admin.sock"), str(run / "master.sock"))
    rows = asyncio.run(client.stats())
    return {
        r.pxname: r.status.split()[0]
        for r in rows
        if r.svname == server and not r.pxname.startswith("mg_checks.")
    }


def spares(node: Node) -> list[str]:
    """The status of each spare server of the checker backends."""
    run = node.data_dir.resolve() / "run"
    client = RuntimeClient(str(run / "admin.sock"), str(run / "master.sock"))
    rows = asyncio.run(client.stats())
    return [
        r.status.split()[0]
        for r in rows
        if r.pxname.startswith("mg_checks.") and r.svname.startswith("spare")
    ]


def test_fifty_gateways_to_one_instance_check_it_once_and_all_follow_its_health(
    node: Node, counted: CountingInstance
) -> None:
    port = free_port()
    check = {"type": "http", "path": "/health", "interval": "200ms", "rise": 1, "fall": 1}
    documents: list[dict[str, object]] = [
        {
            "kind": "service",
            "name": SERVICE,
            "instances": [f"127.0.0.1:{counted.port}"],
            "health_check": check,
        }
    ]
    documents += [
        {
            "kind": "gateway",
            "name": f"shared{index:02d}",
            "port": f"{port}/http",
            "bind": "127.0.0.1",
            "virtual_hosts": [host(index)],
            "routes": {SERVICE: {}},
        }
        for index in range(GATEWAYS)
    ]
    node.apply(*documents)
    service = documents[0]
    wait_until(lambda: set(answers(port)) == {"counted"}, timeout=20)
    instance_id = f"127.0.0.1:{counted.port}"
    assert len(route_servers(node, instance_id)) == GATEWAYS

    # The checker backend is no route: not in /metrics, a gateway's stats or the graph.
    wait_until(lambda: 'gateway="shared00"' in node.api.get("/metrics").text, timeout=10)
    for path in ("/metrics", "/api/v1/gateways/shared00/stats", "/api/v1/graph"):
        response = node.api.get(path)
        assert response.status_code == 200, (path, response.text)
        assert "mg_checks" not in response.text, path

    # About one check per interval, where each gateway's own check made it fifty.
    window_s = 3.0
    checks = counted.checks_in(window_s)
    per_interval = checks / (window_s / INTERVAL_S)
    print(
        f"\n{GATEWAYS} gateways: {checks} checks in {window_s:g} s, {per_interval:.2f} an interval"
    )
    assert 0.3 <= per_interval <= 2.5, f"{checks} checks in {window_s} s"

    # The instance stops: every gateway's server follows the one check down.
    counted.stop()
    wait_until(lambda: set(route_servers(node, instance_id).values()) == {"DOWN"}, timeout=10)
    assert set(answers(port)) == {"503"}
    # And back up when it returns.
    counted.start()
    wait_until(lambda: set(route_servers(node, instance_id).values()) == {"UP"}, timeout=10)
    wait_until(lambda: set(answers(port)) == {"counted"}, timeout=10)

    # An instance registered at run time serves through every gateway, without a reload, and
    # is checked once too: its route servers track a spare checker server lent to it.
    pids = node.haproxy_pids()
    added = CountingInstance("added")
    added.start()
    try:
        register(node, SERVICE, address="127.0.0.1", port=added.port, id="added")
        wait_until(lambda: set(route_servers(node, "added").values()) == {"UP"}, timeout=20)
        checks = added.checks_in(window_s)
        print(f"added at run time: {checks} checks in {window_s:g} s")
        assert checks / (window_s / INTERVAL_S) <= 2.5
        counted.stop()  # now every request must reach the new instance
        wait_until(lambda: set(answers(port)) == {"added"}, timeout=20)
        # Its health reaches every gateway's server through the spare.
        added.stop()
        wait_until(lambda: set(route_servers(node, "added").values()) == {"DOWN"}, timeout=10)
        added.start()
        wait_until(lambda: set(route_servers(node, "added").values()) == {"UP"}, timeout=10)
        assert sorted(spares(node)) == ["MAINT", "UP"]  # one lent, one left
        # Deregistered: its route servers are deleted, then the spare is back in maintenance.
        removed = node.api.delete(f"{instances_url(SERVICE)}/added")
        assert removed.status_code in (200, 204), removed.text
        wait_until(lambda: route_servers(node, "added") == {}, timeout=20)
        wait_until(lambda: spares(node) == ["MAINT", "MAINT"], timeout=10)
    finally:
        added.stop()
    assert node.haproxy_pids() == pids, "an instance was added by a reload"

    # The first instance leaves and comes back at run time: its servers follow the check the
    # configuration already has for its address, so it is still checked about once.
    counted.start()
    node.apply({**service, "instances": []})
    wait_until(lambda: route_servers(node, instance_id) == {}, timeout=20)
    node.apply(service)
    wait_until(lambda: set(route_servers(node, instance_id).values()) == {"UP"}, timeout=20)
    checks = counted.checks_in(window_s)
    print(f"back at run time: {checks} checks in {window_s:g} s")
    assert checks / (window_s / INTERVAL_S) <= 2.5
    assert node.haproxy_pids() == pids, "an instance was added by a reload"
