"""Real etcd members for tests: single members or clusters on loopback ports, optionally with
mutual TLS, each with a temporary data dir, stopped (and waited for) by the test."""

from __future__ import annotations

import base64
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.integration.haproxy_helpers import free_port
from tests.tlscerts import Authority

ETCD = shutil.which("etcd") or "etcd"

# Short election timeouts make a cluster elect a new leader in about a second, and bring
# etcd's minimum lease TTL down to one second (1.5 election timeouts, rounded up).
_TIMING = ["--heartbeat-interval", "50", "--election-timeout", "500"]
# A quiet watch hears the cluster's revision every second (etcd's default: every 10 minutes),
# so tests can see a quiet agent's applied revision keep up.
_TIMING += ["--experimental-watch-progress-notify-interval", "1s"]


@dataclass
class TlsFiles:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, directory: Path) -> TlsFiles:
        directory.mkdir(parents=True, exist_ok=True)
        authority = Authority("etcd test CA")
        server = authority.issue("localhost", "127.0.0.1")
        client = authority.issue("meshgate-client")
        files = cls(
            ca=directory / "ca.pem",
            server_cert=directory / "server.pem",
            server_key=directory / "server-key.pem",
            client_cert=directory / "client.pem",
            client_key=directory / "client-key.pem",
        )
        files.ca.write_text(authority.cert)
        files.server_cert.write_text(server.cert)
        files.server_key.write_text(server.key_text)
        files.client_cert.write_text(client.cert)
        files.client_key.write_text(client.key_text)
        return files


@dataclass
class Member:
    name: str
    data_dir: Path
    client_port: int
    peer_port: int
    tls: TlsFiles | None = None
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.data_dir.with_suffix(".log")

    @property
    def client_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self, initial_cluster: str, state: str = "new") -> None:
        command = [
            ETCD,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", initial_cluster,
            "--initial-cluster-state", state,
            "--initial-cluster-token", "meshgate-test",
            *_TIMING,
        ]  # fmt: skip
        if self.tls:
            command += [
                "--cert-file", str(self.tls.server_cert),
                "--key-file", str(self.tls.server_key),
                "--trusted-ca-file", str(self.tls.ca),
                "--client-cert-auth",
            ]  # fmt: skip
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Cluster:
    """`size` members on loopback. `url` is the `--store` URL naming all of them."""

    def __init__(self, root: Path, size: int = 1, *, tls: bool = False) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.tls = TlsFiles.make(root / "tls") if tls else None
        self.members = [
            Member(f"m{i}", root / f"m{i}", free_port(), free_port(), self.tls) for i in range(size)
        ]

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def url(self) -> str:
        scheme = "etcds" if self.tls else "etcd"
        return f"{scheme}://" + ",".join(m.address for m in self.members)

    def tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        return [
            "--store-ca", str(self.tls.ca),
            "--store-cert", str(self.tls.client_cert),
            "--store-key", str(self.tls.client_key),
        ]  # fmt: skip

    def start(self) -> None:
        for member in self.members:
            member.start(self.initial_cluster, "existing" if member.data_dir.exists() else "new")
        self.wait_ready()

    def restart(self, member: Member) -> None:
        member.start(self.initial_cluster, "existing")

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    def leader(self) -> Member:
        for member in self.members:
            if not member.running:
                continue
            status = self._post(member, "/v3/maintenance/status", {})
            if status and status.get("leader") == status["header"]["member_id"]:
                return member
        raise AssertionError("no leader")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until a write through every running member succeeds (a leader is elected)."""
        deadline = time.monotonic() + timeout
        for member in self.members:
            if not member.running:
                continue
            while self._post(member, "/v3/kv/put", {"key": "L21lc2hnYXRlLXRlc3Q="}) is None:
                if member.process is not None and member.process.poll() is not None:
                    raise AssertionError(f"etcd {member.name} exited: {member.log.read_text()}")
                assert time.monotonic() < deadline, f"etcd {member.name} not ready"
                time.sleep(0.05)

    def delete_prefix(self, prefix: str) -> None:
        """Every key under `prefix` deleted, so a lease of a finished test that expires later
        deletes nothing (it would move the revision under the next test's feet)."""
        start = prefix.encode()
        end = start[:-1] + bytes([start[-1] + 1])
        body = {
            "key": base64.b64encode(start).decode(),
            "range_end": base64.b64encode(end).decode(),
        }
        member = next(m for m in self.members if m.running)
        assert self._post(member, "/v3/kv/deleterange", body) is not None

    def _post(self, member: Member, path: str, body: dict[str, object]) -> dict | None:
        verify: ssl.SSLContext | bool = True
        if self.tls:
            verify = ssl.create_default_context(cafile=str(self.tls.ca))
            verify.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        try:
            response = httpx.post(member.client_url + path, json=body, timeout=2, verify=verify)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None


@contextmanager
def etcd_cluster(root: Path, size: int = 1, *, tls: bool = False) -> Iterator[Cluster]:
    cluster = Cluster(root, size, tls=tls)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
