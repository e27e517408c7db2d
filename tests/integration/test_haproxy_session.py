"""Server changes in one session on the worker's socket, each reply checked, against a real
HAProxy 2.6: what `bulk` sends for an instance of a service many gateways route to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshgate.haproxy import HaproxySupervisor, RuntimeClient, bulk, commands, session
from meshgate.haproxy.commands import ServerAdminState
from meshgate.haproxy.replies import CommandKind, NoSuchServer, ServerAlreadyExists
from tests.integration.haproxy_helpers import (
    HAPROXY,
    Layout,
    http_get,
    needs_haproxy,
    render_config,
    write_config,
)

pytestmark = [pytest.mark.integration, needs_haproxy]

BACKENDS = 200


def backend(index: int) -> str:
    return f"be_{index:03d}"


@pytest.fixture
async def haproxy(tmp_path: Path) -> AsyncIterator[tuple[HaproxySupervisor, RuntimeClient, Layout]]:
    """The helpers' HAProxy with BACKENDS more empty backends, each served on /bN."""
    assert HAPROXY is not None
    layout = Layout(tmp_path)
    extra = "".join(f"\nbackend {backend(i)}\n    balance roundrobin\n" for i in range(BACKENDS))
    text = render_config(layout, extra=extra)
    # Every backend reachable by path: /b000 ... through the routes map.
    write_config(layout, text)
    layout.routes_map.write_text(
        "/dyn be_dyn\n" + "".join(f"/b{i:03d} {backend(i)}\n" for i in range(BACKENDS))
    )
    supervisor = HaproxySupervisor(binary=HAPROXY, run_dir=tmp_path)
    await supervisor.start(layout.config_path)
    runtime = RuntimeClient(str(tmp_path / "admin.sock"), str(tmp_path / "master.sock"))
    try:
        yield supervisor, runtime, layout
    finally:
        await supervisor.stop()


def new_server(index: int, name: str, port: int) -> bulk.NewServer:
    line = commands.add_server(backend(index), name, "127.0.0.1", port, check=True, inter_ms=500)
    return bulk.NewServer(backend(index), name, "127.0.0.1", port, line, check=True, agent=False)


class Requests:
    """Counts the requests a RuntimeClient makes, by kind."""

    def __init__(self, runtime: RuntimeClient) -> None:
        self.kinds: list[CommandKind] = []
        runtime.observer = lambda kind, seconds, ok: self.kinds.append(kind)

    def count(self) -> int:
        return len(self.kinds)


async def test_each_reply_of_a_session_is_its_own(
    haproxy: tuple[HaproxySupervisor, RuntimeClient, Layout],
) -> None:
    _, runtime, layout = haproxy
    port = layout.echo_port("a")
    lines = [
        commands.add_server("be_dyn", "s1", "127.0.0.1", port),
        commands.add_server("be_dyn", "s1", "127.0.0.1", port),
        commands.set_server_state("be_dyn", "s1", ServerAdminState.READY),
        commands.set_server_weight("be_dyn", "nope", 5),
        commands.show_servers_state("be_dyn"),
        commands.set_server_weight("be_dyn", "s1", 7),
    ]
    found = await runtime.worker_session(lines)
    assert found is not None and len(found) == len(lines)
    assert bulk.failure(lines[0], found[0]) is None
    assert isinstance(bulk.failure(lines[1], found[1]), ServerAlreadyExists)
    assert bulk.failure(lines[2], found[2]) is None
    assert isinstance(bulk.failure(lines[3], found[3]), NoSuchServer)
    assert "be_dyn 1 s1 127.0.0.1" in found[4]
    assert bulk.failure(lines[5], found[5]) is None
    assert (await runtime.server_state("be_dyn", "s1")).weight == 7  # type: ignore[union-attr]
    assert await asyncio.to_thread(http_get, layout.front_port, "/dyn") == (200, "a")


async def test_a_session_is_refused_by_another_worker_than_the_one_named(
    haproxy: tuple[HaproxySupervisor, RuntimeClient, Layout],
) -> None:
    _, runtime, _ = haproxy
    pid = (await runtime.proc()).workers[0].pid
    line = commands.set_server_weight("be_static", "static", 3)
    with pytest.raises(session.WrongWorker) as refused:
        await session.run(runtime.admin_socket, pid + 100_000, [line], timeout=5.0)
    assert refused.value.pid == pid and not refused.value.stopping
    assert (await runtime.server_state("be_static", "static")).weight != 3  # type: ignore[union-attr]


async def test_servers_of_many_backends_in_one_request_without_reading_back(
    haproxy: tuple[HaproxySupervisor, RuntimeClient, Layout],
) -> None:
    _, runtime, layout = haproxy
    port = layout.echo_port("a")
    requests = Requests(runtime)
    missed = await bulk.add_servers(runtime, [new_server(i, "x", port) for i in range(BACKENDS)])
    assert missed == []
    # The master once for the worker's pid, then one session: no state read back.
    assert requests.kinds == [CommandKind.READ, CommandKind.PIPELINE]
    states = {(s.backend, s.name): s for s in await runtime.servers_state()}
    for index in range(BACKENDS):
        assert not states[(backend(index), "x")].admin_state.in_maintenance
    for index in (0, BACKENDS - 1):
        assert await asyncio.to_thread(http_get, layout.front_port, f"/b{index:03d}") == (200, "a")

    requests.kinds.clear()
    weights = [(backend(i), "x", 9) for i in range(BACKENDS)] + [(backend(0), "nope", 9)]
    assert await bulk.set_weights(runtime, weights) == [(backend(0), "nope", 9)]
    assert requests.kinds == [CommandKind.PIPELINE]  # the worker's pid is known now

    requests.kinds.clear()
    refs = [(backend(i), "x") for i in range(BACKENDS)] + [(backend(0), "gone")]
    assert await bulk.remove_servers(runtime, refs, drain_timeout=5.0) == []
    # drain, look for streams, delete: three sessions.
    assert requests.kinds == [CommandKind.PIPELINE] * 3
    assert not [s for s in await runtime.servers_state() if s.name == "x"]


async def test_an_existing_server_is_confirmed_by_reading_its_state_back(
    haproxy: tuple[HaproxySupervisor, RuntimeClient, Layout],
) -> None:
    """A server that exists already (a change cut short) fails `add server`; the pipelined
    way then reads the state back and finds it there, at that address."""
    _, runtime, layout = haproxy
    port = layout.echo_port("a")
    await runtime.add_server(backend(1), "x", "127.0.0.1", port)
    servers = [new_server(i, "x", port) for i in range(3)]
    assert await bulk.add_servers(runtime, servers) == []
    elsewhere = new_server(2, "x", layout.echo_port("b"))
    assert await bulk.add_servers(runtime, [elsewhere]) == [elsewhere]


async def test_after_a_reload_sessions_go_to_the_new_worker(
    haproxy: tuple[HaproxySupervisor, RuntimeClient, Layout],
) -> None:
    supervisor, runtime, layout = haproxy
    port = layout.echo_port("a")
    assert await bulk.add_servers(runtime, [new_server(0, "before", port)]) == []
    for round_ in range(3):
        result = await supervisor.reload(layout.config_path)
        # At once, while the old worker may still accept on the admin socket.
        found = await runtime.worker_session([commands.show_info()])
        assert found is not None
        pid = int(next(line for line in found[0].splitlines() if line.startswith("Pid:"))[5:])
        assert pid == result.worker_pid, f"round {round_}"
        assert await bulk.add_servers(runtime, [new_server(1, f"r{round_}", port)]) == []
        assert await runtime.server_state(backend(1), f"r{round_}") is not None


async def test_many_servers_go_in_sessions_of_bounded_length(
    haproxy: tuple[HaproxySupervisor, RuntimeClient, Layout], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, runtime, layout = haproxy
    monkeypatch.setattr(bulk, "SESSION_LINES", 100)  # 33 servers' three commands each
    requests = Requests(runtime)
    port = layout.echo_port("a")
    servers = [new_server(i, "y", port) for i in range(BACKENDS)]
    assert await bulk.add_servers(runtime, servers) == []
    sessions = requests.kinds.count(CommandKind.PIPELINE)
    assert sessions == -(-BACKENDS // 33)
    states = {(s.backend, s.name) for s in await runtime.servers_state()}
    assert all((backend(i), "y") in states for i in range(BACKENDS))
