"""Health checks per second when N gateways route to one instance: a check per route (before)
against one check per instance per node that the route servers track (after), side by side.

All on loopback. The instance is a small HTTP server in this process that counts the
`/health` requests it answers. For each layout, HAProxy runs the configuration meshgate renders
for N gateways on one port (told apart by virtual host), all routing to one service with that
instance, checked over HTTP every --interval. After a settling moment, the checks the instance
answers are counted for --window seconds, with the CPU time HAProxy used meanwhile and its
resident memory. The baseline is the same compiler with every
route server keeping its own check, which is how the configuration was rendered before the
checker backends (`compiler/checks.py`). Rounds alternate between the two layouts.

    .venv/bin/python bench/checks.py                      # 1,000 gateways, 2 rounds
    .venv/bin/python bench/checks.py --gateways 10000 --rounds 1
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    LOOPBACK,
    Haproxy,
    cpu_seconds,
    finish,
    free_port,
    load_average,
    machine_line,
    median,
    meshgate_version,
    rss_mb,
    run_in_workdir,
    tool_version,
)

from meshgate.compiler import DesiredState, checks, compile_state, ir, render_files
from meshgate.model import Gateway, Service, validate_resource

LAYOUTS = ("before", "after")


class Counter:
    """`/health` requests answered so far."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()


def start_instance(counter: Counter) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            if self.path == "/health":
                with counter.lock:
                    counter.count += 1
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    class Quiet(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024  # a thousand checks may connect at once

        def handle_error(self, request: object, client_address: object) -> None:
            return

    server = Quiet((LOOPBACK, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def desired(gateways: int, port: int, instance: int, interval_ms: int) -> DesiredState:
    check = {"type": "http", "path": "/health", "interval": f"{interval_ms}ms"}
    service = validate_resource(
        {"kind": "service", "name": "svc", "instances": [f"{LOOPBACK}:{instance}"],
         "health_check": check}
    )  # fmt: skip
    documents: list[dict[str, Any]] = [
        {"kind": "gateway", "name": f"g{i}", "port": f"{port}/http", "bind": LOOPBACK,
         "virtual_hosts": [f"h{i}.checks.test"], "routes": {"svc": {}}}
        for i in range(gateways)
    ]  # fmt: skip
    found = [validate_resource(d) for d in documents]
    assert isinstance(service, Service) and all(isinstance(g, Gateway) for g in found)
    return DesiredState(gateways=[g for g in found if isinstance(g, Gateway)], services=[service])


@contextmanager
def own_checks(layout: str) -> Iterator[None]:
    """Render as before the checker backends: every route server keeps its own check."""
    if layout == "after":
        yield
        return
    kept = checks.keeps_own_check
    checks.keeps_own_check = lambda backend, server: True
    try:
        yield
    finally:
        checks.keeps_own_check = kept


def write_config(run_dir: Path, state: DesiredState, layout: str) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    with own_checks(layout):
        dataplane = compile_state(state, ir.Settings(run_dir=str(run_dir))).dataplane
        files = render_files(dataplane)
    for name, text in files.items():
        path = run_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return run_dir / "haproxy.cfg"


def one_round(
    workdir: Path, layout: str, state: DesiredState, port: int, counter: Counter, args: Any
) -> dict[str, float]:
    run_dir = workdir / f"{layout}-{time.monotonic_ns()}"
    config = write_config(run_dir, state, layout)
    haproxy = Haproxy(config, port)
    haproxy.start()
    try:
        time.sleep(2 * args.interval_ms / 1000 + 1)  # every server's first check is spread
        before, cpu_before, started = counter.count, cpu_seconds(haproxy.pids()), time.monotonic()
        time.sleep(args.window)
        elapsed = time.monotonic() - started
        checked = counter.count - before
        cpu = cpu_seconds(haproxy.pids()) - cpu_before
        return {
            "checks_s": checked / elapsed,
            "cpu_pct": 100 * cpu / elapsed,
            "rss_mb": rss_mb(haproxy.pids()),
        }
    finally:
        haproxy.stop()


def run(workdir: Path, args: Any) -> int:
    print(machine_line(f"meshgate {meshgate_version()}", tool_version(["haproxy", "-v"])))
    counter = Counter()
    instance = start_instance(counter)
    port = free_port()
    state = desired(args.gateways, port, instance.server_port, args.interval_ms)
    results: dict[str, list[dict[str, float]]] = {layout: [] for layout in LAYOUTS}
    try:
        for number in range(args.rounds):
            for layout in LAYOUTS if number % 2 == 0 else reversed(LAYOUTS):
                row = one_round(workdir, layout, state, port, counter, args)
                results[layout].append(row)
                print(
                    f"round {number + 1} {layout:6}: {row['checks_s']:8.1f} checks/s  "
                    f"haproxy CPU {row['cpu_pct']:5.1f} %  RSS {row['rss_mb']:5.1f} MB  "
                    f"(load {load_average()})",
                    flush=True,
                )
    finally:
        instance.shutdown()
        instance.server_close()
    figures = {
        layout: {key: median([r[key] for r in rows]) for key in rows[0]}
        for layout, rows in results.items()
    }
    expected = 1000 / args.interval_ms
    print(
        f"\n{args.gateways:,} gateways to one instance, checked every {args.interval_ms} ms "
        f"(one check per interval is {expected:g}/s); medians of {args.rounds} rounds:"
    )
    print(f"{'':28} {'before':>10} {'after':>10} {'after/before':>13}")
    for key, label in (
        ("checks_s", "checks answered per second"),
        ("cpu_pct", "HAProxy CPU, % of one core"),
        ("rss_mb", "HAProxy RSS, MB"),
    ):
        before, after = figures["before"][key], figures["after"][key]
        ratio = after / before if before else float("nan")
        print(f"{label:28} {before:10.1f} {after:10.1f} {ratio:13.4f}")
    clean = figures["after"]["checks_s"] <= 2.5 * expected
    return finish(clean, "more than about one check per interval with checker backends")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateways", type=int, default=1000)
    parser.add_argument("--interval-ms", type=int, default=2000, help="the default check's")
    parser.add_argument("--window", type=float, default=10.0, help="seconds counted per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("NO_PROXY", LOOPBACK)
    return run_in_workdir("meshgate-checks-", args.keep, lambda workdir: run(workdir, args))


if __name__ == "__main__":
    sys.exit(main())
