"""Fan-out: an instance of a service that hundreds of gateways route to, registered and removed
while a route's weight changes, against real HAProxy, real backends and a real client.

The instance is a server in each gateway's backend, so one registration is hundreds of servers
to add; a weight change is one map entry. The weight change must not wait behind the servers.
The bounds are generous for a loaded machine; bench/fanout.py measures the figures."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.integration.conftest import Backends, Node, free_port
from tests.integration.discovery_helpers import instances_url, register

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GATEWAYS = 250
ROUNDS = 3
REGISTRATION_BOUND_S = 15.0  # the bench's p99 at this size is well under a second
WEIGHT_BOUND_S = 3.0


def host(index: int) -> str:
    return f"g{index:04d}.fanout"


class Probe:
    """Requests through one gateway's virtual host over keep-alive."""

    def __init__(self, port: int, index: int) -> None:
        self.url = f"http://127.0.0.1:{port}/"
        self.client = httpx.Client(timeout=5.0, headers={"Host": host(index)})

    def answer(self) -> str:
        try:
            response = self.client.get(self.url)
        except httpx.HTTPError as exc:
            return f"error {exc}"
        return response.text.strip() if response.status_code == 200 else str(response.status_code)


@pytest.fixture
def probes() -> Iterator[Callable[[int, int], Probe]]:
    made: list[Probe] = []

    def make(port: int, index: int) -> Probe:
        made.append(Probe(port, index))
        return made[-1]

    yield make
    for probe in made:
        probe.client.close()


def seconds_until(condition: Callable[[], bool], bound: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > bound:
            raise AssertionError(f"{what} not seen within {bound:g} s")
        time.sleep(0.005)
    return time.monotonic() - started


def test_a_weight_change_is_not_held_up_by_an_instance_of_a_service_hundreds_of_gateways_use(
    node: Node, backends: Backends, probes: Callable[[int, int], Probe]
) -> None:
    base, alt = backends.start("base"), backends.start("alt")
    extra = [backends.start(f"new{i}") for i in range(ROUNDS)]
    port = free_port()
    documents: list[dict[str, object]] = [
        {"kind": "service", "name": "fan", "instances": [f"127.0.0.1:{base}"]},
        {"kind": "service", "name": "fan-alt", "instances": [f"127.0.0.1:{alt}"]},
    ]
    for index in range(GATEWAYS):
        routes = {"fan": {"weight": 100}, "fan-alt": {"weight": 0}} if index == 0 else {"fan": {}}
        documents.append(
            {
                "kind": "gateway",
                "name": f"fan{index:04d}",
                "port": f"{port}/http",
                "bind": "127.0.0.1",
                "virtual_hosts": [host(index)],
                "routes": routes,
            }
        )
    response = node.api.post("/api/v1/apply", json=documents)
    assert response.status_code == 200, response.text
    node.wait_applied("gateways", f"fan{GATEWAYS - 1:04d}", timeout=60)
    node.wait_applied("gateways", "fan0000", timeout=60)
    first, last, weighted = probes(port, 1), probes(port, GATEWAYS - 1), probes(port, 0)
    assert {first.answer(), last.answer(), weighted.answer()} == {"base"}
    pids = node.haproxy_pids()

    to_alt = True
    for number, instance in enumerate(extra):
        name = f"new{number}"
        registered = time.monotonic()
        register(node, "fan", address="127.0.0.1", port=instance, id=name)
        # At once, while the servers of the new instance are on their way to HAProxy.
        weights = {"fan": 0, "fan-alt": 100} if to_alt else {"fan": 100, "fan-alt": 0}
        patched = node.api.patch(
            "/api/v1/gateways/fan0000",
            json={"routes": {route: {"weight": w} for route, w in weights.items()}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert patched.status_code == 200, patched.text
        expected = "alt" if to_alt else "base"
        weight_s = seconds_until(
            lambda expected=expected: weighted.answer() == expected, WEIGHT_BOUND_S, "weight"
        )
        seen = {"first": False, "last": False}

        def reached(name: str = name, seen: dict[str, bool] = seen) -> bool:
            seen["first"] = seen["first"] or first.answer() == name
            seen["last"] = seen["last"] or last.answer() == name
            return all(seen.values())

        seconds_until(reached, REGISTRATION_BOUND_S, f"instance {name} through both gateways")
        registration_s = time.monotonic() - registered
        print(f"round {number}: weight {weight_s:.3f} s, registration {registration_s:.3f} s")

        removed = node.api.delete(f"{instances_url('fan')}/{name}")
        assert removed.status_code in (200, 204), removed.text
        streak = [0]

        def gone(name: str = name, streak: list[int] = streak) -> bool:
            answers = {first.answer(), last.answer()}
            streak[0] = 0 if name in answers else streak[0] + 1
            return streak[0] >= 20

        seconds_until(gone, REGISTRATION_BOUND_S, f"instance {name} gone")
        to_alt = not to_alt

    assert node.haproxy_pids() == pids, "instances and weights must change without a reload"
    node.wait_applied("gateways", f"fan{GATEWAYS - 1:04d}")

    # Status follows once the churn is over (published at most a second after the last one).
    def one_instance() -> bool:
        status = node.get("gateways", f"fan{GATEWAYS - 1:04d}")["status"]
        return bool(status["routes"]["fan"]["instances"] == 1)

    seconds_until(one_instance, 5.0, "the status of the last gateway with one instance")


USERS = 5  # gateways that route to the service an instance is registered with
UNRELATED = 300  # gateways added that route elsewhere


APPLIED = 'meshgate_reconciles_total{outcome="applied"}'
STATUS_WRITES = "meshgate_status_writes_total"
COUNTERS = (
    "meshgate_runtime_commands_total",  # server additions, removals, map changes...
    "meshgate_gateways_compiled_total",
    APPLIED,
    'meshgate_reconciles_total{outcome="unchanged"}',
    "meshgate_haproxy_reloads_total",
    STATUS_WRITES,
)


def counters(node: Node) -> dict[str, float]:
    """The node's counters of the work a change costs."""
    text = node.api.get("/metrics").text
    found: dict[str, float] = {}
    for name in COUNTERS:
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        found[name] = float(match.group(1)) if match else 0.0
    return found


def one_registration(node: Node, probe: Probe, port: int, number: int) -> dict[str, float]:
    """Register an instance, wait until it answers and its status is out, deregister it, wait
    until it is gone from the status: what that cost, counter by counter."""
    before = counters(node)
    name = f"reg{number}"
    register(node, "fan", address="127.0.0.1", port=port, id=name)
    seconds_until(lambda: probe.answer() == "new", REGISTRATION_BOUND_S, "the instance")
    seconds_until(
        lambda: (
            node.get("gateways", f"fan{USERS - 1:04d}")["status"]["routes"]["fan"]["instances"] == 2
        ),
        REGISTRATION_BOUND_S,
        "its status",
    )
    removed = node.api.delete(f"{instances_url('fan')}/{name}")
    assert removed.status_code in (200, 204), removed.text
    seconds_until(
        lambda: (
            node.get("gateways", f"fan{USERS - 1:04d}")["status"]["routes"]["fan"]["instances"] == 1
        ),
        REGISTRATION_BOUND_S,
        "its removal",
    )
    after = counters(node)
    return {key: after[key] - before[key] for key in before}


def test_one_registration_costs_the_same_however_many_gateways_route_elsewhere(
    make_node: Callable[..., Node], backends: Backends, probes: Callable[[int, int], Probe]
) -> None:
    node = make_node()  # of its own: the counters count this test's changes alone
    base, other, new = backends.start("base"), backends.start("other"), backends.start("new")
    port = free_port()
    services: list[dict[str, object]] = [
        {"kind": "service", "name": "fan", "instances": [f"127.0.0.1:{base}"]},
        {"kind": "service", "name": "elsewhere", "instances": [f"127.0.0.1:{other}"]},
    ]

    def gateway(name: str, index: int, route: str) -> dict[str, object]:
        return {
            "kind": "gateway",
            "name": name,
            "port": f"{port}/http",
            "bind": "127.0.0.1",
            "virtual_hosts": [host(index)],
            "routes": {route: {}},
        }

    users = [gateway(f"fan{i:04d}", i, "fan") for i in range(USERS)]
    assert node.api.post("/api/v1/apply", json=services + users).status_code == 200
    node.wait_applied("gateways", f"fan{USERS - 1:04d}", timeout=60)
    probe = probes(port, 0)
    one_registration(node, probe, new, 0)  # the first change after a reload warms up
    few = one_registration(node, probe, new, 1)

    unrelated = [gateway(f"x{i:04d}", USERS + i, "elsewhere") for i in range(UNRELATED)]
    assert node.api.post("/api/v1/apply", json=unrelated).status_code == 200
    node.wait_applied("gateways", f"x{UNRELATED - 1:04d}", timeout=60)
    one_registration(node, probe, new, 2)
    many = one_registration(node, probe, new, 3)
    print(f"with {USERS} gateways: {few}\nwith {USERS + UNRELATED}: {many}")

    # Each way: one server per gateway of the service (added, then removed), one compile of
    # each of those gateways and one status write (its route's instance count), no other; no
    # reload. (The service's own status may be written too: its instances' health.)
    for cost in (few, many):
        assert cost["meshgate_runtime_commands_total"] == 2 * USERS
        assert cost["meshgate_gateways_compiled_total"] == 2 * USERS
        assert 2 * USERS <= cost[STATUS_WRITES] <= 2 * USERS + 4
        assert cost["meshgate_haproxy_reloads_total"] == 0
        assert cost[APPLIED] == 2
    # The service's status follows its instances' health checks, which take their own time.
    assert {k: v for k, v in few.items() if k != STATUS_WRITES} == {
        k: v for k, v in many.items() if k != STATUS_WRITES
    }
