"""The command line: offline commands on files, client commands against a real server on
loopback (uvicorn in a thread, over a SqliteStore in tmp_path)."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml
from click.testing import CliRunner, Result

from meshgate import __version__
from meshgate.api import create_app
from meshgate.cli import main
from meshgate.cli.local import parse_host_port
from meshgate.store import SqliteStore

SAVA = """\
name: sava
port: 9070/http
routes:
  sava:1.0/sava/port:
    weight: 90%
  sava:1.1/sava/port:
    weight: 10%
"""
SERVICE = """\
kind: service
name: sava:1.0/sava/port
instances: ["127.0.0.1:8081", "127.0.0.1:8082"]
"""
BAD_WEIGHT = """\
name: broken
port: 9071
routes:
  a:
    weight: 50%
  b:
    weight: lots
"""
TCP_9070 = "name: db\nnamespace: data\nport: 9070/tcp\n"

Serve = Callable[..., str]


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def run(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Start meshgate's API on a free loopback port; returns its URL."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**options: Any) -> str:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        holder: list[uvicorn.Server] = []

        async def main_loop() -> None:
            # The store's tasks live on the server's loop, so it is opened there.
            store = await SqliteStore.open(tmp_path / f"store-{len(servers)}.db")
            try:
                config = uvicorn.Config(
                    create_app(store, **options), log_level="warning", lifespan="off", ws="none"
                )
                holder.append(uvicorn.Server(config))
                await holder[0].serve(sockets=[listener])
            finally:
                await store.close()

        thread = threading.Thread(target=asyncio.run, args=(main_loop(),), daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not (holder and holder[0].started):
            assert time.monotonic() < deadline, "the API server did not start"
            time.sleep(0.01)
        servers.append((holder[0], thread))
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def server(serve: Serve) -> str:
    return serve()


def test_validate_good_files_and_directories(tmp_path: Path) -> None:
    write(tmp_path, "1-sava.yaml", SAVA)
    write(tmp_path, "2-service.yml", SERVICE)
    write(tmp_path, "notes.txt", "not a manifest")
    result = run("validate", "-f", tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout == "2 documents valid\n"
    single = run("validate", "-f", tmp_path / "1-sava.yaml")
    assert single.stdout == "1 document valid\n"


def test_validate_reports_file_line_and_path(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", SAVA + "---\n" + BAD_WEIGHT)
    result = run("validate", "-f", bad)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{bad}:15: routes.b.weight: weight must be N% or an integer from 0 to 100, got 'lots'"
    ]
    assert result.stdout == ""


def test_validate_checks_ports_across_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", SAVA)
    second = write(tmp_path, "b.yaml", TCP_9070)
    result = run("validate", "-f", first, "-f", second)
    assert result.exit_code == 1
    # Both documents are named, in file order.
    lines = result.stderr.splitlines()
    claimed = "port: port 9070 is also claimed by document 1 (gateway data/db)"
    assert lines[0].startswith(f"{first}:2: {claimed}")
    assert lines[1].startswith(f"{second}:3: port: port 9070 is used by gateway default/sava")


def test_validate_raw_acl_needs_the_flag(tmp_path: Path) -> None:
    raw = SAVA.replace("weight: 10%", "weight: 10%\n    condition: < hdr(host) -i a.com >")
    path = write(tmp_path, "raw.yaml", raw)
    refused = run("validate", "-f", path)
    assert refused.exit_code == 1
    assert f"{path}:8: routes.sava:1.1/sava/port.condition:" in refused.stderr
    assert run("validate", "--allow-raw-acl", "-f", path).exit_code == 0


def test_validate_without_documents_or_with_broken_yaml(tmp_path: Path) -> None:
    empty = run("validate", "-f", write(tmp_path, "empty.yaml", "# nothing\n"))
    assert empty.exit_code == 1 and "no manifest documents" in empty.stderr
    broken = run("validate", "-f", write(tmp_path, "broken.yaml", "name: [a\nport: 1\n"))
    assert broken.exit_code == 1 and "broken.yaml:" in broken.stderr
    missing = run("validate", "-f", tmp_path / "absent.yaml")
    assert missing.exit_code == 2


def test_deeply_nested_manifests_are_an_error_not_a_traceback(tmp_path: Path) -> None:
    deep = 50_000
    flow = write(tmp_path, "flow.yaml", "[" * deep + "]" * deep)
    json_map = write(tmp_path, "map.json", '{"a":' * deep + "1" + "}" * deep)
    for path in (flow, json_map):
        for command in (("validate",), ("--server", "http://127.0.0.1:9", "apply")):
            result = run(*command, "-f", path)
            assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
            # libyaml has a depth limit of its own: either says what is wrong.
            (line,) = result.stderr.splitlines()
            assert line.startswith(str(path)) and "nest" in line and "Traceback" not in line


def test_render_prints_haproxy_cfg_then_the_other_files(tmp_path: Path) -> None:
    compiler = pytest.importorskip("meshgate.compiler")
    if not hasattr(compiler, "render_manifests"):
        pytest.skip("the compiler has no render_manifests yet")
    result = run("render", "-f", write(tmp_path, "sava.yaml", SAVA + "---\n" + SERVICE))
    assert result.exit_code == 0, result.output
    assert not result.stdout.startswith("# ---")
    assert ":9070" in result.stdout
    files = compiler.render_manifests([])
    for name in files:
        if name != "haproxy.cfg":
            assert f"# --- {name} ---\n" in result.stdout


def test_version_prints_meshgate_version() -> None:
    result = run("version")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == f"meshgate {__version__}"


def test_apply_get_delete_against_a_server(tmp_path: Path, server: str) -> None:
    path = write(tmp_path, "sava.yaml", SERVICE + "---\n" + SAVA)
    applied = run("--server", server, "apply", "-f", path)
    assert applied.exit_code == 0, applied.output
    assert applied.stdout.splitlines() == [
        "service/default/sava:1.0/sava/port created",
        "gateway/default/sava created",
    ]
    again = run("apply", "-f", path, "--server", server)
    assert again.stdout.splitlines()[1] == "gateway/default/sava unchanged"
    path.write_text(SERVICE + "---\n" + SAVA.replace("port: 9070/http", "port: 9080/http"))
    changed = run("apply", "-f", path, env={"MESHGATE_SERVER": server})
    assert changed.stdout.splitlines()[1] == "gateway/default/sava configured"

    table = run("--server", server, "get", "gateways")
    assert table.exit_code == 0
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "NAMESPACE", "PORT", "HOSTS", "ROUTES", "VERSION", "APPLIED"]
    assert row.split()[:5] == ["sava", "default", "9080/http", "-", "2"]
    assert row.split()[-1] == "no"
    services = run("--server", server, "get", "service")
    assert services.stdout.splitlines()[1].split()[:4] == [
        "sava:1.0/sava/port",
        "default",
        "http",
        "2",
    ]

    one = run("--server", server, "get", "service", "sava:1.0/sava/port", "-o", "json")
    assert json.loads(one.stdout)["instances"][1]["port"] == 8082
    as_yaml = run("--server", server, "get", "gateways", "sava", "-o", "yaml")
    assert yaml.safe_load(as_yaml.stdout)["port"] == "9080/http"
    listed = run("--server", server, "get", "gateways", "-o", "json")
    assert [g["name"] for g in json.loads(listed.stdout)] == ["sava"]

    deleted = run("--server", server, "delete", "gateway", "sava")
    assert (deleted.exit_code, deleted.stdout) == (0, "gateway/default/sava deleted\n")
    gone = run("--server", server, "delete", "gateway", "sava")
    assert gone.exit_code == 1
    assert gone.stderr == "gateway default/sava not found\n"
    missing = run("--server", server, "get", "gateways", "sava")
    assert missing.exit_code == 1


def test_get_in_another_namespace(tmp_path: Path, server: str) -> None:
    run("--server", server, "apply", "-f", write(tmp_path, "db.yaml", TCP_9070))
    assert "no gateways in namespace default" in run("--server", server, "get", "gw").stderr
    found = run("--server", server, "get", "gw", "-n", "data", "-o", "json")
    assert [g["name"] for g in json.loads(found.stdout)] == ["db"]


def test_apply_errors_from_the_server_point_into_the_files(tmp_path: Path, server: str) -> None:
    db = write(tmp_path, "db.yaml", TCP_9070)
    assert run("--server", server, "apply", "-f", db).exit_code == 0
    sava = write(tmp_path, "sava.yaml", SERVICE + "---\n" + SAVA)
    result = run("--server", server, "apply", "-f", sava)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{sava}:6: port: port 9070 is used by gateway data/db")


def test_apply_validates_locally_before_sending(tmp_path: Path, serve: Serve) -> None:
    bad = write(tmp_path, "bad.yaml", BAD_WEIGHT)
    # No server is running at this address: the local check must fail first.
    result = run("--server", "http://127.0.0.1:9", "apply", "-f", bad)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{bad}:7: routes.b.weight:")


def test_raw_acl_is_left_to_the_server(tmp_path: Path, serve: Serve) -> None:
    raw = SAVA.replace("weight: 10%", "weight: 10%\n    condition: < hdr(host) -i a.com >")
    path = write(tmp_path, "raw.yaml", raw)
    refused = run("--server", serve(), "apply", "-f", path)
    assert refused.exit_code == 1
    assert f"{path}:8: routes.sava:1.1/sava/port.condition:" in refused.stderr
    allowed = run("--server", serve(allow_raw_acl=True), "apply", "-f", path)
    assert allowed.exit_code == 0, allowed.output


def test_token_is_sent_from_option_or_environment(serve: Serve) -> None:
    server = serve(token="s3cret")
    denied = run("--server", server, "get", "gateways")
    assert denied.exit_code == 1
    assert denied.stderr == "Authorization: a valid bearer token is required\n"
    assert run("--server", server, "--token", "s3cret", "get", "gateways").exit_code == 0
    from_env = run("get", "gateways", env={"MESHGATE_SERVER": server, "MESHGATE_TOKEN": "s3cret"})
    assert from_env.exit_code == 0
    after = run("get", "gateways", "--server", server, "--token", "s3cret")
    assert after.exit_code == 0


def test_unreachable_server_is_a_clear_failure() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    result = run("--server", url, "get", "gateways")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"cannot reach meshgate at {url}")


def test_usage_errors_exit_2() -> None:
    assert run("get", "widgets").exit_code == 2
    assert run("delete", "gateway").exit_code == 2
    assert run("apply").exit_code == 2
    assert run("up", "--api", "localhost:http").exit_code == 2


def test_up_passes_its_options_to_the_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []

    def node_options(**fields: Any) -> dict[str, Any]:
        return fields

    async def run_node(options: dict[str, Any]) -> None:
        seen.append(options)

    # A stand-in for meshgate.node: `up` only hands it options; the node has its own tests.
    fake = types.ModuleType("meshgate.node")
    fake.NodeOptions = node_options  # type: ignore[attr-defined]
    fake.run_node = run_node  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "meshgate.node", fake)
    manifest = write(tmp_path, "sava.yaml", SAVA)
    result = run(
        "up",
        "-f",
        manifest,
        "--data-dir",
        tmp_path / "data",
        "--api",
        "0.0.0.0:7800",
        "--allow-raw-acl",
        env={"MESHGATE_TOKEN": "t"},
    )
    assert result.exit_code == 0, result.output
    expected = {
        "data_dir": tmp_path / "data",
        "api_host": "0.0.0.0",
        "api_port": 7800,
        "manifests": [manifest],
        "allow_raw_acl": True,
        "token": "t",
        "hard_stop_after_ms": 30_000,
    }
    assert len(seen) == 1 and {k: seen[0][k] for k in expected} == expected
    run("up", "--api", "7801", "--token", "own")
    second = seen[1]
    assert (second["api_host"], second["api_port"], second["token"]) == ("127.0.0.1", 7801, "own")
    assert second["data_dir"] == Path(".meshgate") and second["manifests"] == []


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The options each `up` would start a node with (the node itself is not run)."""
    seen: list[dict[str, Any]] = []

    async def run_node(options: dict[str, Any]) -> None:
        seen.append(options)

    fake = types.ModuleType("meshgate.node")
    fake.NodeOptions = lambda **fields: fields  # type: ignore[attr-defined]
    fake.run_node = run_node  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "meshgate.node", fake)
    return seen


def test_up_refuses_an_api_reachable_from_other_machines_without_a_token(
    tmp_path: Path, started: list[dict[str, Any]]
) -> None:
    for address in ("0.0.0.0:7800", "[::]:7800", "192.0.2.1:7800", "api.example:7800"):
        refused = run("up", "--api", address)
        assert refused.exit_code == 2 and "--insecure-no-auth" in refused.stderr, address
    assert started == []
    # On loopback no token is needed (the CLI on the same machine needs none).
    for address in ("7800", "127.0.0.2:7800", "[::1]:7800", "localhost:7800"):
        assert run("up", "--api", address).exit_code == 0
    allowed = run("up", "--api", "0.0.0.0:7800", "--insecure-no-auth")
    assert allowed.exit_code == 0 and "warning: the API on 0.0.0.0" in allowed.stderr
    assert started[-1]["token"] is None


def test_up_reads_its_token_from_a_file(tmp_path: Path, started: list[dict[str, Any]]) -> None:
    token_file = write(tmp_path, "token", "s3cret\n")
    assert run("up", "--api", "0.0.0.0:7800", "--token-file", token_file).exit_code == 0
    assert started[-1]["token"] == "s3cret"
    both = run("up", "--token", "a", "--token-file", token_file)
    assert both.exit_code == 2 and "not both" in both.stderr
    empty = run("up", "--token-file", write(tmp_path, "empty", "\n"))
    assert empty.exit_code == 2 and "holds no token" in empty.stderr
    absent = run("up", "--token-file", tmp_path / "absent")
    assert absent.exit_code == 2 and "cannot read" in absent.stderr
    assert run("up", "--cert-dir", tmp_path).exit_code == 0
    assert started[-1]["cert_dir"] == tmp_path


def test_clients_read_the_token_from_a_file(tmp_path: Path, serve: Serve) -> None:
    server = serve(token="s3cret")
    token_file = write(tmp_path, "token", "s3cret\n")
    assert run("--server", server, "get", "gateways").exit_code == 1
    ok = run("--server", server, "--token-file", token_file, "get", "gateways")
    assert ok.exit_code == 0, ok.output
    env = {"MESHGATE_TOKEN_FILE": str(token_file)}
    from_env = run("--server", server, "get", "gateways", env=env)
    assert from_env.exit_code == 0, from_env.output


def test_node_options_take_what_up_passes() -> None:
    node = pytest.importorskip("meshgate.node")
    options = node.NodeOptions(
        data_dir=Path("d"), api_host="h", api_port=1, manifests=[], allow_raw_acl=False, token=None
    )
    assert options.api_port == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7700", ("127.0.0.1", 7700)),
        ("[::1]:8080", ("::1", 8080)),
        (":9000", ("127.0.0.1", 9000)),
        ("9001", ("127.0.0.1", 9001)),
    ],
)
def test_api_address_forms(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["host:", "host:99999", "host:x"])
def test_bad_api_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_host_port(text)
