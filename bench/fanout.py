"""Fan-out cost: instance churn on a service that many gateways route to, with weight changes
under way at the same time.

All on loopback (127.0.0.1). One nginx answers on a few ports, each with its own body. On a
fresh `meshgate up` (embedded store), service `svc` has one instance (`base`) and service `alt`
one (`alt`); --gateways http gateways share one port, told apart by virtual host
(`g0000.bench`, ...), and each routes to `svc`; the first also routes to `alt`, at weight 0.

For --duration seconds, two clients run side by side:

  registration  register an instance of `svc` (the next nginx port of a small pool), then
                request through the first and the last gateway (by backend name, so the first
                and the last backend HAProxy is told about) until both have answered from it:
                the time from the API call to that is one sample. Then deregister it and wait
                until 20 requests in a row through both no longer reach it (also a sample).
  weight        every --weight-every seconds flip the first gateway's weights (svc 100 / alt 0
                and back) with a merge patch, and request through it until the answer comes
                from the side that now has the weight: one sample.

p50/p99/max are printed for each, first for --baseline-gateways gateways (the same loop with
little fan-out), then for --gateways, with the ratio between them: what fan-out costs. With
--baseline-binary (a `meshgate` of another version, e.g. a script running an older checkout)
the baseline is --gateways on that version instead: before and after, side by side.

    .venv/bin/python bench/fanout.py                       # 10 vs 1,000 gateways, 60 s each
    .venv/bin/python bench/fanout.py --gateways 300 --duration 20   # quick
    .venv/bin/python bench/fanout.py --baseline-binary /tmp/old-meshgate --duration 30
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script: make `bench.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    LOOPBACK,
    BenchError,
    MeshgateNode,
    Nginx,
    cpu_seconds,
    descendant_pids,
    finish,
    free_port,
    load_average,
    machine_line,
    meshgate_version,
    run_in_workdir,
    stop_node,
    tool_version,
)

STEP_TIMEOUT_S = 60.0  # one change that takes longer than this fails the run
GONE_STREAK = 20  # requests in a row without the instance: it is gone
POOL = 4  # nginx ports instances are registered on, in turn


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


@dataclass(frozen=True)
class Layout:
    gateways: int
    port: int
    base: int
    alt: int
    pool: tuple[int, ...]

    @staticmethod
    def host(index: int) -> str:
        return f"g{index:04d}.bench"

    def documents(self) -> list[dict[str, Any]]:
        services: list[dict[str, Any]] = [
            {"kind": "service", "name": "svc", "instances": [f"{LOOPBACK}:{self.base}"]},
            {"kind": "service", "name": "alt", "instances": [f"{LOOPBACK}:{self.alt}"]},
        ]
        gateways: list[dict[str, Any]] = [
            {
                "kind": "gateway",
                "name": f"gw{index:04d}",
                "port": f"{self.port}/http",
                "bind": LOOPBACK,
                "virtual_hosts": [self.host(index)],
                "routes": {"svc": {"weight": 100}, "alt": {"weight": 0}}
                if index == 0
                else {"svc": {}},
            }
            for index in range(self.gateways)
        ]
        return services + gateways


@dataclass
class Samples:
    registration: list[float] = field(default_factory=list)
    deregistration: list[float] = field(default_factory=list)
    weight: list[float] = field(default_factory=list)
    error: str | None = None
    # CPU seconds used during the churn, by meshgate and by HAProxy (all its processes).
    meshgate_cpu_s: float = 0.0
    haproxy_cpu_s: float = 0.0


class Prober:
    """Requests through one gateway's virtual host over keep-alive."""

    def __init__(self, port: int, host: str) -> None:
        self.url = f"http://{LOOPBACK}:{port}/"
        self.host = host
        self.client = httpx.Client(timeout=5.0, headers={"Host": host})

    def body(self) -> str:
        try:
            response = self.client.get(self.url)
        except httpx.HTTPError as exc:
            return f"error {exc}"
        return response.text.strip() if response.status_code == 200 else str(response.status_code)

    def close(self) -> None:
        self.client.close()


def wait_for(condition: Callable[[], bool], what: str, stop: threading.Event) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"{what} not seen within {STEP_TIMEOUT_S:g} s")
        if stop.is_set():
            return


def churn(node: MeshgateNode, layout: Layout, samples: Samples, stop: threading.Event) -> None:
    probes = [Prober(layout.port, layout.host(i)) for i in (1, layout.gateways - 1)]
    api = httpx.Client(base_url=node.url, timeout=30.0)
    try:
        number = 0
        while not stop.is_set():
            port = layout.pool[number % len(layout.pool)]
            name = f"n{port}"
            started = time.monotonic()
            response = api.post(
                "/api/v1/services/svc/instances",
                json={"address": LOOPBACK, "port": port, "id": f"r{number}"},
            )
            if response.status_code != 201:
                raise BenchError(f"registration answered {response.status_code}: {response.text}")
            seen = [False] * len(probes)

            def reached(name: str = name, seen: list[bool] = seen) -> bool:
                for index, probe in enumerate(probes):
                    seen[index] = seen[index] or probe.body() == name
                return all(seen)

            wait_for(reached, f"instance {name}", stop)
            samples.registration.append(time.monotonic() - started)
            started = time.monotonic()
            response = api.delete(f"/api/v1/services/svc/instances/r{number}")
            if response.status_code not in (200, 204):
                raise BenchError(f"deregistration answered {response.status_code}")
            streak = [0]

            def gone(name: str = name, streak: list[int] = streak) -> bool:
                bodies = [probe.body() for probe in probes]
                streak[0] = 0 if name in bodies else streak[0] + 1
                return streak[0] >= GONE_STREAK

            wait_for(gone, f"instance {name} gone", stop)
            samples.deregistration.append(time.monotonic() - started)
            number += 1
    finally:
        api.close()
        for probe in probes:
            probe.close()


def flip_weights(
    node: MeshgateNode, layout: Layout, every: float, samples: Samples, stop: threading.Event
) -> None:
    probe = Prober(layout.port, layout.host(0))
    api = httpx.Client(base_url=node.url, timeout=30.0)
    headers = {"Content-Type": "application/merge-patch+json"}
    to_alt = True
    try:
        while not stop.is_set():
            tick = time.monotonic()
            weights = {"svc": 0, "alt": 100} if to_alt else {"svc": 100, "alt": 0}
            patch = {"routes": {route: {"weight": w} for route, w in weights.items()}}
            response = api.patch("/api/v1/gateways/gw0000", json=patch, headers=headers)
            if response.status_code != 200:
                raise BenchError(f"weight patch answered {response.status_code}: {response.text}")

            def landed(to_alt: bool = to_alt) -> bool:
                return (probe.body() == f"n{layout.alt}") == to_alt

            wait_for(landed, "weight change", stop)
            samples.weight.append(time.monotonic() - tick)
            to_alt = not to_alt
            stop.wait(max(0.0, every - (time.monotonic() - tick)))
    finally:
        api.close()
        probe.close()


def guarded(job: Callable[[], None], samples: Samples, stop: threading.Event) -> Callable[[], None]:
    def run() -> None:
        try:
            job()
        except (BenchError, httpx.HTTPError) as exc:
            samples.error = str(exc)
            stop.set()

    return run


def measure(
    gateways: int,
    args: argparse.Namespace,
    nginx_ports: dict[str, int],
    workdir: Path,
    binary: str | None = None,
) -> Samples:
    layout = Layout(
        gateways=gateways,
        port=free_port(),
        base=nginx_ports["base"],
        alt=nginx_ports["alt"],
        pool=tuple(nginx_ports[f"p{i}"] for i in range(POOL)),
    )
    node = MeshgateNode(workdir / f"node{gateways}{'-baseline' if binary else ''}", binary=binary)
    node.start()
    try:
        documents = layout.documents()
        node.apply(documents)
        node.wait_applied("gateways", f"gw{gateways - 1:04d}", timeout=120)
        node.wait_applied("gateways", "gw0000", timeout=120)
        samples, stop = Samples(), threading.Event()
        threads = [
            threading.Thread(
                target=guarded(lambda: churn(node, layout, samples, stop), samples, stop)
            )
            for _ in range(0 if args.without_churn else 1)
        ] + [
            threading.Thread(
                target=guarded(
                    lambda: flip_weights(node, layout, args.weight_every, samples, stop),
                    samples,
                    stop,
                )
            ),
        ]
        pid = node.process.pid or 0
        haproxy = descendant_pids(pid, "haproxy")
        cpu_before = cpu_seconds([pid]), cpu_seconds(haproxy)
        for thread in threads:
            thread.start()
        stop.wait(args.duration)
        stop.set()
        for thread in threads:
            thread.join(STEP_TIMEOUT_S + 10)
        samples.meshgate_cpu_s = cpu_seconds([pid]) - cpu_before[0]
        samples.haproxy_cpu_s = cpu_seconds(haproxy) - cpu_before[1]
        if samples.error:
            raise BenchError(samples.error)
        return samples
    finally:
        stop_node(node, [layout.port])


def row(label: str, values: Sequence[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"{label:<16} {len(ms):>5} {percentile(ms, 0.5):>9.0f} {percentile(ms, 0.99):>9.0f} "
        f"{max(ms, default=float('nan')):>9.0f}"
    )


def report(results: dict[str, Samples]) -> None:
    print(f"\n{'':<16} {'n':>5} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for label, samples in results.items():
        print(f"-- {label}")
        print(row("registration", samples.registration))
        print(row("deregistration", samples.deregistration))
        print(row("weight", samples.weight))
        cycles = max(1, len(samples.registration))
        print(
            f"CPU ms per registration and deregistration: meshgate "
            f"{samples.meshgate_cpu_s * 1000 / cycles:.0f}, "
            f"HAProxy {samples.haproxy_cpu_s * 1000 / cycles:.0f}"
        )
    labels = list(results)
    if len(labels) == 2:
        low, high = (results[label] for label in labels)
        print(f"-- ratio {labels[1]} / {labels[0]} (p50, p99)")
        for what in ("registration", "deregistration", "weight"):
            a, b = getattr(low, what), getattr(high, what)
            p50 = percentile(b, 0.5) / percentile(a, 0.5)
            p99 = percentile(b, 0.99) / percentile(a, 0.99)
            print(f"{what:<16} {p50:>9.2f} {p99:>9.2f}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--gateways", type=int, default=1000)
    parser.add_argument("--baseline-gateways", type=int, default=10, help="0: no baseline run")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of churn per run")
    parser.add_argument("--weight-every", type=float, default=0.2)
    parser.add_argument(
        "--baseline-binary",
        help="a `meshgate` of another version: the baseline is then --gateways on it, "
        "instead of --baseline-gateways on this one",
    )
    parser.add_argument(
        "--without-churn",
        action="store_true",
        help="weight changes only: what fan-out costs a weight change by itself",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.gateways < 2:
        parser.error("--gateways: at least 2")
    return args


def run(args: argparse.Namespace, workdir: Path) -> int:
    print(machine_line(meshgate_version(), tool_version(["haproxy", "-v"])), flush=True)
    names = ["base", "alt", *(f"p{i}" for i in range(POOL))]
    ports = {name: free_port() for name in names}
    servers = {f"n{port}": port for port in ports.values()}
    results: dict[str, Samples] = {}
    runs: list[tuple[str, int, str | None]] = []
    if args.baseline_binary:
        runs.append((f"{args.gateways} gateways, baseline", args.gateways, args.baseline_binary))
    elif args.baseline_gateways >= 2:
        runs.append((f"{args.baseline_gateways} gateways", args.baseline_gateways, None))
    runs.append((f"{args.gateways} gateways", args.gateways, None))
    with Nginx(workdir / "nginx", servers):
        for label, gateways, binary in runs:
            print(f"{label}: {args.duration:g} s of churn ...", flush=True)
            results[label] = measure(gateways, args, ports, workdir, binary)
            print(f"  load average {load_average()}", flush=True)
    report(results)
    return finish(
        all((s.registration or args.without_churn) and s.weight for s in results.values()),
        "no samples",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_in_workdir("meshgate-fanout-", args.keep, lambda workdir: run(args, workdir))


if __name__ == "__main__":
    sys.exit(main())
