"""Health checks against real HAProxy and real backends: active http, tcp send/expect and agent
checks, passive checks from live traffic, and what a killed instance costs clients."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from meshgate.haproxy.runtime import RuntimeClient
from tests.integration.conftest import Background, LineServer, Node, count_served, free_port
from tests.integration.discovery_helpers import Demos, instance_status, register
from tests.integration.test_routing import gateway, service, wait_until

pytestmark = pytest.mark.integration


def backend_of(node: Node, gateway_name: str, route: str) -> str:
    return str(node.get("gateways", gateway_name)["status"]["routes"][route]["backend"])


def haproxy_view(node: Node, backend: str) -> dict[str, str]:
    """server -> UP/DOWN/MAINT as the running worker reports it now."""
    run = node.data_dir.resolve() / "run"
    client = RuntimeClient(str(run / "admin.sock"), str(run / "master.sock"))
    rows = asyncio.run(client.stats(backend))
    return {r.svname: r.status.split()[0] for r in rows if r.svname not in ("BACKEND",)}


def test_http_check_takes_an_instance_out_within_interval_times_fall_and_back_within_rise(
    node: Node, demos: Demos, tmp_path: Path
) -> None:
    flag = tmp_path / "sick"
    sick, _ = demos.start("sick", fail_health_file=flag)
    well, _ = demos.start("well")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    interval_s, fall, rise = 0.3, 2, 3
    check = {"type": "http", "path": "/health", "expect_status": "200-299", "interval": "300ms",
             "fall": fall, "rise": rise, "expect_body": "ok", "method": "GET",
             "host": "health.internal"}  # fmt: skip
    node.apply(service("hc", sick, well, health_check=check), gateway("hc", port, {"hc": {}}))
    wait_until(lambda: set(count_served(url, 20)) == {"sick", "well"})

    flag.touch()
    failed_at = time.monotonic()
    wait_until(lambda: count_served(url, 10) == {"well": 10}, timeout=5)
    out_after = time.monotonic() - failed_at
    # The check that sees the failure may start up to one interval later; the rest of the slack
    # is this test's own probing (ten requests a poll), slower on a busy machine. The defaults
    # (2 s x 3) would take several times as long.
    assert out_after <= interval_s * (fall + 1) + 1.5, f"taken out after {out_after:.2f} s"
    wait_until(lambda: instance_status(node, "hc")[f"127.0.0.1:{sick}"] == "DOWN", timeout=3)

    flag.unlink()
    healed_at = time.monotonic()
    wait_until(lambda: "sick" in count_served(url, 10), timeout=5)
    back_after = time.monotonic() - healed_at
    assert back_after <= interval_s * (rise + 1) + 1.5, f"back after {back_after:.2f} s"
    wait_until(lambda: instance_status(node, "hc")[f"127.0.0.1:{sick}"] == "UP", timeout=3)
    print(f"\nhttp check (inter 300ms, fall 2, rise 3): out after {out_after:.2f} s, "
          f"back after {back_after:.2f} s")  # fmt: skip


class Client(Background):
    """Requests on loopback in a loop (new connection each time) until stopped, bounded to
    60 s; each result is recorded with the time it completed."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.results: list[tuple[float, bool]] = []

    def _run(self) -> None:
        with httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as http:
            while self.running():
                try:
                    ok = http.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.results.append((time.monotonic(), ok))


def test_a_killed_instance_costs_no_failed_request_once_detected(node: Node, demos: Demos) -> None:
    victim_port, victim = demos.start("victim")
    survivor_port, _ = demos.start("survivor")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    check = {"type": "http", "path": "/health", "interval": "500ms", "fall": 2, "rise": 2}
    retry_on = ["empty-response", "junk-response"]
    node.apply(
        service("kill", victim_port, survivor_port, health_check=check, retry_on=retry_on),
        gateway("kill", port, {"kill": {}}),
    )
    wait_until(lambda: set(count_served(url, 20)) == {"victim", "survivor"})
    backend = backend_of(node, "kill", "kill")
    victim_id = f"127.0.0.1:{victim_port}"

    with Client(url) as client:
        time.sleep(0.5)
        victim.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        wait_until(lambda: haproxy_view(node, backend).get(victim_id) == "DOWN", timeout=5)
        detected_at = time.monotonic()
        time.sleep(1.0)
    before = [ok for at, ok in client.results if killed_at <= at < detected_at]
    after = [ok for at, ok in client.results if at >= detected_at]
    print(
        f"\nkilled instance: detected after {detected_at - killed_at:.2f} s; "
        f"{before.count(False)} of {len(before)} requests failed before detection, "
        f"{after.count(False)} of {len(after)} after"
    )
    assert after and all(after), "no request may fail once the instance is marked down"
    # Connection refused is retried on another instance (retries + redispatch), and so is a
    # GET cut off by the kill (retry_on), so even before detection a dead instance costs
    # (almost) nothing.
    assert before.count(False) <= 2, f"{before.count(False)} failures before detection"


def test_tcp_send_expect_and_agent_checks_set_instance_status(node: Node, demos: Demos) -> None:
    state = {"pong": b"+PONG\r\n", "agent": b"up\n"}
    redis_like = LineServer(lambda got: state["pong"] if got.startswith(b"PING") else b"-ERR\r\n")
    agent = LineServer(lambda _: state["agent"], read=False)
    web, _ = demos.start("agent-managed")
    with redis_like, agent:
        tcp_check = {"type": "tcp", "send": "PING\r\n", "expect": "+PONG", "interval": "200ms",
                     "rise": 1, "fall": 1}  # fmt: skip
        agent_check = {"type": "agent", "port": agent.port, "interval": "200ms", "rise": 1,
                       "fall": 1}  # fmt: skip
        tcp_port, web_port = free_port(), free_port()
        node.apply(
            {**service("redis", redis_like.port, health_check=tcp_check), "mode": "tcp"},
            {"name": "redis", "port": f"{tcp_port}/tcp", "routes": {"redis": {}}},
            service("agented", web, health_check=agent_check),
            gateway("agented", web_port, {"agented": {}}),
        )
        redis_id, web_id = f"127.0.0.1:{redis_like.port}", f"127.0.0.1:{web}"
        wait_until(lambda: instance_status(node, "redis").get(redis_id) == "UP")
        wait_until(lambda: instance_status(node, "agented").get(web_id) == "UP")

        state["pong"] = b"-LOADING\r\n"
        wait_until(lambda: instance_status(node, "redis")[redis_id] == "DOWN")
        state["pong"] = b"+PONG\r\n"
        wait_until(lambda: instance_status(node, "redis")[redis_id] == "UP")

        state["agent"] = b"maint\n"
        wait_until(lambda: instance_status(node, "agented")[web_id] == "MAINT")
        url = f"http://127.0.0.1:{web_port}/"
        assert count_served(url, 3) == {"503": 3}
        state["agent"] = b"ready up\n"
        wait_until(lambda: instance_status(node, "agented")[web_id] == "UP")
        assert count_served(url, 3) == {"agent-managed": 3}


class _Failing(BaseHTTPRequestHandler):
    """Passes its health check, fails every real request with a 500."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        status = 200 if self.path == "/health" else 500
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        return  # HAProxy closing a connection mid-request is expected here, not news


def test_passive_checks_mark_a_registered_instance_down_without_a_reload(
    node: Node, demos: Demos
) -> None:
    steady, _ = demos.start("steady")
    failing = _QuietServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=failing.serve_forever, daemon=True).start()
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    # A slow active check that the failing instance passes: only traffic can take it out.
    check = {"type": "http", "path": "/health", "interval": "30s", "rise": 1, "fall": 1}
    try:
        node.apply(
            service("passive", steady, health_check=check, passive={"error_limit": 3}),
            gateway("passive", port, {"passive": {}}),
        )
        wait_until(lambda: count_served(url, 3) == {"steady": 3})
        pids = node.haproxy_pids()
        register(node, "passive", address="127.0.0.1", port=failing.server_port, id="failing")
        wait_until(lambda: "500" in count_served(url, 10))
        assert node.haproxy_pids() == pids, "a server with passive checks is added at run time"
        # Round robin: every other request reaches "failing"; three errors in a row take it out.
        wait_until(lambda: instance_status(node, "passive").get("failing") == "DOWN", timeout=5)
        assert count_served(url, 10) == {"steady": 10}
    finally:
        failing.shutdown()
        failing.server_close()
