"""Flow recording's cost: throughput with callers recorded (`meshgate up`, the default) against
without (`meshgate up --no-flows`), side by side in one invocation.

Flow recording adds the client's address (%ci) to the request line HAProxy writes into its ring
for every logged request, and the agent counts each line per (backend, client address). Two
`meshgate up` nodes serve the same gateway (two routes, 50/50, over two nginx servers):

  on       `meshgate up`: flows recorded; HAProxy logs up to the node's budget of lines a second
           (`--log-budget`, 2,000 by default), a random sample of requests above it
  off      `meshgate up --no-flows`: the same request log without the client's address
  on-all   (with --with-all) `meshgate up --log-budget 0`: every request logged, with %ci
  off-all  (with --with-all) `meshgate up --log-budget 0 --no-flows`: every request, no %ci

The "all" pair is the worst case for the field's cost: HAProxy formats it for every request.
Rounds alternate the configurations, so that noise on the machine falls on all alike. Reported:
median requests per second and each ratio to its pair's `off` (target >= 0.95), CPU per 10,000
requests of the `meshgate up` process and of HAProxy (from /proc around each run). How well
callers are told apart is for the tests (tests/integration/test_flows.py): wrk sends from one
address.

Exit status: 0 when every run was clean, 1 on socket errors, non-2xx responses, a stats count
below wrk's, or a setup failure, whether or not the target ratio is met.

    .venv/bin/python bench/flows.py                  # 3 rounds x 5 s, 32 connections
    .venv/bin/python bench/flows.py --rounds 5 --with-all
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    LOOPBACK,
    BenchError,
    MeshgateNode,
    Nginx,
    WrkResult,
    cpu_seconds,
    finish,
    free_port,
    gateway_doc,
    machine_line,
    median,
    meshgate_version,
    run_in_workdir,
    run_wrk,
    service_doc,
    stop_node,
    tool_version,
    wait_serving,
)

GATEWAY = "bench"
ROUTES = ("bench:v1", "bench:v2")
PER = 10_000  # CPU time is reported per this many requests


@dataclass(frozen=True)
class Sample:
    wrk: WrkResult
    node_cpu_s: float  # the `meshgate up` process
    proxy_cpu_s: float  # HAProxy master and workers
    backend_cpu_s: float  # nginx
    counted: int  # requests the stats API added up over the run

    @property
    def all_cpu_s(self) -> float:
        """Everything that served the run: wrk, nginx, HAProxy and meshgate."""
        return self.wrk.cpu_s + self.backend_cpu_s + self.proxy_cpu_s + self.node_cpu_s

    def per(self, seconds: float) -> float:
        """Milliseconds of CPU per PER requests."""
        return seconds / self.wrk.requests * PER * 1e3 if self.wrk.requests else math.nan


@dataclass
class Config:
    key: str
    description: str
    port: int
    node: MeshgateNode | None = None
    backend_pids: Callable[[], list[int]] = list
    samples: list[Sample] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/"

    def requests_counted(self) -> int:
        assert self.node is not None
        response = self.node.api.get(f"/api/v1/gateways/{GATEWAY}/stats")
        if response.status_code != 200:
            raise BenchError(f"stats answered {response.status_code}: {response.text}")
        routes: dict[str, Any] = response.json()["routes"]
        return sum(int(route["requests"]) for route in routes.values())

    def stats(self) -> dict[str, Any]:
        assert self.node is not None
        result: dict[str, Any] = self.node.api.get(f"/api/v1/gateways/{GATEWAY}/stats").json()
        return result

    def median_of(self, value: Callable[[Sample], float]) -> float:
        return median([value(s) for s in self.samples])


def documents(port: int, v1: int, v2: int) -> list[dict[str, object]]:
    return [
        service_doc("bench:v1", v1),
        service_doc("bench:v2", v2),
        gateway_doc(GATEWAY, port, {"bench:v1": {"weight": 50}, "bench:v2": {"weight": 50}}),
    ]


def measure(config: Config, args: argparse.Namespace, duration: float) -> tuple[Sample, bool]:
    node = config.node
    assert node is not None
    counted_before = config.requests_counted()
    node_pids, proxy_pids = node.node_pids(), node.haproxy_pids()
    backend_pids = config.backend_pids()
    node_before, proxy_before = cpu_seconds(node_pids), cpu_seconds(proxy_pids)
    backend_before = cpu_seconds(backend_pids)
    result = run_wrk(
        config.url,
        duration=duration,
        connections=args.connections,
        threads=args.threads,
        binary=args.wrk,
    )
    node_cpu = cpu_seconds(node_pids) - node_before
    proxy_cpu = cpu_seconds(proxy_pids) - proxy_before
    backend_cpu = cpu_seconds(backend_pids) - backend_before
    # The stats API answers from a poll up to 20 polls' cost old (a second or more on a busy
    # machine): wait, within bounds, for a reading that includes every answered request.
    deadline = time.monotonic() + 5.0
    counted = config.requests_counted() - counted_before
    while counted < result.requests and time.monotonic() < deadline:
        time.sleep(0.25)
        counted = config.requests_counted() - counted_before
    sample = Sample(result, node_cpu, proxy_cpu, backend_cpu, counted)
    problems = []
    if any(result.socket_errors.values()):
        problems.append(f"socket errors {result.socket_errors}")
    if result.non_2xx:
        problems.append(f"{result.non_2xx} non-2xx responses")
    if counted < result.requests:
        problems.append(f"stats counted {counted} requests, wrk completed {result.requests}")
    if problems:
        print(f"    ERROR {config.key}: {', '.join(problems)}\n{result.output}", flush=True)
    return sample, not problems


def report(configs: Sequence[Config], target: float) -> None:
    by_key = {config.key: config for config in configs}
    print()
    print(
        "| config | median req/s | p50 ms | p99 ms | req/s vs its off | per-round ratios "
        "| meshgate CPU ms / 10k req | HAProxy CPU ms / 10k req | HAProxy CPU vs its off "
    )
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for config in configs:
        off = by_key[config.key.replace("on", "off", 1)] if config.key.startswith("on") else config
        rps = config.median_of(lambda s: s.wrk.requests_per_sec)
        paired = [
            a.wrk.requests_per_sec / b.wrk.requests_per_sec
            for a, b in zip(config.samples, off.samples, strict=True)
        ]
        proxy = config.median_of(lambda s: s.per(s.proxy_cpu_s))
        print(
            f"| {config.key} | {rps:,.0f} "
            f"| {config.median_of(lambda s: s.wrk.p50_ms):.2f} "
            f"| {config.median_of(lambda s: s.wrk.p99_ms):.2f} "
            f"| {rps / off.median_of(lambda s: s.wrk.requests_per_sec):.3f} "
            f"| {', '.join(f'{r:.3f}' for r in paired)} "
            f"| {config.median_of(lambda s: s.per(s.node_cpu_s)):.0f} "
            f"| {proxy:.0f} "
            f"| {proxy / off.median_of(lambda s: s.per(s.proxy_cpu_s)):.3f} |"
        )
    print()
    for config in configs:
        if not config.key.startswith("on"):
            continue
        off = by_key[config.key.replace("on", "off", 1)]
        value = config.median_of(lambda s: s.wrk.requests_per_sec) / off.median_of(
            lambda s: s.wrk.requests_per_sec
        )
        print(
            f"{config.key}/{off.key} req/s = {value:.3f} (ratio of medians over "
            f"{len(config.samples)} rounds); target >= {target:.2f}: "
            f"{'met' if value >= target else 'NOT met'}"
        )
    print("CPU columns are medians from /proc around each run (utime + stime).")


def log_lines(config: Config) -> dict[str, float]:
    """`meshgate_access_log_lines_total` by outcome (recorded, sampled_out, ignored), and
    `keep` (`meshgate_access_log_keep_ratio`: the share of requests HAProxy logs)."""
    assert config.node is not None
    text = config.node.api.get("/metrics").text
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("meshgate_access_log_lines_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            found[outcome] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("meshgate_access_log_keep_ratio "):
            found["keep"] = float(line.rsplit(" ", 1)[1])
    return found


def sampling_line(config: Config) -> str:
    """What the latency figures of the last run were computed from, and how many of HAProxy's
    request lines reached the node at all (the ring drops lines when the node falls behind)."""
    lines = log_lines(config)
    if not lines:
        return "no request log"
    received = lines.get("recorded", 0) + lines.get("sampled_out", 0)
    share = received / max(1, config.requests_counted())
    delivered = (
        f"HAProxy logs a share of {lines.get('keep', 1.0):.4f} of requests now; "
        f"lines received / requests counted, since start: {share:.4f}"
    )
    routes = config.stats()["routes"]
    parts = []
    for name in ROUTES:
        sampling = routes.get(name, {}).get("sampling")
        latency = routes.get(name, {}).get("latency_ms", {})
        if sampling:
            parts.append(
                f"{name}: {sampling['samples']:,} samples of {sampling['requests']:,} requests "
                f"(ratio {sampling['ratio']}), "
                f"p50 {latency.get('p50')} ms, p99 {latency.get('p99')} ms"
            )
    return "; ".join([delivered, *parts])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (5)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per configuration (3)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first (1)")
    parser.add_argument(
        "--log-budget", type=int, default=None, help="on and off nodes' --log-budget (default)"
    )
    parser.add_argument(
        "--with-all",
        action="store_true",
        help="add a pair of nodes logging every request (budget 0), with and without flows",
    )
    parser.add_argument("--target", type=float, default=0.95, help="on/off goal (0.95)")
    parser.add_argument("--nginx", default="/usr/sbin/nginx", help="nginx binary")
    parser.add_argument("--wrk", default="wrk", help="wrk binary")
    parser.add_argument("--meshgate", default=None, help="meshgate executable (the venv's)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, configs)")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be between 1 and 20")
    if not 1 <= args.duration <= 60:
        parser.error("--duration must be between 1 and 60 seconds")
    if not 0 <= args.warmup <= 10:
        parser.error("--warmup must be between 0 and 10 seconds")
    if not 1 <= args.connections <= 1000:
        parser.error("--connections must be between 1 and 1000")
    if not 1 <= args.threads <= args.connections:
        parser.error("--threads must be between 1 and --connections")
    if args.log_budget is not None and not 1 <= args.log_budget <= 10_000_000:
        parser.error("--log-budget must be between 1 and 10,000,000 (see --with-all for 0)")
    return args


def run(args: argparse.Namespace, workdir: Path) -> int:
    v1, v2 = free_port(), free_port()
    budget = [] if args.log_budget is None else ["--log-budget", str(args.log_budget)]
    extra_args: dict[str, list[str]] = {"on": budget, "off": [*budget, "--no-flows"]}
    if args.with_all:
        extra_args["on-all"] = ["--log-budget", "0"]
        extra_args["off-all"] = ["--log-budget", "0", "--no-flows"]
    configs = [
        Config(key, " ".join(["meshgate up", *extra]), free_port())
        for key, extra in extra_args.items()
    ]
    print(
        machine_line(
            tool_version(["haproxy", "-v"]),
            tool_version([args.nginx, "-v"]),
            tool_version([args.wrk, "--version"]),
        )
    )
    print(
        f"meshgate: {meshgate_version()}"
        " (the source tree the virtualenv installs, uncommitted changes included)"
    )
    print(
        f"load: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, keep-alive; "
        f"{args.rounds} rounds, order: {', '.join(c.key for c in configs)}"
    )
    clean = True
    with contextlib.ExitStack() as stack:
        nginx = stack.enter_context(
            Nginx(workdir / "nginx", {"v1": v1, "v2": v2}, binary=args.nginx)
        )
        for config in configs:
            node = MeshgateNode(
                workdir / f"node-{config.key.replace('/', '-')}",
                *extra_args[config.key],
                binary=args.meshgate,
            )
            node.start()
            stack.callback(stop_node, node, [config.port])
            config.node = node
            config.backend_pids = nginx.pids
            node.apply(documents(config.port, v1, v2))
            node.wait_applied("gateways", GATEWAY)
            wait_serving(config.url)
            print(f"  {config.key:<6} {config.description}, gateway on port {config.port}")
        if args.warmup > 0:
            for config in configs:
                clean &= measure(config, args, args.warmup)[1]
        for round_number in range(1, args.rounds + 1):
            line = []
            for config in configs:
                sample, ok = measure(config, args, args.duration)
                clean &= ok
                config.samples.append(sample)
                line.append(f"{config.key} {sample.wrk.requests_per_sec:,.0f}")
            print(f"  round {round_number}: " + ", ".join(line) + " req/s", flush=True)
        for config in configs:
            print(f"  latency sources after the last run, {config.key}: {sampling_line(config)}")
    report(configs, args.target)
    return finish(clean, "some runs had errors or undercounted")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_in_workdir("meshgate-flows-bench-", args.keep, lambda workdir: run(args, workdir))


if __name__ == "__main__":
    sys.exit(main())
