"""Scale: 1,000 to 100,000 gateways, end to end, with the cost per gateway beside each figure.

All on loopback (127.0.0.1). One nginx answers for every gateway. For each size N, in a fresh
`meshgate up` (embedded store):

  validate   `meshgate validate -f` of a file of N gateway documents (CLI, no server)
  apply      `POST /api/v1/apply` of the same N documents, until the API answers
  serving    from the apply until the last gateway answers through HAProxy
  rss        meshgate's and HAProxy's (master and workers) resident memory then

Layouts: `vhosts` puts every gateway on one port, told apart by virtual host; `ports` gives
each gateway a port of its own (up to --max-ports, HAProxy listeners being file descriptors).

At the largest vhost size it then measures, on that node:

  weight     --changes weight swaps of one gateway's two routes among the N: from the API call
             to the first request served by the new route (p50, p99), the three slowest with
             their API part and wall-clock start (to match a node's MESHGATE_STALLS lines),
             and reloads meanwhile;
             then a page of the gateway listing, a /metrics scrape (time, size) and memory,
             and with --settle S meshgate's memory again S seconds later
  throughput wrk through the first and the last virtual host among the N, against a node
             serving one gateway alone, rounds alternating (the ratio is the verdict, >= 0.95)

    .venv/bin/python bench/scale.py                          # 1,000 and 10,000
    .venv/bin/python bench/scale.py --sizes 1000,10000,100000 --max-ports 1000
    .venv/bin/python bench/scale.py --sizes 100000 --weights-at 100000 --weights-only \
        --changes 5 --rounds 1                               # 100,000: the weight node alone
    .venv/bin/python bench/scale.py --sizes 100000 --weights-at 100000 --weights-only \
        --changes 5 --rounds 0 --settle 660                  # and its memory once settled
    .venv/bin/python bench/scale.py --sizes 10000 --weights-only --changes 200 \
        --baseline-binary /path/to/older/meshgate            # weight changes, before and after
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
    meshgate_binary,
    meshgate_version,
    rss_mb,
    run_in_workdir,
    run_wrk,
    tool_version,
    wait_until,
)

TIMEOUT_S = 900.0  # per step; --timeout sets it (a loaded machine needs more at 100,000)


def documents(count: int, layout: str, backend: int, base_port: int) -> list[dict[str, Any]]:
    target = {f"[{LOOPBACK}:{backend}]": {"weight": 100}}
    if layout == "vhosts":
        return [
            {"name": f"g{i}", "port": f"{base_port}/http", "bind": LOOPBACK,
             "virtual_hosts": [f"h{i}.scale.test"], "routes": target}
            for i in range(count)
        ]  # fmt: skip
    return [
        {"name": f"g{i}", "port": f"{base_port + i}/http", "bind": LOOPBACK, "routes": target}
        for i in range(count)
    ]


def served(port: int, host: str | None) -> bool:
    headers = {"Host": host} if host else None
    try:
        answer = httpx.get(f"http://{LOOPBACK}:{port}/", headers=headers, timeout=2)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200


def one_size(workdir: Path, count: int, layout: str, backend: int) -> dict[str, Any]:
    base_port = free_port() if layout == "vhosts" else 20_000
    docs = documents(count, layout, backend, base_port)
    manifest = workdir / f"{layout}-{count}.json"
    manifest.write_text("\n---\n".join(json.dumps(d) for d in docs))  # JSON is YAML
    started = time.monotonic()
    subprocess.run(
        [meshgate_binary(), "validate", "-f", str(manifest)], check=True, capture_output=True
    )
    validate_s = time.monotonic() - started
    node = MeshgateNode(workdir / f"node-{layout}-{count}", "--max-body", "256m", "--no-latency")
    node.start()
    try:
        started = time.monotonic()
        response = node.api.post("/api/v1/apply", json=docs, timeout=TIMEOUT_S)
        apply_s = time.monotonic() - started
        if response.status_code != 200:
            raise RuntimeError(f"apply answered {response.status_code}: {response.text[:300]}")
        last = count - 1
        port, host = (
            (base_port, f"h{last}.scale.test") if layout == "vhosts" else (base_port + last, None)
        )
        wait_until(lambda: served(port, host), f"gateway g{last} serving", TIMEOUT_S, 0.2)
        serving_s = time.monotonic() - started
        return {
            "layout": layout,
            "count": count,
            "validate_s": validate_s,
            "apply_s": apply_s,
            "serving_s": serving_s,
            "meshgate_mb": rss_mb(node.node_pids()),
            "haproxy_mb": rss_mb(node.haproxy_pids()),
            "port": base_port,
        }
    finally:
        node.stop()


def weight_changes(
    workdir: Path,
    count: int,
    backends: dict[str, int],
    changes: int,
    rounds: int,
    duration: int,
    binary: str | None = None,
    settle_s: float = 0.0,
) -> tuple[float, float]:
    """A node with `count` vhost gateways plus one canary gateway: weight swaps, then wrk.
    With `binary`, that `meshgate` serves them; with `settle_s`, meshgate's memory is read
    again that long after the reads. Returns the swaps' p50 and p99 (ms)."""
    port = free_port()
    docs = documents(count, "vhosts", backends["v1"], port)
    canary = {
        "name": "canary", "port": f"{port}/http", "bind": LOOPBACK,
        "virtual_hosts": ["canary.scale.test"],
        "routes": {f"[{LOOPBACK}:{backends['v1']}]": {"weight": 100},
                   f"[{LOOPBACK}:{backends['v2']}]": {"weight": 0}},
    }  # fmt: skip
    big = MeshgateNode(
        workdir / ("weights-baseline" if binary else "weights"),
        "--max-body",
        "256m",
        "--no-latency",
        binary=binary,
    )
    # With 100,000 gateways the API may take longer than the default 10 s while the first
    # pass compiles them all.
    big.api.timeout = httpx.Timeout(TIMEOUT_S)
    small = MeshgateNode(workdir / ("alone-baseline" if binary else "alone"), "--no-latency")
    big.start()
    try:
        started = time.monotonic()
        big.api.post("/api/v1/apply", json=[*docs, canary], timeout=TIMEOUT_S).raise_for_status()
        apply_s = time.monotonic() - started
        big.wait_applied("gateways", "canary", timeout=TIMEOUT_S)
        headers = {"Host": "canary.scale.test"}
        url = f"http://{LOOPBACK}:{port}/"
        wait_until(lambda: served(port, "canary.scale.test"), "canary serving", TIMEOUT_S)
        print(
            f"{count + 1:,} gateways for the weight changes: apply {apply_s:.1f} s, serving "
            f"{time.monotonic() - started:.1f} s; meshgate {rss_mb(big.node_pids()):.0f} MB, "
            f"haproxy {rss_mb(big.haproxy_pids()):.0f} MB  (load {load_average()})",
            flush=True,
        )
        reloads = _reloads(big)
        delays: list[float] = []
        moments: list[float] = []
        answered: list[float] = []  # from the call to the API's answer
        for change in range(changes):
            wanted = "v2" if change % 2 == 0 else "v1"
            weights = {"v1": 0, "v2": 100} if wanted == "v2" else {"v1": 100, "v2": 0}
            canary["routes"] = {
                f"[{LOOPBACK}:{backends[name]}]": {"weight": weight}
                for name, weight in weights.items()
            }
            started = time.monotonic()
            big.api.put(
                "/api/v1/gateways/canary", json=canary, timeout=TIMEOUT_S
            ).raise_for_status()
            answered.append((time.monotonic() - started) * 1000)
            with httpx.Client(timeout=2) as client:
                while client.get(url, headers=headers).text.strip() != wanted:
                    if time.monotonic() - started > 30:
                        raise RuntimeError("a weight change did not reach the traffic in 30 s")
            delays.append((time.monotonic() - started) * 1000)
            moments.append(time.time())
        slowest = sorted(range(len(delays)), key=delays.__getitem__)[-3:][::-1]
        # When the slowest ones began (wall clock): to match with a node's MESHGATE_STALLS lines.
        print(
            "slowest swaps: "
            + ", ".join(
                f"#{i + 1} {delays[i]:.0f} ms (API {answered[i]:.0f} ms) "
                f"at {moments[i] - delays[i] / 1000:.3f}"
                for i in slowest
            )
        )
        delays.sort()
        p99 = delays[min(len(delays) - 1, round(0.99 * (len(delays) - 1)))]
        print(
            f"weight change among {count:,} gateways ({changes} swaps): "
            f"p50 {median(delays):.0f} ms, p99 {p99:.0f} ms, "
            f"reloads meanwhile {_reloads(big) - reloads:g}  (load {load_average()})"
        )
        reads(big, count)
        if settle_s:
            # Stats polls, the route history's records and the anomaly baselines keep going
            # while nothing changes: what they hold is part of the node's lasting size.
            time.sleep(settle_s)
            print(
                f"{settle_s:.0f} s later: meshgate {rss_mb(big.node_pids()):.0f} MB  "
                f"(load {load_average()})",
                flush=True,
            )
        if not rounds:
            return median(delays), p99
        alone_port = free_port()
        small.start()
        small.api.post(
            "/api/v1/apply", json=documents(1, "vhosts", backends["v1"], alone_port)
        ).raise_for_status()
        small.wait_applied("gateways", "g0")
        # Each gateway's rules sit in the port's frontend in turn, so the first virtual host is
        # the best case and the last the worst: both are measured against the node alone.
        hosts = {"first": "h0.scale.test", "last": f"h{count - 1}.scale.test"}
        ratios: dict[str, list[float]] = {which: [] for which in hosts}
        for round_ in range(rounds):
            one = run_wrk(
                f"http://{LOOPBACK}:{alone_port}/",
                duration=duration,
                headers={"Host": "h0.scale.test"},
            )
            for which, host in hosts.items():
                many = run_wrk(url, duration=duration, headers={"Host": host})
                ratio = many.requests_per_sec / one.requests_per_sec
                ratios[which].append(ratio)
                print(
                    f"  round {round_ + 1}: {count:,} vhosts, the {which} ({host}) "
                    f"{many.requests_per_sec:,.0f} req/s, 1 vhost {one.requests_per_sec:,.0f} "
                    f"req/s, ratio {ratio:.3f} (load {load_average()})"
                )
        for which, values in ratios.items():
            print(
                f"throughput through the {which} of {count:,} vhosts / one alone: "
                f"{median(values):.3f}"
            )
        return median(delays), p99
    finally:
        big.stop()
        small.stop()


def reads(node: MeshgateNode, count: int) -> None:
    """A page of the gateway listing and a /metrics scrape among `count` gateways: how long
    each took, how large the scrape was, and meshgate's resident memory after both."""
    started = time.monotonic()
    node.api.get("/api/v1/gateways", params={"limit": 100}, timeout=TIMEOUT_S).raise_for_status()
    page_s = time.monotonic() - started
    started = time.monotonic()
    scrape = node.api.get("/metrics", timeout=TIMEOUT_S)
    scrape.raise_for_status()
    scrape_s = time.monotonic() - started
    lines = scrape.text.count("\n")
    print(
        f"among {count:,} gateways: GET gateways?limit=100 {1000 * page_s:.0f} ms; "
        f"/metrics {scrape_s:.2f} s, {len(scrape.content) / 1e6:.1f} MB, {lines:,} lines "
        f"({len(scrape.content) / count:.0f} bytes a gateway); "
        f"meshgate {rss_mb(node.node_pids()):.0f} MB, haproxy {rss_mb(node.haproxy_pids()):.0f} MB",
        flush=True,
    )


def _reloads(node: MeshgateNode) -> float:
    text = node.api.get("/metrics").text
    match = re.search(r"^meshgate_haproxy_reloads_total (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


def run(workdir: Path, args: argparse.Namespace) -> int:
    global TIMEOUT_S
    TIMEOUT_S = args.timeout
    sizes = [int(size) for size in args.sizes.split(",")]
    print(machine_line(f"meshgate {meshgate_version()}", tool_version(["haproxy", "-v"])))
    backends = {"v1": free_port(), "v2": free_port()}
    rows = []
    with Nginx(workdir / "nginx", backends):
        for layout in () if args.weights_only else ("vhosts", "ports"):
            for count in sizes:
                if layout == "ports" and count > args.max_ports:
                    continue
                row = one_size(workdir, count, layout, backends["v1"])
                rows.append(row)
                print(
                    f"{layout:6} {count:>7,}: validate {row['validate_s']:6.1f}s  "
                    f"apply {row['apply_s']:6.1f}s  serving {row['serving_s']:6.1f}s  "
                    f"meshgate {row['meshgate_mb']:6.0f} MB  haproxy {row['haproxy_mb']:6.0f} MB"
                    f"  per gateway: validate {1e6 * row['validate_s'] / count:.0f} µs, "
                    f"serving {1e6 * row['serving_s'] / count:.0f} µs  (load {load_average()})",
                    flush=True,
                )
        largest = max(size for size in sizes if size <= args.weights_at)
        baseline = None
        if args.baseline_binary:
            print(f"baseline: {args.baseline_binary}", flush=True)
            baseline = weight_changes(
                workdir,
                largest,
                backends,
                args.changes,
                0,
                args.duration,
                args.baseline_binary,
                args.settle,
            )
        now = weight_changes(
            workdir, largest, backends, args.changes, args.rounds, args.duration, None, args.settle
        )
        if baseline is not None:
            print(
                f"weight change among {largest:,} gateways, this version / baseline: "
                f"p50 {now[0] / baseline[0]:.2f}, p99 {now[1] / baseline[1]:.2f}"
            )
    return finish(True, "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--max-ports", type=int, default=1000, help="largest `ports` layout")
    parser.add_argument("--weights-at", type=int, default=10_000, help="size of weight tests")
    parser.add_argument(
        "--weights-only", action="store_true", help="only the weight changes and reads"
    )
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="after the weight changes and reads, wait this many seconds and read meshgate's "
        "memory again (the route history fills for 10 minutes)",
    )
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per step")
    parser.add_argument(
        "--baseline-binary",
        help="a `meshgate` of another version: the weight changes run on it first, and the "
        "ratio of this version's to its p50 and p99 is printed",
    )
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("NO_PROXY", LOOPBACK)
    return run_in_workdir("meshgate-scale-", args.keep, lambda workdir: run(workdir, args))


if __name__ == "__main__":
    sys.exit(main())
