"""Faults under load: what a crash or restart of HAProxy or meshgate costs in failed requests.

`meshgate up` with one gateway routing to an nginx server (health-checked every second, rise 3,
so server state that came back stale would show as seconds of 503s). For each fault, wrk
(-t1 -c20, keep-alive) runs for --seconds while, a third of the way in, the fault is injected;
a probe thread beside it sends requests on new connections in a loop and records when each
failed, which gives the outage length. The baseline is the same run with no fault, in the same
invocation.

  none              baseline: no fault
  worker kill -9    SIGKILL to the HAProxy worker (the master exits too; meshgate restarts it)
  master kill -9    SIGKILL to the HAProxy master
  meshgate kill -9  SIGKILL to meshgate, restarted 0.5 s later: it adopts the running HAProxy
  meshgate restart  SIGTERM to `meshgate up --keep-haproxy` and a new start (what
                    `systemctl restart` does with packaging/meshgate.service)

Before the faults, the instance is taken down across a reload and brought back, so the
server-state file holds a DOWN state (what made a crash cost a second of 503s before).

Exit status 1 when a meshgate fault (kill -9 or restart) failed any request.

    .venv/bin/python bench/faults.py               # 10 s a run
    .venv/bin/python bench/faults.py --seconds 4   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

if __package__ in (None, ""):  # run as a script: make `bench.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    LOOPBACK,
    MeshgateNode,
    Nginx,
    finish,
    free_port,
    gateway_doc,
    load_average,
    run_wrk,
    service_doc,
    wait_until,
)

import meshgate
from meshgate.haproxy.runtime import RuntimeClient


class Probe(threading.Thread):
    """Requests on new connections until stopped; the times of those that failed, and how many
    of them were refused (nothing listening) rather than cut after being accepted."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.failed: list[float] = []
        self.refused = 0
        self.total = 0
        self._done = threading.Event()

    def run(self) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(timeout=2, limits=limits) as http:
            while not self._done.is_set():
                try:
                    ok = http.get(self.url).status_code == 200
                except httpx.ConnectError as error:
                    ok = False
                    self.refused += "refused" in str(error).lower()
                except httpx.HTTPError:
                    ok = False
                self.total += 1
                if not ok:
                    self.failed.append(time.monotonic())

    def stop(self) -> None:
        self._done.set()
        self.join()

    @property
    def outage_s(self) -> float:
        return self.failed[-1] - self.failed[0] if self.failed else 0.0


def haproxy_pids(data_dir: Path) -> tuple[int, list[int]]:
    run = data_dir.resolve() / "run"
    proc = asyncio.run(RuntimeClient(str(run / "admin.sock"), str(run / "master.sock")).proc())
    return proc.master_pid, [w.pid for w in proc.workers]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(f"load average before: {load_average()}")
    # Which tree: PYTHONPATH may name another checkout, to measure it side by side.
    print(f"meshgate from {Path(meshgate.__file__).parent}")
    with tempfile.TemporaryDirectory(prefix="meshgate-faults-") as scratch:
        workdir = Path(scratch)
        backend, port = free_port(), free_port()
        url = f"http://{LOOPBACK}:{port}/"
        with Nginx(workdir / "nginx", {"app": backend}) as nginx:
            node = MeshgateNode(workdir / "node", "--keep-haproxy")
            node.start()
            try:
                return run_faults(node, nginx, url, port, args.seconds)
            finally:
                node.process.stop(signal.SIGINT)  # SIGINT stops HAProxy too


def run_faults(node: MeshgateNode, nginx: Nginx, url: str, port: int, seconds: float) -> int:
    check = {"type": "tcp", "interval": "1s", "rise": 3, "fall": 1}
    service = {**service_doc("faults", *nginx.servers.values()), "health_check": check}
    node.apply([service, gateway_doc("faults", port, {"faults": {}})])
    wait_until(lambda: _ok(url), "gateway serving", timeout=20)
    # A DOWN state saved by a reload, then the instance back up.
    nginx.stop()
    wait_until(lambda: not _ok(url), "instance down", timeout=10)
    node.apply([gateway_doc("faults-reload", free_port(), {"faults": {}})])
    time.sleep(1)
    nginx.start()
    wait_until(lambda: _ok(url), "instance up again", timeout=15)

    def restart_meshgate(sig: signal.Signals) -> Callable[[], None]:
        def fault() -> None:
            if sig == signal.SIGKILL:
                os.kill(node.process.pid or 0, signal.SIGKILL)
                time.sleep(0.5)
            else:
                node.process.stop(sig)
            node.start()

        return fault

    faults: dict[str, Callable[[], None] | None] = {
        "none": None,
        "worker kill -9": lambda: os.kill(haproxy_pids(node.data_dir)[1][0], signal.SIGKILL),
        "master kill -9": lambda: os.kill(haproxy_pids(node.data_dir)[0], signal.SIGKILL),
        "meshgate kill -9": restart_meshgate(signal.SIGKILL),
        "meshgate restart": restart_meshgate(signal.SIGTERM),
    }
    print(f"wrk -t1 -c20 for {seconds:.0f} s a run; fault at {seconds / 3:.1f} s\n")
    print(f"{'fault':<18} {'wrk requests':>12} {'wrk failed':>10} {'probe failed':>12} "
          f"{'refused':>7} {'outage s':>8} {'req/s ratio':>11}")  # fmt: skip
    clean = True
    baseline_rate = 0.0
    for name, fault in faults.items():
        probe = Probe(url)
        timer = threading.Timer(seconds / 3, fault) if fault else None
        probe.start()
        if timer:
            timer.start()
        result = run_wrk(url, duration=seconds, connections=20)
        if timer:
            timer.join()
        probe.stop()
        wait_until(lambda: _ok(url), "serving after the fault", timeout=20)
        baseline_rate = baseline_rate or result.requests_per_sec
        failed = result.errors + len(probe.failed)
        ratio = result.requests_per_sec / baseline_rate
        print(f"{name:<18} {result.requests:>12} {result.errors:>10} {len(probe.failed):>12} "
              f"{probe.refused:>7} {probe.outage_s:>8.2f} {ratio:>11.2f}")  # fmt: skip
        if name.startswith("meshgate") and failed:
            clean = False
    return finish(clean, "a restart of meshgate failed requests")


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    sys.exit(main())
