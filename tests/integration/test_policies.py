"""Policies against real HAProxy and real clients: rate limits, client networks, basic auth,
header rules, redirects and a body size limit; networks and header values change without a
reload."""

from __future__ import annotations

import subprocess
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Node, free_port
from tests.integration.discovery_helpers import Demos
from tests.integration.test_routing import gateway, service, wait_until

pytestmark = pytest.mark.integration

PASSWORD_HASH = subprocess.run(
    ["openssl", "passwd", "-6", "s3cret"], check=True, capture_output=True, text=True
).stdout.strip()


def client(source: str = "127.0.0.1") -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(transport=transport, timeout=5)


def guarded(port: int, allow: list[str], env: str) -> dict[str, Any]:
    return gateway(
        "guarded",
        port,
        {
            "moved": {
                "weight": 0,
                "condition": "path starts with /old",
                "policies": {"redirect": {"location": "https://example.com/new", "code": 302}},
            },
            "web": {"weight": 100},
        },
        policies={
            "allow": allow,
            "basic_auth": {"realm": "admin area", "users": {"alice": PASSWORD_HASH}},
            "headers": {
                "request": {"set": {"X-Env": env}, "remove": ["X-Debug"]},
                "response": {"set": {"X-Frame-Options": "DENY"}, "remove": ["Server"]},
            },
            "max_body": "1k",
        },
    )


def test_networks_auth_headers_redirects_and_body_size(node: Node, demos: Demos) -> None:
    web, _ = demos.start("web")
    port = free_port()
    documents = [service("web", web), service("moved", web)]
    node.apply(*documents, guarded(port, ["127.0.0.1"], "prod"))
    url = f"http://127.0.0.1:{port}"
    auth = ("alice", "s3cret")
    with client() as local, client("127.0.0.2") as other:
        wait_until(lambda: local.get(f"{url}/", auth=auth).status_code == 200)
        assert other.get(f"{url}/", auth=auth).status_code == 403

        unauthorized = local.get(f"{url}/")
        assert unauthorized.status_code == 401
        assert unauthorized.headers["www-authenticate"] == 'Basic realm="admin area"'
        assert local.get(f"{url}/", auth=("alice", "wrong")).status_code == 401

        echo = local.get(f"{url}/echo", auth=auth, headers={"X-Debug": "1", "X-Env": "dev"})
        assert echo.status_code == 200
        seen = {k.lower(): v for k, v in echo.json()["headers"].items()}
        assert seen["x-env"] == "prod" and "x-debug" not in seen
        assert echo.headers["x-frame-options"] == "DENY" and "server" not in echo.headers

        moved = local.get(f"{url}/old/page", auth=auth)
        assert (moved.status_code, moved.headers["location"]) == (302, "https://example.com/new")

        assert local.post(f"{url}/", auth=auth, content=b"x" * 1024).status_code == 200
        assert local.post(f"{url}/", auth=auth, content=b"x" * 1025).status_code == 413

        # Networks and header values are map entries: they change without a reload.
        pids = node.haproxy_pids()
        node.apply(*documents, guarded(port, ["127.0.0.2/32"], "staging"))
        assert other.get(f"{url}/", auth=auth).status_code == 200
        assert local.get(f"{url}/", auth=auth).status_code == 403
        echo = other.get(f"{url}/echo", auth=auth)
        assert {k.lower(): v for k, v in echo.json()["headers"].items()}["x-env"] == "staging"
        assert node.haproxy_pids() == pids, "networks and header values must not reload"


def test_exactly_the_limit_passes_then_429_with_retry_after(node: Node, demos: Demos) -> None:
    web, _ = demos.start("limited")
    port = free_port()
    limit = {"requests": 5, "per": "20s", "by": "header(X-Client)"}
    node.apply(
        service("limited", web),
        gateway("limited", port, {"limited": {}}, policies={"rate_limit": limit}),
    )
    url = f"http://127.0.0.1:{port}/"
    with client() as local:
        # Warm up under another key, so the counted key starts at zero.
        wait_until(lambda: local.get(url, headers={"X-Client": "warm-up"}).status_code == 200)
        statuses = [local.get(url, headers={"X-Client": "a"}).status_code for _ in range(5)]
        assert statuses == [200] * 5
        refused = local.get(url, headers={"X-Client": "a"})
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "20"
        assert local.get(url, headers={"X-Client": "b"}).status_code == 200  # its own count
