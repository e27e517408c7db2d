"""Route anomaly detection: false alerts on steady traffic, and the time from an error burst to
the alert.

All on loopback (127.0.0.1). One demo backend that fails 1 % of requests at random (the noise a
real service has) behind one gateway of a `meshgate up` with `--anomaly-window W`. A client
thread sends about --rate requests a second for the whole run.

  steady   --steady seconds of that traffic: every anomaly opened meanwhile is a false alert
  bursts   --bursts times: 30 % of requests ask the backend for a 500 until the alert opens
           (or 6 windows pass), then --recover seconds of steady traffic; the time from the
           burst's first request to the alert in `/api/v1/anomalies` is measured

The time to alert is also given in windows: a burst can only be seen once a window holding
it ends, so one to two windows is the floor of this design.

    .venv/bin/python bench/anomaly.py                       # 10 minutes steady, 3 bursts
    .venv/bin/python bench/anomaly.py --steady 60 --window 1s --recover 10   # quick
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script: make `bench.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    LOOPBACK,
    MeshgateNode,
    free_port,
    gateway_doc,
    load_average,
    machine_line,
    median,
    meshgate_version,
    run_in_workdir,
    service_doc,
    wait_for_port,
    wait_serving,
)


class Client(threading.Thread):
    """Requests at about `rate` a second until stopped; `failing` asks for 500s (30 %)."""

    def __init__(self, url: str, rate: float, limit_s: float) -> None:
        super().__init__(daemon=True)
        self.url, self.rate = url, rate
        self.failing = False
        self.sent = 0
        self._stop_at = time.monotonic() + limit_s
        self._stopped = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stopped.is_set() and time.monotonic() < self._stop_at:
                ask_500 = self.failing and self.sent % 10 < 3
                with contextlib.suppress(httpx.HTTPError):
                    client.get(self.url, params={"status": "500"} if ask_500 else None)
                self.sent += 1
                time.sleep(1 / self.rate)

    def stop(self) -> None:
        self._stopped.set()
        self.join(10)


def opened(node: MeshgateNode) -> list[dict[str, Any]]:
    events = node.api.get("/api/v1/anomalies").json()["events"]
    return [e for e in events if e["gateway"] == "watched" and e["state"] == "open"]


def run(workdir: Path, args: argparse.Namespace) -> int:
    window_s = float(args.window.rstrip("s"))
    total_s = args.steady + args.bursts * (6 * window_s + args.recover) + 60
    backend_port = free_port()
    demo = [sys.executable, "-m", "meshgate.demo", "--name", "b", "--port", str(backend_port)]
    backend = subprocess.Popen(
        [*demo, "--error-ratio", "0.01"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    node = MeshgateNode(workdir / "node", "--anomaly-window", args.window)
    try:
        wait_for_port(backend_port)
        node.start()
        port = free_port()
        node.apply(
            [service_doc("watched", backend_port), gateway_doc("watched", port, {"watched": {}})]
        )
        node.wait_applied("gateways", "watched")
        url = f"http://{LOOPBACK}:{port}/"
        wait_serving(url)
        print(machine_line(f"meshgate {meshgate_version()}"))
        print(f"window {args.window}, about {args.rate:g} requests/s, 1 % random errors")
        client = Client(url, args.rate, total_s)
        client.start()
        time.sleep(args.steady)
        false_alerts = opened(node)
        print(f"steady {args.steady:g}s: {len(false_alerts)} false alerts {false_alerts}")
        seen = len(false_alerts)
        delays = []
        for burst in range(args.bursts):
            client.failing = True
            started = time.monotonic()
            while len(opened(node)) == seen and time.monotonic() - started < 6 * window_s:
                time.sleep(0.05)
            delay = time.monotonic() - started
            client.failing = False
            found = opened(node)
            if len(found) > seen:
                delays.append(delay)
                print(
                    f"burst {burst + 1}: alert after {delay:.1f}s ({delay / window_s:.2f} "
                    f"windows): {found[-1]['description']}"
                )
            else:
                print(f"burst {burst + 1}: NO alert within 6 windows")
            seen = len(found)
            time.sleep(args.recover)
        client.stop()
        print(
            f"summary: false alerts {len(false_alerts)} in {args.steady:g}s; time to alert "
            f"median {median(delays):.1f}s ({median(delays) / window_s:.2f} windows), "
            f"{len(delays)}/{args.bursts} bursts seen; {client.sent} requests sent"
        )
        print(f"load average after: {load_average()}")
        return 0 if len(delays) == args.bursts else 1
    finally:
        node.stop()
        backend.kill()
        backend.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", default="10s", help="--anomaly-window of the node (Ns)")
    parser.add_argument("--steady", type=float, default=600, help="seconds of steady traffic")
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--recover", type=float, default=60, help="steady seconds after each")
    parser.add_argument("--rate", type=float, default=50, help="requests per second")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    return run_in_workdir("meshgate-anomaly-", args.keep, lambda workdir: run(workdir, args))


if __name__ == "__main__":
    sys.exit(main())
