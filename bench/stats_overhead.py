"""Stats overhead: throughput with the request log on (latency percentiles) against off.

Two `meshgate up` nodes serve the same gateway (two routes, 50/50, over two nginx servers):

  on    `meshgate up` as it starts by default: HAProxy logs requests into a ring that is
        streamed to the agent, which parses the lines into latency histograms; above the
        node's budget (`--log-budget`, 2,000 lines/s by default) HAProxy logs a random sample
        of requests, decided before the line is formatted
  off   `meshgate up --no-latency`: no request log; counters still come from `show stat`
  all   (with --with-all) `meshgate up --log-budget 0`: HAProxy logs every request

Rounds alternate the configurations (on, off, on, off, ...), so that noise on the machine falls
on both alike. Reported: median requests per second and the on/off ratio (target >= 0.95), and
the CPU time of the `meshgate up` process (its /proc/PID/stat utime + stime, before and after
each counted wrk run) per 10,000 requests, beside HAProxy's. Each run is also checked against the
stats API: the requests it counted on the routes must cover every request wrk completed.

Exit status: 0 when every run was clean, 1 on socket errors, non-2xx responses, a stats count
below wrk's, or a setup failure, whether or not the target ratio is met.

    .venv/bin/python bench/stats_overhead.py                  # 3 rounds x 5 s, 32 connections
    .venv/bin/python bench/stats_overhead.py --rounds 5 --with-all
    .venv/bin/python bench/stats_overhead.py --log-budget 500
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
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
    on, off = configs[0], configs[1]
    print()
    print(
        "| config | median req/s | p50 ms | p99 ms | req/s vs off | meshgate CPU ms / 10k req "
        "| HAProxy CPU ms / 10k req | all CPU ms / 10k req | CPU-bound estimate "
        "| stats count / wrk count |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    off_all = off.median_of(lambda s: s.per(s.all_cpu_s))
    off_rps = off.median_of(lambda s: s.wrk.requests_per_sec)
    for config in configs:
        rps = config.median_of(lambda s: s.wrk.requests_per_sec)
        print(
            f"| {config.key} | {rps:,.0f} "
            f"| {config.median_of(lambda s: s.wrk.p50_ms):.2f} "
            f"| {config.median_of(lambda s: s.wrk.p99_ms):.2f} "
            f"| {rps / off_rps:.3f} "
            f"| {config.median_of(lambda s: s.per(s.node_cpu_s)):.0f} "
            f"| {config.median_of(lambda s: s.per(s.proxy_cpu_s)):.0f} "
            f"| {config.median_of(lambda s: s.per(s.all_cpu_s)):.0f} "
            f"| {off_all / config.median_of(lambda s: s.per(s.all_cpu_s)):.3f} "
            f"| {config.median_of(lambda s: s.counted / s.wrk.requests):.4f} |"
        )
    rounds = len(on.samples)
    paired = [
        a.wrk.requests_per_sec / b.wrk.requests_per_sec
        for a, b in zip(on.samples, off.samples, strict=True)
    ]
    value = on.median_of(lambda s: s.wrk.requests_per_sec) / off_rps
    print(
        f"\non/off req/s = {value:.3f} (ratio of medians over {rounds} rounds; per-round ratios "
        f"{', '.join(f'{r:.3f}' for r in paired)}); target >= {target:.2f}: "
        f"{'met' if value >= target else 'NOT met'}"
    )
    extra = on.median_of(lambda s: s.per(s.node_cpu_s)) - off.median_of(
        lambda s: s.per(s.node_cpu_s)
    )
    print(f"request-log cost in the agent: {extra:.0f} ms CPU per {PER:,} requests (on - off)")
    print(
        "CPU columns are medians from /proc around each run; 'all' is wrk, nginx, HAProxy and\n"
        "meshgate together, and 'CPU-bound estimate' is off's 'all' over this configuration's:\n"
        "the req/s ratio to expect when the CPUs are the limit, less disturbed by other load."
    )


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


def parse_args(
    argv: Sequence[str] | None,
    *,
    description: str | None = __doc__,
    log_budget_help: str = "the on node's --log-budget (its default)",
    with_all_help: str = "add a node logging every request (budget 0)",
) -> argparse.Namespace:
    """The options of this benchmark and of bench/flows.py, which measures the same way."""
    parser = argparse.ArgumentParser(
        description=description.split("\n\n")[0] if description else None
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (5)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per configuration (3)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first (1)")
    parser.add_argument("--log-budget", type=int, default=None, help=log_budget_help)
    parser.add_argument("--with-all", action="store_true", help=with_all_help)
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


def measure_nodes(
    args: argparse.Namespace,
    workdir: Path,
    configs: Sequence[Config],
    extra_args: Mapping[str, Sequence[str]],
    v1: int,
    v2: int,
) -> bool:
    """A `meshgate up` node per configuration (with its `extra_args`) serving the gateway over
    nginx on `v1` and `v2`; then rounds of wrk runs, the configurations in turn. Each
    configuration's samples are appended to it. True when every run was clean."""
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
    return clean


def run(args: argparse.Namespace, workdir: Path) -> int:
    v1, v2 = free_port(), free_port()
    on_args = [] if args.log_budget is None else ["--log-budget", str(args.log_budget)]
    configs = [
        Config("on", " ".join(["meshgate up", *on_args, "(request log on, sampled)"]), free_port()),
        Config("off", "meshgate up --no-latency", free_port()),
    ]
    extra_args: dict[str, list[str]] = {"on": on_args, "off": ["--no-latency"]}
    if args.with_all:
        configs.append(Config("all", "meshgate up --log-budget 0 (every request)", free_port()))
        extra_args["all"] = ["--log-budget", "0"]
    clean = measure_nodes(args, workdir, configs, extra_args, v1, v2)
    report(configs, args.target)
    return finish(clean, "some runs had errors or undercounted")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_in_workdir("meshgate-stats-bench-", args.keep, lambda workdir: run(args, workdir))


if __name__ == "__main__":
    sys.exit(main())
