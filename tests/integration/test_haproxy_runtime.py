"""RuntimeClient against a real HAProxy 2.6: servers, weights, maps, errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshgate.haproxy import (
    CommandKind,
    HaproxySupervisor,
    NoSuchBackend,
    NoSuchMap,
    NoSuchServer,
    RuntimeClient,
    RuntimeUnavailable,
    ServerAlreadyExists,
    ServerOpState,
    StatType,
    UnsafeRuntimeArgument,
)
from tests.integration.haproxy_helpers import Layout, http_get, needs_haproxy, running_haproxy

pytestmark = [pytest.mark.integration, needs_haproxy]

Running = tuple[HaproxySupervisor, RuntimeClient, Layout]


@pytest.fixture
async def haproxy(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_haproxy(tmp_path) as running:
        yield running


async def get(port: int, path: str) -> tuple[int, str]:
    return await asyncio.to_thread(http_get, port, path)


async def test_info_stats_and_proc(haproxy: Running) -> None:
    supervisor, runtime, _ = haproxy
    info = await runtime.info()
    assert info["Name"] == "HAProxy"
    assert info["Version"].startswith("2.")
    rows = await runtime.stats()
    kinds = {(row.pxname, row.svname): row.type for row in rows}
    assert kinds[("fe_main", "FRONTEND")] is StatType.FRONTEND
    assert kinds[("be_static", "BACKEND")] is StatType.BACKEND
    assert kinds[("be_static", "static")] is StatType.SERVER
    proc = await runtime.proc()
    assert proc.master_pid == supervisor.master_pid
    assert len(proc.workers) == 1
    assert int(info["Pid"]) == proc.workers[0].pid


async def test_dynamic_server_receives_traffic(haproxy: Running) -> None:
    _, runtime, layout = haproxy
    state = await runtime.add_server("be_dyn", "a1", "127.0.0.1", layout.echo_port("a"), weight=10)
    assert state.status == "UP"
    assert state.weight == 10
    assert await get(layout.front_port, "/dyn") == (200, "a")
    counted = {row.svname: row for row in await runtime.stats("be_dyn")}
    assert counted["a1"].stot >= 1
    assert counted["a1"].hrsp_2xx >= 1


async def test_dynamic_server_with_health_check_comes_up(haproxy: Running) -> None:
    _, runtime, layout = haproxy
    await runtime.add_server(
        "be_dyn", "checked", "127.0.0.1", layout.echo_port("b"), check=True, inter_ms=100, rise=1
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        state = await runtime.server_state("be_dyn", "checked")
        if state is not None and state.op_state is ServerOpState.RUNNING:
            break
        await asyncio.sleep(0.05)
    assert state is not None and state.status == "UP"
    assert await get(layout.front_port, "/dyn") == (200, "b")


async def test_weight_change_is_visible(haproxy: Running) -> None:
    _, runtime, layout = haproxy
    await runtime.add_server("be_dyn", "w", "127.0.0.1", layout.echo_port("a"), weight=5)
    await runtime.set_server_weight("be_dyn", "w", 42)
    state = await runtime.server_state("be_dyn", "w")
    assert state is not None
    assert (state.weight, state.initial_weight) == (42, 5)


async def test_weights_split_traffic(haproxy: Running) -> None:
    _, runtime, layout = haproxy
    await runtime.add_server("be_dyn", "a", "127.0.0.1", layout.echo_port("a"), weight=1)
    await runtime.add_server("be_dyn", "b", "127.0.0.1", layout.echo_port("b"), weight=1)
    await runtime.set_server_weight("be_dyn", "b", 0)
    bodies = {(await get(layout.front_port, "/dyn"))[1] for _ in range(10)}
    assert bodies == {"a"}


async def test_drain_and_remove_server(haproxy: Running) -> None:
    _, runtime, layout = haproxy
    await runtime.add_server("be_dyn", "a", "127.0.0.1", layout.echo_port("a"))
    await runtime.add_server("be_dyn", "b", "127.0.0.1", layout.echo_port("b"))
    for _ in range(4):
        await get(layout.front_port, "/dyn")
    await runtime.remove_server("be_dyn", "a", drain_timeout=2)
    assert [s.name for s in await runtime.servers_state("be_dyn")] == ["b"]
    bodies = {(await get(layout.front_port, "/dyn"))[1] for _ in range(6)}
    assert bodies == {"b"}
    with pytest.raises(NoSuchServer):
        await runtime.remove_server("be_dyn", "a")
    await runtime.remove_server("be_dyn", "a", missing_ok=True)


class SlowServer:
    """A backend that answers each request only when released: requests stay in flight."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await self.release.wait()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def test_remove_server_waits_for_a_request_in_flight(haproxy: Running) -> None:
    _, runtime, layout = haproxy
    slow = SlowServer()
    try:
        await runtime.add_server("be_dyn", "slow", "127.0.0.1", await slow.start())
        request = asyncio.create_task(get(layout.front_port, "/dyn"))
        await asyncio.sleep(0.2)  # the request is now waiting on the server
        removal = asyncio.create_task(runtime.remove_server("be_dyn", "slow", drain_timeout=5))
        await asyncio.sleep(0.5)
        assert not removal.done()  # drained, but a request is still running on it
        state = await runtime.server_state("be_dyn", "slow")
        assert state is not None and state.admin_state.draining
        slow.release.set()
        assert await request == (200, "slow")  # the request in flight completes
        await removal
        assert await runtime.server_state("be_dyn", "slow") is None
    finally:
        slow.close()


async def test_remove_server_cuts_sessions_after_the_drain_timeout(haproxy: Running) -> None:
    _, runtime, layout = haproxy
    slow = SlowServer()
    try:
        await runtime.add_server("be_dyn", "stuck", "127.0.0.1", await slow.start())
        request = asyncio.create_task(get(layout.front_port, "/dyn"))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await runtime.remove_server("be_dyn", "stuck", drain_timeout=0.5)
        assert 0.5 <= time.monotonic() - started < 3
        assert await runtime.server_state("be_dyn", "stuck") is None
        try:
            status, _ = await request
        except OSError:  # reset
            status = 0
        assert status != 200  # cut: HAProxy answers with an error or closes
    finally:
        slow.close()


async def test_add_existing_server_is_classified(haproxy: Running) -> None:
    _, runtime, layout = haproxy
    await runtime.add_server("be_dyn", "dup", "127.0.0.1", layout.echo_port("a"))
    with pytest.raises(ServerAlreadyExists) as caught:
        await runtime.add_server("be_dyn", "dup", "127.0.0.1", layout.echo_port("b"))
    assert caught.value.kind is CommandKind.ADD_SERVER


async def test_errors_are_classified(haproxy: Running) -> None:
    _, runtime, _ = haproxy
    with pytest.raises(NoSuchServer):
        await runtime.set_server_weight("be_dyn", "nope", 1)
    with pytest.raises(NoSuchBackend):
        await runtime.set_server_weight("nope", "nope", 1)
    with pytest.raises(NoSuchBackend):
        await runtime.servers_state("nope")
    with pytest.raises(NoSuchBackend):
        await runtime.add_server("nope", "x", "127.0.0.1", 80)
    with pytest.raises(NoSuchMap):
        await runtime.show_map("/no/such.map")
    with pytest.raises(NoSuchMap):
        await runtime.replace_map("/no/such.map", {"a": "b"})


async def test_unsafe_names_are_rejected_before_sending(tmp_path: Path) -> None:
    # No HAProxy at these paths: an attempt to send would raise RuntimeUnavailable instead.
    runtime = RuntimeClient(
        str(tmp_path / "none.sock"), str(tmp_path / "none-master.sock"), timeout=0.2
    )
    attempts = [
        runtime.set_server_weight("be\nshutdown", "s", 1),
        runtime.set_server_weight("be", "s;shutdown sessions server be/x", 1),
        runtime.add_server("be", "s", "127.0.0.1 check", 80),
        runtime.add_server("be", "s", "example.com", 80),
        runtime.add_server("be", "s", "127.0.0.1", 0),
        runtime.set_map_entry("/m.map", "key", "value\nclear map /m.map"),
        runtime.set_map_entry("/m.map", "#1", "v"),
        runtime.replace_map("/m.map", {"a b": "c"}),
        runtime.show_map("relative.map"),
    ]
    for attempt in attempts:
        with pytest.raises(UnsafeRuntimeArgument):
            await attempt
    with pytest.raises(RuntimeUnavailable):
        await runtime.info()


async def test_replace_map_is_atomic_and_complete(haproxy: Running) -> None:
    _, runtime, layout = haproxy
    path = str(layout.routes_map)
    entries = {f"/k{i:05d}": f"be_{i}" for i in range(3000)}  # several payload batches
    entries["/dyn"] = "be_static"
    await runtime.replace_map(path, entries)
    assert await runtime.show_map(path) == entries
    (info,) = [m for m in await runtime.maps() if m.path == path]
    assert info.entry_count == len(entries)  # the previous version is gone
    assert await get(layout.front_port, "/dyn") == (200, "static")
    await runtime.replace_map(path, {})
    assert await runtime.show_map(path) == {}


async def test_replace_map_swaps_large_maps_whole(haproxy: Running) -> None:
    """Two large maps (several payload batches each) alternate, each arriving complete.

    Lookups see one version or the other: the swap is HAProxy's `commit map`. (A concurrent
    `show map` dump is not a consistent reader: it may straddle a commit, so it is not used
    to judge atomicity here.)
    """
    _, runtime, layout = haproxy
    path = str(layout.routes_map)
    first = {f"/a{i:05d}": "be_static" for i in range(2000)}
    second = {f"/b{i:05d}": "be_dyn" for i in range(2000)}
    for mapping in (first, second, first):
        await runtime.replace_map(path, mapping)
        assert await runtime.show_map(path) == mapping
    assert (await get(layout.front_port, "/a01999"))[0] == 200


async def test_set_map_entry_adds_or_updates(haproxy: Running) -> None:
    _, runtime, layout = haproxy
    path = str(layout.routes_map)
    await runtime.set_map_entry(path, "/new", "be_static")
    await runtime.set_map_entry(path, "/dyn", "be_static")
    assert await runtime.show_map(path) == {"/dyn": "be_static", "/new": "be_static"}
    assert await get(layout.front_port, "/new") == (200, "static")
    await runtime.del_map_entry(path, "/new")
    await runtime.del_map_entry(path, "/new")  # absent is fine by default
    assert await runtime.show_map(path) == {"/dyn": "be_static"}


async def test_set_server_addr_moves_traffic(haproxy: Running) -> None:
    _, runtime, layout = haproxy
    await runtime.add_server("be_dyn", "m", "127.0.0.1", layout.echo_port("a"))
    assert (await get(layout.front_port, "/dyn"))[1] == "a"
    await runtime.set_server_addr("be_dyn", "m", "127.0.0.1", layout.echo_port("b"))
    assert (await get(layout.front_port, "/dyn"))[1] == "b"


async def test_command_latency_is_small(haproxy: Running) -> None:
    """Not a benchmark: a sanity bound that one command per connection is cheap."""
    _, runtime, _ = haproxy
    durations: list[float] = []
    runtime.observer = lambda kind, seconds, ok: durations.append(seconds)
    for _ in range(50):
        await runtime.servers_state("be_static")
    durations.sort()
    median_ms, max_ms = durations[25] * 1000, durations[-1] * 1000
    print(f"show servers state: median {median_ms:.2f} ms, max {max_ms:.2f} ms")
    assert durations[25] < 0.05


async def test_admin_socket_route(haproxy: Running) -> None:
    _, runtime, layout = haproxy
    direct = RuntimeClient(runtime.admin_socket, runtime.master_socket, via_master=False)
    assert int((await direct.info())["Pid"]) == (await runtime.proc()).workers[0].pid
    await direct.add_server("be_dyn", "d", "127.0.0.1", layout.echo_port("a"))
    assert await get(layout.front_port, "/dyn") == (200, "a")
    with pytest.raises(NoSuchServer):
        await direct.set_server_weight("be_dyn", "nope", 1)


async def proc_var(socket: str, line: str) -> str:
    from meshgate.haproxy import transport

    return await transport.send(socket, line)


async def test_set_proc_var_through_the_master_and_the_admin_socket(haproxy: Running) -> None:
    """2.6 refuses `set var` outside experimental mode; the client turns it on for the one
    command, through the master as through the admin socket."""
    _, runtime, _ = haproxy
    refused = await proc_var(runtime.master_socket, "@1 set var proc.mg_test int(1)")
    assert "experimental mode" in refused
    await runtime.set_proc_var("proc.mg_test", 5)
    reply = await proc_var(runtime.master_socket, "@1 get var proc.mg_test")
    assert "value=<5>" in reply, reply
    direct = RuntimeClient(runtime.admin_socket, runtime.master_socket, via_master=False)
    await direct.set_proc_var("proc.mg_test", -7)
    assert "value=<-7>" in await proc_var(runtime.admin_socket, "get var proc.mg_test")
    with pytest.raises(UnsafeRuntimeArgument):
        await runtime.set_proc_var("proc.mg_test; shutdown sessions", 1)
