"""Memory under churn: a node given a steady stream of small changes must not keep what it no
longer needs. Real meshgate, real HAProxy, real backends, on loopback.

Resident memory is too coarse for a short test (the allocator keeps freed pages, HAProxy
reloads move it by megabytes), so the node traces its own Python allocations
(MESHGATE_TRACEMALLOC, see `meshgate.memory_debug`) from the start of the churn: a snapshot
after warm-up and one after more of the same churn, and the difference is what grew. Before the
stats forgot servers that were gone, this churn grew the traced memory by several megabytes in
35 s: every registration that lapsed left its server, in a dozen route backends, in the
counters for good.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Backends, Node, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GATEWAYS = 30
SERVICES = 5
WARMUP_S = 65.0  # past the forget time of gone servers (10 s), the event ring's filling and the
# latency book's 60 s window of per-second copies, which still grows until then
MEASURED_S = 35.0
# What the churn may add in MEASURED_S once warm: the route analytics' history (one record of
# GATEWAYS * 2 readings every window, kept 10 minutes) and noise. The leak this guards against
# added over 4 MB.
MAX_GROWTH_BYTES = 1_500_000


def gateway(index: int, port: int, weight: int) -> dict[str, Any]:
    return {
        "name": f"g{index}",
        "port": f"{port}/http",
        "bind": "127.0.0.1",
        "virtual_hosts": [f"h{index}.soak.test"],
        "routes": {
            f"s{index % SERVICES}": {"weight": weight},
            f"s{(index + 1) % SERVICES}": {"weight": 100 - weight},
        },
    }


class Churn(threading.Thread):
    """Rounds of a weight change, four registrations with a 3 s TTL under new ids and four
    requests through gateways; every 20th round a gateway on a port of its own is added and the
    previous one deleted (a reload). Bounded by `limit_s`."""

    limit_s = 120.0

    def __init__(self, node: Node, port: int, registered_ports: list[int]) -> None:
        super().__init__(daemon=True)
        self.node, self.port, self.registered_ports = node, port, registered_ports
        self.stop = threading.Event()
        self.counts = {"weights": 0, "registrations": 0, "reloads": 0, "requests": 0}
        self.failures: list[str] = []

    def run(self) -> None:
        started = time.monotonic()
        extra: str | None = None
        tick = 0
        with (
            httpx.Client(base_url=self.node.url, timeout=10) as api,
            httpx.Client(timeout=5) as traffic,
        ):
            while not self.stop.is_set() and time.monotonic() - started < self.limit_s:
                tick += 1
                index = tick % GATEWAYS
                self._expect(api.put(f"/api/v1/gateways/g{index}", json=gateway(
                    index, self.port, tick % 101)), 200)  # fmt: skip
                self.counts["weights"] += 1
                for _ in range(4):
                    number = self.counts["registrations"]
                    body = {
                        "address": "127.0.0.1",
                        "port": self.registered_ports[number % len(self.registered_ports)],
                        "id": f"r{number}",
                        "ttl": "3s",
                    }
                    answer = api.post(f"/api/v1/services/s{number % SERVICES}/instances", json=body)
                    self._expect(answer, 201)
                    self.counts["registrations"] += 1
                if tick % 20 == 0:
                    name = f"extra{tick}"
                    doc = {"name": name, "port": f"{free_port()}/http", "bind": "127.0.0.1",
                           "routes": {"s0": {"weight": 100}}}  # fmt: skip
                    self._expect(api.put(f"/api/v1/gateways/{name}", json=doc), 201)
                    if extra is not None:
                        self._expect(api.delete(f"/api/v1/gateways/{extra}"), 204)
                    extra = name
                    self.counts["reloads"] += 1
                for hop in range(4):
                    host = f"h{(tick * 7 + hop) % GATEWAYS}.soak.test"
                    try:
                        traffic.get(f"http://127.0.0.1:{self.port}/", headers={"Host": host})
                    except httpx.HTTPError as exc:
                        self.failures.append(f"request: {exc}")
                    self.counts["requests"] += 1
                self.stop.wait(0.1)

    def _expect(self, answer: httpx.Response, status: int) -> None:
        if answer.status_code != status:
            self.failures.append(f"{answer.request.method} {answer.url}: {answer.status_code}")


def snapshot(node: Node, directory: Path) -> tracemalloc.Snapshot:
    """Have the node write an allocation snapshot (SIGUSR2) and load it. The node takes it
    between two stats polls, after a garbage collection (`memory_debug.snapshot_between`): one
    taken while a poll parses holds that poll's rows beside the last poll's, hundreds of kB
    that live for a moment."""
    before = set(directory.glob("*.tracemalloc"))
    assert node.process is not None
    os.kill(node.process.pid, signal.SIGUSR2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = set(directory.glob("*.tracemalloc")) - before
        if found:
            return tracemalloc.Snapshot.load(str(found.pop()))
        time.sleep(0.2)
    raise TimeoutError(f"no allocation snapshot from the node:\n{node.log()}")


def traced_total(taken: tracemalloc.Snapshot) -> int:
    return sum(stat.size for stat in taken.statistics("filename"))


def settled_snapshot(node: Node, directory: Path) -> tracemalloc.Snapshot:
    """The smaller of two snapshots a second apart. Each is taken between polls, but a change
    on its way to HAProxy (a map replaced in batches, a pass's compile) may be in flight at
    one moment; at both is unlikely. Both ends of the measurement are taken so."""
    taken = [snapshot(node, directory)]
    time.sleep(1.0)
    taken.append(snapshot(node, directory))
    return min(taken, key=traced_total)


def growth_report(first: tracemalloc.Snapshot, second: tracemalloc.Snapshot) -> str:
    lines = []
    for stat in second.compare_to(first, "traceback")[:8]:
        lines.append(f"{stat.size_diff:+,} B {stat.count_diff:+,} blocks")
        lines += [f"    {line}" for line in stat.traceback.format(limit=4)]
    return "\n".join(lines)


@pytest.fixture
def traced_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    """A node that writes allocation snapshots (the first SIGUSR2 starts tracing)."""
    monkeypatch.setenv("MESHGATE_TRACEMALLOC", str(tmp_path / "traces"))
    # No flow table: it is a ring of its own, filling for five minutes, longer than the test.
    node = Node(tmp_path / "node", "--no-flows")
    try:
        node.start()
        monkeypatch.delenv("MESHGATE_TRACEMALLOC")
        yield node
    finally:
        node.close()


def test_churn_leaves_no_growing_memory_behind(
    traced_node: Node, backends: Backends, tmp_path: Path
) -> None:
    node, traces = traced_node, tmp_path / "traces"
    first_port = backends.start("one")
    registered_ports = [backends.start(name) for name in ("two", "three")]
    port = free_port()
    services = [
        {"kind": "service", "name": f"s{k}", "instances": [f"127.0.0.1:{first_port}"]}
        for k in range(SERVICES)
    ]
    node.apply(*services, *(gateway(i, port, 50) for i in range(GATEWAYS)))

    churn = Churn(node, port, registered_ports)
    assert node.process is not None
    os.kill(node.process.pid, signal.SIGUSR2)  # tracing starts
    churn.start()
    try:
        time.sleep(WARMUP_S)
        first = settled_snapshot(node, traces)
        time.sleep(MEASURED_S)
        second = settled_snapshot(node, traces)
    finally:
        churn.stop.set()
        churn.join(15)
    grown = traced_total(second) - traced_total(first)
    print(f"traced memory grew {grown:,} bytes in {MEASURED_S:g}s; {churn.counts}")
    print(growth_report(first, second))
    assert not churn.failures[:5], churn.failures[:5]
    assert churn.counts["registrations"] >= 100 and churn.counts["reloads"] >= 1, churn.counts
    assert grown < MAX_GROWTH_BYTES, (
        f"traced memory grew {grown:,} bytes in {MEASURED_S:g}s of churn "
        f"({churn.counts}); largest growth:\n{growth_report(first, second)}"
    )
