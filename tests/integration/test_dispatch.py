"""Constant-time dispatch on a port of many virtual hosts (compiler.dispatch), against real
HAProxy, real backends and real clients: the rules a request passes do not grow with the
gateways before it, and dispatch.map follows route availability."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Backends, Node, count_served, free_port
from tests.integration.discovery_helpers import Demos, instances_url, register
from tests.integration.test_routing import gateway, service, wait_until
from tests.integration.test_runtime_changes import Load

pytestmark = pytest.mark.integration

VHOSTS = 300
# HAProxy marks a server down after `fall` (3) failed checks, 200 ms apart; the change it
# streams takes the route out of the map within milliseconds (the stats poll, 1 s, is the
# safety net). Generous bounds for a shared 2-core machine.
HEALTH_LEAVES_WITHIN_S = 5.0
# A killed instance: requests sent to it before the verdict wait out HAProxy's retry
# turn-around (1 s per retry, 2 retries) before their 503.
KILLED_LEAVES_WITHIN_S = 8.0
# A check that tolerates a busy machine (a timed-out check would mark a live route down).
PATIENT_CHECK = {"type": "http", "path": "/health", "interval": "200ms", "timeout": "1s"}


def frontend_rules(node: Node, port: int) -> list[str]:
    text = (node.data_dir / "run" / "haproxy.cfg").read_text()
    section = text.split(f"frontend port_{port}\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in section.splitlines() if line.strip().startswith("http-")]


def per_request_s(url: str, host: str, requests: int = 300) -> float:
    with httpx.Client(timeout=5) as client:
        started = time.perf_counter()
        for _ in range(requests):
            assert client.get(url, headers={"Host": host}).status_code == 200
        return (time.perf_counter() - started) / requests


def test_the_last_of_many_virtual_hosts_passes_as_few_rules_as_the_first(
    node: Node, backends: Backends
) -> None:
    answer = backends.start("vhost")
    port = free_port()
    two = {f"[127.0.0.1:{answer}]": {"weight": 60}, "vhosts:svc": {"weight": 40}}
    documents: list[dict[str, Any]] = [service("vhosts:svc", answer)]
    for number in range(VHOSTS):
        routes = two if number % 2 else {f"[127.0.0.1:{answer}]": {}}
        documents.append(gateway(f"v{number}", port, routes, virtual_hosts=f"v{number}.example"))
    response = node.api.post("/api/v1/apply", json=documents)
    assert response.status_code == 200, response.text
    url = f"http://127.0.0.1:{port}/"
    last = f"v{VHOSTS - 1}.example"
    wait_until(lambda: httpx.get(url, headers={"Host": last}).status_code == 200, timeout=60)
    rules = frontend_rules(node, port)
    # Deterministic: logging and host lookup, then the generic rules, before any fallback.
    first_fallback = next(i for i, r in enumerate(rules) if "-m str g" in r)
    assert first_fallback <= 8, rules[:10]
    assert "mg_sum) int(0)" in rules[first_fallback + 1]  # v0's lone route's, then v1's
    # Measured: the last vhost costs about what the first does (a walk would cost ~300 rules).
    wait_until(lambda: count_served(url, 20, headers={"Host": "v1.example"}) == {"vhost": 20})
    per_request_s(url, "v0.example", 50)  # warm up
    first = per_request_s(url, "v1.example")
    last_s = per_request_s(url, last)
    assert last_s < first * 1.5, (first, last_s)
    for number in range(VHOSTS):
        node.delete("gateways", f"v{number}")


def route_share(url: str, host: str, requests: int = 40) -> dict[str, int]:
    return count_served(url, requests, headers={"Host": host})


def two_routes_and_another_host(node: Node, name: str, a: int, b: int, other: int) -> int:
    """On one shared port: gateway `name` (host `name`.example) with routes to services
    `name`:a and `name`:b at 50/50, and gateway `name`-other (other.example) with one route;
    each service checked patiently, with one instance (a port). Returns the port once both
    routes of `name` serve."""
    port = free_port()
    node.apply(
        service(f"{name}:a", a, health_check=PATIENT_CHECK),
        service(f"{name}:b", b, health_check=PATIENT_CHECK),
        service(f"{name}:other", other, health_check=PATIENT_CHECK),
        gateway(
            name,
            port,
            {f"{name}:a": {"weight": 50}, f"{name}:b": {"weight": 50}},
            virtual_hosts=f"{name}.example",
        ),
        gateway(f"{name}-other", port, {f"{name}:other": {}}, virtual_hosts="other.example"),
    )
    url = f"http://127.0.0.1:{port}/"
    wait_until(lambda: set(route_share(url, f"{name}.example")) == {f"{name}-a", f"{name}-b"})
    return port


def test_a_route_without_instances_leaves_the_shared_port_and_comes_back(
    node: Node, backends: Backends, demos: Demos, tmp_path: Path
) -> None:
    failing = tmp_path / "b-fails"
    a, b, other = backends.start("avail-a"), free_port(), backends.start("other")
    demos.start("avail-b", b, fail_health_file=failing)
    port = two_routes_and_another_host(node, "avail", a, b, other)
    url = f"http://127.0.0.1:{port}/"
    host = {"Host": "avail.example"}
    with Load(url, host) as load:
        # b's health check fails (3 checks, 200 ms apart), b itself still answers: HAProxy
        # marks it DOWN, streams the change, and the route leaves the map.
        failing.touch()
        started = time.monotonic()
        wait_until(lambda: route_share(url, "avail.example", 20) == {"avail-a": 20})
        left_after = time.monotonic() - started
        failing.unlink()
        started = time.monotonic()
        wait_until(lambda: "avail-b" in route_share(url, "avail.example"))
        back_after = time.monotonic() - started
    assert left_after < HEALTH_LEAVES_WITHIN_S, left_after
    assert back_after < HEALTH_LEAVES_WITHIN_S, back_after
    # A request drawn to b in the moment between HAProxy's verdict and the map's update
    # would get a 503: the stream makes that moment a few milliseconds.
    assert len(load.failures) <= max(1, sum(load.results.values()) // 100), load.failures[:5]
    # The process dies: requests already sent to it wait out HAProxy's retry turn-around.
    demos.stop_all()
    started = time.monotonic()
    wait_until(lambda: route_share(url, "avail.example", 20) == {"avail-a": 20}, timeout=15)
    assert time.monotonic() - started < KILLED_LEAVES_WITHIN_S
    assert route_share(url, "avail.example", 100) == {"avail-a": 100}
    assert route_share(url, "other.example", 10) == {"other": 10}
    # Both routes down: its entries are gone, the fallback answers 503, the other host serves.
    backends.stop(a)
    wait_until(lambda: httpx.get(url, headers=host).status_code == 503, timeout=10)
    assert route_share(url, "other.example", 10) == {"other": 10}
    avail_id = re.search(r"^avail\.example (\S+)$", hosts_map(node, port), re.MULTILINE)
    assert avail_id is not None
    wait_until(lambda: f".{avail_id.group(1)} " not in read_dispatch(node))
    for name in ("avail", "avail-other"):
        node.delete("gateways", name)


def hosts_map(node: Node, port: int) -> str:
    return (node.data_dir / "run" / "maps" / f"port_{port}.hosts.map").read_text()


def read_dispatch(node: Node) -> str:
    return (node.data_dir / "run" / "maps" / "dispatch.map").read_text()


def test_a_deregistered_instance_costs_no_request(node: Node, backends: Backends) -> None:
    """The agent takes the route out of dispatch.map before it drains its last server."""
    a, b, other = backends.start("dereg-a"), backends.start("dereg-b"), backends.start("other")
    port = free_port()
    node.apply(
        {"kind": "service", "name": "dereg:a", "instances": [f"127.0.0.1:{a}"]},
        {"kind": "service", "name": "dereg:b"},
        service("dereg:other", other),
        gateway(
            "dereg",
            port,
            {"dereg:a": {"weight": 50}, "dereg:b": {"weight": 50}},
            virtual_hosts="dereg.example",
        ),
        gateway("dereg-other", port, {"dereg:other": {}}, virtual_hosts="other.example"),
    )
    register(node, "dereg:b", address="127.0.0.1", port=b, id="b1")
    url = f"http://127.0.0.1:{port}/"
    wait_until(lambda: set(route_share(url, "dereg.example")) == {"dereg-a", "dereg-b"})
    with Load(url, {"Host": "dereg.example"}) as load:
        time.sleep(0.5)
        response = node.api.delete(f"{instances_url('dereg:b')}/b1")
        assert response.status_code in (200, 204), response.text
        wait_until(lambda: route_share(url, "dereg.example", 20) == {"dereg-a": 20})
        time.sleep(0.5)
    assert load.failures == [], load.failures[:5]
    assert load.results["200"] > 20, load.results
    for name in ("dereg", "dereg-other"):
        node.delete("gateways", name)


# A route whose every instance is down comes back when an instance is registered. The route
# servers of an endpoint the node already checks track its checker server and stream no line
# of their own: the agent gives them the checker's state as it adds them. Before, the stats
# poll (every second) had to report them; the median of a few rounds tells the two apart.
REVIVED_WITHIN_S = 0.3
REVIVE_ROUNDS = 5


def first_answer_from(url: str, host: str, name: str, timeout: float = 10.0) -> float:
    """Seconds until a request through `host` is answered by backend `name`, asked at once
    one request after another."""
    started = time.monotonic()
    with httpx.Client(timeout=5, headers={"Host": host}) as client:
        while time.monotonic() - started < timeout:
            if client.get(url).text.strip() == name:
                return time.monotonic() - started
    raise TimeoutError(f"{name} did not answer within {timeout}s")


def test_an_instance_registered_for_a_route_that_is_down_brings_it_back_at_once(
    node: Node, backends: Backends, demos: Demos, tmp_path: Path
) -> None:
    failing = tmp_path / "a-fails"
    a, b, other = free_port(), backends.start("revive-b"), backends.start("revive-other")
    demos.start("revive-a", a, fail_health_file=failing)
    port = two_routes_and_another_host(node, "revive", a, b, other)
    url = f"http://127.0.0.1:{port}/"
    failing.touch()
    wait_until(lambda: route_share(url, "revive.example", 20) == {"revive-b": 20})
    took = []
    for round_ in range(REVIVE_ROUNDS):
        # At the endpoint of another service's instance, which the node checks already.
        register(node, "revive:a", address="127.0.0.1", port=other, id=f"again{round_}")
        took.append(first_answer_from(url, "revive.example", "revive-other"))
        response = node.api.delete(f"{instances_url('revive:a')}/again{round_}")
        assert response.status_code in (200, 204), response.text
        wait_until(lambda: route_share(url, "revive.example", 20) == {"revive-b": 20})
    assert sorted(took)[REVIVE_ROUNDS // 2] < REVIVED_WITHIN_S, took
    for name in ("revive", "revive-other"):
        node.delete("gateways", name)


# A check profile of its own (interval), so that its checker has one endpoint and the fewest
# spares: the third endpoint registered at run time finds none left and checks itself.
LONE_CHECK = {**PATIENT_CHECK, "interval": "210ms"}


def test_a_route_server_checking_itself_for_want_of_a_spare_still_streams_its_down(
    node: Node, backends: Backends, demos: Demos, tmp_path: Path
) -> None:
    """Its route backend streams only alerts (not the notices of the agent's own commands):
    a health check's DOWN is one, so the route leaves the map at once, not at the next poll."""
    fails = {name: tmp_path / f"{name}-fails" for name in ("x0", "x1", "x2", "x3")}
    for name in ("x0", "x1", "x2"):  # down from the start: they take the spares
        fails[name].touch()
    ports = {name: demos.start(f"spare-{name}", fail_health_file=f)[0] for name, f in fails.items()}
    other = backends.start("spare-b")
    port = free_port()
    node.apply(
        service("spare:a", ports["x0"], health_check=LONE_CHECK),
        service("spare:b", other, health_check=PATIENT_CHECK),
        gateway(
            "spare",
            port,
            {"spare:a": {"weight": 50}, "spare:b": {"weight": 50}},
            virtual_hosts="spare.example",
        ),
        gateway("spare-other", port, {"spare:b": {}}, virtual_hosts="other.example"),
    )
    url = f"http://127.0.0.1:{port}/"
    wait_until(lambda: route_share(url, "spare.example", 20) == {"spare-b": 20})
    for name in ("x1", "x2", "x3"):
        register(node, "spare:a", address="127.0.0.1", port=ports[name], id=name)
    wait_until(lambda: set(route_share(url, "spare.example")) == {"spare-x3", "spare-b"})
    with Load(url, {"Host": "spare.example"}) as load:
        time.sleep(0.3)
        fails["x3"].touch()
        wait_until(lambda: route_share(url, "spare.example", 20) == {"spare-b": 20})
        time.sleep(0.3)
    # Drawn to the route between HAProxy's verdict and the map's update: a few ms of
    # requests, where the stats poll's second would fail a good part of them.
    assert len(load.failures) <= max(1, sum(load.results.values()) // 100), load.failures[:5]
    for name in ("spare", "spare-other"):
        node.delete("gateways", name)
