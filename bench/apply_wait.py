"""How soon `apply --wait` returns after a change is live, against polling for it.

All on loopback (127.0.0.1). One `meshgate up` serves --gateways gateways (one route each to
an inline address: no backend process is needed, as nothing is requested). Two changes, each
made --rounds times and timed from the start of the apply until the client knows the data
plane runs it:

  weight   one gateway's two route weights swap (a runtime map change, no reload)
  gateway  a new gateway on a new port (a hitless reload)

each by two clients, alternately, side by side in the same run:

  poll     baseline: POST /api/v1/apply, then GET the resource every 100 ms until its
           `status.applied` is true (what a client had to do before `?wait`)
  wait     POST /api/v1/apply?wait=30s, which answers once the status says the new version runs

Exit status: 0 when every wait ended with `done`, 1 otherwise.

    .venv/bin/python bench/apply_wait.py                 # 100 gateways x 10 rounds, ~1 min
    .venv/bin/python bench/apply_wait.py --gateways 10 --rounds 3   # quick
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

if __package__ in (None, ""):  # run as a script: make `bench.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BenchError,
    MeshgateNode,
    finish,
    free_port,
    gateway_doc,
    machine_line,
    median,
    meshgate_version,
    run_in_workdir,
    stop_node,
    tool_version,
)

POLL_S = 0.1


def routes(first: int) -> dict[str, dict[str, Any]]:
    return {"[127.0.0.1:9]": {"weight": first}, "[127.0.0.1:10]": {"weight": 100 - first}}


def poll(node: MeshgateNode, document: dict[str, Any]) -> bool:
    applied = node.apply([document])[0]
    url = f"/api/v1/gateways/{quote(applied['name'], safe='')}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = node.api.get(url).json()["status"]
        if status.get("applied"):
            return True
        time.sleep(POLL_S)
    return False


def wait(node: MeshgateNode, document: dict[str, Any]) -> bool:
    response = node.api.post("/api/v1/apply", json=[document], params={"wait": "30s"}, timeout=60)
    if response.status_code != 200:
        raise BenchError(f"apply?wait answered {response.status_code}: {response.text}")
    return bool(response.json()["wait"]["done"])


def timed(method: Callable[[MeshgateNode, dict[str, Any]], bool], node: MeshgateNode,
          document: dict[str, Any]) -> tuple[float, bool]:  # fmt: skip
    started = time.perf_counter()
    live = method(node, document)
    return (time.perf_counter() - started) * 1000, live


def run(workdir: Path, gateways: int, rounds: int) -> int:
    print(machine_line(tool_version(["haproxy", "-v"]), f"meshgate {meshgate_version()}"))
    node = MeshgateNode(workdir / "node")
    ports = [free_port() for _ in range(gateways)]
    node.start()
    clean = True
    try:
        documents = [gateway_doc(f"g{i}", port, routes(50)) for i, port in enumerate(ports)]
        node.apply(documents)
        for document in documents:
            node.wait_applied("gateways", document["name"], timeout=120)
        samples: dict[tuple[str, str], list[float]] = {}
        methods = {"poll": poll, "wait": wait}
        for round_number in range(rounds):
            for name, method in methods.items():
                weight = gateway_doc(
                    "g0", ports[0], routes(10 + (round_number * 2 + len(name)) % 80)
                )
                fresh_port = free_port()
                ports.append(fresh_port)
                added = gateway_doc(f"new-{name}-{round_number}", fresh_port, routes(50))
                for change, document in (("weight", weight), ("gateway", added)):
                    millis, live = timed(method, node, document)
                    clean = clean and live
                    samples.setdefault((change, name), []).append(millis)
        print(
            f"{gateways} gateways, {rounds} rounds; median ms from the apply to knowing it is live"
        )
        print(f"{'change':<10}{'poll (baseline)':>18}{'wait':>10}{'wait/poll':>11}")
        for change in ("weight", "gateway"):
            polled = median(samples[change, "poll"])
            waited = median(samples[change, "wait"])
            print(f"{change:<10}{polled:>18.1f}{waited:>10.1f}{waited / polled:>11.2f}")
    finally:
        stop_node(node, [p for p in ports])
    return finish(clean, "a wait did not end with every resource live")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    return run_in_workdir(
        "meshgate-bench-wait-", args.keep, lambda workdir: run(workdir, args.gateways, args.rounds)
    )


if __name__ == "__main__":
    sys.exit(main())
