"""Helpers for the discovery, health and isolation tests: demo backends on any loopback address
(or inside a network namespace), a dnsmasq on loopback, and readings of a node's state."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.integration.conftest import Node, free_port, wait_for_port


class Demos:
    """Demo backends started with any options; stopped (killed) at the end of the test."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        name: str,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        fail_health_file: Path | None = None,
        netns: str | None = None,
        options: tuple[str, ...] = (),
    ) -> tuple[int, subprocess.Popen[bytes]]:
        """`options` are more of the demo backend's flags (`--error-ratio`, `--delay-ms`)."""
        port = port or free_port()
        argv = [sys.executable, "-m", "meshgate.demo", "--name", name, "--host", host]
        argv += ["--port", str(port), *options]
        if fail_health_file is not None:
            argv += ["--fail-health-file", str(fail_health_file)]
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes.append(process)
        if netns is None:
            wait_for_port(port, host)
        return port, process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


class Dnsmasq:
    """A dnsmasq answering on 127.0.0.1:`port` from a hosts file and SRV records, and nothing
    else: it forwards nowhere, and names under mesh.test it does not know are NXDOMAIN."""

    DOMAIN = "mesh.test"

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        self.binary = binary
        self.port = free_udp_port()
        self.hosts = workdir / "dns-hosts"
        self.hosts.write_text("")
        self.log = workdir / "dnsmasq.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.srv: list[str] = []

    def start(self, srv: Sequence[str] = ()) -> None:
        """`srv`: dnsmasq --srv-host values, NAME,TARGET,PORT,PRIORITY,WEIGHT."""
        self.srv = list(srv)
        argv = [
            self.binary, "--keep-in-foreground", f"--port={self.port}",
            "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
            f"--addn-hosts={self.hosts}", "--conf-file=/dev/null", "--user=root",
            "--pid-file=", f"--local=/{self.DOMAIN}/", "--local-ttl=0", "--log-facility=-",
            *(f"--srv-host={record}" for record in self.srv),
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 5
        while "started, version" not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dnsmasq did not start:\n{self.log.read_text()}")
            time.sleep(0.02)

    def set_hosts(self, entries: Sequence[tuple[str, str]]) -> None:
        """Replace the A/AAAA records, (address, name) each, and tell dnsmasq (SIGHUP)."""
        self.hosts.write_text("".join(f"{address} {name}\n" for address, name in entries))
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    def restart(self, srv: Sequence[str]) -> None:
        """SRV records come from the command line, so changing them means a restart."""
        self.stop()
        self.start(srv)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=5)
        self.process = None


def free_udp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq listens on both)."""
    import socket

    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port for dnsmasq")


def instances_url(service: str) -> str:
    return f"/api/v1/services/{quote(service, safe='')}/instances"


def register(node: Node, service: str, namespace: str = "default", **body: Any) -> Any:
    response = node.api.post(instances_url(service), params={"namespace": namespace}, json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


def instance_status(node: Node, service: str, namespace: str = "default") -> dict[str, str]:
    """id -> status as the service's status reports it."""
    reported = node.get("services", service, namespace)["status"].get("instances") or []
    return {i["id"]: i["status"] for i in reported}


def reloads(node: Node) -> float:
    text = node.api.get("/metrics").text
    match = re.search(r"^meshgate_haproxy_reloads_total (\S+)$", text, re.MULTILINE)
    assert match, "no reload counter in /metrics"
    return float(match.group(1))
