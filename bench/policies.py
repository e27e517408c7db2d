"""Policies' cost: throughput through a gateway with a rate limit and an allowlist, against the
same gateway without them, side by side in one invocation.

`meshgate up` serves two gateways to the same nginx backend: `plain` (no policies) and
`policed` (a rate limit by source address, high enough never to refuse, and an allowlist of
127.0.0.0/8). wrk (-t1, keep-alive) drives each in turn, alternating for --rounds rounds; the
report gives each round's requests per second, the medians and their ratio (target >= 0.95).

    .venv/bin/python bench/policies.py                 # 5 rounds of 5 s each: ~1 min
    .venv/bin/python bench/policies.py --rounds 3 --duration 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    WRK_BINARY,
    MeshgateNode,
    Nginx,
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

TARGET_RATIO = 0.95
POLICIES = {
    "rate_limit": {"requests": 1_000_000, "per": "1s", "by": "source"},
    "allow": ["127.0.0.0/8"],
}


def run(workdir: Path, rounds: int, duration: float, connections: int) -> int:
    print(machine_line(meshgate_version(), tool_version(["haproxy", "-v"]),
                       tool_version([WRK_BINARY, "--version"])))  # fmt: skip
    backend = free_port()
    ports = {"plain": free_port(), "policed": free_port()}
    with Nginx(workdir / "nginx", {"ok": backend}), MeshgateNode(workdir / "node") as node:
        try:
            plain = gateway_doc("plain", ports["plain"], {"bench": {}})
            policed = {
                **gateway_doc("policed", ports["policed"], {"bench": {}}),
                "policies": POLICIES,
            }
            node.apply([service_doc("bench", backend), plain, policed])
            for name, port in ports.items():
                node.wait_applied("gateways", name)
                wait_serving(f"http://127.0.0.1:{port}/")
            rates: dict[str, list[float]] = {name: [] for name in ports}
            clean = True
            for number in range(1, rounds + 1):
                for name, port in ports.items():
                    result = run_wrk(
                        f"http://127.0.0.1:{port}/", duration=duration, connections=connections
                    )
                    clean &= result.errors == 0
                    rates[name].append(result.requests_per_sec)
                    print(f"round {number} {name:8} {result.requests_per_sec:10.0f} req/s"
                          f"  p99 {result.latency_ms.get('99', float('nan')):.2f} ms"
                          f"  errors {result.errors}")  # fmt: skip
            plain_rate, policed_rate = median(rates["plain"]), median(rates["policed"])
            ratio = policed_rate / plain_rate
            print(f"median plain {plain_rate:.0f} req/s, with rate limit + allowlist"
                  f" {policed_rate:.0f} req/s: ratio {ratio:.3f}"
                  f" (target {TARGET_RATIO})")  # fmt: skip
        finally:
            stop_node(node, list(ports.values()))
    return finish(clean and ratio >= TARGET_RATIO, "errors or ratio below target")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    return run_in_workdir(
        "mg-bench-policies-",
        args.keep,
        lambda workdir: run(workdir, args.rounds, args.duration, args.connections),
    )


if __name__ == "__main__":
    sys.exit(main())
