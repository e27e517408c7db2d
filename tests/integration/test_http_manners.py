"""What instances see of HAProxy: a Host header in health checks (strict servers answer 400
without one) and X-Forwarded-* headers on requests; and what clients see: opaque sticky cookies.
Against real HAProxy, a real nginx and an HTTP/1.1 parser that enforces Host (h11)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h11
import httpx
import pytest

from tests.integration.conftest import LineServer, Node, free_port, wait_for_port
from tests.integration.discovery_helpers import instance_status
from tests.integration.test_routing import gateway, wait_until
from tests.tlscerts import Authority

pytestmark = pytest.mark.integration

CERTIFICATE = Authority("meshgate forwarded-headers CA").issue("shop.example")

NGINX = "/usr/sbin/nginx"
# nginx answers a check or request with what it received, so the test reads it from traffic.
ECHO = "$host|$http_x_forwarded_for|$http_x_forwarded_proto|$http_x_forwarded_host"


@dataclass
class Nginx:
    port: int
    access_log: Path

    def hosts_seen(self) -> set[str]:
        """The Host of every request nginx logged (health checks included)."""
        return set(self.access_log.read_text().split())


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    if not Path(NGINX).exists():  # pragma: no cover - scripts/setup.sh installs it
        pytest.skip("nginx is not installed")
    port = free_port()
    temp = "\n".join(
        f"    {kind}_temp_path {tmp_path / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"daemon off;\nworker_processes 1;\npid {tmp_path / 'nginx.pid'};\n"
        f"error_log {tmp_path / 'error.log'};\nevents {{}}\nhttp {{\n"
        "    log_format hosts '$http_host';\n"
        f"    access_log {tmp_path / 'access.log'} hosts;\n    default_type text/plain;\n{temp}\n"
        f"    server {{\n        listen 127.0.0.1:{port};\n        listen [::1]:{port};\n"
        f'        location / {{ return 200 "{ECHO}\\n"; }}\n    }}\n}}\n'
    )
    process = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(conf)])
    try:
        wait_for_port(port)
        yield Nginx(port, tmp_path / "access.log")
    finally:
        process.terminate()
        process.wait(10)


def h11_reply(received: bytes) -> bytes:
    """An HTTP/1.1 server as strict as h11 (uvicorn's parser): 400 without a Host header."""
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(received)
    try:
        event = connection.next_event()
    except h11.RemoteProtocolError:
        return b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    if not isinstance(event, h11.Request):  # a request cut short: no answer
        return b""
    return b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n"


def checked_service(name: str, port: int, **check: str) -> dict[str, object]:
    return {
        "kind": "service",
        "name": name,
        "instances": [f"127.0.0.1:{port}"],
        "health_check": {"type": "http", "path": "/health", "interval": "200ms", "rise": 1,
                         "fall": 1, **check},
    }  # fmt: skip


def test_http_checks_send_a_host_that_strict_servers_accept(node: Node, nginx: Nginx) -> None:
    with LineServer(h11_reply) as strict:
        node.apply(
            checked_service("nginx", nginx.port),
            checked_service("strict", strict.port),
            checked_service("named", nginx.port, host="health.internal"),
            {
                **checked_service("v6", 0),
                "instances": [{"address": "::1", "port": nginx.port, "id": "v6"}],
            },
            gateway(
                "strict-checks", free_port(), {s: {} for s in ("nginx", "strict", "named", "v6")}
            ),
        )
        for name in ("nginx", "strict", "named", "v6"):
            wait_until(lambda name=name: set(instance_status(node, name).values()) == {"UP"})
        assert strict.received > 0
    # Without `host:` the instance's address (IPv6 in brackets); with it, the name given.
    assert {"127.0.0.1", "[::1]", "health.internal"} <= nginx.hosts_seen()
    assert "-" not in nginx.hosts_seen()


def test_instances_learn_the_client_address_and_scheme(node: Node, nginx: Nginx) -> None:
    port, secure_port = free_port(), free_port()
    node.apply(
        checked_service("echo", nginx.port),
        CERTIFICATE.document("forwarded-cert"),
        gateway("forwarded", port, {"echo": {}}),
        gateway("plain", free_port(), {"echo": {}}, forwarded_headers=False),
        {
            **gateway("secure", secure_port, {"echo": {}}),
            "tls": {"certificates": ["forwarded-cert"]},
        },
    )
    url = f"http://127.0.0.1:{port}/"
    wait_until(lambda: httpx.get(url).status_code == 200)
    # The client's own X-Forwarded-For is kept, HAProxy's entry follows; a claimed https on a
    # plain connection is replaced, a claimed X-Forwarded-Host removed (Host itself is passed on).
    spoofed = {"host": "shop.example", "x-forwarded-for": "203.0.113.9",
               "x-forwarded-proto": "https", "x-forwarded-host": "evil.example"}  # fmt: skip
    host, forwarded_for, proto, forwarded_host = httpx.get(url, headers=spoofed).text.split("|")
    assert (host, proto, forwarded_host.strip()) == ("shop.example", "http", "")
    assert forwarded_for == "203.0.113.9, 127.0.0.1"

    secure_url = f"https://127.0.0.1:{secure_port}/"
    claims = {"host": "shop.example", "x-forwarded-proto": "http"}

    def answer() -> str:
        return httpx.get(secure_url, headers=claims, verify=False).text

    wait_until(lambda: answer().count("|") == 3)
    assert answer().strip() == "shop.example|127.0.0.1|https|"

    plain = node.get("gateways", "plain")["port"]
    plain_url = f"http://127.0.0.1:{str(plain).split('/')[0]}/"
    wait_until(lambda: httpx.get(plain_url).status_code == 200)
    assert httpx.get(plain_url).text.strip() == "127.0.0.1|||"  # none of the three
