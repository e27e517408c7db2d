"""Routing semantics of SPEC §1 against real HAProxy, real backends and real HTTP clients."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import pytest

from meshgate.errors import MeshgateError
from tests.integration.conftest import Backends, Node, count_served, free_port, wait_for_port

pytestmark = pytest.mark.integration

FAST_CHECK = {"type": "http", "path": "/health", "interval": "200ms", "rise": 1, "fall": 1}


def service(name: str, *ports: int, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "service",
        "name": name,
        "instances": [f"127.0.0.1:{p}" for p in ports],
        "health_check": FAST_CHECK,
        **extra,
    }


def gateway(name: str, port: int, routes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "port": f"{port}/http", "routes": routes, **extra}


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    """Poll `predicate` until true; errors count as not yet (a port may still be opening)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (httpx.HTTPError, OSError, MeshgateError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.1)


def settle(url: str, expected: set[str], timeout: float = 10.0) -> None:
    """Wait until health checks have brought every expected backend into rotation."""
    wait_until(lambda: set(count_served(url, 30)) == expected, timeout)


def test_weighted_split_follows_weights(node: Node, backends: Backends) -> None:
    a, b = backends.start("v1"), backends.start("v2")
    port = free_port()
    node.apply(
        service("split:v1", a),
        service("split:v2", b),
        gateway("split", port, {"split:v1": {"weight": "90%"}, "split:v2": {"weight": "10%"}}),
    )
    url = f"http://127.0.0.1:{port}/"
    settle(url, {"v1", "v2"})
    counts = count_served(url, 1000)
    # Binomial(1000, 0.1): mean 100, sd 9.5; 60..140 is more than 4 sd either side.
    assert 60 <= counts.get("v2", 0) <= 140, counts
    assert counts.get("v1", 0) + counts.get("v2", 0) == 1000, counts


def test_weight_change_is_followed(node: Node, backends: Backends) -> None:
    a, b = backends.start("v1"), backends.start("v2")
    port = free_port()
    routes = {"reweigh:v1": {"weight": 100}, "reweigh:v2": {"weight": 0}}
    node.apply(service("reweigh:v1", a), service("reweigh:v2", b), gateway("reweigh", port, routes))
    url = f"http://127.0.0.1:{port}/"
    settle(url, {"v1"})
    node.apply(
        gateway("reweigh", port, {"reweigh:v1": {"weight": 0}, "reweigh:v2": {"weight": 100}})
    )
    assert count_served(url, 50) == {"v2": 50}


def test_condition_routes_matching_requests(node: Node, backends: Backends) -> None:
    a, b = backends.start("stable"), backends.start("beta")
    port = free_port()
    routes = {
        "cond:stable": {"weight": 100},
        "cond:beta": {"weight": 0, "condition": "user-agent == Firefox and has cookie beta"},
    }
    node.apply(service("cond:stable", a), service("cond:beta", b), gateway("cond", port, routes))
    url = f"http://127.0.0.1:{port}/"
    settle(url, {"stable"})
    firefox = {"User-Agent": "Mozilla/5.0 Firefox/120.0"}
    assert count_served(url, 20, headers=firefox, cookies={"beta": "1"}) == {"beta": 20}
    assert count_served(url, 20, headers=firefox) == {"stable": 20}
    assert count_served(url, 20, cookies={"beta": "1"}) == {"stable": 20}


def test_condition_strength_and_rule_order(node: Node, backends: Backends) -> None:
    first, second, rest = backends.start("first"), backends.start("second"), backends.start("rest")
    port = free_port()
    routes = {
        "order:first": {"weight": 0, "condition": "has header X-Try", "condition_strength": "50%"},
        "order:second": {"weight": 0, "condition": "has header X-Try"},
        "order:rest": {"weight": 100},
    }
    node.apply(
        service("order:first", first),
        service("order:second", second),
        service("order:rest", rest),
        gateway("order", port, routes),
    )
    url = f"http://127.0.0.1:{port}/"
    settle(url, {"rest"})
    counts = count_served(url, 400, headers={"X-Try": "1"})
    # Half of the matching requests take the first route, the other half fall to the second.
    assert set(counts) == {"first", "second"}, counts
    assert 140 <= counts["first"] <= 260, counts


def test_route_without_instances_gives_its_share_away(node: Node, backends: Backends) -> None:
    a, b = backends.start("alive"), backends.start("doomed")
    port = free_port()
    routes = {"share:alive": {"weight": 50}, "share:doomed": {"weight": 50}, "share:ghost": {}}
    # share:ghost resolves to nothing at all: it must take no traffic either.
    routes["share:alive"]["weight"] = 30
    routes["share:doomed"]["weight"] = 30
    node.apply(
        service("share:alive", a), service("share:doomed", b), gateway("share", port, routes)
    )
    url = f"http://127.0.0.1:{port}/"
    settle(url, {"alive", "doomed"})
    status = node.get("gateways", "share")["status"]
    assert status["routes"]["share:ghost"]["kind"] == "unresolved"
    # Served, but not as written: the status says which target is missing.
    assert status["state"] == "degraded" and status["applied"] is True
    assert [e.split(":")[0] for e in status["errors"]] == ["routes.share"]
    assert "target 'share:ghost' does not exist" in status["errors"][0]
    backends.stop(b)
    wait_until(lambda: count_served(url, 20) == {"alive": 20})
    assert count_served(url, 100) == {"alive": 100}


def test_no_available_route_is_503(node: Node, backends: Backends) -> None:
    port = free_port()
    node.apply(gateway("empty", port, {"nowhere": {}}))
    response = httpx.get(f"http://127.0.0.1:{port}/")
    assert response.status_code == 503


def test_sticky_route_pins_client_and_ignores_dead_pin(node: Node, backends: Backends) -> None:
    a, b = backends.start("one"), backends.start("two")
    port = free_port()
    routes = {"sticky:one": {"weight": 50}, "sticky:two": {"weight": 50}}
    node.apply(
        service("sticky:one", a),
        service("sticky:two", b),
        gateway("sticky", port, routes, sticky="route"),
    )
    url = f"http://127.0.0.1:{port}/"
    settle(url, {"one", "two"})
    with httpx.Client() as client:
        first = client.get(url)
        pinned = first.text.strip()
        assert any(name.startswith("mgr_") for name in first.cookies)
        assert {client.get(url).text.strip() for _ in range(30)} == {pinned}
        backends.stop(a if pinned == "one" else b)
        other = "two" if pinned == "one" else "one"
        wait_until(lambda: client.get(url).text.strip() == other)
        assert {client.get(url).text.strip() for _ in range(10)} == {other}


def test_sticky_instance_pins_route_and_instance(node: Node, backends: Backends) -> None:
    ports = [backends.start(f"i{n}") for n in range(3)]
    port = free_port()
    node.apply(
        service("inst:svc", *ports), gateway("inst", port, {"inst:svc": {}}, sticky="instance")
    )
    url = f"http://127.0.0.1:{port}/"
    settle(url, {"i0", "i1", "i2"})
    with httpx.Client() as client:
        pinned = client.get(url).text.strip()
        assert {client.get(url).text.strip() for _ in range(30)} == {pinned}


def test_sticky_source_pins_by_client_address(node: Node, backends: Backends) -> None:
    a, b = backends.start("s1"), backends.start("s2")
    port = free_port()
    routes = {"src:s1": {"weight": 50}, "src:s2": {"weight": 50}}
    node.apply(
        service("src:s1", a), service("src:s2", b), gateway("src", port, routes, sticky="source")
    )
    url = f"http://127.0.0.1:{port}/"

    def answers_by_address() -> list[set[str]]:
        answers = []
        for last in range(2, 22):
            transport = httpx.HTTPTransport(local_address=f"127.0.0.{last}")
            with httpx.Client(transport=transport) as client:
                answers.append({client.get(url).text.strip() for _ in range(5)})
        return answers

    wait_until(lambda: set.union(*answers_by_address()) == {"s1", "s2"})
    answers = answers_by_address()
    assert all(len(a) == 1 for a in answers), answers  # one address, one route
    assert set.union(*answers) == {"s1", "s2"}  # and addresses spread over the routes


@pytest.mark.parametrize(
    "balance",
    [
        "roundrobin",
        "static-rr",
        "leastconn",
        "first",
        "source",
        "random",
        "uri",
        "url_param(user)",
        "hdr(X-User)",
    ],
)
def test_every_balance_method_serves(node: Node, backends: Backends, balance: str) -> None:
    a, b = backends.start("b1"), backends.start("b2")
    port = free_port()
    name = f"bal:{balance.replace('(', '-').replace(')', '')}"
    node.apply(
        service(name, a, b), gateway(name.replace(":", "-"), port, {name: {"balance": balance}})
    )
    url = f"http://127.0.0.1:{port}/?user=7"
    wait_until(lambda: set(count_served(url, 10, headers={"X-User": "u"})) <= {"b1", "b2"})
    counts = count_served(url, 20, headers={"X-User": "u"})
    assert set(counts) <= {"b1", "b2"} and sum(counts.values()) == 20, counts
    if balance in ("roundrobin", "static-rr"):
        assert counts == {"b1": 10, "b2": 10}
    if balance in ("source", "uri", "url_param(user)", "hdr(X-User)", "first"):
        assert len(counts) == 1  # the same key always lands on the same instance


def test_virtual_hosts_share_a_port(node: Node, backends: Backends) -> None:
    a, b, c = backends.start("site-a"), backends.start("site-b"), backends.start("fallback")
    port = free_port()
    node.apply(
        service("vh:a", a),
        service("vh:b", b),
        service("vh:default", c),
        gateway("vh-a", port, {"vh:a": {}}, virtual_hosts=["a.example.com", "*.a.example.com"]),
        gateway("vh-b", port, {"vh:b": {}}, virtual_hosts="B.example.com"),
        gateway("vh-default", port, {"vh:default": {}}),
    )
    url = f"http://127.0.0.1:{port}/"

    def served(host: str) -> str:
        return httpx.get(url, headers={"Host": host}).text.strip()

    wait_until(lambda: served("a.example.com") == "site-a")
    assert served("A.Example.COM:8080") == "site-a"
    assert served("x.y.a.example.com") == "site-a"
    assert served("b.example.com") == "site-b"
    assert served("b.example.com.other") == "fallback"
    assert served("example.com") == "fallback"
    node.delete("gateways", "vh-default")
    wait_until(lambda: httpx.get(url, headers={"Host": "nobody.example"}).status_code == 404)
    assert served("b.example.com") == "site-b"


def test_tcp_gateway(node: Node, backends: Backends) -> None:
    a = backends.start("tcp-backend")
    port = free_port()
    node.apply(
        {"kind": "service", "name": "tcp:svc", "mode": "tcp", "instances": [f"127.0.0.1:{a}"]},
        {"name": "tcp", "port": f"{port}/tcp", "sticky": "source", "routes": {"tcp:svc": {}}},
    )
    wait_for_port(port)
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/").text.strip() == "tcp-backend")
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert b"tcp-backend" in sock.recv(4096) + sock.recv(4096)


def test_gateway_chaining_and_inline_targets(node: Node, backends: Backends) -> None:
    a, b = backends.start("inner"), backends.start("inline")
    inner_port, outer_port = free_port(), free_port()
    node.apply(
        gateway("chain-inner", inner_port, {f"[127.0.0.1:{a}]": {}}),
        gateway(
            "chain-outer",
            outer_port,
            {
                "chain-inner": {"weight": 100},
                "canary": {
                    "weight": 0,
                    "targets": [f"127.0.0.1:{b}"],
                    "condition": "has header X-Canary",
                },
            },
        ),
    )
    url = f"http://127.0.0.1:{outer_port}/"
    wait_until(lambda: httpx.get(url).text.strip() == "inner")
    assert (
        node.get("gateways", "chain-outer")["status"]["routes"]["chain-inner"]["kind"] == "gateway"
    )
    wait_until(lambda: httpx.get(url, headers={"X-Canary": "1"}).text.strip() == "inline")


def test_rewrites_and_timeouts(node: Node, backends: Backends) -> None:
    a = backends.start("rw")
    port = free_port()
    node.apply(
        service("rw:svc", a),
        gateway(
            "rw",
            port,
            {
                "rw:svc": {"rewrites": [{"path": "/v2%[path] if path starts with /api"}]},
            },
            timeouts={"server": "300ms"},
        ),
    )
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{base}/api/x").status_code == 200)
    assert httpx.get(f"{base}/api/users?id=3").headers["X-Path"] == "/v2/api/users?id=3"
    assert httpx.get(f"{base}/other").headers["X-Path"] == "/other"
    assert httpx.get(f"{base}/slow?delay=1500", timeout=5).status_code == 504
