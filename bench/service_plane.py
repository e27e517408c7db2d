"""Latency the service-plane hop adds on loopback: a service calling its dependency directly
against calling it at localhost:PORT through the node's own agent, side by side in one run.

`meshgate up` serves a `plane: service` gateway (loopback, every node) routing to one nginx
instance; wrk (-t1, keep-alive, as a service's HTTP client pool would be) calls nginx directly
and through the gateway in turn, alternating for --rounds rounds, with --connections
concurrent calls (default 1: one call at a time, the latency of the hop itself rather than of
a queue). The report gives each round's p50 and p99 for both paths, their medians, what the
hop adds (through minus direct) and the ratios.

    .venv/bin/python bench/service_plane.py                     # 5 rounds of 5 s each: ~1 min
    .venv/bin/python bench/service_plane.py --connections 16 --rounds 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    LOOPBACK,
    WRK_BINARY,
    MeshgateNode,
    Nginx,
    finish,
    free_port,
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


def run(workdir: Path, rounds: int, duration: float, connections: int) -> int:
    print(machine_line(meshgate_version(), tool_version(["haproxy", "-v"]),
                       tool_version([WRK_BINARY, "--version"])))  # fmt: skip
    backend, plane_port = free_port(), free_port()
    paths = {
        "direct": f"http://{LOOPBACK}:{backend}/",
        "via agent": f"http://{LOOPBACK}:{plane_port}/",
    }
    with Nginx(workdir / "nginx", {"b": backend}), MeshgateNode(workdir / "node") as node:
        try:
            gateway = {"name": "b", "port": plane_port, "plane": "service", "routes": {"b": {}}}
            node.apply([service_doc("b", backend), gateway])
            node.wait_applied("gateways", "b")
            for url in paths.values():
                wait_serving(url)
            p50: dict[str, list[float]] = {name: [] for name in paths}
            p99: dict[str, list[float]] = {name: [] for name in paths}
            clean = True
            for number in range(1, rounds + 1):
                for name, url in paths.items():
                    result = run_wrk(url, duration=duration, connections=connections)
                    clean &= result.errors == 0
                    p50[name].append(result.p50_ms)
                    p99[name].append(result.p99_ms)
                    print(f"round {number} {name:9}  p50 {result.p50_ms:7.3f} ms"
                          f"  p99 {result.p99_ms:7.3f} ms"
                          f"  {result.requests_per_sec:8.0f} req/s"
                          f"  errors {result.errors}")  # fmt: skip
            direct50, via50 = median(p50["direct"]), median(p50["via agent"])
            direct99, via99 = median(p99["direct"]), median(p99["via agent"])
            print(f"median p50: direct {direct50:.3f} ms, via agent {via50:.3f} ms:"
                  f" +{via50 - direct50:.3f} ms (x{via50 / direct50:.2f})")  # fmt: skip
            print(f"median p99: direct {direct99:.3f} ms, via agent {via99:.3f} ms:"
                  f" +{via99 - direct99:.3f} ms (x{via99 / direct99:.2f})")  # fmt: skip
        finally:
            stop_node(node, [plane_port])
    return finish(clean, "errors during a run")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    return run_in_workdir(
        "mg-bench-service-plane-",
        args.keep,
        lambda workdir: run(workdir, args.rounds, args.duration, args.connections),
    )


if __name__ == "__main__":
    sys.exit(main())
