"""A weight change among N gateways: this checkout's meshgate beside a baseline revision's.

Both nodes run at once on loopback, each with N virtual-host gateways (as `bench/scale.py`)
plus a canary gateway with two routes; weight swaps of the canary alternate between the two
nodes, so both see the same load on a shared machine. Per swap: the API call's answer, and the
first request served by the new route. The baseline's source is checked out (`git worktree`)
in the work directory and run by this virtualenv's Python, so both use the same libraries,
HAProxy and nginx.

    .venv/bin/python bench/weight_baseline.py --baseline main --gateways 10000 --changes 30
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script: make `bench.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    LOOPBACK,
    MeshgateNode,
    Nginx,
    finish,
    free_port,
    load_average,
    machine_line,
    median,
    meshgate_version,
    run_in_workdir,
    tool_version,
    wait_until,
)
from bench.scale import documents, rss_mb, served

TIMEOUT_S = 900.0
ROOT = Path(__file__).resolve().parent.parent


def baseline_binary(workdir: Path, revision: str) -> str:
    """A `meshgate` that runs `revision`'s source with this Python."""
    source = workdir / "baseline-src"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(source), revision],
        check=True,
        capture_output=True,
    )
    script = workdir / "meshgate-baseline"
    script.write_text(
        f'#!/bin/sh\nPYTHONPATH={source / "src"} exec {sys.executable} -m meshgate "$@"\n'
    )
    script.chmod(0o755)
    return str(script)


class Canary:
    """One node with `count` gateways and the canary, swapping the canary's weights."""

    def __init__(self, node: MeshgateNode, count: int, backends: dict[str, int]) -> None:
        self.node, self.backends = node, backends
        self.port = free_port()
        self.docs = documents(count, "vhosts", backends["v1"], self.port)
        self.puts: list[float] = []
        self.delays: list[float] = []

    def document(self, wanted: str) -> dict[str, Any]:
        weights = {"v1": 100, "v2": 0} if wanted == "v1" else {"v1": 0, "v2": 100}
        routes = {f"[{LOOPBACK}:{self.backends[n]}]": {"weight": w} for n, w in weights.items()}
        return {"name": "canary", "port": f"{self.port}/http", "bind": LOOPBACK,
                "virtual_hosts": ["canary.scale.test"], "routes": routes}  # fmt: skip

    def start(self) -> None:
        self.node.api.timeout = httpx.Timeout(TIMEOUT_S)
        self.node.start()
        self.node.api.post("/api/v1/apply", json=[*self.docs, self.document("v1")])
        self.node.wait_applied("gateways", "canary", timeout=TIMEOUT_S)
        wait_until(lambda: served(self.port, "canary.scale.test"), "canary", TIMEOUT_S)

    def swap(self, wanted: str) -> None:
        url, headers = f"http://{LOOPBACK}:{self.port}/", {"Host": "canary.scale.test"}
        started = time.monotonic()
        self.node.api.put("/api/v1/gateways/canary", json=self.document(wanted)).raise_for_status()
        self.puts.append((time.monotonic() - started) * 1000)
        with httpx.Client(timeout=2) as client:
            while client.get(url, headers=headers).text.strip() != wanted:
                if time.monotonic() - started > 30:
                    raise RuntimeError("a weight change did not reach the traffic in 30 s")
        self.delays.append((time.monotonic() - started) * 1000)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def run(workdir: Path, args: argparse.Namespace) -> int:
    print(machine_line(f"meshgate {meshgate_version()}", tool_version(["haproxy", "-v"])))
    backends = {"v1": free_port(), "v2": free_port()}
    old_binary = baseline_binary(workdir, args.baseline)
    options = ("--max-body", "256m", "--no-latency")
    with Nginx(workdir / "nginx", backends):
        nodes = {
            "baseline": Canary(
                MeshgateNode(workdir / "old", *options, binary=old_binary), args.gateways, backends
            ),
            "this": Canary(MeshgateNode(workdir / "new", *options), args.gateways, backends),
        }
        try:
            for canary in nodes.values():
                canary.start()
            print(f"{args.gateways:,} gateways on each node  (load {load_average()})", flush=True)
            for change in range(args.changes):
                for canary in nodes.values():
                    canary.swap("v2" if change % 2 == 0 else "v1")
                    time.sleep(0.2)
            for name, canary in nodes.items():
                print(
                    f"{name:8}: API answer p50 {median(canary.puts):6.0f} ms, "
                    f"p99 {p99(canary.puts):6.0f} ms; to traffic p50 "
                    f"{median(canary.delays):6.0f} ms, p99 {p99(canary.delays):6.0f} ms; "
                    f"meshgate {rss_mb(canary.node.node_pids()):.0f} MB"
                )
            old, new = nodes["baseline"], nodes["this"]
            print(
                f"this / baseline: API answer p50 {median(new.puts) / median(old.puts):.2f}, "
                f"to traffic p50 {median(new.delays) / median(old.delays):.2f}, "
                f"p99 {p99(new.delays) / p99(old.delays):.2f}  (load {load_average()})"
            )
        finally:
            for canary in nodes.values():
                canary.node.stop()
            subprocess.run(
                [
                    "git",
                    "-C",
                    str(ROOT),
                    "worktree",
                    "remove",
                    "--force",
                    str(workdir / "baseline-src"),
                ],
                check=False,
                capture_output=True,
            )
    return finish(True, "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="main", help="git revision to compare with")
    parser.add_argument("--gateways", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("NO_PROXY", LOOPBACK)
    return run_in_workdir("meshgate-weights-", args.keep, lambda workdir: run(workdir, args))


if __name__ == "__main__":
    sys.exit(main())
