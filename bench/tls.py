"""TLS: handshakes per second and requests per second over TLS, meshgate against hand-written
HAProxy with the same certificate.

Two configurations serve HTTPS on loopback, splitting traffic 90/10 between the same two nginx
servers ("v1", "v2"):

  meshgate   `meshgate up` with its defaults; certificate `bench-cert` and a gateway with
             `tls: {certificates: [bench-cert]}` and two weighted routes, bench:v1 90, bench:v2 10
  baseline   haproxy.cfg written by hand: `bind ... ssl crt bench.pem alpn h2,http/1.1`, one
             backend, `balance roundrobin`, server weights 90/10

Four workloads, each measured against both configurations in every round (alternating which
goes first), so that noise on the machine falls on both alike:

  handshake  full TLS handshakes: `openssl s_time -new -www /`, 8 processes at once, each
             connecting, negotiating a new session, sending one request and reading the answer,
             over and over
  resumed    wrk with `Connection: close`: a new TCP connection and TLS handshake per request,
             which wrk resumes from the previous session (as clients with a session cache do)
  keepalive  wrk over TLS with keep-alive, HTTP/1.1: requests per second once connected
  h2         h2load over TLS with HTTP/2 (ALPN), 32 connections, 10 streams each

HAProxy's own counters (`show info`: new TLS sessions, share resumed) are read around each run,
so the table shows what each workload really made HAProxy do.

The table shows medians over the rounds, the ratio of meshgate to the baseline measured in the
same invocation, and the CPU time per request of HAProxy (from /proc).

Exit status: 0 when every run was clean, 1 on any socket error or failed response (or a failed
setup), whether or not the target ratio is met.

    .venv/bin/python bench/tls.py                         # 3 rounds x 5 s per workload and config
    .venv/bin/python bench/tls.py --key rsa --rounds 5    # RSA 2048 instead of ECDSA P-256
    .venv/bin/python bench/tls.py --skip h2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import math
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    LOOPBACK,
    BenchError,
    Haproxy,
    MeshgateNode,
    Nginx,
    cpu_seconds,
    finish,
    free_port,
    machine_line,
    median,
    meshgate_version,
    parse_wrk,
    run_in_workdir,
    service_doc,
    stop_node,
    tool_version,
    wait_until,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from meshgate.haproxy import replies, transport

WORKLOADS = ("handshake", "resumed", "keepalive", "h2")
HOST = "bench.example.com"


# -- the certificate ----------------------------------------------------------------------------


def certificate(kind: str) -> tuple[str, str]:
    """(chain PEM, key PEM) of a self-signed certificate for HOST: ECDSA P-256 or RSA 2048."""
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


# -- load generators ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One load run: its rate and latencies, errors, and what HAProxy spent and saw meanwhile."""

    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    proxy_cpu_s: float
    control_cpu_s: float  # the meshgate process (agent, API, store); 0 for the baseline
    tls_sessions: int  # new TLS sessions HAProxy accepted on its frontends during the run
    reused_pct: float  # of those, the share resumed rather than fully negotiated
    output: str = ""

    def cpu_us_per_request(self, seconds: float) -> float:
        return seconds / self.requests * 1e6 if self.requests else math.nan


def wrk_command(args: argparse.Namespace, url: str, *, close: bool) -> list[str]:
    argv = [args.wrk, "-t1", f"-c{args.connections}", f"-d{round(args.duration)}s"]
    argv += ["--timeout=2s", "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    return [*argv, url]


def h2load_command(args: argparse.Namespace, url: str) -> list[str]:
    return [
        args.h2load, "-c", str(args.connections), "-m", "10",
        "-D", str(round(args.duration)), "--warm-up-time=0", url,
    ]  # fmt: skip


_S_TIME = re.compile(r"^(\d+) connections in [\d.]+s;", re.MULTILINE)


def s_time(args: argparse.Namespace, port: int) -> tuple[int, float, int, str]:
    """Full handshakes from `args.handshake_clients` concurrent `openssl s_time -new` runs:
    (connections, seconds, failed runs, output)."""
    argv = [
        args.openssl, "s_time", "-connect", f"{LOOPBACK}:{port}", "-new",
        "-time", str(round(args.duration)), "-www", "/",
    ]  # fmt: skip
    started = time.monotonic()
    processes = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(args.handshake_clients)
    ]
    outputs, failed = [], 0
    for process in processes:
        try:
            output, _ = process.communicate(timeout=args.duration + 30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        failed += process.returncode != 0
        outputs.append(output)
    seconds = time.monotonic() - started
    counts = [_S_TIME.search(o) for o in outputs]
    connections = sum(int(m.group(1)) for m in counts if m)
    return connections, seconds, failed, "\n".join(outputs)


_H2_RATE = re.compile(r"finished in [\d.]+\w+, ([\d.]+) req/s")
_H2_REQUESTS = re.compile(
    r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored"
)
_H2_TIME = r"([\d.]+)(us|ms|s)"
# "time for request:  min  max  mean  sd  +/- sd": the third is the mean.
_H2_LATENCY = re.compile(rf"time for request:\s+{_H2_TIME}\s+{_H2_TIME}\s+{_H2_TIME}")
_SCALE = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_h2load(output: str) -> tuple[int, float, float, int]:
    """(requests done, req/s, mean latency ms, failed + errored) from h2load's summary."""
    rate, counts = _H2_RATE.search(output), _H2_REQUESTS.search(output)
    if not rate or not counts:
        raise BenchError(f"no summary in h2load output:\n{output}")
    latency = _H2_LATENCY.search(output)
    mean = float(latency.group(5)) * _SCALE[latency.group(6)] if latency else math.nan
    return (
        int(counts.group(2)),
        float(rate.group(1)),
        mean,
        int(counts.group(4)) + int(counts.group(5)),
    )


# -- HAProxy's own TLS counters -----------------------------------------------------------------


def tls_counters(socket_path: str, via_master: bool) -> tuple[int, float]:
    """(frontend TLS sessions so far, % of them resumed), from `show info` of the worker."""
    command = "@1 show info" if via_master else "show info"
    reply = asyncio.run(transport.send(socket_path, command, timeout=5))
    info = replies.parse_info(reply)
    # CumSslConns counts frontend and backend sessions; the backends here are plain HTTP.
    return int(info.get("CumSslConns", "0")), float(info.get("SslFrontendSessionReuse_pct", "0"))


# -- the two configurations ---------------------------------------------------------------------


@dataclass
class Config:
    key: str
    port: int
    proxy_pids: Callable[[], list[int]] = list
    control_pids: Callable[[], list[int]] = list
    socket: str = ""
    via_master: bool = False
    runs: dict[str, list[Run]] = field(default_factory=lambda: {w: [] for w in WORKLOADS})

    def url(self) -> str:
        return f"https://{LOOPBACK}:{self.port}/"


def baseline_config(port: int, pem: Path, v1: int, v2: int, admin: Path) -> str:
    """The hand-written TLS 90/10 split, with a stats socket only to read its TLS counters."""
    return f"""\
global
    stats socket {admin} mode 600 level admin

defaults
    mode http
    timeout connect 5s
    timeout client 50s
    timeout server 50s

frontend fe
    bind {LOOPBACK}:{port} ssl crt {pem} alpn h2,http/1.1 ssl-min-ver TLSv1.2
    default_backend be

backend be
    balance roundrobin
    server v1 {LOOPBACK}:{v1} weight 90
    server v2 {LOOPBACK}:{v2} weight 10
"""


def meshgate_documents(port: int, cert: str, key: str, v1: int, v2: int) -> list[dict[str, object]]:
    return [
        {"kind": "certificate", "name": "bench-cert", "cert": cert, "key": key},
        service_doc("bench:v1", v1),
        service_doc("bench:v2", v2),
        {
            "kind": "gateway",
            "name": "bench-tls",
            "port": f"{port}/http",
            "bind": LOOPBACK,
            "tls": {"certificates": ["bench-cert"]},
            "routes": {"bench:v1": {"weight": 90}, "bench:v2": {"weight": 10}},
        },
    ]


def measure(config: Config, workload: str, args: argparse.Namespace) -> Run:
    pids, control = config.proxy_pids(), config.control_pids()
    cpu_before, control_before = cpu_seconds(pids), cpu_seconds(control)
    sessions_before, _ = tls_counters(config.socket, config.via_master)
    if workload == "handshake":
        connections, seconds, failed, output = s_time(args, config.port)
        proxy_cpu = cpu_seconds(pids) - cpu_before
        control_cpu = cpu_seconds(control) - control_before
        sessions_after, reused = tls_counters(config.socket, config.via_master)
        mean_ms = seconds * args.handshake_clients / connections * 1e3 if connections else math.nan
        if failed:
            print(f"    ERROR {config.key}/handshake: {failed} s_time runs failed\n{output}")
        return Run(
            requests=connections,
            rps=connections / seconds,
            p50_ms=mean_ms,
            p99_ms=math.nan,
            errors=failed,
            proxy_cpu_s=proxy_cpu,
            control_cpu_s=control_cpu,
            tls_sessions=sessions_after - sessions_before,
            reused_pct=reused,
            output=output,
        )
    argv = (
        h2load_command(args, config.url())
        if workload == "h2"
        else wrk_command(args, config.url(), close=workload == "resumed")
    )
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=args.duration + 30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"{argv[0]} failed: {exc}") from exc
    proxy_cpu = cpu_seconds(pids) - cpu_before
    control_cpu = cpu_seconds(control) - control_before
    sessions_after, reused = tls_counters(config.socket, config.via_master)
    if done.returncode != 0:
        raise BenchError(f"{argv[0]} exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    if workload == "h2":
        requests, rps, mean_ms, errors = parse_h2load(done.stdout)
        p50, p99 = mean_ms, math.nan
    else:
        result = parse_wrk(done.stdout)
        requests, rps, errors = result.requests, result.requests_per_sec, result.errors
        p50, p99 = result.p50_ms, result.p99_ms
    run = Run(
        requests=requests,
        rps=rps,
        p50_ms=p50,
        p99_ms=p99,
        errors=errors,
        proxy_cpu_s=proxy_cpu,
        control_cpu_s=control_cpu,
        tls_sessions=sessions_after - sessions_before,
        reused_pct=reused,
        output=done.stdout,
    )
    if errors:
        print(f"    ERROR {config.key}/{workload}: {errors} errors\n{done.stdout}", flush=True)
    return run


# -- the report ---------------------------------------------------------------------------------


def ratio(value: float, base: float) -> float:
    return value / base if base > 0 else math.nan


def report(configs: Sequence[Config], workloads: Sequence[str], target: float) -> list[str]:
    meshgate, baseline = configs[:2]
    verdicts = []
    print()
    print(
        "| workload | config | median req/s | p50 ms | p99 ms | vs baseline | per-round ratios "
        "| HAProxy CPU µs/req | meshgate CPU µs/req | TLS sessions/req | resumed |"
    )
    print("|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for workload in workloads:
        base_runs = baseline.runs[workload]
        for config in configs:
            runs = config.runs[workload]
            rate = median([r.rps for r in runs])
            paired = ", ".join(
                f"{ratio(r.rps, b.rps):.3f}" for r, b in zip(runs, base_runs, strict=True)
            )
            sessions = median([r.tls_sessions / r.requests for r in runs if r.requests])
            print(
                f"| {workload} | {config.key} | {rate:,.0f} "
                f"| {median([r.p50_ms for r in runs]):.2f} "
                f"| {median([r.p99_ms for r in runs]):.2f} "
                f"| {ratio(rate, median([b.rps for b in base_runs])):.3f} | {paired} "
                f"| {median([r.cpu_us_per_request(r.proxy_cpu_s) for r in runs]):.1f} "
                f"| {median([r.cpu_us_per_request(r.control_cpu_s) for r in runs]):.1f} "
                f"| {sessions:.2f} | {median([r.reused_pct for r in runs]):.0f}% |"
            )
        runs = meshgate.runs[workload]
        value = ratio(median([r.rps for r in runs]), median([b.rps for b in base_runs]))
        paired_median = median([ratio(r.rps, b.rps) for r, b in zip(runs, base_runs, strict=True)])
        verdicts.append(
            f"{workload}: meshgate/baseline req/s = {value:.3f} (ratio of medians over "
            f"{len(base_runs)} rounds; median of per-round ratios {paired_median:.3f}); "
            f"target >= {target:.2f}: {'met' if value >= target else 'NOT met'}"
        )
    print(
        "\nhandshake and h2 rows: p50 is the mean time per request (neither tool prints"
        "\npercentiles);"
        "\n'TLS sessions/req' is HAProxy's count of new TLS sessions over requests served."
    )
    print()
    for line in verdicts:
        print(line)
    return verdicts


# -- running it ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument("--connections", type=int, default=32, help="client connections (32)")
    parser.add_argument("--key", choices=("ec", "rsa"), default="ec", help="certificate key (ec)")
    parser.add_argument(
        "--skip", action="append", default=[], choices=WORKLOADS, help="leave out a workload"
    )
    parser.add_argument(
        "--no-latency",
        action="store_true",
        help="also measure a node started with --no-latency (no request log): routing alone",
    )
    parser.add_argument("--target", type=float, default=0.95, help="meshgate/baseline goal")
    parser.add_argument("--haproxy", default="haproxy", help="HAProxy binary for the baseline")
    parser.add_argument("--nginx", default="/usr/sbin/nginx", help="nginx binary")
    parser.add_argument("--wrk", default="wrk", help="wrk binary")
    parser.add_argument("--h2load", default="h2load", help="h2load binary (nghttp2-client)")
    parser.add_argument("--openssl", default="openssl", help="openssl binary (s_time)")
    parser.add_argument(
        "--handshake-clients", type=int, default=8, help="concurrent s_time processes (8)"
    )
    parser.add_argument("--meshgate", default=None, help="meshgate executable (the venv's)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, configs)")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be between 1 and 20")
    if not 1 <= args.duration <= 60:
        parser.error("--duration must be between 1 and 60 seconds")
    if not 1 <= args.connections <= 1000:
        parser.error("--connections must be between 1 and 1000")
    if not 1 <= args.handshake_clients <= 64:
        parser.error("--handshake-clients must be between 1 and 64")
    if "h2" not in args.skip and shutil.which(args.h2load) is None:
        parser.error(f"{args.h2load} not found (Debian: nghttp2-client), or use --skip h2")
    return args


def https_ok(url: str) -> bool:
    done = subprocess.run(
        ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    return done.stdout == "200"


def run(args: argparse.Namespace, workdir: Path) -> int:
    workloads = [w for w in WORKLOADS if w not in args.skip]
    v1, v2 = free_port(), free_port()
    cert, key = certificate(args.key)
    pem = workdir / "bench.pem"
    pem.write_text(cert + key)
    pem.chmod(0o600)
    meshgate = Config("meshgate", free_port(), via_master=True)
    baseline = Config("baseline", free_port(), socket=str(workdir / "baseline" / "admin.sock"))
    print(
        machine_line(
            tool_version([args.haproxy, "-v"]),
            tool_version([args.wrk, "--version"]),
            tool_version([args.h2load, "--version"]) if "h2" in workloads else "no h2load",
        )
    )
    print(
        f"meshgate: {meshgate_version()}"
        f"; certificate: {'RSA 2048' if args.key == 'rsa' else 'ECDSA P-256'}, self-signed"
    )
    print(
        f"load: {args.connections} connections, {args.duration:g} s per run, {args.rounds} rounds;"
        f" workloads: {', '.join(workloads)}"
    )
    clean = True
    with contextlib.ExitStack() as stack:
        stack.enter_context(Nginx(workdir / "nginx", {"v1": v1, "v2": v2}, binary=args.nginx))
        cfg = workdir / "baseline" / "haproxy.cfg"
        cfg.parent.mkdir(parents=True)
        cfg.write_text(baseline_config(baseline.port, pem, v1, v2, Path(baseline.socket)))
        plain = stack.enter_context(Haproxy(cfg, baseline.port, binary=args.haproxy))
        baseline.proxy_pids = plain.pids

        configs = [meshgate, baseline]
        if args.no_latency:
            configs.append(Config("meshgate --no-latency", free_port(), via_master=True))
        for config, extra in zip((meshgate, *configs[2:]), ([], ["--no-latency"]), strict=False):
            data_dir = workdir / config.key.replace(" ", "")
            node = MeshgateNode(data_dir, *extra, binary=args.meshgate)
            node.start()
            stack.callback(stop_node, node, [config.port])
            node.apply(meshgate_documents(config.port, cert, key, v1, v2))
            node.wait_applied("gateways", "bench-tls")
            config.proxy_pids = node.haproxy_pids
            config.control_pids = node.node_pids
            config.socket = str(data_dir / "run" / "master.sock")

        for config in configs:
            wait_until(functools.partial(https_ok, config.url()), f"HTTPS 200 from {config.key}")
        for round_number in range(1, args.rounds + 1):
            # Alternate the order, so no configuration always runs on a warmer (or busier)
            # machine.
            order = configs if round_number % 2 else configs[::-1]
            line = []
            for workload in workloads:
                for config in order:
                    sample = measure(config, workload, args)
                    clean &= sample.errors == 0
                    config.runs[workload].append(sample)
                    line.append(f"{workload}/{config.key} {sample.rps:,.0f}")
            print(f"  round {round_number}: " + ", ".join(line) + " req/s", flush=True)

    report(configs, workloads, args.target)
    return finish(clean, "some runs had socket errors or failed responses")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_in_workdir("meshgate-bench-tls-", args.keep, lambda workdir: run(args, workdir))


if __name__ == "__main__":
    sys.exit(main())
