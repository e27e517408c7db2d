"""Convergence on many nodes: one etcd member, one `meshgate server`, N `meshgate agent`s, each
with its own HAProxy, on loopback addresses 127.0.0.11, .12, ... (one machine stands in for
N hosts). Baseline, side by side in the same invocation: `meshgate up` on the embedded store.

Measured, for each N in --agents:

  weight      a route weight flipped through the API -> the time until a request to each node
              lands on the new target (runtime API, no reload); p50/p99 over nodes x rounds
  reload      a new gateway on a new port -> the time until each node serves it (reload)
  per change  etcd puts and bytes received per weight change (etcd's own /metrics)
  join        a store holding --gateways gateways (one port, virtual hosts): a new agent's time
              from start until it serves all of them (its node status lists them all serving)
  idle        agents' RSS and CPU over 10 s idle, with those gateways

    .venv/bin/python bench/convergence.py                    # 3 and 10 agents
    .venv/bin/python bench/convergence.py --agents 3 --rounds 5 --gateways 200   # quick
    .venv/bin/python bench/convergence.py --agents 10 --gateways 0   # change times only
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script: make `bench.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    LOOPBACK,
    BenchError,
    MeshgateNode,
    Process,
    cpu_seconds,
    descendant_pids,
    finish,
    free_port,
    machine_line,
    meshgate_binary,
    meshgate_version,
    run_in_workdir,
    tool_version,
    wait_until,
)

POLL_TIMEOUT_S = 20.0


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


# One client for every poll, each request on a fresh connection (a reload leaves kept-alive
# connections on the old worker). `httpx.get` builds a client, and with it a TLS context, per
# call: 60 ms of CPU on this busy machine, so polling ten nodes in turn took 0.6 s a cycle and
# the figures measured the poller more than the nodes.
_POLLER = httpx.Client(timeout=2, limits=httpx.Limits(max_keepalive_connections=0))


def body(url: str, host: str | None = None) -> str:
    try:
        response = _POLLER.get(url, headers={"Host": host} if host else None)
    except httpx.HTTPError:
        return "-"
    return response.text.strip() if response.status_code == 200 else str(response.status_code)


def until_each(addresses: Sequence[str], served: Callable[[str], bool]) -> list[float]:
    """Seconds from now until `served(address)` first holds, per address (polled in turn)."""
    start = time.monotonic()
    done: dict[str, float] = {}
    while len(done) < len(addresses):
        for address in addresses:
            if address not in done and served(address):
                done[address] = time.monotonic() - start
        if time.monotonic() - start > POLL_TIMEOUT_S:
            raise BenchError(f"not converged on {sorted(set(addresses) - set(done))}")
    return [done[a] for a in addresses]


def backend(workdir: Path, name: str) -> tuple[Process, int]:
    port = free_port()
    process = Process(
        name,
        [sys.executable, "-m", "meshgate.demo", "--name", name, "--port", str(port)],
        workdir / f"{name}.log",
    )
    process.start()
    process.wait_listening(port, 10)
    return process, port


def etcd_metrics(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    wanted = {
        "puts": r"^etcd_mvcc_put_total (\S+)$",
        "bytes": r"^etcd_network_client_grpc_received_bytes_total (\S+)$",
    }
    found = {}
    for name, pattern in wanted.items():
        match = re.search(pattern, text, re.M)
        found[name] = float(match.group(1)) if match else float("nan")
    return found


def weights(one: int, two: int) -> dict[str, Any]:
    return {"svc-one": {"weight": f"{one}%"}, "svc-two": {"weight": f"{two}%"}}


def gateway(name: str, port: int, routes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"kind": "gateway", "name": name, "port": f"{port}/http", "routes": routes, **extra}


def services(one: int, two: int) -> list[dict[str, Any]]:
    return [
        {"kind": "service", "name": "svc-one", "instances": [f"{LOOPBACK}:{one}"]},
        {"kind": "service", "name": "svc-two", "instances": [f"{LOOPBACK}:{two}"]},
    ]


def apply(api: httpx.Client, documents: list[dict[str, Any]]) -> None:
    response = api.post("/api/v1/apply", json=documents)
    if response.status_code != 200:
        raise BenchError(f"apply answered {response.status_code}: {response.text[:300]}")


def rounds_on(
    api: httpx.Client, addresses: Sequence[str], rounds: int, port: int
) -> tuple[list[float], list[float]]:
    """(weight-change times, reload times) over `rounds`, per node, after one round that is
    not counted (the first change to a route with no traffic yet waits for its health check)."""
    weight_times: list[float] = []
    reload_times: list[float] = []
    for index in range(-1, rounds):
        target = "two" if index % 2 else "one"  # the uncounted round: the first to "two"
        flip = weights(0, 100) if target == "two" else weights(100, 0)
        apply(api, [gateway("gw", port, flip)])
        took = until_each(addresses, lambda a, t=target: body(f"http://{a}:{port}/") == t)
        extra = free_port()
        apply(api, [gateway(f"new-{index + 1}", extra, {"svc-one": {}})])
        reloaded = until_each(addresses, lambda a, p=extra: body(f"http://{a}:{p}/") == "one")
        if index >= 0:
            weight_times += took
            reload_times += reloaded
    return weight_times, reload_times


def baseline(workdir: Path, ports: tuple[int, int], rounds: int) -> tuple[list[float], list[float]]:
    node = MeshgateNode(workdir / "up")
    node.start()
    try:
        port = free_port()
        node.apply([*services(*ports), gateway("gw", port, weights(100, 0), bind=LOOPBACK)])
        node.wait_applied("gateways", "gw")
        until_each([LOOPBACK], lambda a: body(f"http://{a}:{port}/") == "one")
        return rounds_on(node.api, [LOOPBACK], rounds, port)
    finally:
        node.stop()


class Mesh:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.client_port, peer = free_port(), free_port()
        self.etcd_url = f"http://{LOOPBACK}:{self.client_port}"
        self.store = f"etcd://{LOOPBACK}:{self.client_port}"
        self.etcd = Process(
            "etcd",
            [
                "etcd", "--data-dir", str(workdir / "etcd"),
                "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
                "--listen-peer-urls", f"http://{LOOPBACK}:{peer}",
                "--initial-advertise-peer-urls", f"http://{LOOPBACK}:{peer}",
                "--initial-cluster", f"default=http://{LOOPBACK}:{peer}",
            ],
            workdir / "etcd.log",
        )  # fmt: skip
        self.api_port = free_port()
        self.api_address = f"{LOOPBACK}:{self.api_port}"
        self.server = Process(
            "server",
            [meshgate_binary(), "server", "--store", self.store, "--api", self.api_address],
            workdir / "server.log",
        )
        self.api = httpx.Client(base_url=f"http://{LOOPBACK}:{self.api_port}", timeout=30)
        self.agents: list[Process] = []

    def start(self) -> None:
        self.etcd.start()
        self.etcd.wait_listening(self.client_port, 20)
        self.server.start()
        self.server.wait_listening(self.api_port, 30)

    def agent(self, index: int) -> tuple[str, Process]:
        address = f"127.0.0.{11 + index}"
        process = Process(
            f"agent-{index}",
            [
                meshgate_binary(), "agent", "--store", self.store, "--node", f"n{index}",
                "--address", address, "--data-dir", str(self.workdir / f"agent-{index}"),
            ],
            self.workdir / f"agent-{index}.log",
        )  # fmt: skip
        process.start()
        self.agents.append(process)
        return address, process

    def node(self, name: str) -> dict[str, Any]:
        response = self.api.get(f"/api/v1/nodes/{name}")
        return response.json() if response.status_code == 200 else {}

    def stop(self) -> None:
        for process in [*self.agents, self.server, self.etcd]:
            process.stop()
        self.api.close()


def run_mesh(
    workdir: Path, count: int, ports: tuple[int, int], rounds: int, gateways: int
) -> dict[str, Any]:
    mesh = Mesh(workdir / f"mesh-{count}")
    mesh.start()
    try:
        addresses = [mesh.agent(i)[0] for i in range(count)]
        # Ten agents starting at once on two busy CPUs take a while to import and register.
        wait_until(
            lambda: all(mesh.node(f"n{i}").get("status") == "Ready" for i in range(count)),
            f"{count} agents Ready",
            timeout=180,
            interval=0.5,
        )
        port = free_port()
        apply(mesh.api, [*services(*ports), gateway("gw", port, weights(100, 0))])
        until_each(addresses, lambda a: body(f"http://{a}:{port}/") == "one")
        before = etcd_metrics(mesh.etcd_url)
        weight_times, reload_times = rounds_on(mesh.api, addresses, rounds, port)
        time.sleep(1)  # status writes of the last round land
        after = etcd_metrics(mesh.etcd_url)
        changes = 2 * (rounds + 1)
        result: dict[str, Any] = {
            "weight": weight_times,
            "reload": reload_times,
            "puts": (after["puts"] - before["puts"]) / changes,
            "bytes": (after["bytes"] - before["bytes"]) / changes,
        }
        if gateways == 0:
            return result  # the change times only
        shared = free_port()
        for start in range(0, gateways, 100):  # etcd takes at most 128 ops a transaction
            apply(
                mesh.api,
                [
                    gateway(f"vh-{i}", shared, {"svc-one": {}}, virtual_hosts=[f"vh{i}.bench"])
                    for i in range(start, min(gateways, start + 100))
                ],
            )
        wanted = gateways + 2 + rounds  # vh-*, gw, new-*
        for i in range(count):
            wait_until(
                lambda i=i: len(mesh.node(f"n{i}").get("gateways", {})) >= wanted,
                f"n{i} serving {wanted} gateways",
                timeout=300,
            )
        started = time.monotonic()
        address, _ = mesh.agent(count)

        def joined() -> bool:
            found = mesh.node(f"n{count}").get("gateways", {})
            serving = sum(1 for g in found.values() if g.get("state") == "serving")
            return (
                serving >= wanted
                and body(f"http://{address}:{shared}/", f"vh{gateways - 1}.bench") == "one"
            )

        wait_until(joined, "the new agent serving every gateway", timeout=300, interval=0.05)
        result["join"] = time.monotonic() - started
        pids = [p.pid for p in mesh.agents if p.pid]
        time.sleep(3)
        cpu_before = cpu_seconds(pids)
        time.sleep(10)
        result["idle_cpu"] = (cpu_seconds(pids) - cpu_before) / 10 / len(pids)
        result["rss_mb"] = max(rss_mb(pid) for pid in pids)
        result["haproxy"] = len(descendant_pids(pids[0], "haproxy"))
        return result
    finally:
        mesh.stop()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--agents", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--gateways", type=int, default=1000)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)

    def run(workdir: Path) -> int:
        print(machine_line(f"meshgate {meshgate_version()}", tool_version(["etcd", "--version"])))
        one, one_port = backend(workdir, "one")
        two, two_port = backend(workdir, "two")
        try:
            base_weight, base_reload = baseline(workdir, (one_port, two_port), args.rounds)
            print(
                f"baseline (up, 1 node): weight p50 {percentile(base_weight, 0.5) * 1000:.0f} ms"
                f" p99 {percentile(base_weight, 0.99) * 1000:.0f} ms; reload p50"
                f" {percentile(base_reload, 0.5) * 1000:.0f} ms"
                f" p99 {percentile(base_reload, 0.99) * 1000:.0f} ms"
            )
            for count in args.agents:
                found = run_mesh(workdir, count, (one_port, two_port), args.rounds, args.gateways)
                w50, w99 = percentile(found["weight"], 0.5), percentile(found["weight"], 0.99)
                r50, r99 = percentile(found["reload"], 0.5), percentile(found["reload"], 0.99)
                print(
                    f"{count} agents: weight p50 {w50 * 1000:.0f} ms p99 {w99 * 1000:.0f} ms"
                    f" ({w99 / percentile(base_weight, 0.99):.1f}x up's p99);"
                    f" reload p50 {r50 * 1000:.0f} ms p99 {r99 * 1000:.0f} ms"
                    f" ({r99 / percentile(base_reload, 0.99):.1f}x);"
                    f" per change {found['puts']:.1f} etcd puts, {found['bytes'] / 1024:.1f} KiB"
                    f" received"
                )
                if "join" in found:
                    print(
                        f"  join with {args.gateways} gateways {found['join']:.1f} s; idle agent"
                        f" {found['idle_cpu'] * 100:.1f}% CPU, RSS {found['rss_mb']:.0f} MB"
                    )
        finally:
            one.stop()
            two.stop()
        return finish(True, "")

    return run_in_workdir("meshgate-convergence-", args.keep, run)


if __name__ == "__main__":
    sys.exit(main())
