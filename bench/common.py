"""Helpers shared by the benchmarks: ports, processes, an nginx backend, wrk, a meshgate node.

Everything here runs on loopback (127.0.0.1) only, and every wait is bounded by a timeout.
Processes are started as children of the benchmark and stopped by it (use them as context
managers, or call `stop()` in a `finally`), so an interrupted run leaves nothing behind.

    with Nginx(workdir, {"v1": port1, "v2": port2}) as nginx, MeshgateNode(data_dir) as node:
        node.apply([...])
        result = run_wrk(f"http://127.0.0.1:{port}/", duration=5, connections=32)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

LOOPBACK = "127.0.0.1"


class BenchError(RuntimeError):
    """A benchmark could not be set up or run; the message says what and includes logs."""


# -- ports and waiting --------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = LOOPBACK) -> bool:
    """Whether something accepts TCP connections on host:port right now."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], bool], what: str, timeout: float = 20.0, interval: float = 0.05
) -> None:
    """Poll `predicate` until it is true; raise BenchError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def wait_for_port(port: int, host: str = LOOPBACK, timeout: float = 10.0) -> None:
    """Wait until something listens on host:port."""
    wait_until(lambda: port_open(port, host), f"a listener on {host}:{port}", timeout)


def http_get(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, str]:
    """(status, body) of one GET, or (0, error text) when the request fails."""
    try:
        response = httpx.get(url, headers=dict(headers or {}), timeout=5.0)
    except httpx.HTTPError as exc:
        return 0, str(exc)
    return response.status_code, response.text


def wait_serving(url: str) -> None:
    """Wait until a GET through a gateway answers 200."""
    wait_until(lambda: http_get(url)[0] == 200, f"200 from {url}", timeout=20, interval=0.1)


def count_bodies(
    url: str, requests: int, headers: Mapping[str, str] | None = None
) -> dict[str, int]:
    """Send `requests` GETs over one keep-alive connection; count the stripped bodies.

    Failed requests count under their status, e.g. "HTTP 503"."""
    counts: dict[str, int] = {}
    with httpx.Client(timeout=5.0, headers=dict(headers or {})) as client:
        for _ in range(requests):
            response = client.get(url)
            key = (
                response.text.strip()
                if response.status_code == 200
                else (f"HTTP {response.status_code}")
            )
            counts[key] = counts.get(key, 0) + 1
    return counts


# -- processes ----------------------------------------------------------------------------------


class Process:
    """A child process whose stdout and stderr go to a log file; stopped with a signal.

    `new_session` starts it in a session of its own (setsid). Where the kernel groups CPU time
    by session (autogroup scheduling), that decides whom it shares the CPUs with: give two
    processes being compared the same treatment."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, *, new_session: bool = False
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.new_session = new_session
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            try:
                self.popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=self.new_session,
                )
            except OSError as exc:
                raise BenchError(f"cannot start {self.name} ({self.argv[0]}): {exc}") from exc

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_running(self) -> None:
        """Raise BenchError, with the end of the log, if the process has exited."""
        if self.popen is not None and self.popen.poll() is not None:
            raise BenchError(
                f"{self.name} exited with status {self.popen.returncode}:\n{self.log_tail()}"
            )

    def wait_listening(self, port: int, timeout: float) -> None:
        """Wait until something listens on `port`; BenchError, with the end of the log, if the
        process exits first."""

        def listening() -> bool:
            self.check_running()
            return port_open(port)

        wait_until(listening, f"{self.name} on {LOOPBACK}:{port}", timeout=timeout)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Send `sig`, wait up to `timeout` s, then SIGKILL. Returns the exit status."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def log_tail(self, chars: int = 4000) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-chars:]


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc; empty when it is gone)."""
    children: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return children
    for task in tasks:
        with contextlib.suppress(OSError):
            children += [int(c) for c in (task / "children").read_text().split()]
    return children


def descendant_pids(pid: int, command: str | None = None) -> list[int]:
    """All processes below `pid`, optionally only those whose command name is `command`."""
    found: list[int] = []
    pending = child_pids(pid)
    while pending:
        child = pending.pop()
        pending += child_pids(child)
        if command is None or process_name(child) == command:
            found.append(child)
    return sorted(found)


def process_name(pid: int) -> str:
    """The command name of a process (/proc/PID/comm), "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def rss_mb(pids: Sequence[int]) -> float:
    """Resident memory of the processes (VmRSS), in MB; processes gone count 0."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+)", status, re.MULTILINE)
        total += int(match.group(1)) if match else 0
    return total / 1024


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU time the processes have used so far, all their threads included.

    Resolution is one clock tick (usually 10 ms); processes that are gone count 0."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields are counted after its ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _CLOCK_TICKS


# -- nginx backend ------------------------------------------------------------------------------

NGINX_BINARY = "/usr/sbin/nginx"


def nginx_config(workdir: Path, servers: Mapping[str, int]) -> str:
    """An nginx.conf that needs no system paths: one server per entry of `servers`
    (body -> port), each answering every request with 200 and the body plus a newline."""
    temp_paths = "\n".join(
        f"    {kind}_temp_path {workdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    blocks = "\n".join(
        f"    server {{\n"
        f"        listen {LOOPBACK}:{port};\n"
        f'        location / {{ return 200 "{body}\\n"; }}\n'
        f"    }}"
        for body, port in servers.items()
    )
    return (
        "daemon off;\n"
        "worker_processes 1;\n"
        f"pid {workdir / 'nginx.pid'};\n"
        f"error_log {workdir / 'error.log'};\n"
        "events {}\n"
        "http {\n"
        "    access_log off;\n"
        "    default_type text/plain;\n"
        f"{temp_paths}\n"
        f"{blocks}\n"
        "}\n"
    )


class Started:
    """Started on entering a `with` block, stopped on leaving it (however it is left)."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Nginx(Started):
    """One nginx (a single worker) with a server per entry of `servers`, body -> port.

    Bodies must be plain words; each server answers `<body>\\n`, so a client can tell which
    backend answered. Stopped with SIGQUIT (graceful)."""

    def __init__(
        self, workdir: Path, servers: Mapping[str, int], binary: str = NGINX_BINARY
    ) -> None:
        for body in servers:
            if not re.fullmatch(r"[A-Za-z0-9._-]+", body):
                raise ValueError(f"nginx body must be a plain word: {body!r}")
        self.workdir = workdir
        self.servers = dict(servers)
        conf = workdir / "nginx.conf"
        self.process = Process(
            "nginx",
            [binary, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)],
            workdir / "nginx.out",
        )

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "nginx.conf").write_text(nginx_config(self.workdir, self.servers))
        self.process.start()
        try:
            for port in self.servers.values():
                wait_until(
                    functools.partial(self._serving, port),
                    f"nginx on {LOOPBACK}:{port}",
                    timeout=10,
                )
        except BenchError:
            self.stop()
            raise

    def _serving(self, port: int) -> bool:
        if not self.process.running():
            raise BenchError(f"nginx exited:\n{self.log_tail()}")
        return port_open(port)

    def pids(self) -> list[int]:
        """The nginx master and its worker, for `cpu_seconds`."""
        pid = self.process.pid
        return [pid, *descendant_pids(pid)] if pid and self.process.running() else []

    def stop(self) -> None:
        self.process.stop(signal.SIGQUIT)

    def log_tail(self) -> str:
        error_log = self.workdir / "error.log"
        errors = error_log.read_text(errors="replace")[-2000:] if error_log.exists() else ""
        return self.process.log_tail(2000) + errors


# -- plain HAProxy ------------------------------------------------------------------------------


class Haproxy(Started):
    """HAProxy in the foreground (`-db`) on a configuration file; ready when `port` listens.

    It runs in a session of its own, as meshgate's supervisor starts its HAProxy, so that both
    get the same share of the CPUs where the kernel groups CPU time by session."""

    def __init__(self, config: Path, port: int, binary: str = "haproxy") -> None:
        self.config = config
        self.port = port
        self.binary = binary
        self.process = Process(
            "haproxy",
            [binary, "-db", "-f", str(config)],
            config.with_suffix(".log"),
            new_session=True,
        )

    def check(self) -> None:
        """`haproxy -c` on the configuration; BenchError with HAProxy's words if it fails."""
        result = subprocess.run(
            [self.binary, "-c", "-f", str(self.config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise BenchError(f"haproxy -c rejected {self.config}:\n{result.stdout}{result.stderr}")

    def start(self) -> None:
        self.check()
        self.process.start()
        try:
            self.process.wait_listening(self.port, timeout=10)
        except BenchError:
            self.stop()
            raise

    def pids(self) -> list[int]:
        """The HAProxy process (with -db there is only one), for `cpu_seconds`."""
        return [self.process.pid] if self.process.running() and self.process.pid else []

    def stop(self) -> None:
        # SIGTERM: HAProxy's hard stop, immediate; the benchmark has no connection left open.
        self.process.stop(signal.SIGTERM, timeout=10)


# -- wrk ----------------------------------------------------------------------------------------

WRK_BINARY = "wrk"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_DURATION = re.compile(r"^([\d.]+)(us|ms|s|m|h)$")


def _milliseconds(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run reported. Latencies are in milliseconds; errors are counts."""

    requests: int
    seconds: float
    requests_per_sec: float
    latency_ms: dict[str, float]  # percentile ("50", "75", "90", "99") -> ms, from --latency
    socket_errors: dict[str, int] = field(default_factory=dict)  # connect/read/write/timeout
    non_2xx: int = 0  # wrk's "Non-2xx or 3xx responses" (status >= 400)
    output: str = ""
    cpu_s: float = math.nan  # user + system CPU time wrk itself used (set by run_wrk)

    @property
    def p50_ms(self) -> float:
        return self.latency_ms.get("50", math.nan)

    @property
    def p99_ms(self) -> float:
        return self.latency_ms.get("99", math.nan)

    @property
    def errors(self) -> int:
        """Socket errors plus error responses: anything but 0 makes the run invalid."""
        return sum(self.socket_errors.values()) + self.non_2xx


def parse_wrk(output: str) -> WrkResult:
    """Parse the text wrk prints (run with --latency). Raises ValueError on unknown text."""
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in ([\d.]+\w+)", output, re.MULTILINE)
    if not rate or not total:
        raise ValueError(f"no throughput in wrk output:\n{output}")
    latency = {
        match.group(1): _milliseconds(match.group(2))
        for match in re.finditer(r"^\s+(\d+)%\s+([\d.]+\w+)\s*$", output, re.MULTILINE)
    }
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    socket_errors = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups()), strict=True))
        if errors
        else {}
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=_milliseconds(total.group(2)) / 1e3,
        requests_per_sec=float(rate.group(1)),
        latency_ms=latency,
        socket_errors=socket_errors,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        output=output,
    )


def run_wrk(
    url: str,
    *,
    duration: float,
    connections: int = 32,
    threads: int = 1,
    headers: Mapping[str, str] | None = None,
    timeout: str = "2s",
    binary: str = WRK_BINARY,
) -> WrkResult:
    """One wrk run with keep-alive against a loopback URL; bounded by `duration` seconds."""
    if not url.startswith(f"http://{LOOPBACK}:"):
        raise ValueError(f"load goes to {LOOPBACK} only, not {url}")
    seconds = max(1, round(duration))
    argv = [
        binary,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        f"--timeout={timeout}",
        "--latency",
    ]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"wrk failed: {exc}") from exc
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise BenchError(f"wrk exited with {result.returncode}:\n{result.stdout}{result.stderr}")
    # wrk is the only child this process waits for meanwhile, so the difference is wrk's.
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return dataclasses.replace(parse_wrk(result.stdout), cpu_s=cpu)


# -- meshgate node ------------------------------------------------------------------------------


def meshgate_binary() -> str:
    """The `meshgate` script beside the running Python (the virtualenv's), else on PATH."""
    beside = Path(sys.executable).parent / "meshgate"
    if beside.exists():
        return str(beside)
    found = shutil.which("meshgate")
    if found is None:
        raise BenchError("no meshgate executable beside this Python nor on PATH")
    return found


def service_doc(name: str, *ports: int) -> dict[str, Any]:
    """A service document with one loopback instance per port."""
    return {"kind": "service", "name": name, "instances": [f"{LOOPBACK}:{p}" for p in ports]}


def gateway_doc(name: str, port: int, routes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """An http gateway document bound to loopback only."""
    return {
        "kind": "gateway",
        "name": name,
        "port": f"{port}/http",
        "bind": LOOPBACK,
        "routes": {route: dict(spec) for route, spec in routes.items()},
    }


class MeshgateNode(Started):
    """`meshgate up` as a child process, with its own data dir and API port.

    Stopped with SIGTERM, which makes meshgate stop the HAProxy it runs."""

    def __init__(
        self, data_dir: Path, *extra_args: str, binary: str | None = None, api_port: int = 0
    ) -> None:
        self.data_dir = data_dir
        self.api_port = api_port or free_port()
        self.url = f"http://{LOOPBACK}:{self.api_port}"
        self.process = Process(
            "meshgate",
            [
                binary or meshgate_binary(),
                "up",
                "--data-dir",
                str(data_dir),
                "--api",
                f"{LOOPBACK}:{self.api_port}",
                *extra_args,
            ],
            data_dir / "node.log",
        )
        self.api = httpx.Client(base_url=self.url, timeout=10.0)

    def start(self, timeout: float = 30.0) -> None:
        """Start it and wait until GET /healthz answers 200."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process.start()

        def healthy() -> bool:
            if not self.process.running():
                raise BenchError(f"meshgate up exited:\n{self.process.log_tail()}")
            try:
                return self.api.get("/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(healthy, "meshgate /healthz", timeout=timeout, interval=0.1)
        except BenchError as exc:
            self.stop()
            raise BenchError(f"{exc}\n{self.process.log_tail()}") from exc

    def apply(self, documents: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """POST /api/v1/apply; returns the `applied` list (kind, name, namespace, ...)."""
        response = self.api.post("/api/v1/apply", json=[dict(d) for d in documents])
        if response.status_code != 200:
            raise BenchError(f"apply answered {response.status_code}: {response.text}")
        applied: list[dict[str, Any]] = response.json()["applied"]
        return applied

    def get(self, plural: str, name: str) -> dict[str, Any]:
        """GET /api/v1/{plural}/{name} (the name URL-encoded)."""
        response = self.api.get(f"/api/v1/{plural}/{quote(name, safe='')}")
        if response.status_code != 200:
            raise BenchError(f"GET {plural}/{name} answered {response.status_code}")
        resource: dict[str, Any] = response.json()
        return resource

    def wait_applied(self, plural: str, name: str, timeout: float = 20.0) -> dict[str, Any]:
        """Wait until the resource's `status.applied` is true (the data plane runs it)."""
        last: dict[str, Any] = {}

        def applied() -> bool:
            nonlocal last
            self.process.check_running()
            last = self.get(plural, name)
            return bool(last.get("status", {}).get("applied"))

        try:
            wait_until(applied, f"{plural}/{name} applied", timeout=timeout, interval=0.1)
        except BenchError as exc:
            status = json.dumps(last.get("status"), indent=2)
            raise BenchError(f"{exc}; status: {status}\n{self.process.log_tail()}") from exc
        return last

    def node_pids(self) -> list[int]:
        """The meshgate process itself (store, API, agent), for `cpu_seconds`."""
        pid = self.process.pid
        return [pid] if pid and self.process.running() else []

    def haproxy_pids(self) -> list[int]:
        """The HAProxy processes meshgate runs (master and workers), for `cpu_seconds`."""
        pid = self.process.pid
        return descendant_pids(pid, "haproxy") if pid and self.process.running() else []

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait for meshgate (and its HAProxy) to stop; SIGKILL after `timeout` s.
        An HAProxy left running (meshgate killed before it could stop it, on a loaded
        machine) is killed too, so that a bench never leaves one behind."""
        self.api.close()
        haproxies = self.haproxy_pids()
        status = self.process.stop(signal.SIGTERM, timeout=timeout)
        left = [pid for pid in haproxies if _is_haproxy(pid)]
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if left:
            print(f"warning: HAProxy {left} outlived meshgate; killed", flush=True)
        return status


def _is_haproxy(pid: int) -> bool:
    """Whether `pid` is (still) an HAProxy process, not a zombie or a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    name, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
    return name == "haproxy" and state != "Z"


def stop_node(node: MeshgateNode, gateway_ports: Sequence[int]) -> None:
    """SIGTERM meshgate; it must stop its HAProxy, so the gateway ports must close."""
    status = node.stop()
    deadline = time.monotonic() + 5
    while any(port_open(p) for p in gateway_ports) and time.monotonic() < deadline:
        time.sleep(0.1)
    still = [p for p in gateway_ports if port_open(p)]
    if status != 0 or still:
        print(f"warning: meshgate exited with {status}; ports still open: {still}")


# -- statistics and the machine -----------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    """The median (mean of the middle two for an even count); nan for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. "0.52 0.61 0.40": how busy the machine was."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def finish(clean: bool, failure: str) -> int:
    """A benchmark's exit status, after the load average it ended with: 1, saying `failure`,
    when some run was not clean."""
    print(f"load average after: {load_average()}")
    if not clean:
        print(f"FAILED: {failure} (see above)")
        return 1
    return 0


def tool_version(argv: Sequence[str]) -> str:
    """The first non-empty line a tool prints about its version, or "?"."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return lines[0] if lines else "?"


def cpu_count() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def machine_line(*versions: str) -> str:
    """A report's first line: the machine, how busy it is, and the tools' versions."""
    head = f"machine: {cpu_count()} CPUs, loopback only, load average {load_average()}"
    return "; ".join([head, *versions])


def meshgate_version() -> str:
    """`git describe` of the checkout the benchmarks belong to."""
    repo = Path(__file__).resolve().parent.parent
    return tool_version(["git", "-C", str(repo), "describe", "--always", "--dirty"])


def run_in_workdir(prefix: str, keep: bool, run: Callable[[Path], int]) -> int:
    """Run a benchmark in a fresh work directory, removed afterwards unless `keep`.

    A `BenchError` (setup failed, a process died) becomes exit status 1 with its message.
    """
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        return run(workdir)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if keep:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
