"""Discovery at scale: 1,000 instances across 100 services, registered at run time.

All on loopback (127.0.0.1). One nginx (one worker) listens on --per-service ports, each port
answering with its own body; every service's instances are those ports, so with 100 services x
10 instances HAProxy runs 1,000 servers. Every service is the one route of a gateway; the
gateways share one port and are told apart by virtual host (`s<N>.bench`).

Three ways to get the same 1,000 instances into the data plane, each on a fresh `meshgate up`
on which the services (without instances) and gateways were applied and are served:

  api        1,000 `POST /api/v1/services/{name}/instances`, 16 at a time: runtime additions
  manifest   one `POST /api/v1/apply` of the 100 services listing their instances: also runtime
             additions, since the backends exist
  baseline   nothing applied beforehand: one apply of services with instances and gateways,
             which costs one reload (new backends)

The clock starts at the first API call. From then on, a client sweeps every service not yet
complete (10 requests each over keep-alive with its Host header; round robin takes each request
to the next server) and reads HAProxy's per-server session totals (`stot` from `show stat`);
the clock stops when every one of the 1,000 servers has served at least one request. HAProxy's
pids and `meshgate_haproxy_reloads_total` are read before and after: for `api` and `manifest`
neither may change.

Exit status: 0 when both runtime configs completed without a reload, 2 when one reloaded,
1 when the setup failed or instances never all received traffic.

    .venv/bin/python bench/discovery.py                  # 100 services x 10, about a minute
    .venv/bin/python bench/discovery.py --services 20 --per-service 5   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

if __package__ in (None, ""):  # run as a script: make `bench.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    LOOPBACK,
    BenchError,
    MeshgateNode,
    Nginx,
    free_port,
    load_average,
    run_in_workdir,
    stop_node,
)

from meshgate.haproxy.runtime import RuntimeClient

CONVERGE_TIMEOUT_S = 120.0
REGISTER_CONCURRENCY = 16


@dataclass(frozen=True)
class Layout:
    services: int
    per_service: int
    gateway_port: int
    nginx_ports: tuple[int, ...]

    def service_name(self, index: int) -> str:
        return f"svc{index}"

    def host(self, index: int) -> str:
        return f"s{index}.bench"

    def instances(self) -> list[dict[str, Any]]:
        return [{"address": LOOPBACK, "port": port} for port in self.nginx_ports]

    def service(self, index: int, with_instances: bool) -> dict[str, Any]:
        document: dict[str, Any] = {"kind": "service", "name": self.service_name(index)}
        document["instances"] = self.instances() if with_instances else []
        return document

    def gateway(self, index: int) -> dict[str, Any]:
        return {
            "kind": "gateway",
            "name": f"gw{index}",
            "port": f"{self.gateway_port}/http",
            "bind": LOOPBACK,
            "virtual_hosts": [self.host(index)],
            "routes": {self.service_name(index): {}},
        }


@dataclass
class Result:
    name: str
    api_s: float  # from the first API call to the last answer
    served_s: float  # from the first API call until every server had traffic
    reloads: float  # reload counter increase
    pids_same: bool
    api_calls: int


def reload_count(node: MeshgateNode) -> float:
    text = node.api.get("/metrics").text
    match = re.search(r"^meshgate_haproxy_reloads_total (\S+)$", text, re.MULTILINE)
    if not match:
        raise BenchError("no meshgate_haproxy_reloads_total in /metrics")
    return float(match.group(1))


def haproxy_pids(node: MeshgateNode) -> tuple[int, list[int]]:
    """HAProxy's master and current worker pids, as the master lists them (`show proc`); an
    old worker still finishing after an earlier reload is not counted, a new one would be."""
    run = node.data_dir.resolve() / "run"
    proc = asyncio.run(RuntimeClient(str(run / "admin.sock"), str(run / "master.sock")).proc())
    return proc.master_pid, sorted(w.pid for w in proc.workers)


def apply_and_wait(node: MeshgateNode, documents: Sequence[dict[str, Any]]) -> None:
    node.apply(documents)
    for document in documents:
        node.wait_applied(f"{document['kind']}s", document["name"], timeout=60)


class Traffic:
    """Sweeps the services whose servers have not all served yet, until all have."""

    def __init__(self, node: MeshgateNode, layout: Layout) -> None:
        self.layout = layout
        run = node.data_dir.resolve() / "run"
        self.runtime = RuntimeClient(str(run / "admin.sock"), str(run / "master.sock"))
        self.done_at: float | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._backends: dict[str, int] = {}  # backend -> service index

    def start(self, backends: dict[str, int]) -> None:
        self._backends = backends
        self._thread.start()

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
            raise BenchError(f"instances did not all receive traffic within {timeout:.0f} s")
        if self.error:
            raise BenchError(self.error)

    def _pending(self) -> set[int]:
        """Services with a server that has served nothing yet (or is not there yet)."""
        rows = asyncio.run(self.runtime.stats())
        served: dict[str, int] = {}
        for row in rows:
            if row.pxname in self._backends and row.svname not in ("BACKEND", "FRONTEND"):
                served[row.pxname] = served.get(row.pxname, 0) + (1 if row.stot > 0 else 0)
        return {
            index
            for backend, index in self._backends.items()
            if served.get(backend, 0) < self.layout.per_service
        }

    def _run(self) -> None:
        url = f"http://{LOOPBACK}:{self.layout.gateway_port}/"
        deadline = time.monotonic() + CONVERGE_TIMEOUT_S
        try:
            with httpx.Client(timeout=5.0) as client:
                pending = set(self._backends.values())
                while not self._stop.is_set() and time.monotonic() < deadline:
                    for index in sorted(pending):
                        for _ in range(self.layout.per_service):
                            client.get(url, headers={"Host": self.layout.host(index)})
                    pending = self._pending()
                    if not pending:
                        self.done_at = time.monotonic()
                        return
        except (httpx.HTTPError, OSError) as exc:
            self.error = f"traffic failed: {exc}"


def backends_of(node: MeshgateNode, layout: Layout) -> dict[str, int]:
    found = {}
    for index in range(layout.services):
        gateway = node.get("gateways", f"gw{index}")
        route = gateway["status"]["routes"][layout.service_name(index)]
        found[route["backend"]] = index
    return found


def register_all(node: MeshgateNode, layout: Layout) -> int:
    """Every instance through the registration API, REGISTER_CONCURRENCY at a time."""
    jobs = [
        (layout.service_name(index), instance)
        for index in range(layout.services)
        for instance in layout.instances()
    ]
    limits = httpx.Limits(max_connections=REGISTER_CONCURRENCY)
    with httpx.Client(base_url=node.url, timeout=30.0, limits=limits) as client:

        def post(job: tuple[str, dict[str, Any]]) -> None:
            name, body = job
            response = client.post(f"/api/v1/services/{quote(name, safe='')}/instances", json=body)
            if response.status_code not in (200, 201):
                raise BenchError(f"registration answered {response.status_code}: {response.text}")

        with ThreadPoolExecutor(REGISTER_CONCURRENCY) as pool:
            list(pool.map(post, jobs))
    return len(jobs)


def measure(name: str, layout: Layout, workdir: Path) -> Result:
    node = MeshgateNode(workdir / name)
    node.start()
    try:
        gateways = [layout.gateway(i) for i in range(layout.services)]
        empty = [layout.service(i, with_instances=False) for i in range(layout.services)]
        full = [layout.service(i, with_instances=True) for i in range(layout.services)]
        if name != "baseline":
            apply_and_wait(node, [*empty, *gateways])
        pids, reloads = haproxy_pids(node), reload_count(node)
        traffic = Traffic(node, layout)
        started = time.monotonic()
        if name == "api":
            calls = register_all(node, layout)
        else:
            node.apply([*full, *gateways] if name == "baseline" else full)
            calls = 1
        api_s = time.monotonic() - started
        if name == "baseline":
            # The backends exist only once the reload is done; their names come from status.
            for index in range(layout.services):
                node.wait_applied("gateways", f"gw{index}", timeout=60)
        traffic.start(backends_of(node, layout))
        traffic.wait(CONVERGE_TIMEOUT_S + 5)
        assert traffic.done_at is not None
        return Result(
            name=name,
            api_s=api_s,
            served_s=traffic.done_at - started,
            reloads=reload_count(node) - reloads,
            pids_same=haproxy_pids(node) == pids,
            api_calls=calls,
        )
    finally:
        stop_node(node, [layout.gateway_port])


def report(results: Sequence[Result], layout: Layout) -> None:
    total = layout.services * layout.per_service
    print(f"\n{total} instances across {layout.services} services; load {load_average()}")
    header = f"{'config':<10} {'API calls':>9} {'calls s':>8} {'all served s':>13} "
    print(header + f"{'reloads':>8} {'same pids':>10}")
    for r in results:
        print(
            f"{r.name:<10} {r.api_calls:>9} {r.api_s:>8.2f} {r.served_s:>13.2f} "
            f"{r.reloads:>8.0f} {('yes' if r.pids_same else 'no'):>10}"
        )
    by_name = {r.name: r for r in results}
    if "baseline" in by_name:
        base = by_name["baseline"].served_s
        for name in ("api", "manifest"):
            if name in by_name:
                ratio = by_name[name].served_s / base
                print(f"{name}/baseline (time until all served): {ratio:.2f}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--per-service", type=int, default=10)
    parser.add_argument(
        "--only", action="append", choices=["api", "manifest", "baseline"], default=None
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, workdir: Path) -> int:
    ports = tuple(free_port() for _ in range(args.per_service))
    layout = Layout(args.services, args.per_service, free_port(), ports)
    servers = {f"n{i}": port for i, port in enumerate(ports)}
    results = []
    with Nginx(workdir / "nginx", servers):
        for name in args.only or ["api", "manifest", "baseline"]:
            print(f"{name}: ...", flush=True)
            results.append(measure(name, layout, workdir))
    report(results, layout)
    runtime = [r for r in results if r.name != "baseline"]
    return 0 if all(r.reloads == 0 and r.pids_same for r in runtime) else 2


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_in_workdir("meshgate-discovery-", args.keep, lambda workdir: run(args, workdir))


if __name__ == "__main__":
    sys.exit(main())
