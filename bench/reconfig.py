"""Reconfiguration: how fast a change reaches the data plane, at run time and through a reload.

Three measurements, all on loopback (127.0.0.1), in one invocation:

  compile   in-process: validate, compile, render and plan 1,000 gateways x 10 routes for a
            weight change on one of them (no HAProxy; per-stage times, target < 1 s)
  latency   `meshgate up` with one gateway `probe` (routes bench:v1 / bench:v2 to two nginx
            servers answering "v1" / "v2"); a probe process opens a new connection per request
            in a tight loop and notes when the first answer comes from the new backend. Each
            change is a `POST /api/v1/apply`; the latency is from that call returning to that
            first answer (and, in its own column, from the call's start, which includes the
            API's own time). Changes:
              weight    routes 100/0 flipped to 0/100 (and back): a runtime map swap
              instance  service bench:v1 [A] -> [B] (B added, A drained and removed): runtime
            and, side by side (alternating with them), the same change forced through a full
            reload by also changing the gateway's `timeouts.server` (a backend change).
            Measured with the probe gateway alone, then with --gateways gateways loaded (one
            `POST /api/v1/apply` of gateways on distinct ports, each with one route to a
            shared service). The reload counter (`meshgate_haproxy_reloads_total` from
            /metrics) is read around every change: it must not move for a runtime change.
  reloads   wrk (-t1 -c16, keep-alive) through the probe gateway while --reloads reloads are
            forced, each an apply adding a gateway on a new port and waiting for
            `status.applied`: requests, non-2xx, socket errors (target 0), reloads per second.

The machine is small and shared, so latencies are reported as p50/p99 next to the reload
baseline measured in the same run, and as the ratio runtime/reload.

Exit status: 0 when every target in the summary is met, 2 when the run completed but one is
not, 1 when the setup failed or a change never reached the data plane.

    .venv/bin/python bench/reconfig.py             # 30 changes a cell, 1,000 gateways: ~15 min
    .venv/bin/python bench/reconfig.py --quick     # 8 changes a cell, 250 gateways: < 2 min
    .venv/bin/python bench/reconfig.py --only compile --profile   # cProfile of compile+render
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import math
import multiprocessing
import os
import pstats
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

if __package__ in (None, ""):  # run as a script: make `bench.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    LOOPBACK,
    WRK_BINARY,
    BenchError,
    MeshgateNode,
    Nginx,
    WrkResult,
    gateway_doc,
    load_average,
    machine_line,
    median,
    meshgate_version,
    parse_wrk,
    port_open,
    run_in_workdir,
    service_doc,
    stop_node,
    tool_version,
    wait_serving,
)

from meshgate.compiler import CONFIG_FILE, DesiredState, compile_state, ir, render_files
from meshgate.compiler.build import CompileMemo
from meshgate.model import Gateway, Service, validate_resource
from meshgate.plan import Action, Reload, plan

T = TypeVar("T")

LATENCY_TARGET_MS = 100.0  # p99, runtime changes with 1,000 gateways loaded
COMPILE_TARGET_S = 1.0  # validate + compile + render + plan, 1,000 gateways x 10 routes
SETTLE_ANSWERS = 20  # consecutive answers from the new backend that end a measurement
CHANGE_TIMEOUT_S = 30.0  # a change not seen by then is a failure
PROBE_READY = 3  # consecutive answers from the old backend before the change is made

# -- the probe: a separate process, so that the client's timing owes nothing to our GIL ---------

_REQUEST = b"GET / HTTP/1.0\r\nHost: probe\r\nUser-Agent: meshgate-bench-probe\r\n\r\n"


def fetch(port: int) -> str:
    """One request on a new connection: the stripped body of a 200, else "HTTP <status>" or
    "error <exception name>"."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=2.0) as sock:
            sock.sendall(_REQUEST)
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    except OSError as exc:
        return f"error {type(exc).__name__}"
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1:2]
    if status != [b"200"]:
        return f"HTTP {status[0].decode(errors='replace') if status else '?'}"
    return body.decode(errors="replace").strip()


@dataclass(frozen=True)
class Watch:
    """What the probe is asked to watch for: answers from `old` until `new` takes over."""

    port: int
    old: str
    new: str
    timeout_s: float = CHANGE_TIMEOUT_S
    settle: int = SETTLE_ANSWERS


@dataclass(frozen=True)
class Observed:
    """What the probe saw once it was ready (monotonic clock, shared by processes on Linux)."""

    first_new: float | None  # first answer from the new backend
    last_old: float | None  # last answer from the old backend
    requests: int
    failures: dict[str, int]  # answers from neither backend, by kind
    period_s: float  # mean time per request: the probe's time resolution


def watch(conn: Connection, job: Watch) -> Observed:
    """Wait for PROBE_READY answers from the old backend, say "ready", then probe until
    `settle` consecutive answers come from the new one (or the timeout)."""
    deadline = time.monotonic() + job.timeout_s
    streak = 0
    while streak < PROBE_READY:
        if time.monotonic() > deadline:
            return Observed(None, None, 0, {"old backend never answered": 1}, math.nan)
        streak = streak + 1 if fetch(job.port) == job.old else 0
    conn.send("ready")
    started = time.monotonic()
    first_new = last_old = None
    requests = streak = 0
    failures: dict[str, int] = {}
    while streak < job.settle and time.monotonic() < deadline:
        answer = fetch(job.port)
        now = time.monotonic()
        requests += 1
        if answer == job.new:
            first_new = first_new or now
            streak += 1
        elif answer == job.old:
            last_old = now
            streak = 0
        else:
            failures[answer] = failures.get(answer, 0) + 1
    period = (time.monotonic() - started) / requests if requests else math.nan
    return Observed(first_new, last_old, requests, failures, period)


def probe_main(conn: Connection) -> None:
    """The probe process: one Watch in, "ready", one Observed out; None ends it.

    It runs in a session of its own: where the kernel shares CPU time between sessions
    (autogroup scheduling), its busy loop then competes with meshgate as any client would,
    not inside meshgate's share."""
    os.setsid()
    while (job := conn.recv()) is not None:
        conn.send(watch(conn, job))


class Probe:
    """The probe process, started with `spawn` so it shares nothing with this one."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=probe_main, args=(child,), daemon=True)

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)

    def _receive(self, timeout: float) -> Any:
        if not self.conn.poll(timeout):
            raise BenchError(f"the probe did not answer within {timeout:g}s")
        return self.conn.recv()

    def measure(self, job: Watch, change: Callable[[], object]) -> tuple[float, float, Observed]:
        """Make `change` once the probe sees the old backend; (call start, call return,
        what the probe saw)."""
        self.conn.send(job)
        ready = self._receive(job.timeout_s + 5)
        if isinstance(ready, Observed):  # never ready
            raise BenchError(f"before the change, on port {job.port}: {ready.failures}")
        started = time.monotonic()
        change()
        returned = time.monotonic()
        observed: Observed = self._receive(job.timeout_s + 5)
        return started, returned, observed


# -- part 1: change latency --------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    started: float
    returned: float
    observed: Observed
    reloads: float  # reload counter delta around the change
    applied_s: float  # from the call returning to status.applied
    pass_s: float  # the agent's reconcile time for the change (all its passes)

    @property
    def call_ms(self) -> float:
        return (self.returned - self.started) * 1e3

    @property
    def latency_ms(self) -> float:
        first = self.observed.first_new
        return (first - self.returned) * 1e3 if first is not None else math.nan

    @property
    def from_start_ms(self) -> float:
        """From the call's start: what the one who made the change waits, all told."""
        first = self.observed.first_new
        return (first - self.started) * 1e3 if first is not None else math.nan

    @property
    def switched_ms(self) -> float:
        """Until the last answer from the old backend (or the first new one if later)."""
        first = self.observed.first_new
        if first is None:
            return math.nan
        return (max(first, self.observed.last_old or first) - self.returned) * 1e3


@dataclass
class Cell:
    """One (gateways loaded, change, runtime or reload) combination and its samples."""

    gateways: int
    change: str  # weight | instance
    mode: str  # runtime | reload
    samples: list[Sample] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.change} {self.mode} @{self.gateways}"

    def latencies(self) -> list[float]:
        return [s.latency_ms for s in self.samples]

    def p(self, q: float, values: Sequence[float] | None = None) -> float:
        return percentile(self.latencies() if values is None else values, q)

    def reloads(self) -> float:
        return sum(s.reloads for s in self.samples)

    def failures(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for sample in self.samples:
            for kind, count in sample.observed.failures.items():
                total[kind] = total.get(kind, 0) + count
        return total


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan if any value is nan or there are none.

    With 30 samples p99 is the largest: the worst change seen, which is what it should be."""
    if not values or any(math.isnan(v) for v in values):
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


COUNTERS = {
    "reloads": "meshgate_haproxy_reloads_total",
    "pass_seconds": "meshgate_reconcile_duration_seconds_sum",
}


def counters(node: MeshgateNode) -> dict[str, float]:
    """The node's reload count and total reconcile seconds, from GET /metrics."""
    response = node.api.get("/metrics")
    if response.status_code != 200:
        raise BenchError(f"GET /metrics answered {response.status_code}")
    values: dict[str, float] = {}
    for key, family in COUNTERS.items():
        match = re.search(rf"^{family}\s+(\S+)$", response.text, re.MULTILINE)
        if not match:
            raise BenchError(f"no {family} in /metrics")
        values[key] = float(match.group(1))
    return values


@dataclass
class Bench:
    """The node under test, its backends and the probe gateway's current state."""

    node: MeshgateNode
    probe: Probe
    gateway_port: int
    backends: dict[str, int]  # body -> nginx port: v1, v2, v1b
    weights: tuple[int, int] = (100, 0)
    v1_instance: str = "v1"  # which nginx serves service bench:v1: v1 or v1b
    server_timeout_s: int = 50

    def gateway(self) -> dict[str, Any]:
        doc = gateway_doc(
            "probe",
            self.gateway_port,
            {"bench:v1": {"weight": self.weights[0]}, "bench:v2": {"weight": self.weights[1]}},
        )
        doc["timeouts"] = {"server": f"{self.server_timeout_s}s"}
        return doc

    def service_v1(self) -> dict[str, Any]:
        return service_doc("bench:v1", self.backends[self.v1_instance])

    def documents(self) -> list[dict[str, Any]]:
        return [
            self.service_v1(),
            service_doc("bench:v2", self.backends["v2"]),
            service_doc("bench:shared", self.backends["shared"]),  # for the loaded gateways
            self.gateway(),
        ]

    def serving(self) -> str:
        """The body the probe gateway answers with now."""
        return self.v1_instance if self.weights[0] else "v2"

    def change(self, cell: Cell) -> Sample:
        """Make the cell's change (flipping from the current state), measure it, wait until
        the node reports it applied."""
        old = self.serving()
        documents: list[dict[str, Any]] = []
        if cell.change == "weight":
            self.weights = (self.weights[1], self.weights[0])
        else:
            if not self.weights[0]:
                raise BenchError("instance changes need route bench:v1 at 100%")
            self.v1_instance = "v1b" if self.v1_instance == "v1" else "v1"
            documents.append(self.service_v1())
        if cell.mode == "reload":
            self.server_timeout_s = 101 - self.server_timeout_s  # 50s <-> 51s: a backend change
        if cell.change == "weight" or cell.mode == "reload":
            documents.append(self.gateway())
        new = self.serving()
        before = counters(self.node)
        started, returned, observed = self.probe.measure(
            Watch(self.gateway_port, old, new), lambda: self.node.apply(documents)
        )
        self.node.wait_applied("gateways", "probe", timeout=120)
        if cell.change == "instance":
            self.node.wait_applied("services", "bench:v1", timeout=120)
        applied = time.monotonic()
        after = counters(self.node)
        sample = Sample(
            started,
            returned,
            observed,
            after["reloads"] - before["reloads"],
            applied - returned,
            after["pass_seconds"] - before["pass_seconds"],
        )
        if observed.first_new is None:
            raise BenchError(
                f"{cell.key}: no answer from {new!r} within {CHANGE_TIMEOUT_S:g}s "
                f"({observed.requests} requests, failures {observed.failures})"
            )
        return sample


def measure_cells(bench: Bench, gateways: int, repetitions: int) -> list[Cell]:
    """Weight then instance changes, runtime and reload alternating (the order swapped every
    repetition, so both see the same conditions and both flip directions)."""
    cells: list[Cell] = []
    for change in ("weight", "instance"):
        runtime, reload = Cell(gateways, change, "runtime"), Cell(gateways, change, "reload")
        cells += [runtime, reload]
        for repetition in range(repetitions):
            for cell in (runtime, reload) if repetition % 2 == 0 else (reload, runtime):
                cell.samples.append(bench.change(cell))
        print(
            f"  {gateways} gateway(s), {change}: runtime p50 {runtime.p(50):.1f} ms, "
            f"p99 {runtime.p(99):.1f} ms; reload p50 {reload.p(50):.1f} ms, "
            f"p99 {reload.p(99):.1f} ms; reloads {runtime.reloads():g} / {reload.reloads():g}",
            flush=True,
        )
    return cells


def free_ports(count: int) -> list[int]:
    """`count` distinct ports on 127.0.0.1 that are free now, below the kernel's ephemeral
    range (so that the probe's and wrk's own connections never take one meanwhile)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    candidates = list(range(10_000, max(10_000 + 2 * count, low)))
    random.shuffle(candidates)
    found: list[int] = []
    for port in candidates:
        if len(found) == count:
            break
        with socket.socket() as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
        found.append(port)
    if len(found) < count:
        raise BenchError(f"only {len(found)} free ports found, {count} needed")
    return found


def load_gateways(node: MeshgateNode, ports: Sequence[int], shared_port: int) -> float:
    """Apply a gateway per port (`load-NNNN`, one route to service bench:shared) in one
    POST /api/v1/apply; seconds until the last one is applied."""
    documents = [service_doc("bench:shared", shared_port)] + [
        gateway_doc(f"load-{i:04d}", port, {"bench:shared": {"weight": 100}})
        for i, port in enumerate(ports)
    ]
    started = time.monotonic()
    node.apply(documents)
    if ports:
        node.wait_applied("gateways", f"load-{len(ports) - 1:04d}", timeout=600)
    return time.monotonic() - started


# -- part 3: reloads under load ----------------------------------------------------------------


@dataclass(frozen=True)
class ReloadRun:
    wrk: WrkResult
    reloads: int  # counted by the node
    seconds: float  # for all the reloads


def reloads_under_load(node: MeshgateNode, url: str, ports: Sequence[int], wrk: str) -> ReloadRun:
    """wrk through `url` while one apply per port adds a gateway (a reload each), waiting for
    `status.applied` every time; wrk is stopped (SIGINT: it prints its totals) right after.

    wrk's own limit (-d) is only a bound: 60 s plus 10 s a reload."""
    if not url.startswith(f"http://{LOOPBACK}:"):
        raise ValueError(f"load goes to {LOOPBACK} only, not {url}")
    limit = 60 + 10 * len(ports)
    argv = [wrk, "-t1", "-c16", f"-d{limit}s", "--timeout=2s", "--latency", url]
    wrk_process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        time.sleep(1.0)  # wrk's connections are up and busy before the first reload
        reloads_before = counters(node)["reloads"]
        started = time.monotonic()
        for i, port in enumerate(ports):
            node.apply([gateway_doc(f"load-{i:04d}", port, {"bench:shared": {"weight": 100}})])
            node.wait_applied("gateways", f"load-{i:04d}", timeout=60)
        seconds = time.monotonic() - started
        reloads = round(counters(node)["reloads"] - reloads_before)
        time.sleep(1.0)  # requests that started during the last reload finish
        if wrk_process.poll() is not None:
            raise BenchError(f"wrk ended before the reloads did (limit {limit} s)")
    finally:
        if wrk_process.poll() is None:
            wrk_process.send_signal(signal.SIGINT)
        try:
            output, _ = wrk_process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            wrk_process.kill()
            output, _ = wrk_process.communicate()
    try:
        result = parse_wrk(output)
    except ValueError as exc:
        raise BenchError(f"wrk: {exc}") from exc
    return ReloadRun(result, reloads, seconds)


# -- part 2: compile and plan in-process -------------------------------------------------------


CHANGE_PATH = ("validate 1", "compile", "render", "plan")
AGENT_PATH = ("validate 1", "compile, incremental", "plan, incremental")


@dataclass(frozen=True)
class CompileRun:
    gateways: int
    routes: int
    stages: dict[str, list[float]]  # stage -> seconds, one per round
    actions: list[str]  # the plan for the weight change
    config_bytes: int

    def change_path(self, stages: Sequence[str] = CHANGE_PATH) -> list[float]:
        """What a weight change costs in Python, per round: by default validate the changed
        gateway, compile everything, render everything, plan (the target's definition)."""
        return [sum(times) for times in zip(*(self.stages[s] for s in stages), strict=True)]

    @property
    def change_path_s(self) -> float:
        return median(self.change_path())


def compile_documents(gateways: int, routes: int) -> list[dict[str, Any]]:
    """100 services of two instances; gateways on distinct ports, each with `routes` routes to
    services, weights equal (the last takes the remainder)."""
    services = [
        {
            "kind": "service",
            "name": f"svc-{s:02d}",
            "instances": [f"10.0.{s}.1:8080", f"10.0.{s}.2:8080"],
        }
        for s in range(100)
    ]
    share = 100 // routes
    docs = [
        gateway_doc(
            f"g{g:04d}",
            20_000 + g,
            {
                f"svc-{(g + r) % 100:02d}": {"weight": share + (100 - share * routes) * (r == 0)}
                for r in range(routes)
            },
        )
        for g in range(gateways)
    ]
    return services + docs


class CompileCase:
    """One size of the in-process benchmark: the documents, the running data plane, and the
    times of each stage of a weight change on the middle gateway, round after round."""

    def __init__(self, gateways: int, routes: int) -> None:
        self.gateways = gateways
        self.routes = routes
        self.documents = compile_documents(gateways, routes)
        self.settings = ir.Settings(
            run_dir="/run/meshgate-bench", log_socket="/run/meshgate-bench/log.sock"
        )
        resources = [validate_resource(d, allow_raw_acl=True) for d in self.documents]
        self.services = [r for r in resources if isinstance(r, Service)]
        self.before = [r for r in resources if isinstance(r, Gateway)]
        state = DesiredState(gateways=self.before, services=self.services)
        self.running = compile_state(state, self.settings).dataplane
        self.changed_index = gateways // 2
        changed = dict(self.documents[len(self.services) + self.changed_index])
        # The first route takes what it can, every other route keeps 1%: a weight-only change.
        changed["routes"] = {
            name: {"weight": 100 - (routes - 1) if i == 0 else 1}
            for i, name in enumerate(changed["routes"])
        }
        self.changed = changed
        self.stages: dict[str, list[float]] = {}
        self.actions: list[Action] = []
        self.config_bytes = 0

    def _timed(self, stage: str, function: Callable[[], T]) -> T:
        started = time.perf_counter()
        result = function()
        self.stages.setdefault(stage, []).append(time.perf_counter() - started)
        return result

    def round(self, profiler: cProfile.Profile | None = None) -> None:
        self._timed(
            "validate all (first apply)",
            lambda: [validate_resource(d, allow_raw_acl=True) for d in self.documents],
        )
        changed = self._timed(
            "validate 1", lambda: validate_resource(self.changed, allow_raw_acl=True)
        )
        assert isinstance(changed, Gateway)
        index = self.changed_index
        after = [*self.before[:index], changed, *self.before[index + 1 :]]
        state = DesiredState(gateways=after, services=self.services)
        if profiler:
            profiler.enable()
        compiled = self._timed("compile", lambda: compile_state(state, self.settings))
        files = self._timed("render", lambda: render_files(compiled.dataplane))
        if profiler:
            profiler.disable()
        self.actions = self._timed("plan", lambda: plan(self.running, compiled.dataplane))
        if any(isinstance(a, Reload) for a in self.actions):
            raise BenchError(f"a weight change planned a reload: {self.actions}")
        # What the agent does: its memo holds the running state's gateways, so only the
        # changed one is compiled, and unchanged backends are the very objects it planned from.
        memo = CompileMemo()
        running = compile_state(
            DesiredState(gateways=self.before, services=self.services), self.settings, memo
        ).dataplane
        # The baseline of the patch: the memo alone, every gateway looked up (what the agent
        # did before incremental.patch).
        memo.last = None
        self._timed("compile, memo alone", lambda: compile_state(state, self.settings, memo))
        running = compile_state(
            DesiredState(gateways=self.before, services=self.services), self.settings, memo
        ).dataplane
        incremental = self._timed(
            "compile, incremental", lambda: compile_state(state, self.settings, memo)
        )
        if incremental.dataplane != compiled.dataplane:
            raise BenchError("the incremental compile differs from the full one")
        self._timed("plan, incremental", lambda: plan(running, incremental.dataplane))
        self.config_bytes = len(files[CONFIG_FILE])

    def result(self) -> CompileRun:
        return CompileRun(
            self.gateways,
            self.routes,
            dict(self.stages),
            [describe_action(a) for a in self.actions],
            self.config_bytes,
        )


def compile_plan(
    sizes: Sequence[int], routes: int, rounds: int, profile: bool = False
) -> list[CompileRun]:
    """Each size's stages, the sizes interleaved round by round so that noise falls on all;
    with `profile`, a cProfile of compile + render of the last size."""
    cases = [CompileCase(gateways, routes) for gateways in sizes]
    profiler = cProfile.Profile() if profile else None
    for _ in range(rounds):
        for case in cases:
            case.round(profiler if case is cases[-1] else None)
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())
    return [case.result() for case in cases]


def describe_action(action: object) -> str:
    entries = getattr(action, "entries", None)
    name = getattr(action, "name", None)
    if entries is not None and name is not None:
        return f"{type(action).__name__}({name}, {len(entries)} entries)"
    return type(action).__name__


# -- report ------------------------------------------------------------------------------------


def ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def ratio(value: float, baseline: float) -> str:
    if math.isnan(value) or math.isnan(baseline) or baseline <= 0:
        return "-"
    return f"{value / baseline:.3f}"


def failures_text(failures: Mapping[str, int]) -> str:
    return ", ".join(f"{kind} x{count}" for kind, count in sorted(failures.items())) or "0"


def report_latency(cells: Sequence[Cell]) -> None:
    print()
    print(
        "| gateways | change | how | n | p50 ms | p99 ms | old backend gone p50 / p99 ms "
        "| from the call's start p50 / p99 ms | API call p50 ms | agent pass p50 ms "
        "| until status.applied p50 ms | reloads "
        "| probe period ms | probe failures |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for cell in cells:
        switched = [s.switched_ms for s in cell.samples]
        from_start = [s.from_start_ms for s in cell.samples]
        print(
            f"| {cell.gateways:,} | {cell.change} | {cell.mode} | {len(cell.samples)} "
            f"| {ms(cell.p(50))} | {ms(cell.p(99))} "
            f"| {ms(cell.p(50, switched))} / {ms(cell.p(99, switched))} "
            f"| {ms(cell.p(50, from_start))} / {ms(cell.p(99, from_start))} "
            f"| {ms(median([s.call_ms for s in cell.samples]))} "
            f"| {ms(median([s.pass_s * 1e3 for s in cell.samples]))} "
            f"| {ms(median([s.applied_s * 1e3 for s in cell.samples]))} "
            f"| {cell.reloads():g} "
            f"| {median([s.observed.period_s * 1e3 for s in cell.samples]):.2f} "
            f"| {failures_text(cell.failures())} |"
        )
    print()
    print("| gateways | change | runtime/reload p50 | runtime/reload p99 |")
    print("|---:|---|---:|---:|")
    by_key = {(c.gateways, c.change, c.mode): c for c in cells}
    for (gateways, change, mode), cell in by_key.items():
        if mode != "runtime" or (gateways, change, "reload") not in by_key:
            continue
        reload = by_key[(gateways, change, "reload")]
        print(
            f"| {gateways:,} | {change} | {ratio(cell.p(50), reload.p(50))} "
            f"| {ratio(cell.p(99), reload.p(99))} |"
        )


def report_compile(run: CompileRun, small: CompileRun) -> None:
    rows = [(stage, run.stages[stage], small.stages[stage]) for stage in run.stages]
    rows.append(
        ("weight change: " + " + ".join(CHANGE_PATH), run.change_path(), small.change_path())
    )
    rows.append(
        (
            "weight change as the agent makes it: " + " + ".join(AGENT_PATH),
            run.change_path(AGENT_PATH),
            small.change_path(AGENT_PATH),
        )
    )
    print()
    print(
        f"| stage | {run.gateways:,} x {run.routes} routes, median ms | min ms "
        f"| {small.gateways:,} x {small.routes} routes, median ms "
        f"| ratio of medians (linear: {run.gateways / small.gateways:g}) |"
    )
    print("|---|---:|---:|---:|---:|")
    for stage, big, little in rows:
        print(
            f"| {stage} | {median(big) * 1e3:.1f} | {min(big) * 1e3:.1f} "
            f"| {median(little) * 1e3:.2f} | {ratio(median(big), median(little))} |"
        )
    print(
        f"plan: {', '.join(run.actions)}; haproxy.cfg {run.config_bytes / 1e6:.1f} MB; "
        f"{len(run.change_path())} rounds"
    )


def report_reloads(run: ReloadRun) -> None:
    wrk = run.wrk
    print()
    print(
        "| reloads | seconds | reloads/s | wrk requests | req/s | p99 ms | non-2xx "
        "| socket errors |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    print(
        f"| {run.reloads} | {run.seconds:.1f} | {run.reloads / run.seconds:.2f} "
        f"| {wrk.requests:,} | {wrk.requests_per_sec:,.0f} | {wrk.p99_ms:.1f} | {wrk.non_2xx} "
        f"| {failures_text(wrk.socket_errors) if any(wrk.socket_errors.values()) else '0'} |"
    )


@dataclass
class Results:
    cells: list[Cell] = field(default_factory=list)
    compile: CompileRun | None = None
    compile_small: CompileRun | None = None
    reloads: ReloadRun | None = None
    load_seconds: float | None = None


def report_targets(results: Results, args: argparse.Namespace) -> bool:
    """Print the summary; whether every target was met."""
    rows: list[tuple[str, str, bool]] = []
    loaded = [c for c in results.cells if c.gateways == args.gateways and c.mode == "runtime"]
    scale = "" if args.gateways >= 1000 else f" (at {args.gateways:,} gateways: target is at 1,000)"
    for cell in loaded:
        value = cell.p(99)
        rows.append(
            (
                f"{cell.change} change at run time, p99 < {LATENCY_TARGET_MS:g} ms{scale}",
                f"{ms(value)} ms",
                value < LATENCY_TARGET_MS,
            )
        )
    runtime = [c for c in results.cells if c.mode == "runtime"]
    if runtime:
        reloads = sum(c.reloads() for c in runtime)
        samples = sum(len(c.samples) for c in runtime)
        rows.append(
            (f"runtime changes reload nothing ({samples} changes)", f"{reloads:g}", reloads == 0)
        )
    if results.compile:
        run = results.compile
        scale = "" if run.gateways >= 1000 else f" (at {run.gateways:,} gateways)"
        rows.append(
            (
                f"compile+plan {run.gateways:,} x {run.routes} routes < "
                f"{COMPILE_TARGET_S:g} s{scale}",
                f"{run.change_path_s:.3f} s",
                run.change_path_s < COMPILE_TARGET_S,
            )
        )
    if results.reloads:
        wrk = results.reloads.wrk
        rows.append(
            (
                f"0 failed requests across {results.reloads.reloads} reloads",
                f"{wrk.errors} ({wrk.requests:,} requests)",
                wrk.errors == 0,
            )
        )
    print()
    print("| target | measured | met |")
    print("|---|---:|---|")
    for name, measured, met in rows:
        print(f"| {name} | {measured} | {'yes' if met else 'NO'} |")
    return all(met for _, _, met in rows)


# -- running it --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--repetitions", type=int, default=None, help="changes per cell (30; 8 with --quick)"
    )
    parser.add_argument(
        "--gateways",
        type=int,
        default=None,
        help="gateways loaded for the second latency run (1000; 250 with --quick)",
    )
    parser.add_argument(
        "--reloads", type=int, default=None, help="reloads forced under load (100; 20 with --quick)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions, gateways and reloads (< 2 min)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=("compile", "latency", "reloads"),
        help="run only this part (repeatable)",
    )
    parser.add_argument(
        "--compile-gateways", type=int, default=1000, help="gateways compiled in-process (1000)"
    )
    parser.add_argument("--compile-routes", type=int, default=10, help="routes each (10)")
    parser.add_argument(
        "--compile-rounds", type=int, default=None, help="compile rounds, median (5; 2 --quick)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="print a cProfile of compile + render"
    )
    parser.add_argument(
        "--no-latency",
        action="store_true",
        help="run meshgate up --no-latency (HAProxy logs no request to the agent)",
    )
    parser.add_argument("--nginx", default="/usr/sbin/nginx", help="nginx binary")
    parser.add_argument("--wrk", default=WRK_BINARY, help="wrk binary")
    parser.add_argument("--meshgate", default=None, help="meshgate executable (the venv's)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, configs)")
    args = parser.parse_args(argv)
    quick = args.quick
    if args.repetitions is None:
        args.repetitions = 8 if quick else 30
    if args.gateways is None:
        args.gateways = 250 if quick else 1000
    if args.reloads is None:
        args.reloads = 20 if quick else 100
    if args.compile_rounds is None:
        args.compile_rounds = 2 if quick else 5
    args.parts = set(args.only or ("compile", "latency", "reloads"))
    if not 1 <= args.repetitions <= 200:
        parser.error("--repetitions must be between 1 and 200")
    if not 2 <= args.gateways <= 5000:
        parser.error("--gateways must be between 2 and 5000")
    if not 1 <= args.reloads <= 500:
        parser.error("--reloads must be between 1 and 500")
    if not 1 <= args.compile_gateways <= 10_000:
        parser.error("--compile-gateways must be between 1 and 10000")
    if not 2 <= args.compile_routes <= 50:
        parser.error("--compile-routes must be between 2 and 50")
    if not 1 <= args.compile_rounds <= 20:
        parser.error("--compile-rounds must be between 1 and 20")
    return args


@contextlib.contextmanager
def running_node(
    args: argparse.Namespace,
    workdir: Path,
    backends: Mapping[str, int],
    gateway_port: int,
    load_ports: Sequence[int],
) -> Iterator[Bench]:
    """nginx (v1, v2, v1b, shared), `meshgate up` with the probe gateway, and the probe."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(Nginx(workdir / "nginx", backends, binary=args.nginx))
        extra = ["--no-latency"] if args.no_latency else []
        node = MeshgateNode(workdir / "meshgate", *extra, binary=args.meshgate)
        # In a session of its own, as a service runs (and as meshgate runs its HAProxy), so
        # that nginx and this script do not share its CPU time under autogroup scheduling.
        node.process.new_session = True
        node.start()
        stack.callback(stop_node, node, [gateway_port, *load_ports])
        probe = Probe()
        probe.start()
        stack.callback(probe.stop)
        bench = Bench(node, probe, gateway_port, dict(backends))
        node.apply(bench.documents())
        node.wait_applied("gateways", "probe")
        wait_serving(f"http://{LOOPBACK}:{gateway_port}/")
        yield bench


def run(args: argparse.Namespace, workdir: Path) -> int:
    print(
        machine_line(
            tool_version(["haproxy", "-v"]),
            tool_version([args.nginx, "-v"]),
            tool_version([args.wrk, "--version"]),
        )
    )
    print(
        f"meshgate: {meshgate_version()}"
        + (" (meshgate up --no-latency)" if args.no_latency else " (meshgate up, defaults)")
    )
    results = Results()
    if "compile" in args.parts:
        print(
            f"compile: {args.compile_gateways:,} gateways x {args.compile_routes} routes "
            f"in-process, median of {args.compile_rounds} rounds",
            flush=True,
        )
        small_gateways = max(1, args.compile_gateways // 10)
        results.compile_small, results.compile = compile_plan(
            (small_gateways, args.compile_gateways),
            args.compile_routes,
            args.compile_rounds,
            args.profile,
        )
    if args.parts & {"latency", "reloads"}:
        ports = free_ports(5 + max(args.gateways - 1, args.reloads))
        backends = dict(zip(("v1", "v2", "v1b", "shared"), ports[:4], strict=True))
        gateway_port, load_ports = ports[4], ports[5:]
        with running_node(args, workdir, backends, gateway_port, load_ports) as bench:
            shared = bench.backends["shared"]
            if "latency" in args.parts:
                print(f"latency: {args.repetitions} changes per cell", flush=True)
                results.cells += measure_cells(bench, 1, args.repetitions)
            if "reloads" in args.parts:
                print(f"reloads: {args.reloads} under wrk -t1 -c16", flush=True)
                results.reloads = reloads_under_load(
                    bench.node,
                    f"http://{LOOPBACK}:{gateway_port}/",
                    load_ports[: args.reloads],
                    args.wrk,
                )
            if "latency" in args.parts:
                results.load_seconds = load_gateways(
                    bench.node, load_ports[: args.gateways - 1], shared
                )
                print(
                    f"  {args.gateways - 1:,} more gateways in one apply: applied after "
                    f"{results.load_seconds:.1f} s",
                    flush=True,
                )
                if not port_open(load_ports[args.gateways - 2]):
                    raise BenchError("the last loaded gateway does not listen")
                results.cells += measure_cells(bench, args.gateways, args.repetitions)

    if results.compile and results.compile_small:
        report_compile(results.compile, results.compile_small)
    if results.cells:
        report_latency(results.cells)
    if results.reloads:
        report_reloads(results.reloads)
    met = report_targets(results, args)
    print(f"load average after: {load_average()}")
    return 0 if met else 2


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_in_workdir("meshgate-reconfig-", args.keep, lambda workdir: run(args, workdir))


if __name__ == "__main__":
    sys.exit(main())
