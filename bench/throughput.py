"""Throughput: a meshgate canary gateway against a hand-written HAProxy configuration.

Each configuration splits traffic 90/10 between the same two nginx servers ("v1", "v2"):

  meshgate               `meshgate up` as it starts by default (HAProxy sends the agent a log
                         line per request for latency percentiles), gateway with two weighted
                         routes: bench:v1 90, bench:v2 10
  baseline               haproxy.cfg written by hand: one backend, `balance roundrobin`, server
                         weights 90/10, no per-request logic
  meshgate --no-latency  the same gateway on a node started with --no-latency (no request log):
                         the cost of the routing rules alone
  meshgate+condition     the default node again, bench:v2 also taken on `has header X-Beta`; wrk
                         sends no such header, so every request tests it, then the weights

wrk loads each configuration in turn, round after round, so that noise on the machine falls on
all of them alike. The table shows medians over the rounds, each configuration's ratio to the
baseline measured in the same invocation, and the CPU time per request of HAProxy and of the
meshgate process (read from /proc around each run), which other load on the machine disturbs
less than requests per second.

Exit status: 0 when every run was clean, 1 on any socket error or non-2xx response (or when the
setup fails), whether or not the target ratio is met.

    .venv/bin/python bench/throughput.py                    # 3 rounds x 5 s, 32 connections
    .venv/bin/python bench/throughput.py --rounds 5 --duration 10 --skip condition
    .venv/bin/python bench/throughput.py --baseline-only    # nginx and plain HAProxy only
    .venv/bin/python bench/throughput.py --busy             # a CPU hog on one core meanwhile
    .venv/bin/python bench/throughput.py --forwarded-baseline   # the baseline sends the headers

Ratios of medians move a lot on a shared machine (one slow round of the baseline lifts every
ratio); each configuration's per-round ratios to the baseline run just before or after it, and
their median, are steadier, so the summary gives both, for req/s and for HAProxy's CPU time.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    LOOPBACK,
    Haproxy,
    MeshgateNode,
    Nginx,
    WrkResult,
    count_bodies,
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

SPLIT_CHECK_REQUESTS = 200
OPTIONAL_CONFIGS = ("meshgate", "no-latency", "condition")


@dataclass(frozen=True)
class Sample:
    """One measured wrk run, and the CPU time the configuration's processes used during it."""

    wrk: WrkResult
    proxy_cpu_s: float  # HAProxy: master and workers
    control_cpu_s: float  # the meshgate process (agent reading request logs, API, store)
    backend_cpu_s: float  # nginx

    @property
    def all_cpu_s(self) -> float:
        """Everything that served the run: wrk, nginx, HAProxy and meshgate."""
        return self.wrk.cpu_s + self.backend_cpu_s + self.proxy_cpu_s + self.control_cpu_s

    @property
    def rps(self) -> float:
        return self.wrk.requests_per_sec

    def per_request_us(self, seconds: float) -> float:
        return seconds / self.wrk.requests * 1e6 if self.wrk.requests else math.nan


def _no_pids() -> list[int]:
    return []


@dataclass
class Config:
    """One way of serving the 90/10 split, and the runs measured against it."""

    key: str
    description: str
    port: int
    headers: Mapping[str, str] = field(default_factory=dict)
    proxy_pids: Callable[[], list[int]] = _no_pids
    control_pids: Callable[[], list[int]] = _no_pids
    backend_pids: Callable[[], list[int]] = _no_pids
    samples: list[Sample] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/"

    def median_rps(self) -> float:
        return median([s.rps for s in self.samples])

    def median_proxy_cpu(self) -> float:
        return median([s.per_request_us(s.proxy_cpu_s) for s in self.samples])

    def median_control_cpu(self) -> float:
        return median([s.per_request_us(s.control_cpu_s) for s in self.samples])

    def median_all_cpu(self) -> float:
        return median([s.per_request_us(s.all_cpu_s) for s in self.samples])


# What meshgate's gateways send instances by default, written by hand the cheapest way.
FORWARDED_HEADERS = """\
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request del-header X-Forwarded-Host
"""


def baseline_config(port: int, v1: int, v2: int, *, forwarded: bool = False) -> str:
    """The classic hand-written 90/10 split: weights on two servers of one backend; with
    `forwarded`, also the headers meshgate sends, so both do the same work."""
    headers = FORWARDED_HEADERS if forwarded else ""
    return f"""\
global

defaults
    mode http
    timeout connect 5s
    timeout client 50s
    timeout server 50s

frontend fe
    bind {LOOPBACK}:{port}
    default_backend be

backend be
    balance roundrobin
{headers}    server v1 {LOOPBACK}:{v1} weight 90
    server v2 {LOOPBACK}:{v2} weight 10
"""


def meshgate_documents(
    gateway_port: int | None, condition_port: int | None, v1: int, v2: int
) -> list[dict[str, object]]:
    """Services bench:v1 and bench:v2; gateway `bench` and `bench-condition` on the ports given."""
    documents: list[dict[str, object]] = [service_doc("bench:v1", v1), service_doc("bench:v2", v2)]
    if gateway_port is not None:
        documents.append(
            gateway_doc(
                "bench", gateway_port, {"bench:v1": {"weight": 90}, "bench:v2": {"weight": 10}}
            )
        )
    if condition_port is not None:
        documents.append(
            gateway_doc(
                "bench-condition",
                condition_port,
                {
                    "bench:v1": {"weight": 90},
                    "bench:v2": {"weight": 10, "condition": "has header X-Beta"},
                },
            )
        )
    return documents


def split_check(config: Config) -> str:
    """Which backend answered a few hundred plain requests, e.g. "v1 180 / v2 20"."""
    counts = count_bodies(config.url, SPLIT_CHECK_REQUESTS, config.headers)
    return " / ".join(f"{body} {count}" for body, count in sorted(counts.items()))


# A busy loop on one CPU that ends by itself: the "busy machine" of `--busy`.
HOG = (
    "import os, sys, time\n"
    "os.sched_setaffinity(0, {0})\n"
    "end = time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end:\n"
    "    pass\n"
)


@contextlib.contextmanager
def cpu_hog(seconds: float | None) -> Iterator[None]:
    """While inside, a process spinning on CPU 0 (none for None); bounded by `seconds` too."""
    if seconds is None:
        yield
        return
    hog = subprocess.Popen([sys.executable, "-c", HOG, f"{seconds:g}"])
    try:
        yield
    finally:
        hog.kill()
        hog.wait()


def measure(config: Config, args: argparse.Namespace, duration: float) -> Sample:
    """One wrk run against the configuration (beside a CPU hog with `--busy`); prints wrk's
    output when it saw errors."""
    proxy, control, backend = config.proxy_pids(), config.control_pids(), config.backend_pids()
    proxy_before, control_before = cpu_seconds(proxy), cpu_seconds(control)
    backend_before = cpu_seconds(backend)
    with cpu_hog(duration + 2 if args.busy else None):
        result = run_wrk(
            config.url,
            duration=duration,
            connections=args.connections,
            threads=args.threads,
            headers=config.headers,
            binary=args.wrk,
        )
    sample = Sample(
        result,
        proxy_cpu_s=cpu_seconds(proxy) - proxy_before,
        control_cpu_s=cpu_seconds(control) - control_before,
        backend_cpu_s=cpu_seconds(backend) - backend_before,
    )
    problems = []
    if any(result.socket_errors.values()):
        problems.append(f"socket errors {result.socket_errors}")
    if result.non_2xx:
        problems.append(f"{result.non_2xx} non-2xx responses")
    if problems:
        print(f"    ERROR {config.key}: {', '.join(problems)}\n{result.output}", flush=True)
    return sample


def ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline > 0 else math.nan


def report(configs: Sequence[Config], baseline: Config, target: float) -> None:
    """Print the table, then each meshgate configuration's ratio to the baseline."""
    rounds = len(baseline.samples)
    print()
    print(
        "| config | median req/s | p50 ms | p99 ms | req/s vs baseline | per-round req/s ratios "
        "| HAProxy CPU us/req | meshgate CPU us/req | all CPU us/req | CPU-bound estimate |"
    )
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for config in configs:
        paired = ", ".join(
            f"{ratio(config.samples[i].rps, baseline.samples[i].rps):.3f}" for i in range(rounds)
        )
        print(
            f"| {config.key} | {config.median_rps():,.0f} "
            f"| {median([s.wrk.p50_ms for s in config.samples]):.2f} "
            f"| {median([s.wrk.p99_ms for s in config.samples]):.2f} "
            f"| {ratio(config.median_rps(), baseline.median_rps()):.3f} | {paired} "
            f"| {config.median_proxy_cpu():.1f} | {config.median_control_cpu():.1f} "
            f"| {config.median_all_cpu():.1f} "
            f"| {ratio(baseline.median_all_cpu(), config.median_all_cpu()):.3f} |"
        )
    print(
        "\nCPU columns: CPU time per request during the runs (medians), from /proc; 'all' is wrk,"
        "\nnginx, HAProxy and the meshgate process together. 'CPU-bound estimate' is the baseline's"
        "\n'all' over this configuration's: the req/s ratio to expect when the CPUs are the limit."
    )
    print()
    for config in configs:
        if config is baseline:
            continue
        value = ratio(config.median_rps(), baseline.median_rps())
        pairs = list(zip(config.samples, baseline.samples, strict=True))
        paired_median = median([ratio(c.rps, b.rps) for c, b in pairs])
        cpu_ratios = [
            ratio(b.per_request_us(b.proxy_cpu_s), c.per_request_us(c.proxy_cpu_s))
            for c, b in pairs
        ]
        print(
            f"{config.key}/baseline req/s = {value:.3f} (ratio of medians over {rounds} rounds; "
            f"median of per-round ratios {paired_median:.3f}); "
            f"target >= {target:.2f}: {'met' if value >= target else 'NOT met'}"
        )
        print(
            f"  HAProxy CPU per request, baseline/{config.key}: median of per-round ratios "
            f"{median(cpu_ratios):.3f} ({', '.join(f'{r:.3f}' for r in cpu_ratios)})"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (5)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per configuration (3)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="unmeasured seconds per configuration first (1)"
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=OPTIONAL_CONFIGS,
        help="leave out a configuration (repeatable); the baseline always runs",
    )
    parser.add_argument(
        "--baseline-only", action="store_true", help="measure the baseline alone (no meshgate)"
    )
    parser.add_argument(
        "--forwarded-baseline",
        action="store_true",
        help="the baseline also sends X-Forwarded-For and -Proto, as meshgate does by default",
    )
    parser.add_argument(
        "--busy", action="store_true", help="a busy loop on CPU 0 during every measured run"
    )
    parser.add_argument("--target", type=float, default=0.95, help="meshgate/baseline goal")
    parser.add_argument("--haproxy", default="haproxy", help="HAProxy binary for the baseline")
    parser.add_argument("--nginx", default="/usr/sbin/nginx", help="nginx binary")
    parser.add_argument("--wrk", default="wrk", help="wrk binary")
    parser.add_argument("--meshgate", default=None, help="meshgate executable (the venv's)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, configs)")
    args = parser.parse_args(argv)
    if args.baseline_only:
        args.skip = list(OPTIONAL_CONFIGS)
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
    return args


def run(args: argparse.Namespace, workdir: Path) -> int:
    v1, v2 = free_port(), free_port()
    baseline = Config(
        "baseline",
        "hand-written haproxy.cfg, server weights 90/10"
        + (", X-Forwarded-For and -Proto" if args.forwarded_baseline else ""),
        free_port(),
    )
    optional = {
        "meshgate": Config("meshgate", "meshgate up (defaults), weights 90/10", free_port()),
        "no-latency": Config(
            "meshgate --no-latency",
            "meshgate up --no-latency (no request log), weights 90/10",
            free_port(),
        ),
        "condition": Config(
            "meshgate+condition",
            "meshgate up (defaults), 90/10 and `has header X-Beta` (not sent)",
            free_port(),
        ),
    }
    for name in args.skip:
        del optional[name]
    # Run order, repeated every round: the baseline right after meshgate's default setup.
    configs = [c for c in (optional.get("meshgate"), baseline) if c is not None]
    configs += [c for name, c in optional.items() if name != "meshgate"]

    print(
        machine_line(
            tool_version([args.haproxy, "-v"]),
            tool_version([args.nginx, "-v"]),
            tool_version([args.wrk, "--version"]),
        )
    )
    print(
        f"meshgate: {meshgate_version()}"
        " (the source tree the virtualenv installs, uncommitted changes included)"
    )
    print(
        f"load: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s --latency, "
        f"keep-alive; {args.rounds} rounds, order: {', '.join(c.key for c in configs)}"
        + ("; a busy loop on CPU 0 during each run" if args.busy else "")
    )

    with contextlib.ExitStack() as stack:
        backend = stack.enter_context(
            Nginx(workdir / "nginx", {"v1": v1, "v2": v2}, binary=args.nginx)
        )

        cfg = workdir / "baseline" / "haproxy.cfg"
        cfg.parent.mkdir(parents=True)
        cfg.write_text(baseline_config(baseline.port, v1, v2, forwarded=args.forwarded_baseline))
        plain = stack.enter_context(Haproxy(cfg, baseline.port, binary=args.haproxy))
        baseline.proxy_pids = plain.pids
        for config in configs:
            config.backend_pids = backend.pids

        # One node with its defaults serves "meshgate" and "condition", another "no-latency".
        nodes: list[tuple[str, list[str], dict[str, Config]]] = [
            ("default", [], {k: optional[k] for k in ("meshgate", "condition") if k in optional}),
            (
                "no-latency",
                ["--no-latency"],
                {k: optional[k] for k in ("no-latency",) if k in optional},
            ),
        ]
        for label, extra, served in nodes:
            if not served:
                continue
            node = MeshgateNode(workdir / f"meshgate-{label}", *extra, binary=args.meshgate)
            node.start()
            stack.callback(stop_node, node, [c.port for c in served.values()])
            plain_gateway = served.get("meshgate") or served.get("no-latency")
            conditional = served.get("condition")
            node.apply(
                meshgate_documents(
                    plain_gateway.port if plain_gateway else None,
                    conditional.port if conditional else None,
                    v1,
                    v2,
                )
            )
            for name, config in served.items():
                node.wait_applied("gateways", "bench-condition" if name == "condition" else "bench")
                config.proxy_pids = node.haproxy_pids
                config.control_pids = node.node_pids

        for config in configs:
            wait_serving(config.url)
            print(
                f"  {config.key:<22} {config.description}; split of "
                f"{SPLIT_CHECK_REQUESTS} requests: {split_check(config)}"
            )

        clean = True
        if args.warmup > 0:
            for config in configs:
                clean &= measure(config, args, args.warmup).wrk.errors == 0
        for round_number in range(1, args.rounds + 1):
            line = []
            for config in configs:
                sample = measure(config, args, args.duration)
                clean &= sample.wrk.errors == 0
                config.samples.append(sample)
                line.append(f"{config.key} {sample.rps:,.0f}")
            print(f"  round {round_number}: " + ", ".join(line) + " req/s", flush=True)

    report(configs, baseline, args.target)
    return finish(clean, "some runs had socket errors or non-2xx responses")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_in_workdir("meshgate-bench-", args.keep, lambda workdir: run(args, workdir))


if __name__ == "__main__":
    sys.exit(main())
