"""`meshgate server` and `meshgate agent` processes on a test's etcd, each with its own log."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from tests.etcd_cluster import Cluster
from tests.integration.conftest import Background
from tests.integration.haproxy_helpers import free_port


class Meshgate:
    """One meshgate process; `args` after the command name."""

    def __init__(self, log: Path, *args: str) -> None:
        self.args = args
        self.log_path = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "meshgate", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def run(self, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run to completion (for commands expected to fail)."""
        return subprocess.run(
            [sys.executable, "-m", "meshgate", *self.args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


class Server(Meshgate):
    def __init__(self, root: Path, store: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        api = f"127.0.0.1:{self.port}"
        super().__init__(root / f"server-{self.port}.log", "server", *store, "--api", api)
        self.api = httpx.Client(base_url=self.url, timeout=10)

    def start(self) -> None:
        super().start()
        wait_for(lambda: self.api.get("/healthz").status_code == 200, 20, self.log)

    def apply(self, *documents: dict[str, Any]) -> list[dict[str, Any]]:
        response = self.api.post("/api/v1/apply", json=list(documents))
        assert response.status_code == 200, response.text
        applied: list[dict[str, Any]] = response.json()["applied"]
        return applied

    def get(self, kind: str, name: str) -> dict[str, Any]:
        response = self.api.get(f"/api/v1/{kind}/{quote(name, safe='')}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def nodes(self) -> dict[str, dict[str, Any]]:
        response = self.api.get("/api/v1/nodes")
        assert response.status_code == 200, response.text
        return {n["name"]: n for n in response.json()["items"]}

    def wait_applied(self, kind: str, name: str, nodes: set[str], timeout: float = 20) -> None:
        def applied() -> bool:
            status = self.get(kind, name)["status"]
            return bool(status.get("applied")) and set(status.get("nodes", {})) == nodes

        wait_for(applied, timeout, lambda: f"{self.get(kind, name)['status']}")


class Agent(Meshgate):
    def __init__(self, root: Path, store: list[str], name: str, address: str, *extra: str) -> None:
        self.name = name
        self.address = address
        self.data_dir = root / f"agent-{name}"
        super().__init__(
            root / f"agent-{name}.log",
            "agent", *store, "--node", name, "--address", address,
            "--data-dir", str(self.data_dir), *extra,
        )  # fmt: skip


def store_args(cluster: Cluster, prefix: str) -> list[str]:
    return ["--store", cluster.url, "--store-prefix", prefix, *cluster.tls_args()]


def wait_for(
    predicate: Callable[[], bool], timeout: float, explain: Callable[[], str] = lambda: ""
) -> float:
    """Poll until `predicate` holds (errors count as not yet); the seconds it took."""
    start = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - start
        except (httpx.HTTPError, OSError, KeyError, AssertionError):
            pass
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"condition not met in {timeout} s: {explain()}")
        time.sleep(0.1)


def served_by(url: str) -> str:
    response = httpx.get(url, timeout=3)
    return response.text.strip() if response.status_code == 200 else str(response.status_code)


class Traffic(Background):
    """Requests to `urls` in turn, each on a fresh connection, while the block runs: counts of
    answers by body, and of failures."""

    def __init__(self, *urls: str) -> None:
        super().__init__()
        self.urls = urls
        self.answers: dict[str, int] = {}
        self.failures: list[str] = []

    def _run(self) -> None:
        with httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while self.running():
                for url in self.urls:
                    try:
                        response = client.get(url)
                    except httpx.HTTPError as exc:
                        self.failures.append(f"{url}: {exc!r}")
                        continue
                    if response.status_code != 200:
                        self.failures.append(f"{url}: HTTP {response.status_code}")
                    body = response.text.strip()
                    self.answers[body] = self.answers.get(body, 0) + 1
                time.sleep(0.01)

    @property
    def total(self) -> int:
        return sum(self.answers.values()) + len(self.failures)
