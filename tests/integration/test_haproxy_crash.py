"""A crash of HAProxy under load costs only what was in flight: the listening sockets outlive it.

A client opens a new connection for every request while the worker (or the master) is killed
with SIGKILL; connections made while meshgate restarts HAProxy wait in the kernel's accept queue
of the sockets meshgate kept, and the restarted HAProxy serves them. A refused connection is
what the fix removes; a request cut on a connection the dead worker had accepted is in flight
and counted apart.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from meshgate.haproxy import HaproxySupervisor
from tests.integration.haproxy_helpers import (
    HAPROXY,
    free_port,
    http_get,
    needs_haproxy,
    render_config,
    running_haproxy,
    write_config,
)
from tests.integration.test_haproxy_supervisor import wait_for

pytestmark = [pytest.mark.integration, needs_haproxy]


class NewConnections(threading.Thread):
    """One request per new connection, in a loop, bounded in count and time."""

    def __init__(self, port: int, *, limit: int = 50_000, seconds: float = 30.0) -> None:
        super().__init__(daemon=True)
        self.port, self.limit, self.seconds = port, limit, seconds
        self.ok = 0
        self.refused = 0  # the connection itself failed: nothing was listening
        self.cut: list[str] = []  # accepted, then lost: in flight when HAProxy died
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        while not self.stop.is_set() and self.ok + self.refused + len(self.cut) < self.limit:
            if time.monotonic() > deadline:
                break
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except ConnectionRefusedError:
                self.refused += 1
                continue
            except OSError as error:
                if error.errno == errno.ECONNREFUSED:
                    self.refused += 1
                    continue
                raise
            with sock:
                try:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    data = b""
                    while chunk := sock.recv(65536):
                        data += chunk
                except OSError as error:
                    self.cut.append(repr(error))
                    continue
            if data.startswith(b"HTTP/1.1 200") and data.endswith(b"static"):
                self.ok += 1
            else:
                self.cut.append(repr(data[:60]))


async def _kill_under_load(supervisor: HaproxySupervisor, port: int, *, master: bool) -> None:
    info = await supervisor.proc()
    victim = info.master_pid if master else info.workers[0].pid
    client = NewConnections(port)
    client.start()
    try:
        await wait_for(lambda: client.ok >= 200, 10)
        os.kill(victim, signal.SIGKILL)
        await wait_for(lambda: supervisor.restarts == 1 and supervisor.running, 10)
        served = client.ok
        await wait_for(lambda: client.ok >= served + 200, 10)
    finally:
        client.stop.set()
        await asyncio.to_thread(client.join, 10)
    print(
        f"{'master' if master else 'worker'} kill -9: {client.ok} served, "
        f"{client.refused} refused, {len(client.cut)} cut in flight"
    )
    assert client.refused == 0
    assert len(client.cut) <= 2, client.cut  # one sequential client: at most its one request


async def test_a_worker_crash_refuses_no_connection(tmp_path: Path) -> None:
    async with running_haproxy(tmp_path) as (supervisor, _, layout):
        await _kill_under_load(supervisor, layout.front_port, master=False)


async def test_a_master_crash_refuses_no_connection(tmp_path: Path) -> None:
    async with running_haproxy(tmp_path) as (supervisor, _, layout):
        await _kill_under_load(supervisor, layout.front_port, master=True)


async def test_ports_a_reload_adds_are_kept_and_those_it_removes_refuse(tmp_path: Path) -> None:
    async with running_haproxy(tmp_path) as (supervisor, _, layout):
        added = free_port()
        extra = (
            f"\nfrontend fe_added\n    bind 127.0.0.1:{added}\n"
            '    http-request return status 200 content-type text/plain string "static"\n'
        )
        config = write_config(layout, render_config(layout, echoes=("a",), extra=extra))
        removed = ("127.0.0.1", layout.echo_port("b"))
        assert removed in supervisor.kept_addresses()
        await supervisor.reload(config)
        # The copy follows the new worker once the old one has stopped accepting (`grace`).
        await wait_for(
            lambda: (
                ("127.0.0.1", added) in supervisor.kept_addresses()
                and removed not in supervisor.kept_addresses()
            ),
            5,
        )
        with pytest.raises(ConnectionRefusedError):
            await asyncio.to_thread(http_get, removed[1])
        await _kill_under_load(supervisor, added, master=False)


async def test_an_adopted_haproxy_keeps_its_sockets_across_a_crash(tmp_path: Path) -> None:
    assert HAPROXY is not None
    async with running_haproxy(tmp_path) as (first, _, layout):
        await first.leave_running()  # meshgate restarts; HAProxy keeps serving
        second = HaproxySupervisor(binary=HAPROXY, run_dir=tmp_path)
        try:
            assert await second.adopt()
            await _kill_under_load(second, layout.front_port, master=False)
            # The restarted HAProxy is ours and reloads as usual.
            await second.reload(layout.config_path)
            assert await asyncio.to_thread(http_get, layout.front_port) == (200, "static")
        finally:
            await second.stop()


async def test_stop_closes_the_ports(tmp_path: Path) -> None:
    async with running_haproxy(tmp_path) as (_, _, layout):
        assert await asyncio.to_thread(http_get, layout.front_port) == (200, "static")
    with pytest.raises(ConnectionRefusedError):
        await asyncio.to_thread(http_get, layout.front_port)
    assert not (tmp_path / "listeners.sock").exists()
