"""Instructions per request: the configuration meshgate renders against hand-written HAProxy,
counted by valgrind's callgrind rather than timed.

Throughput on a small shared machine moves by 5-15 % between runs of the same configuration,
more than the differences worth finding. The instructions HAProxy executes per request barely
move (about 1 %), so this measures what a configuration costs HAProxy, one request at a time.
It is not a throughput figure: time per instruction differs between code paths, and a proxy
under load handles several requests per wake-up (see bench/tls.py and bench/throughput.py).

Each configuration runs as one HAProxy with one thread under callgrind, in turn, in front of
the same two nginx servers. After a warm-up, its counters are zeroed, a fixed number of
requests is sent one at a time over one connection (`h2load -c 1 -m 1`), and the count is
read. Health checks are left out of both (they cost per second, not per request, and a slow
process runs more of them per request).

  baseline              hand-written: `balance roundrobin` over the two servers, weights 90/10
  baseline +forwarded   the same, also sending what meshgate's gateways send instances by
                        default: X-Forwarded-For and -Proto, a client's X-Forwarded-Host removed
  meshgate              compiled and rendered by meshgate from a gateway with two weighted
                        routes (bench:v1 90, bench:v2 10), with the request log it streams for
                        latency statistics and flows (the client's address in each line); the
                        share of requests logged is set to what the agent sets at ~64,000
                        requests/s with its default budget (32/1024; `--logged`)
  meshgate --no-flows   the same request log without the client's address
  meshgate --no-latency the same without the request log

With `--vhosts N` (http1 only), also:

  meshgate, last of N   the same gateway (without the request log, as `meshgate --no-latency`)
                        as the default gateway of a port it shares with N-1 other gateways of
                        two weighted routes, each its own virtual host, all created before it:
                        the cost of a request to the last gateway of a busy shared port

Workloads: h2 (HTTPS, HTTP/2 negotiated through ALPN, the certificate of bench/tls.py), https1
(HTTPS, HTTP/1.1 keep-alive: bench/tls.py's keepalive) and http1 (plain HTTP/1.1 keep-alive).

Needs `valgrind` (Debian package) besides what the other benchmarks use.

    .venv/bin/python bench/instructions.py                   # 2 rounds, 2,000 requests each
    .venv/bin/python bench/instructions.py --requests 5000 --skip http1
    .venv/bin/python bench/instructions.py --skip h2 --skip https1 --vhosts 1000 --requests 500
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    LOOPBACK,
    BenchError,
    Nginx,
    Process,
    free_port,
    gateway_doc,
    machine_line,
    median,
    meshgate_version,
    run_in_workdir,
    service_doc,
    tool_version,
    wait_until,
)
from bench.tls import certificate

from meshgate.agent.files import write_files
from meshgate.compiler import CONFIG_FILE, DesiredState, compile_state, ir, render_files
from meshgate.model import Resource, validate_resource
from meshgate.stats.sampling import KEEP_VAR

WORKLOADS = ("h2", "https1", "http1")
# h2load's options and the URL scheme of each workload.
CLIENTS = {"h2": ([], "https"), "https1": (["--h1"], "https"), "http1": (["--h1"], "http")}
CONFIGS = (
    "baseline",
    "baseline +forwarded",
    "meshgate",
    "meshgate --no-flows",
    "meshgate --no-latency",
)
SAMPLED_KEEP = 32  # of 1024: the agent's budget of 2,000 lines/s at ~64,000 requests/s
WARM_UP_REQUESTS = 200


@dataclass(frozen=True)
class Setup:
    """What every configuration needs: the backends' ports and the certificate file."""

    workdir: Path
    v1: int
    v2: int
    pem: Path  # chain and key, for the hand-written configuration
    cert: str
    key: str


def slug(config: str) -> str:
    """A configuration's name as a file name: `meshgate --no-latency` -> `meshgate_nolatency`."""
    return config.replace(" ", "_").replace("-", "")


def baseline_config(setup: Setup, port: int, tls: bool, *, forwarded: bool = False) -> str:
    ssl = f" ssl crt {setup.pem} alpn h2,http/1.1 ssl-min-ver TLSv1.2" if tls else ""
    # The headers meshgate's gateways send instances by default, written the cheapest way.
    headers = (
        "    option forwardfor\n"
        f"    http-request set-header X-Forwarded-Proto {'https' if tls else 'http'}\n"
        "    http-request del-header X-Forwarded-Host\n"
        if forwarded
        else ""
    )
    return (
        "global\n"
        "    nbthread 1\n"
        "\n"
        "defaults\n"
        "    mode http\n"
        "    timeout connect 5s\n"
        "    timeout client 50s\n"
        "    timeout server 50s\n"
        "\n"
        "frontend fe\n"
        f"    bind {LOOPBACK}:{port}{ssl}\n"
        "    default_backend be\n"
        "\n"
        "backend be\n"
        "    balance roundrobin\n"
        f"{headers}"
        f"    server v1 {LOOPBACK}:{setup.v1} weight 90\n"
        f"    server v2 {LOOPBACK}:{setup.v2} weight 10\n"
    )


def meshgate_resources(setup: Setup, port: int, tls: bool, vhosts: int = 0) -> list[Resource]:
    routes = {"bench:v1": {"weight": 90}, "bench:v2": {"weight": 10}}
    gateway = gateway_doc("bench", port, routes)
    # Other gateways of the port first (in creation and in name order), the bench gateway,
    # which serves every other Host (h2load's is the address), last.
    others = [
        {**gateway_doc(f"a{n:05d}", port, routes), "virtual_hosts": [f"h{n}.bench.test"]}
        for n in range(vhosts - 1 if vhosts else 0)
    ]
    documents = [
        service_doc("bench:v1", setup.v1),
        service_doc("bench:v2", setup.v2),
        *others,
        gateway,
    ]
    if tls:
        gateway["tls"] = {"certificates": ["bench-cert"]}
        documents.append(
            {"kind": "certificate", "name": "bench-cert", "cert": setup.cert, "key": setup.key}
        )
    return [validate_resource(document) for document in documents]


def meshgate_config(
    setup: Setup,
    port: int,
    tls: bool,
    *,
    latency: bool,
    name: str,
    flows: bool = True,
    keep: int = SAMPLED_KEEP,
    vhosts: int = 0,
) -> str:
    """meshgate's files for the gateway, written under the work dir; the configuration's text
    with one thread and no health checks, and the share of requests logged fixed (`keep` of
    1024)."""
    run_dir = setup.workdir / slug(name)
    settings = ir.Settings(
        run_dir=str(run_dir),
        log_socket=str(run_dir / "log.sock") if latency else None,
        flows=flows and latency,
    )
    compiled = compile_state(
        DesiredState.of(meshgate_resources(setup, port, tls, vhosts)), settings
    )
    problems = [e for result in compiled.gateways.values() for e in result.errors]
    if problems:
        raise BenchError(f"meshgate rejected the bench gateway: {problems}")
    write_files(run_dir, render_files(compiled.dataplane))
    text = (run_dir / CONFIG_FILE).read_text()
    text = text.replace("global\n", "global\n    nbthread 1\n", 1)
    text = re.sub(r" check inter \d+ rise \d+ fall \d+", "", text)
    # Route servers follow the checker servers' checks (compiler.checks): none are left.
    text = re.sub(r" track \S+", "", text)
    if latency:
        logged_all = f"set-var {KEEP_VAR} int(1024)"
        if logged_all not in text:
            raise BenchError(f"no `{logged_all}` in meshgate's configuration")
        text = text.replace(logged_all, f"set-var {KEEP_VAR} int({keep})")
    return text


def count_instructions(
    args: argparse.Namespace, name: str, config: str, port: int, workload: str
) -> int:
    """Instructions HAProxy executed per request over `args.requests` requests, after a
    warm-up, counted by callgrind."""
    workdir: Path = args.workdir
    config_path = workdir / f"{slug(name)}.cfg"
    config_path.write_text(config)
    out = workdir / f"{slug(name)}.callgrind"
    for stale in workdir.glob(f"{out.name}*"):
        stale.unlink()
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    process = Process(
        "valgrind",
        [*command, args.haproxy, "-db", "-f", str(config_path)],
        workdir / f"{slug(name)}.log",
    )
    protocol, scheme = CLIENTS[workload]
    client = [args.h2load, *protocol, "-c", "1", "-m", "1", f"{scheme}://{LOOPBACK}:{port}/"]
    process.start()
    try:
        process.wait_listening(port, timeout=60)  # HAProxy starts slowly under callgrind
        run_h2load([*client, "-n", str(WARM_UP_REQUESTS)], WARM_UP_REQUESTS)
        callgrind_control("-z", process.pid)
        run_h2load([*client, "-n", str(args.requests)], args.requests)
        callgrind_control("-d", process.pid)
        return dumped_instructions(out) // args.requests
    finally:
        process.stop()


def run_h2load(argv: Sequence[str], requests: int) -> None:
    """Run h2load; BenchError unless every request was answered 2xx."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    statuses = re.search(r"status codes: (\d+) 2xx", done.stdout)
    if statuses is None:
        raise BenchError(f"no summary in h2load output:\n{done.stdout}{done.stderr}")
    if int(statuses.group(1)) != requests:
        raise BenchError(f"{requests} requests, {statuses.group(1)} answered 2xx:\n{done.stdout}")


def callgrind_control(option: str, pid: int | None) -> None:
    if pid is None:
        raise BenchError("valgrind is not running")
    result = subprocess.run(
        ["callgrind_control", option, str(pid)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"callgrind_control {option} failed: {result.stdout}{result.stderr}")


def dumped_instructions(out: Path) -> int:
    """The instruction count of the dump `callgrind_control -d` wrote (`<out>.1`), once it
    is written whole (the total comes last)."""
    dump = out.with_name(f"{out.name}.1")
    total = re.compile(rb"^(?:summary|totals): (\d+)", re.M)

    counts: list[int] = []

    def found() -> bool:
        match = total.search(dump.read_bytes()) if dump.exists() else None
        if match:
            counts.append(int(match.group(1)))
        return match is not None

    wait_until(found, f"the instruction total in {dump}", timeout=30)
    return counts[-1]


def measure(args: argparse.Namespace, workdir: Path) -> int:
    args.workdir = workdir
    for tool in ("valgrind", "callgrind_control", args.h2load, args.haproxy):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} not found (valgrind, nghttp2-client, haproxy: Debian)")
    chain, key = certificate("ec")
    pem = workdir / "bench.pem"
    pem.write_text(chain + key)
    pem.chmod(0o600)
    setup = Setup(workdir, free_port(), free_port(), pem, chain, key)
    workloads = [w for w in WORKLOADS if w not in args.skip]
    print(machine_line(tool_version([args.haproxy, "-v"]), tool_version(["valgrind", "--version"])))
    print(
        f"meshgate: {meshgate_version()}; {args.requests:,} requests per count, one at a time; "
        f"{args.logged}/1024 of requests logged; "
        f"{args.rounds} rounds; workloads: {', '.join(workloads)}"
    )
    counts: dict[tuple[str, str], list[int]] = {}
    configs = (*CONFIGS, vhosts_config(args.vhosts)) if args.vhosts else CONFIGS
    with Nginx(workdir / "nginx", {"v1": setup.v1, "v2": setup.v2}):
        for round_number in range(args.rounds):
            order = configs if round_number % 2 == 0 else tuple(reversed(configs))
            for workload in workloads:
                for name in order:
                    if name.startswith("meshgate, last") and workload != "http1":
                        continue  # the other gateways of the port would need TLS too
                    port = free_port()
                    tls = CLIENTS[workload][1] == "https"
                    config = config_text(setup, name, port, tls, args.logged, args.vhosts)
                    count = count_instructions(args, name, config, port, workload)
                    counts.setdefault((workload, name), []).append(count)
                    print(f"  round {round_number + 1}: {workload}/{name} {count:,} per request")
    print(report(counts, workloads, configs))
    return 0


def vhosts_config(vhosts: int) -> str:
    return f"meshgate, last of {vhosts:,}"


def config_text(setup: Setup, name: str, port: int, tls: bool, keep: int, vhosts: int = 0) -> str:
    makers: dict[str, Callable[[], str]] = {
        "baseline": lambda: baseline_config(setup, port, tls),
        "baseline +forwarded": lambda: baseline_config(setup, port, tls, forwarded=True),
        "meshgate": lambda: meshgate_config(setup, port, tls, latency=True, name=name, keep=keep),
        "meshgate --no-flows": lambda: meshgate_config(
            setup, port, tls, latency=True, name=name, flows=False, keep=keep
        ),
        "meshgate --no-latency": lambda: meshgate_config(
            setup, port, tls, latency=False, name=name
        ),
        vhosts_config(vhosts): lambda: meshgate_config(
            setup, port, tls, latency=False, name="meshgate vhosts", vhosts=vhosts
        ),
    }
    return makers[name]()


def report(
    counts: dict[tuple[str, str], list[int]],
    workloads: Sequence[str],
    configs: Sequence[str] = CONFIGS,
) -> str:
    lines = [
        "",
        "| workload | config | instructions/request (median) | per round | baseline/config "
        "| baseline +forwarded/config |",
        "|---|---|---:|---|---:|---:|",
    ]
    for workload in workloads:
        base = median([float(c) for c in counts[(workload, "baseline")]])
        alike = median([float(c) for c in counts[(workload, "baseline +forwarded")]])
        for name in configs:
            values = counts.get((workload, name))
            if not values:
                continue
            value = median([float(c) for c in values])
            lines.append(
                f"| {workload} | {name} | {value:,.0f} | {', '.join(f'{c:,}' for c in values)} "
                f"| {base / value:.3f} | {alike / value:.3f} |"
            )
    lines.append(
        "\nbaseline/config: the baseline's instructions per request over the configuration's"
        " (1.000: the same work; 0.9: 11 % more). baseline +forwarded/config: the same against"
        " the hand-written configuration that also sends meshgate's forwarded headers."
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per count (2000)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (2)")
    parser.add_argument("--skip", action="append", default=[], choices=WORKLOADS)
    parser.add_argument("--h2load", default="h2load", help="h2load binary (nghttp2-client)")
    parser.add_argument("--haproxy", default="haproxy", help="HAProxy binary")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument(
        "--vhosts", type=int, default=0, help="also the last gateway of a port of N (http1)"
    )
    parser.add_argument(
        "--logged",
        type=int,
        default=SAMPLED_KEEP,
        help=f"requests logged, in 1/1024ths ({SAMPLED_KEEP}; 1024: every request)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.logged <= 1024:
        parser.error("--logged must be between 1 and 1024")
    if args.requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds must be at least 1")
    return run_in_workdir("meshgate-bench-instructions-", args.keep, lambda w: measure(args, w))


if __name__ == "__main__":
    sys.exit(main())
