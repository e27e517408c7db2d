"""Helpers for the tests that run a real HAProxy: free ports, a small config, process checks.

The "backends" are HAProxy frontends answering with `http-request return`, in the same
configuration: no extra processes, and each answers with its own name.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from meshgate.haproxy import HaproxySupervisor, RuntimeClient

HAPROXY = shutil.which("haproxy") or shutil.which("/usr/sbin/haproxy")

needs_haproxy = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")


_LISTEN_PORTS = range(20_000, 32_000)


def free_port() -> int:
    """A port nothing listens on, below the kernel's ephemeral range (32768-60999 here).

    Port 0 would hand out an ephemeral port, which the client side of any connection on the
    machine may take a moment later, so a listener could then fail to bind it.
    """
    for _ in range(200):
        port = random.choice(_LISTEN_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


@dataclass
class Layout:
    """Ports and paths of one test HAProxy."""

    run_dir: Path
    front_port: int = field(default_factory=free_port)
    echo_ports: dict[str, int] = field(default_factory=dict)

    @property
    def routes_map(self) -> Path:
        return self.run_dir / "routes.map"

    @property
    def config_path(self) -> Path:
        return self.run_dir / "haproxy.cfg"

    def echo_port(self, name: str) -> int:
        if name not in self.echo_ports:
            self.echo_ports[name] = free_port()
        return self.echo_ports[name]


def render_config(layout: Layout, *, echoes: tuple[str, ...] = ("a", "b"), extra: str = "") -> str:
    """The global section follows the compiler's conventions (admin socket with expose-fd,
    server-state-file, hard-stop-after, load-server-state-from-file)."""
    run = layout.run_dir
    lines = [
        "global",
        f"    stats socket {run}/admin.sock mode 600 level admin expose-fd listeners",
        f"    server-state-file {run}/server-state",
        "    hard-stop-after 30s",
        # Hitless reloads for keep-alive clients (measured on 2.6.12, see
        # test_reload_is_hitless): without a grace period about one reload in ten cut a
        # keep-alive request whose response had just been sent when the old worker stopped,
        # even with idle-close-on-response. With `grace`, SIGUSR1 only sets `stopping` and
        # the old worker keeps serving for 100 ms: responses meanwhile say
        # "connection: close" (rule below), so clients leave it before its proxies stop.
        # The listeners are shared with the new worker (master-worker passes the sockets),
        # so the manual's warning about `grace` and reloads does not apply here.
        "    grace 100ms",
        "",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 5s",
        "    timeout server 5s",
        # Bounds how long an old worker waits for idle keep-alive connections, including the
        # pooled server-side ones between these proxies and the echo frontends.
        "    timeout http-keep-alive 1s",
        "    load-server-state-from-file global",
        "",
        "frontend fe_main",
        f"    bind 127.0.0.1:{layout.front_port}",
        # On soft-stop an old worker closes idle keep-alive connections; a client that sends
        # on one at that moment gets a reset. With this option the old worker waits for the
        # next request and answers it with "connection: close" instead (2.6+). Not on the
        # echo frontends: their idle clients are HAProxy's own pooled server connections,
        # which never send again, so the old worker would linger until `timeout client`.
        "    option idle-close-on-response",
        "    http-after-response set-header connection close if { stopping }",
        f"    use_backend %[path,map_beg({layout.routes_map},be_static)]",
        "",
        "backend be_static",
        "    balance roundrobin",
        f"    server static 127.0.0.1:{layout.echo_port('static')}",
        "",
        "backend be_dyn",
        "    balance roundrobin",
        "",
    ]
    for name in ("static", *echoes):
        lines += [
            f"frontend echo_{name}",
            f"    bind 127.0.0.1:{layout.echo_port(name)}",
            f'    http-request return status 200 content-type text/plain string "{name}"',
            "",
        ]
    return "\n".join(lines) + extra + "\n"


def write_config(layout: Layout, text: str, path: Path | None = None) -> Path:
    target = path or layout.config_path
    if not layout.routes_map.exists():
        layout.routes_map.write_text("/dyn be_dyn\n")
    target.write_text(text)
    return target


@asynccontextmanager
async def running_haproxy(
    run_dir: Path,
) -> AsyncIterator[tuple[HaproxySupervisor, RuntimeClient, Layout]]:
    assert HAPROXY is not None
    layout = Layout(run_dir)
    config = write_config(layout, render_config(layout))
    supervisor = HaproxySupervisor(binary=HAPROXY, run_dir=run_dir)
    await supervisor.start(config)
    runtime = RuntimeClient(str(run_dir / "admin.sock"), str(run_dir / "master.sock"))
    try:
        yield supervisor, runtime, layout
    finally:
        await supervisor.stop()


def http_get(port: int, path: str = "/", timeout: float = 2.0) -> tuple[int, str]:
    """One request on a fresh connection (`Connection: close`): (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        request = f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, body.decode()


def process_alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) does not count."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    state = next((line for line in status.splitlines() if line.startswith("State:")), "")
    return "Z" not in state.split()[1:2]


def haproxy_pids_under(run_dir: Path) -> list[int]:
    """Live HAProxy processes whose command line names this run dir."""
    marker = str(run_dir).encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if b"haproxy" in cmdline and marker in cmdline and process_alive(int(entry)):
            pids.append(int(entry))
    return pids
