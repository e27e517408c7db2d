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
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import finish, free_port, run_in_workdir
from bench.stats_overhead import Config, measure_nodes, parse_args

# Nodes, gateway, wrk runs and the checks against the stats API are bench/stats_overhead.py's;
# only the pairs of configurations and the report differ.


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
    clean = measure_nodes(args, workdir, configs, extra_args, v1, v2)
    report(configs, args.target)
    return finish(clean, "some runs had errors or undercounted")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(
        argv,
        description=__doc__,
        log_budget_help="on and off nodes' --log-budget (default)",
        with_all_help="add a pair of nodes logging every request (budget 0), with and without"
        " flows",
    )
    return run_in_workdir("meshgate-flows-bench-", args.keep, lambda workdir: run(args, workdir))


if __name__ == "__main__":
    sys.exit(main())
