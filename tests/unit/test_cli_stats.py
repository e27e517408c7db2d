"""`meshgate stats` against a stand-in server: one gateway, all gateways, --watch, errors."""

from __future__ import annotations

import importlib
import json
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner

from meshgate.cli import main
from meshgate.client import MeshgateClient

# The package exports the command under the module's name; the module itself is wanted here.
stats_command = importlib.import_module("meshgate.cli.stats")

ROUTE = {
    "requests": 10, "rate": 2.5, "responses": {"1xx": 0, "2xx": 9, "3xx": 0, "4xx": 0, "5xx": 1},
    "latency_ms": {"avg": 3.0, "p50": 2, "p90": 5, "p99": 9},
    "sampling": {"window_s": 60.0, "samples": 4, "requests": 10, "ratio": 0.4, "logged": 0.5},
    "instances": [{"id": "a", "status": "UP"}, {"id": "b", "status": "DOWN"}],
}  # fmt: skip


def server(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if path == "/api/v1/gateways":
        return httpx.Response(200, json={"items": [{"name": "web"}, {"name": "a/b"}]})
    if path.endswith("/stats"):
        name = path.removeprefix("/api/v1/gateways/").removesuffix("/stats")
        if name == "missing":
            return httpx.Response(404, json={"errors": [{"path": "", "message": "not found"}]})
        body = {"gateway": name, "namespace": "default", "routes": {f"{name}:v1": ROUTE}}
        return httpx.Response(200, content=json.dumps(body))
    return httpx.Response(404)


@pytest.fixture(autouse=True)
def stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    def open_client(server_url: str | None, token: str | None) -> MeshgateClient:
        return MeshgateClient("http://meshgate.test", transport=httpx.MockTransport(server))

    monkeypatch.setattr(stats_command, "open_client", open_client)


def run(*args: str) -> Any:
    return CliRunner().invoke(main, ["stats", *args])


def test_one_gateway_is_a_table() -> None:
    result = run("web")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "gateway default/web"
    assert lines[2].split() == [
        "web:v1", "2.5", "10", "9", "0", "1", "10.0%", "2ms", "9ms", "40%", "1/2",
    ]  # fmt: skip


def test_without_a_name_every_gateway_gets_a_table() -> None:
    result = run()
    assert result.exit_code == 0, result.output
    assert "gateway default/web" in result.output
    assert "gateway default/a/b" in result.output  # names with '/' reach the server encoded


def test_an_unknown_gateway_fails_with_the_servers_message() -> None:
    result = run("missing")
    assert result.exit_code == 1
    assert "not found" in result.output


def test_watch_redraws_until_interrupted(monkeypatch: pytest.MonkeyPatch) -> None:
    naps = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(stats_command.time, "sleep", sleep)
    monkeypatch.setattr(click, "clear", lambda: None)
    result = run("web", "--watch")
    assert result.exit_code == 0, result.output
    assert result.output.count("gateway default/web") == 3
    assert naps == [1.0, 1.0, 1.0]
