"""Soak: meshgate's and HAProxy's resident memory over a long run of small changes.

All on loopback (127.0.0.1). One nginx answers for every gateway. Two `meshgate up` nodes
(embedded store) each get the same --gateways http gateways on one port (told apart by virtual
host), each with two routes to services of one manifest instance. Then, for --duration seconds:

  churn node     --weights-per-s weight PUTs of a random gateway (a runtime change);
                 --registrations-per-s instance registrations with a 3 s TTL, each under a new
                 id, left to lapse; every --reload-every s a gateway on a port of its own is
                 added and the previous one deleted (a reload); requests through random gateways
  baseline node  the same requests, no changes

RSS of each meshgate and of its HAProxy (master and workers) is sampled every --interval s. It
prints the samples, then for each node the RSS at start, after --warmup s, every 5 minutes and
at the end, and the growth rate after warm-up (least squares, MB per minute) side by side with
the baseline's. With --idle S it then stops the changes and samples S more seconds: memory that
keeps growing with nothing to do is a leak of its own.

With --tracemalloc the churn node traces Python allocations from the first change on
(MESHGATE_TRACEMALLOC, see `meshgate.memory_debug`): a snapshot is taken after warm-up and at
the end, and the allocation sites that grew most in between are printed.

With --memstats each node writes a line of what holds its memory every 10 s
(MESHGATE_MEMSTATS, see `meshgate.memory_debug`): each sample also shows what glibc's malloc
holds in use and free and what Python's small-object arenas do; the report gives their slopes
beside RSS's. RSS that grows while the memory in use does not is an allocator keeping freed
memory. Allocator settings (MALLOC_ARENA_MAX=2,
PYTHONMALLOC=malloc, MESHGATE_MEMSTATS_TRIM=1) pass to the nodes through the environment.

    .venv/bin/python bench/soak.py                                   # 10 minutes, 2 warm-up
    .venv/bin/python bench/soak.py --duration 1800 --warmup 300      # the 30-minute soak
    .venv/bin/python bench/soak.py --duration 420 --tracemalloc --no-baseline
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import signal
import sys
import threading
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script: make `bench.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    LOOPBACK,
    BenchError,
    MeshgateNode,
    Nginx,
    finish,
    free_port,
    load_average,
    machine_line,
    meshgate_version,
    rss_mb,
    run_in_workdir,
    tool_version,
    wait_until,
)

SERVICES = 10
BACKENDS = ("v1", "v2", "v3", "v4")


def gateway(index: int, port: int) -> dict[str, Any]:
    weight = random.randint(0, 100)
    return {
        "name": f"g{index}",
        "port": f"{port}/http",
        "bind": LOOPBACK,
        "virtual_hosts": [f"h{index}.soak.test"],
        "routes": {
            f"s{index % SERVICES}": {"weight": weight},
            f"s{(index + 1) % SERVICES}": {"weight": 100 - weight},
        },
    }


def documents(count: int, port: int, backends: dict[str, int]) -> list[dict[str, Any]]:
    services = [
        {"kind": "service", "name": f"s{k}", "instances": [f"{LOOPBACK}:{backends['v1']}"]}
        for k in range(SERVICES)
    ]
    return [*services, *(gateway(i, port) for i in range(count))]


@dataclasses.dataclass
class Sample:
    at_s: float  # since the changes began
    node_mb: float
    haproxy_mb: float
    heap: dict[str, Any] | None = None  # the node's last MESHGATE_MEMSTATS line (--memstats)


@dataclasses.dataclass
class Counts:
    weights: int = 0
    registrations: int = 0
    reloads: int = 0
    requests: int = 0
    failed: int = 0  # API calls or requests that did not answer as expected
    failures: list[str] = dataclasses.field(default_factory=list)  # the first few, for the report


class Churn(threading.Thread):
    """The changes and requests against one node, until `stop` is set (or `limit_s` passes)."""

    def __init__(
        self,
        node: MeshgateNode,
        args: argparse.Namespace,
        port: int,
        backends: dict[str, int],
        *,
        changes: bool,
    ) -> None:
        super().__init__(daemon=True)
        self.node, self.args, self.port, self.backends = node, args, port, backends
        self.changes = changes
        self.counts = Counts()
        self.stop = threading.Event()
        self.limit_s = args.duration + args.idle + 60
        self._rng = random.Random(1)
        self._extra: str | None = None

    def run(self) -> None:
        started = time.monotonic()
        step_s = 0.1
        weights = registrations = 0.0
        next_reload = started + self.args.reload_every
        with (
            httpx.Client(base_url=self.node.url, timeout=10) as api,
            httpx.Client(timeout=5) as traffic,
        ):
            while not self.stop.is_set() and time.monotonic() - started < self.limit_s:
                tick = time.monotonic()
                if self.changes:
                    weights += self.args.weights_per_s * step_s
                    registrations += self.args.registrations_per_s * step_s
                    while weights >= 1:
                        weights -= 1
                        self._weight(api)
                    while registrations >= 1:
                        registrations -= 1
                        self._register(api)
                    if tick >= next_reload:
                        next_reload = tick + self.args.reload_every
                        self._reload(api)
                for _ in range(self.args.requests_per_tick):
                    self._request(traffic)
                self.stop.wait(max(0.0, step_s - (time.monotonic() - tick)))

    def _call(self, response: httpx.Response, *ok: int) -> None:
        if response.status_code not in ok:
            self._failed(f"{response.request.method} {response.url.path}: {response.status_code}")

    def _failed(self, what: str) -> None:
        self.counts.failed += 1
        if len(self.counts.failures) < 5:
            self.counts.failures.append(what[:200])

    def _weight(self, api: httpx.Client) -> None:
        index = self._rng.randrange(self.args.gateways)
        try:
            self._call(api.put(f"/api/v1/gateways/g{index}", json=gateway(index, self.port)), 200)
        except httpx.HTTPError as exc:
            self._failed(f"weight PUT: {exc!r}")
        self.counts.weights += 1

    def _register(self, api: httpx.Client) -> None:
        number = self.counts.registrations
        body = {
            "address": LOOPBACK,
            "port": self.backends[BACKENDS[1 + number % (len(BACKENDS) - 1)]],
            "id": f"r{number}",
            "ttl": "3s",
        }
        try:
            answer = api.post(f"/api/v1/services/s{number % SERVICES}/instances", json=body)
            self._call(answer, 200, 201)
        except httpx.HTTPError as exc:
            self._failed(f"registration: {exc!r}")
        self.counts.registrations += 1

    def _reload(self, api: httpx.Client) -> None:
        """A gateway on a port of its own (a listener: HAProxy reloads), the previous one gone."""
        name = f"extra{self.counts.reloads}"
        doc = {
            "name": name,
            "port": f"{free_port()}/http",
            "bind": LOOPBACK,
            "routes": {"s0": {"weight": 100}},
        }
        try:
            self._call(api.put(f"/api/v1/gateways/{name}", json=doc), 200, 201)
            if self._extra is not None:
                self._call(api.delete(f"/api/v1/gateways/{self._extra}"), 204)
        except httpx.HTTPError as exc:
            self._failed(f"reload change: {exc!r}")
        self._extra = name
        self.counts.reloads += 1

    def _request(self, client: httpx.Client) -> None:
        host = f"h{self._rng.randrange(self.args.gateways)}.soak.test"
        try:
            answer = client.get(f"http://{LOOPBACK}:{self.port}/", headers={"Host": host})
            self._call(answer, 200)
        except httpx.HTTPError as exc:
            self._failed(f"request: {exc!r}")
        self.counts.requests += 1


class Soaked:
    """One node under soak: its process, its churn and its samples."""

    def __init__(
        self, name: str, workdir: Path, args: argparse.Namespace, backends: dict[str, int]
    ) -> None:
        self.name = name
        self.port = free_port()
        self.node = MeshgateNode(workdir / name, "--max-body", "256m", *args.node_arg)
        self.backends = backends
        self.args = args
        self.samples: list[Sample] = []
        self.churn: Churn | None = None

    @property
    def memstats(self) -> Path:
        return self.node.data_dir / "memstats.jsonl"

    def last_heap_line(self) -> dict[str, Any] | None:
        try:
            lines = self.memstats.read_text().splitlines()
        except OSError:
            return None
        line: dict[str, Any] | None = json.loads(lines[-1]) if lines else None
        return line

    def start(self) -> None:
        if self.args.memstats:
            os.environ["MESHGATE_MEMSTATS"] = str(self.memstats)
        try:
            self.node.start(timeout=60)
        finally:
            os.environ.pop("MESHGATE_MEMSTATS", None)
        docs = documents(self.args.gateways, self.port, self.backends)
        self.node.api.post("/api/v1/apply", json=docs, timeout=600).raise_for_status()
        last = f"h{self.args.gateways - 1}.soak.test"
        url = f"http://{LOOPBACK}:{self.port}/"

        def served() -> bool:
            self.node.process.check_running()
            try:
                return httpx.get(url, headers={"Host": last}, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(served, f"{self.name}: gateway g{self.args.gateways - 1} serving", 600, 0.2)

    def begin(self, changes: bool) -> None:
        self.churn = Churn(self.node, self.args, self.port, self.backends, changes=changes)
        self.churn.start()

    def end_changes(self) -> None:
        """Stop the changes; requests go on (a fresh churn without changes)."""
        if self.churn is not None:
            self.churn.stop.set()
            self.churn.join(15)
            counts = self.churn.counts
            self.begin(changes=False)
            self.churn_counts = counts

    def sample(self, at_s: float) -> Sample:
        self.node.process.check_running()
        row = Sample(at_s, rss_mb(self.node.node_pids()), rss_mb(self.node.haproxy_pids()))
        if self.args.memstats:
            row.heap = self.last_heap_line()
        self.samples.append(row)
        return row

    def stop(self) -> None:
        if self.churn is not None:
            self.churn.stop.set()
            self.churn.join(15)
        self.node.stop()


def slope_mb_per_min(samples: Sequence[Sample], attribute: str) -> float:
    """Least-squares slope of RSS over time, in MB per minute (nan for fewer than 2 samples)."""
    if len(samples) < 2:
        return float("nan")
    xs = [s.at_s / 60 for s in samples]
    ys = [getattr(s, attribute) for s in samples]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return float("nan")
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def heap_mb(sample: Sample, key: str) -> float:
    value = (sample.heap or {}).get(key)
    return float(value) / 2**20 if isinstance(value, int) else float("nan")


def heap_cells(sample: Sample) -> str:
    if sample.heap is None:
        return ""
    small = (
        f"pymalloc in use {heap_mb(sample, 'pymalloc_in_use'):6.1f} "
        f"free {heap_mb(sample, 'pymalloc_free'):6.1f} MB"
    )
    traced = f", traced {heap_mb(sample, 'traced'):6.1f} MB" if "traced" in sample.heap else ""
    return (
        f" [malloc in use {heap_mb(sample, 'malloc_in_use'):6.1f} "
        f"free {heap_mb(sample, 'malloc_free'):6.1f} MB, {small}{traced}]"
    )


def heap_report(soaked: Soaked, args: argparse.Namespace) -> None:
    """Slopes of what the allocator holds after warm-up."""
    busy = [s for s in soaked.samples if args.warmup <= s.at_s <= args.duration and s.heap]
    if len(busy) < 2:
        return
    slopes = []
    keys = ("malloc_in_use", "malloc_free", "pymalloc_in_use", "pymalloc_free", "traced")
    for key in keys:
        series = [Sample(s.at_s, heap_mb(s, key), 0) for s in busy]
        slopes.append(f"{key} {slope_mb_per_min(series, 'node_mb'):+.3f}")
    print(f"  {soaked.name} after warm-up, per minute: " + ", ".join(slopes))


def milestones(samples: Sequence[Sample], warmup_s: float, every_s: float) -> list[Sample]:
    """The first sample, the first after warm-up, the first after each `every_s`, the last."""
    if not samples:
        return []
    marks = [0.0, warmup_s, *(every_s * k for k in range(1, int(samples[-1].at_s // every_s) + 1))]
    chosen: list[Sample] = []
    for mark in sorted(set(marks)):
        found = next((s for s in samples if s.at_s >= mark), None)
        if found is not None and found not in chosen:
            chosen.append(found)
    if samples[-1] not in chosen:
        chosen.append(samples[-1])
    return chosen


def report(nodes: Sequence[Soaked], args: argparse.Namespace) -> None:
    print()
    print("RSS (MB) at start, after warm-up, every 5 minutes, at the end:")
    header = "  t (s)  " + "  ".join(f"{n.name + ' meshgate':>18} {'haproxy':>8}" for n in nodes)
    print(header)
    rows = {id(s): s for s in milestones(nodes[0].samples, args.warmup, 300)}
    for mark in rows.values():
        cells = []
        for soaked in nodes:
            near = min(soaked.samples, key=lambda s, m=mark: abs(s.at_s - m.at_s))
            cells.append(f"{near.node_mb:18.1f} {near.haproxy_mb:8.1f}")
        print(f"  {mark.at_s:6.0f}  " + "  ".join(cells))
    print()
    for soaked in nodes:
        busy = [s for s in soaked.samples if args.warmup <= s.at_s <= args.duration]
        idle = [s for s in soaked.samples if s.at_s > args.duration]
        line = (
            f"{soaked.name}: growth after warm-up {slope_mb_per_min(busy, 'node_mb'):+.3f} MB/min "
            f"meshgate, {slope_mb_per_min(busy, 'haproxy_mb'):+.3f} MB/min haproxy"
        )
        settled = [s for s in busy if s.at_s >= args.settled]
        if len(settled) >= 2:
            line += (
                f"; after {args.settled:g}s {slope_mb_per_min(settled, 'node_mb'):+.3f} MB/min "
                "meshgate"
            )
        if idle:
            line += f"; idle {slope_mb_per_min(idle, 'node_mb'):+.3f} MB/min meshgate"
        counts = getattr(soaked, "churn_counts", soaked.churn.counts if soaked.churn else None)
        print(line)
        if counts is not None:
            print(f"  {counts}")
        heap_report(soaked, args)
    if len(nodes) == 2:
        churned, baseline = (
            [s for s in n.samples if args.warmup <= s.at_s <= args.duration] for n in nodes
        )
        extra = slope_mb_per_min(churned, "node_mb") - slope_mb_per_min(baseline, "node_mb")
        ratio = churned[-1].node_mb / baseline[-1].node_mb if churned and baseline else 0
        print(
            f"churn minus baseline: {extra:+.3f} MB/min meshgate; "
            f"RSS churn/baseline at the end of the changes {ratio:.3f}"
        )


def signal_node(node: MeshgateNode) -> None:
    """SIGUSR2 to a node run with MESHGATE_TRACEMALLOC: the first starts tracing, each later
    one writes a snapshot."""
    pid = node.process.pid
    if pid is None:
        raise BenchError("no node to signal")
    os.kill(pid, signal.SIGUSR2)


def snapshot(node: MeshgateNode, directory: Path, label: str) -> Path:
    """Ask the node for a tracemalloc snapshot (SIGUSR2) and wait for the file."""
    before = set(directory.glob("*.tracemalloc"))
    signal_node(node)
    found: list[Path] = []

    def written() -> bool:
        found[:] = [p for p in directory.glob("*.tracemalloc") if p not in before]
        return bool(found) and not any(p.suffix == ".tmp" for p in directory.iterdir())

    wait_until(written, f"tracemalloc snapshot {label}", timeout=120, interval=0.5)
    return found[0]


def compare(first: Path, second: Path, top: int) -> None:
    old, new = tracemalloc.Snapshot.load(str(first)), tracemalloc.Snapshot.load(str(second))
    skip = [tracemalloc.Filter(False, tracemalloc.__file__)]
    old, new = old.filter_traces(skip), new.filter_traces(skip)
    print(f"\nallocation sites that grew most from {first.name} to {second.name}:")
    for stat in new.compare_to(old, "traceback")[:top]:
        print(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks")
        for line in stat.traceback.format(limit=6, most_recent_first=True)[:12]:
            print(f"      {line}")


def run(workdir: Path, args: argparse.Namespace) -> int:
    print(machine_line(f"meshgate {meshgate_version()}", tool_version(["haproxy", "-v"])))
    print(
        f"{args.gateways:,} gateways; {args.weights_per_s:g} weight PUTs/s, "
        f"{args.registrations_per_s:g} registrations/s (ttl 3s), a reload every "
        f"{args.reload_every:g}s, {10 * args.requests_per_tick} requests/s; "
        f"{args.duration:g}s (warm-up {args.warmup:g}s) then {args.idle:g}s idle"
    )
    backends = {name: free_port() for name in BACKENDS}
    traces = workdir / "tracemalloc"
    nodes: list[Soaked] = []
    with Nginx(workdir / "nginx", backends):
        try:
            churned = Soaked("churn", workdir, args, backends)
            if args.tracemalloc:
                traces.mkdir()
                os.environ["MESHGATE_TRACEMALLOC"] = str(traces)
            churned.start()
            os.environ.pop("MESHGATE_TRACEMALLOC", None)
            nodes.append(churned)
            if args.baseline:
                baseline = Soaked("baseline", workdir, args, backends)
                baseline.start()
                nodes.append(baseline)
            print(f"setup done (load {load_average()}); t=0 is the first change", flush=True)
            started = time.monotonic()
            if args.tracemalloc:
                signal_node(churned.node)  # the first signal starts tracing
            churned.begin(changes=True)
            if args.baseline:
                baseline.begin(changes=False)
            snapshots: list[Path] = []
            idle_begun = False
            while (now := time.monotonic() - started) < args.duration + args.idle:
                if now >= args.duration and not idle_begun:
                    churned.end_changes()
                    idle_begun = True
                cells = [n.sample(now) for n in nodes]
                print(
                    f"t={now:6.0f}s "
                    + "  ".join(
                        f"{n.name} meshgate {c.node_mb:7.1f} MB haproxy {c.haproxy_mb:7.1f} MB"
                        + heap_cells(c)
                        for n, c in zip(nodes, cells, strict=True)
                    )
                    + f"  (load {load_average()})",
                    flush=True,
                )
                if args.tracemalloc and not snapshots and now >= args.warmup:
                    snapshots.append(snapshot(churned.node, traces, "after warm-up"))
                time.sleep(max(0.0, args.interval - (time.monotonic() - started - now)))
            if args.tracemalloc and snapshots:
                snapshots.append(snapshot(churned.node, traces, "at the end"))
                compare(snapshots[0], snapshots[-1], args.top)
            report(nodes, args)
            # The churn's API calls and requests may fail now and then (a 409 when two writes
            # meet, a request during a reload); they are counted above, not a verdict.
            return finish(True, "")
        finally:
            for soaked in nodes:
                soaked.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateways", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=600, help="seconds of changes")
    parser.add_argument("--warmup", type=float, default=120, help="seconds before growth counts")
    parser.add_argument(
        "--settled", type=float, default=600, help="growth also from here (s): 10-minute rings full"
    )
    parser.add_argument("--idle", type=float, default=0, help="seconds sampled after the changes")
    parser.add_argument("--interval", type=float, default=5, help="seconds between samples")
    parser.add_argument("--weights-per-s", type=float, default=5)
    parser.add_argument("--registrations-per-s", type=float, default=2)
    parser.add_argument("--reload-every", type=float, default=30, help="seconds")
    parser.add_argument("--requests-per-tick", type=int, default=2, help="10 ticks a second")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--tracemalloc", action="store_true", help="trace the churn node")
    parser.add_argument("--memstats", action="store_true", help="nodes log their heap")
    parser.add_argument("--top", type=int, default=15, help="allocation sites shown")
    parser.add_argument("--node-arg", action="append", default=[], help="extra `up` argument")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("NO_PROXY", LOOPBACK)
    return run_in_workdir("meshgate-soak-", args.keep, lambda workdir: run(workdir, args))


if __name__ == "__main__":
    sys.exit(main())
