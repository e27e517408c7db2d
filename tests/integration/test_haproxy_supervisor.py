"""HaproxySupervisor against a real HAProxy 2.6: start, stop, validate, reload, watchdog."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from meshgate.haproxy import ConfigRejected, HaproxySupervisor, ReloadFailed
from tests.integration.haproxy_helpers import (
    HAPROXY,
    Layout,
    haproxy_pids_under,
    http_get,
    needs_haproxy,
    process_alive,
    render_config,
    running_haproxy,
    write_config,
)

pytestmark = [pytest.mark.integration, needs_haproxy]

BROKEN = "\nbackend be_broken\n    no_such_directive on\n"


async def get(port: int, path: str = "/") -> tuple[int, str]:
    return await asyncio.to_thread(http_get, port, path)


async def wait_for(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_start_and_stop_leave_no_process(tmp_path: Path) -> None:
    async with running_haproxy(tmp_path) as (supervisor, _, layout):
        assert supervisor.running
        master = supervisor.master_pid
        assert master is not None
        (worker,) = (await supervisor.proc()).workers
        assert await get(layout.front_port) == (200, "static")
        assert sorted(haproxy_pids_under(tmp_path)) == sorted([master, worker.pid])
    assert not supervisor.running
    assert supervisor.master_pid is None
    assert not process_alive(master) and not process_alive(worker.pid)
    assert haproxy_pids_under(tmp_path) == []


async def test_validate_reports_haproxy_message(tmp_path: Path) -> None:
    assert HAPROXY is not None
    layout = Layout(tmp_path)
    supervisor = HaproxySupervisor(binary=HAPROXY, run_dir=tmp_path)
    good = write_config(layout, render_config(layout))
    assert (await supervisor.validate(good)).ok
    bad = write_config(layout, render_config(layout, extra=BROKEN), tmp_path / "bad.cfg")
    result = await supervisor.validate(bad)
    assert not result.ok
    assert "unknown keyword 'no_such_directive'" in result.output
    assert "bad.cfg" in result.output
    missing = await supervisor.validate(tmp_path / "missing.cfg")
    assert not missing.ok and "missing.cfg" in missing.output


async def test_start_rejects_invalid_config(tmp_path: Path) -> None:
    assert HAPROXY is not None
    layout = Layout(tmp_path)
    supervisor = HaproxySupervisor(binary=HAPROXY, run_dir=tmp_path)
    config = write_config(layout, render_config(layout, extra=BROKEN))
    with pytest.raises(ConfigRejected) as caught:
        await supervisor.start(config)
    assert "no_such_directive" in caught.value.output
    assert str(config) in caught.value.output  # the caller's path, not the staged copy
    assert not supervisor.running
    assert haproxy_pids_under(tmp_path) == []


async def test_reload_is_confirmed_and_applies_the_new_config(tmp_path: Path) -> None:
    async with running_haproxy(tmp_path) as (supervisor, runtime, layout):
        before = (await supervisor.proc()).workers[0].pid
        config = write_config(layout, render_config(layout, echoes=("a", "b", "c")))
        result = await supervisor.reload(config)
        assert result.worker_pid != before
        proc = await supervisor.proc()
        assert [w.pid for w in proc.workers] == [result.worker_pid]
        assert proc.failed_reloads == 0 and proc.reloads == 1
        assert int((await runtime.info())["Pid"]) == result.worker_pid
        assert await get(layout.echo_port("c")) == (200, "c")
        total_ms, check_ms = result.duration_s * 1000, result.validate_s * 1000
        print(f"reload: {total_ms:.1f} ms (haproxy -c {check_ms:.1f} ms)")


async def test_runtime_commands_reach_the_new_worker_after_reload(tmp_path: Path) -> None:
    """Right after a reload the old worker still accepts on the admin socket (for the `grace`
    period): commands routed by the master must land in the new worker."""
    async with running_haproxy(tmp_path) as (supervisor, runtime, layout):
        for number in range(5):
            result = await supervisor.reload(layout.config_path)
            assert int((await runtime.info())["Pid"]) == result.worker_pid
            await runtime.set_map_entry(str(layout.routes_map), f"/n{number}", "be_static")
        # Read through the master too: the current worker holds only the last entry, each
        # earlier one having gone with the worker it was set in.
        entries = await runtime.show_map(str(layout.routes_map))
        assert {f"/n{number}" for number in range(5)} - set(entries) == {"/n0", "/n1", "/n2", "/n3"}


async def test_rejected_reload_keeps_old_worker_serving(tmp_path: Path) -> None:
    async with running_haproxy(tmp_path) as (supervisor, _, layout):
        worker = (await supervisor.proc()).workers[0].pid
        config = write_config(layout, render_config(layout, extra=BROKEN))
        with pytest.raises(ConfigRejected):
            await supervisor.reload(config)
        proc = await supervisor.proc()
        assert [w.pid for w in proc.workers] == [worker]
        assert proc.reloads == 0  # HAProxy never saw it
        assert await get(layout.front_port) == (200, "static")


async def test_reload_that_fails_to_load_is_reported(tmp_path: Path) -> None:
    """`haproxy -c` does not bind, so a port held by someone else passes the check and only
    fails in the reload itself; 2.6 says nothing, `show proc` counts the failure."""
    async with running_haproxy(tmp_path) as (supervisor, _, layout):
        worker = (await supervisor.proc()).workers[0].pid
        with socket.socket() as blocker:  # no SO_REUSEPORT: HAProxy cannot share this port
            blocker.bind(("127.0.0.1", 0))
            blocker.listen()
            port = blocker.getsockname()[1]
            extra = f"\nfrontend fe_taken\n    bind 127.0.0.1:{port}\n"
            config = write_config(layout, render_config(layout, extra=extra))
            with pytest.raises(ReloadFailed) as caught:
                await supervisor.reload(config)
        assert "keeps running the previous one" in str(caught.value)
        assert [w.pid for w in (await supervisor.proc()).workers] == [worker]
        assert await get(layout.front_port) == (200, "static")
        # The next good configuration reloads normally.
        result = await supervisor.reload(write_config(layout, render_config(layout)))
        assert result.worker_pid != worker


async def test_server_state_survives_reload(tmp_path: Path) -> None:
    async with running_haproxy(tmp_path) as (supervisor, runtime, layout):
        await runtime.set_server_weight("be_static", "static", 7)
        await runtime.set_server_state("be_static", "static", "drain")
        await supervisor.reload(layout.config_path)
        state = await runtime.server_state("be_static", "static")
        assert state is not None
        assert state.weight == 7 and state.admin_state.draining


async def test_old_worker_lingers_for_an_idle_client_then_leaves(tmp_path: Path) -> None:
    """With `option idle-close-on-response` an idle keep-alive client keeps the old worker,
    which answers its next request with `connection: close` and exits."""
    async with running_haproxy(tmp_path) as (supervisor, _, layout):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{layout.front_port}") as client:
            assert (await client.get("/")).text == "static"
            result = await supervisor.reload(layout.config_path)
            assert await supervisor.old_worker_count() == 1
            assert len(result.old_worker_pids) == 1
            response = await client.get("/")
            assert response.text == "static"
            assert response.headers["connection"] == "close"
        await wait_for(lambda: not process_alive(result.old_worker_pids[0]), timeout=15)
        assert await supervisor.old_worker_count() == 0


async def test_watchdog_restarts_a_killed_master(tmp_path: Path) -> None:
    async with running_haproxy(tmp_path) as (supervisor, _, layout):
        master = supervisor.master_pid
        assert master is not None
        os.kill(master, signal.SIGKILL)
        await wait_for(lambda: supervisor.restarts == 1 and supervisor.running)
        assert supervisor.master_pid not in (None, master)
        assert len((await supervisor.proc()).workers) == 1
        assert await get(layout.front_port) == (200, "static")
    assert haproxy_pids_under(tmp_path) == []


async def test_watchdog_uses_last_good_config(tmp_path: Path) -> None:
    """The caller's file may hold a rejected config when the master dies: the restart must
    not read it."""
    async with running_haproxy(tmp_path) as (supervisor, _, layout):
        config = write_config(layout, render_config(layout, echoes=("a", "b", "c")))
        await supervisor.reload(config)
        write_config(layout, render_config(layout, extra=BROKEN))
        with pytest.raises(ConfigRejected):
            await supervisor.reload(config)
        master = supervisor.master_pid
        assert master is not None
        os.kill(master, signal.SIGKILL)
        await wait_for(lambda: supervisor.restarts == 1 and supervisor.running)
        assert await get(layout.echo_port("c")) == (200, "c")


async def test_start_stops_a_master_left_from_an_earlier_run(tmp_path: Path) -> None:
    assert HAPROXY is not None
    async with running_haproxy(tmp_path) as (first, _, layout):
        orphan = first.master_pid
        assert orphan is not None
        # The earlier run is gone: nothing watches its master (a live watchdog would restart
        # it) and nothing holds its listening sockets.
        await first.leave_running()
        second = HaproxySupervisor(binary=HAPROXY, run_dir=tmp_path)
        await second.start(layout.config_path)
        try:
            assert not process_alive(orphan)
            assert second.master_pid != orphan
            assert await get(layout.front_port) == (200, "static")
        finally:
            await second.stop()
    assert haproxy_pids_under(tmp_path) == []


class Client(threading.Thread):
    """Sequential requests until told to stop (bounded in count and time); counts failures."""

    def __init__(self, port: int, *, keep_alive: bool, limit: int = 20_000) -> None:
        super().__init__(daemon=True)
        self.port, self.keep_alive, self.limit = port, keep_alive, limit
        self.ok = 0
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5) as client:
            while not self.stop.is_set() and self.ok + len(self.errors) < self.limit:
                if time.monotonic() > deadline:
                    break
                try:
                    if self.keep_alive:
                        response = client.get("/")
                        status, body = response.status_code, response.text
                    else:
                        status, body = http_get(self.port)
                except (OSError, httpx.HTTPError) as error:
                    self.errors.append(repr(error))
                    continue
                if (status, body) == (200, "static"):
                    self.ok += 1
                else:
                    self.errors.append(f"{status} {body[:80]!r}")


async def test_reload_is_hitless(tmp_path: Path) -> None:
    """20 reloads under sequential traffic, one client opening a connection per request and
    one reusing a keep-alive connection: no refused connection, no failed request."""
    async with running_haproxy(tmp_path) as (supervisor, _, layout):
        clients = [Client(layout.front_port, keep_alive=k) for k in (False, True)]
        for client in clients:
            client.start()
        durations = []
        for number in range(20):
            # A real change each time, so every reload parses a different configuration.
            extra = f"\nbackend be_extra_{number}\n    balance roundrobin\n"
            config = write_config(layout, render_config(layout, extra=extra))
            durations.append((await supervisor.reload(config)).duration_s)
            await asyncio.sleep(0.05)
        while sum(c.ok for c in clients) < 2000 and all(c.is_alive() for c in clients):
            await asyncio.sleep(0.05)
        for client in clients:
            client.stop.set()
            await asyncio.to_thread(client.join, 10)
        errors = [error for client in clients for error in client.errors]
        total = sum(client.ok for client in clients)
        durations.sort()
        print(
            f"hitless: {total} requests, {len(errors)} errors, 20 reloads, "
            f"reload median {durations[10] * 1000:.1f} ms, max {durations[-1] * 1000:.1f} ms"
        )
        assert errors == []
        assert total >= 2000
        assert (await supervisor.proc()).reloads == 20


async def test_unchecked_loads_are_parsed_once_and_a_bad_one_is_still_rejected(
    tmp_path: Path,
) -> None:
    """Without `check` (nothing served yet), HAProxy's own load is the check: a good file is
    loaded without `haproxy -c`, and a bad one is rejected as a check would, with its reasons,
    the running worker left as it was; a port taken still fails as a reload does."""
    assert HAPROXY is not None
    (tmp_path / "start").mkdir()
    layout = Layout(tmp_path / "start")
    supervisor = HaproxySupervisor(binary=HAPROXY, run_dir=tmp_path / "start")
    config = write_config(layout, render_config(layout, extra=BROKEN))
    with pytest.raises(ConfigRejected) as rejected:
        await supervisor.start(config, check=False)
    assert "no_such_directive" in rejected.value.output
    assert str(config) in rejected.value.output
    assert not supervisor.running and haproxy_pids_under(tmp_path / "start") == []
    (tmp_path / "reload").mkdir()
    async with running_haproxy(tmp_path / "reload") as (supervisor, _, layout):
        worker = (await supervisor.proc()).workers[0].pid
        config = write_config(layout, render_config(layout, extra=BROKEN))
        with pytest.raises(ConfigRejected) as rejected:
            await supervisor.reload(config, check=False)
        assert "no_such_directive" in rejected.value.output
        assert [w.pid for w in (await supervisor.proc()).workers] == [worker]
        assert await get(layout.front_port) == (200, "static")
        with socket.socket() as blocker:
            blocker.bind(("127.0.0.1", 0))
            blocker.listen()
            extra = f"\nfrontend fe_taken\n    bind 127.0.0.1:{blocker.getsockname()[1]}\n"
            config = write_config(layout, render_config(layout, extra=extra))
            with pytest.raises(ReloadFailed):
                await supervisor.reload(config, check=False)
        good = write_config(layout, render_config(layout, echoes=("a", "b")))
        result = await supervisor.reload(good, check=False)
        assert result.worker_pid != worker and result.validate_s < 0.05
        assert await get(layout.echo_port("b")) == (200, "b")


async def test_an_unchecked_load_is_given_time_by_the_size_of_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No check timed an unchecked load, so its wait follows the file's size (`CHECK_S_PER_MB`),
    not the start and reload timeouts alone: 100,000 gateways take HAProxy half a minute to
    load. Here the timeouts are zero and a megabyte is given hours."""
    import meshgate.haproxy.supervisor as module

    assert HAPROXY is not None
    monkeypatch.setattr(module, "CHECK_S_PER_MB", 1e7)
    layout = Layout(tmp_path)
    supervisor = HaproxySupervisor(
        binary=HAPROXY, run_dir=tmp_path, start_timeout=0.0, reload_timeout=0.0
    )
    await supervisor.start(write_config(layout, render_config(layout)), check=False)
    try:
        config = write_config(layout, render_config(layout, echoes=("a",)))
        result = await supervisor.reload(config, check=False)
        assert await get(layout.echo_port("a")) == (200, "a")
        assert result.worker_pid in [w.pid for w in (await supervisor.proc()).workers]
    finally:
        await supervisor.stop()
