"""Rollouts, A/B comparison and anomalies against real HAProxy, real backends and a real
client: a canary moves on while healthy, rolls back when it fails, slows down or gets too
little traffic; users pause, resume and abort; a restart resumes at the same step."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Background, Node, count_served, quote
from tests.integration.discovery_helpers import Demos
from tests.integration.haproxy_helpers import free_port

pytestmark = pytest.mark.integration


class Load(Background):
    """GETs to `url` at about `rate` a second; `status_share` of them ask for a 500."""

    def __init__(self, url: str, rate: float = 150.0, status_share: float = 0.0) -> None:
        super().__init__()
        self.url, self.rate, self.status_share = url, rate, status_share
        self.sent = 0

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while self.running():
                failing = self.status_share and (self.sent % 100) < self.status_share * 100
                with contextlib.suppress(httpx.HTTPError):
                    client.get(self.url, params={"status": "500"} if failing else None)
                self.sent += 1
                time.sleep(1 / self.rate)


@pytest.fixture(scope="module")
def rollout_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    running = Node(tmp_path_factory.mktemp("rollouts"), "--anomaly-window", "1s")
    try:
        running.start()
        yield running
    finally:
        running.close()


def canary_setup(
    node: Node, demos: Demos, name: str, canary_options: tuple[str, ...] = ()
) -> tuple[int, str]:
    """Services NAME:1.0 and NAME:1.1 (the canary, with `canary_options`) behind gateway NAME
    on a port of its own, all traffic on 1.0. Returns the port and the canary's name."""
    stable_port, _ = demos.start(f"{name} 1.0")
    canary_port, _ = demos.start(f"{name} 1.1", options=canary_options)
    port = free_port()
    node.apply(
        {"kind": "service", "name": f"{name}:1.0", "instances": [f"127.0.0.1:{stable_port}"]},
        {"kind": "service", "name": f"{name}:1.1", "instances": [f"127.0.0.1:{canary_port}"]},
        {
            "name": name,
            "port": f"{port}/http",
            "routes": {f"{name}:1.0": {"weight": 100}, f"{name}:1.1": {"weight": 0}},
        },
    )
    return port, f"{name}:1.1"


def rollout(name: str, canary: str, **changes: Any) -> dict[str, Any]:
    return {
        "kind": "rollout",
        "name": name,
        "gateway": name,
        "canary": canary,
        "steps": ["20%", "60%", "100%"],
        "interval": "2s",
        "analysis": {"min_requests": 20, "success_rate": "95%"},
        **changes,
    }


def wait_status(
    node: Node, name: str, done: Callable[[dict[str, Any]], bool], timeout: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = node.get("rollouts", name)["status"]
        if done(status):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"rollout {name}: {status}\n{node.log()}")
        time.sleep(0.1)


def weights(node: Node, gateway: str) -> dict[str, int]:
    routes = node.get("gateways", gateway)["routes"]
    return {name: route.get("weight") for name, route in routes.items()}


def cli(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshgate", "--server", node.url, *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_healthy_canary_reaches_100_percent_step_by_step(rollout_node: Node, demos: Demos) -> None:
    port, canary = canary_setup(rollout_node, demos, "healthy")
    with Load(f"http://127.0.0.1:{port}/"):
        rollout_node.apply(rollout("healthy", canary))
        status = wait_status(rollout_node, "healthy", lambda s: s.get("phase") == "Succeeded")
    assert [a["verdict"] for a in status["analyses"]] == ["passed", "passed", "passed"]
    assert [a["weight"] for a in status["analyses"]] == [20, 60, 100]
    assert all(a["requests"] >= 20 for a in status["analyses"])
    assert weights(rollout_node, "healthy") == {"healthy:1.0": 0, canary: 100}
    assert count_served(f"http://127.0.0.1:{port}/", 20) == {"healthy 1.1": 20}
    listed = cli(rollout_node, "get", "rollouts")
    assert "healthy" in listed.stdout and "Succeeded" in listed.stdout, listed.stderr


def test_canary_answering_5xx_is_rolled_back_within_one_interval(
    rollout_node: Node, demos: Demos
) -> None:
    port, canary = canary_setup(rollout_node, demos, "failing", ("--error-ratio", "0.5"))
    with Load(f"http://127.0.0.1:{port}/"):
        rollout_node.apply(rollout("failing", canary))
        started = time.monotonic()
        status = wait_status(rollout_node, "failing", lambda s: s.get("phase") == "Failed")
        took = time.monotonic() - started
    # One interval (2 s), plus a poll of the controller and of the stats.
    assert took < 2 + 2.5, took
    assert "success rate" in status["reason"], status
    assert status["step"] == 0 and status["analyses"][-1]["verdict"] == "failed"
    assert weights(rollout_node, "failing") == {"failing:1.0": 100, canary: 0}
    assert count_served(f"http://127.0.0.1:{port}/", 20) == {"failing 1.0": 20}


def test_slow_canary_is_rolled_back_on_p99(rollout_node: Node, demos: Demos) -> None:
    port, canary = canary_setup(rollout_node, demos, "slow", ("--delay-ms", "150"))
    slow = rollout("slow", canary, analysis={"min_requests": 10, "max_p99": "60ms"})
    with Load(f"http://127.0.0.1:{port}/"):
        rollout_node.apply(slow)
        status = wait_status(rollout_node, "slow", lambda s: s.get("phase") == "Failed")
    assert "p99 latency" in status["reason"], status
    assert status["analyses"][-1]["p99_ms"] >= 150


def test_too_little_traffic_waits_three_intervals_then_fails(
    rollout_node: Node, demos: Demos
) -> None:
    _, canary = canary_setup(rollout_node, demos, "quiet")
    rollout_node.apply(rollout("quiet", canary, interval="1s"))
    status = wait_status(rollout_node, "quiet", lambda s: s.get("phase") == "Failed", 15)
    assert [a["verdict"] for a in status["analyses"]] == ["waiting"] * 3 + ["failed"]
    assert "too little traffic" in status["reason"]


def test_pause_resume_hand_edit_and_abort(rollout_node: Node, demos: Demos) -> None:
    port, canary = canary_setup(rollout_node, demos, "steered")
    rollout_node.apply(rollout("steered", canary, interval="60s"))
    wait_status(rollout_node, "steered", lambda s: s.get("phase") == "Progressing")
    paused = cli(rollout_node, "rollout", "pause", "steered")
    assert paused.returncode == 0 and "Paused" in paused.stdout, paused.stderr
    again = cli(rollout_node, "rollout", "pause", "steered")
    assert again.returncode == 1 and "only a progressing rollout" in again.stderr
    resumed = cli(rollout_node, "rollout", "resume", "steered")
    assert "Progressing" in resumed.stdout, resumed.stderr
    # A hand edit of the weights pauses the rollout rather than fighting the user.
    gateway = rollout_node.get("gateways", "steered")
    gateway["routes"] = {"steered:1.0": {"weight": 50}, canary: {"weight": 50}}
    for field in ("version", "status"):
        gateway.pop(field)
    response = rollout_node.api.put(f"/api/v1/gateways/{quote('steered')}", json=gateway)
    assert response.status_code == 200, response.text
    status = wait_status(rollout_node, "steered", lambda s: s.get("phase") == "Paused")
    assert "changed by hand" in status["reason"]
    shown = cli(rollout_node, "rollout", "status", "steered")
    assert "changed by hand" in shown.stdout
    aborted = cli(rollout_node, "rollout", "abort", "steered")
    assert "Failed" in aborted.stdout, aborted.stderr
    assert weights(rollout_node, "steered") == {"steered:1.0": 100, canary: 0}
    rollout_node.wait_applied("gateways", "steered")
    assert count_served(f"http://127.0.0.1:{port}/", 10) == {"steered 1.0": 10}


def test_bad_rollouts_are_refused_and_change_nothing(rollout_node: Node, demos: Demos) -> None:
    _, canary = canary_setup(rollout_node, demos, "guarded")
    before = weights(rollout_node, "guarded")
    cases = [
        (rollout("guarded", "guarded:9.9"), "documents.0.canary", "has no route guarded:9.9"),
        (rollout("guarded", canary, gateway="nowhere"), "documents.0.gateway", "does not exist"),
        (rollout("guarded", canary, steps=["50%", "20%"]), "documents.0.steps.1", "increase"),
    ]
    for document, path, message in cases:
        response = rollout_node.api.post("/api/v1/apply", json=[document])
        assert response.status_code == 422, response.text
        found = [(e["path"], e["message"]) for e in response.json()["errors"]]
        assert any(p == path and message in m for p, m in found), found
    rollout_node.apply(rollout("guarded", canary, interval="60s"))
    rival = rollout("rival", canary, gateway="guarded")
    response = rollout_node.api.post("/api/v1/apply", json=[rival])
    assert response.status_code == 422
    assert "rollout guarded already drives gateway guarded" in response.text
    response = rollout_node.api.post(f"/api/v1/rollouts/{quote('nothing')}/pause")
    assert response.status_code == 404
    assert before == {"guarded:1.0": 100, canary: 0}


def test_restart_mid_rollout_resumes_at_the_same_step(
    make_node: Callable[..., Node], demos: Demos, tmp_path: Path
) -> None:
    node = make_node(data_dir=tmp_path / "restarted")
    port, canary = canary_setup(node, demos, "resumed")
    with Load(f"http://127.0.0.1:{port}/"):
        node.apply(rollout("resumed", canary, interval="3s", steps=["10%", "50%", "100%"]))
        wait_status(node, "resumed", lambda s: s.get("step") == 1)
        node.stop()
        node.start()
        status = node.get("rollouts", "resumed")["status"]
        assert (status["phase"], status["step"], status["weight"]) == ("Progressing", 1, 50)
        assert [a["verdict"] for a in status["analyses"]] == ["passed"]
        done = wait_status(node, "resumed", lambda s: s.get("phase") == "Succeeded")
    assert [a["weight"] for a in done["analyses"]] == [10, 50, 100]


def test_compare_tells_a_worse_route_from_an_equal_one(rollout_node: Node, demos: Demos) -> None:
    ports = {
        "ab:a": demos.start("a", options=("--error-ratio", "0.01"))[0],
        "ab:b": demos.start("b", options=("--error-ratio", "0.10"))[0],
        "ab:c": demos.start("c", options=("--error-ratio", "0.01"))[0],
    }
    port = free_port()
    services = [
        {"kind": "service", "name": name, "instances": [f"127.0.0.1:{p}"]}
        for name, p in ports.items()
    ]
    weights_ = {"ab:a": "34%", "ab:b": "33%", "ab:c": "33%"}
    routes = {name: {"weight": weight} for name, weight in weights_.items()}
    rollout_node.apply(*services, {"name": "ab", "port": f"{port}/http", "routes": routes})
    with httpx.Client(timeout=5) as client:
        for _ in range(4500):
            client.get(f"http://127.0.0.1:{port}/")
    time.sleep(1.5)  # the last requests' counters and log lines
    response = rollout_node.api.get(f"/api/v1/gateways/{quote('ab')}/compare?window=60s")
    assert response.status_code == 200, response.text
    pairs = {(p["a"], p["b"]): p for p in response.json()["pairs"]}
    worse = pairs["ab:a", "ab:b"]["error_rate"]
    assert worse["p_value"] < 0.001, worse
    assert worse["verdict"].startswith("ab:b has a higher error rate than ab:a")
    equal = pairs["ab:a", "ab:c"]["error_rate"]
    assert equal["p_value"] > 0.001, equal
    assert equal["verdict"].startswith("no significant difference")
    shown = cli(rollout_node, "stats", "ab", "--compare", "--window", "60s")
    assert "ab:b has a higher error rate than ab:a" in shown.stdout, shown.stderr
    bad = rollout_node.api.get(f"/api/v1/gateways/{quote('ab')}/compare?window=2h")
    assert bad.status_code == 422 and bad.json()["errors"][0]["path"] == "window"


def test_anomaly_opens_on_an_error_burst_and_not_on_steady_traffic(
    rollout_node: Node, demos: Demos
) -> None:
    port, _ = canary_setup(rollout_node, demos, "watched")
    url = f"http://127.0.0.1:{port}/"

    def events() -> list[dict[str, Any]]:
        found = rollout_node.api.get("/api/v1/anomalies").json()["events"]
        return [e for e in found if e["gateway"] == "watched"]

    with Load(url, rate=100):
        time.sleep(10)  # the warm-up and a few steady windows of one second
        assert events() == []
    with Load(url, rate=100, status_share=0.3):
        started = time.monotonic()
        deadline = started + 10
        while not events() and time.monotonic() < deadline:
            time.sleep(0.1)
        took = time.monotonic() - started
    found = events()
    assert found and found[0]["signal"] == "error_ratio" and found[0]["state"] == "open", found
    assert took < 4, took
    metrics = rollout_node.api.get("/metrics").text
    assert 'meshgate_route_anomaly{gateway="watched"' in metrics
