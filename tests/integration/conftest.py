"""Fixtures that run the real thing: meshgate nodes, HAProxy, demo backends, all on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import httpx
import pytest

from tests.integration.haproxy_helpers import free_port

if TYPE_CHECKING:
    from tests.integration.discovery_helpers import Demos

pytestmark = pytest.mark.integration

if shutil.which("haproxy") is None:  # pragma: no cover - CI installs it
    pytest.skip("haproxy is not installed", allow_module_level=True)


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port}")


class Background:
    """Work in a daemon thread for the length of a `with` block: `_run` loops while `running()`,
    which also ends after `limit_s`, so load stops by itself if a test forgets to."""

    limit_s = 60.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._deadline = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._deadline

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._deadline = time.monotonic() + self.limit_s
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


class LineServer(Background):
    """A TCP server on loopback: for each connection, reads what the client sends (unless not
    `read`: an agent is sent nothing and speaks first), counts it in `received`, answers
    `reply(what it read)` and closes. An empty answer closes without a byte."""

    def __init__(self, reply: Callable[[bytes], bytes], *, read: bool = True) -> None:
        super().__init__()
        self.received = 0
        self._reply, self._read = reply, read
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])

    def _run(self) -> None:
        with self._listener:
            while self.running():
                try:
                    connection, _ = self._listener.accept()
                except TimeoutError:
                    continue
                with connection:
                    connection.settimeout(1)
                    try:
                        received = connection.recv(4096) if self._read else b""
                        self.received += bool(received)
                        connection.sendall(self._reply(received))
                    except OSError:
                        pass


class Backends:
    """Demo backend processes, each answering with its name."""

    def __init__(self) -> None:
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, name: str, port: int | None = None) -> int:
        port = port or free_port()
        self.processes[port] = subprocess.Popen(
            [sys.executable, "-m", "meshgate.demo", "--name", name, "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(port)
        return port

    def stop(self, port: int) -> None:
        process = self.processes.pop(port)
        process.kill()
        process.wait()

    def stop_all(self) -> None:
        for port in list(self.processes):
            self.stop(port)


@pytest.fixture
def backends() -> Iterator[Backends]:
    pool = Backends()
    yield pool
    pool.stop_all()


@pytest.fixture
def demos() -> Iterator[Demos]:
    """Demo backends started with any options (`Demos.start`), killed at the end of the test."""
    # Imported here: discovery_helpers imports this module.
    from tests.integration.discovery_helpers import Demos

    pool = Demos()
    yield pool
    pool.stop_all()


class Node:
    """A `meshgate up` process with its own data dir and API port."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.api_port = free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        self.api = httpx.Client(base_url=self.url, timeout=10)

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.data_dir / "node.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "meshgate",
                    "up",
                    "--data-dir",
                    str(self.data_dir),
                    "--api",
                    f"127.0.0.1:{self.api_port}",
                    *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"meshgate exited:\n{self.log()}")
            try:
                if self.api.get("/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"meshgate did not become healthy:\n{self.log()}")

    def close(self) -> None:
        self.stop()
        self.api.close()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log(self) -> str:
        path = self.data_dir / "node.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    # -- API helpers -------------------------------------------------------------------------

    def apply(self, *documents: dict[str, Any]) -> list[dict[str, Any]]:
        response = self.api.post("/api/v1/apply", json=list(documents))
        assert response.status_code == 200, response.text
        applied: list[dict[str, Any]] = response.json()["applied"]
        for item in applied:
            self.wait_applied(item["kind"], item["name"], item.get("namespace", "default"))
        return applied

    def get(self, kind: str, name: str, namespace: str = "default") -> dict[str, Any]:
        response = self.api.get(f"/api/v1/{kind}/{quote(name)}", params={"namespace": namespace})
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def wait_applied(
        self, kind: str, name: str, namespace: str = "default", timeout: float = 10
    ) -> dict[str, Any]:
        plural = kind if kind.endswith("s") else kind + "s"
        deadline = time.monotonic() + timeout
        while True:
            resource = self.get(plural, name, namespace)
            if resource["status"].get("applied"):
                return resource
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{plural}/{name} not applied: {resource['status']}\n{self.log()}"
                )
            time.sleep(0.05)

    def delete(self, kind: str, name: str, namespace: str = "default") -> None:
        response = self.api.delete(f"/api/v1/{kind}/{quote(name)}", params={"namespace": namespace})
        assert response.status_code in (204, 404), response.text

    def definitions(self) -> dict[tuple[str, str], Any]:
        """What a user's change could alter, in the default namespace: each gateway's, service's
        and certificate's version, and each service's instances (without their health). The
        store's revision is no measure of that: the node's own status records move it too."""
        found: dict[tuple[str, str], Any] = {}
        for kind in ("gateways", "services", "certificates"):
            for item in self.api.get(f"/api/v1/{kind}").json()["items"]:
                found[kind, item["name"]] = item["version"]
                if kind == "services":
                    listed = self.api.get(f"/api/v1/services/{quote(item['name'])}/instances")
                    instances = [{**i, "status": None} for i in listed.json()["items"]]
                    found["instances", item["name"]] = sorted(instances, key=str)
        return found

    def haproxy_pids(self) -> tuple[int, list[int]]:
        """(master pid, current worker pids), read from the master socket."""
        import asyncio

        from meshgate.haproxy.runtime import RuntimeClient

        run = self.data_dir.resolve() / "run"
        client = RuntimeClient(str(run / "admin.sock"), str(run / "master.sock"))
        proc = asyncio.run(client.proc())
        return proc.master_pid, [w.pid for w in proc.workers]


def quote(name: str) -> str:
    from urllib.parse import quote as url_quote

    return url_quote(name, safe="")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    running = Node(tmp_path_factory.mktemp("node"))
    try:
        running.start()
        yield running
    finally:
        running.close()


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def factory(*extra: str, data_dir: Path | None = None) -> Node:
        created = Node(data_dir or tmp_path / f"node{len(nodes)}", *extra)
        nodes.append(created)
        created.start()
        return created

    yield factory
    for created in nodes:
        created.close()


def count_served(url: str, requests: int, **kwargs: Any) -> dict[str, int]:
    """Send `requests` GETs (fresh connection each, so every request is routed anew)."""
    counts: dict[str, int] = {}
    for _ in range(requests):
        response = httpx.get(url, timeout=5, **kwargs)
        key = response.text.strip() if response.status_code == 200 else str(response.status_code)
        counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in (
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(variable, raising=False)
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
