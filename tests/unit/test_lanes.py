"""The background lanes of the agent, the grouping of runtime actions, and the pure parts of
pipelined runtime commands."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from meshgate.agent.driver import _batches
from meshgate.agent.lanes import Lane, LatestLane
from meshgate.compiler import ir
from meshgate.errors import MeshgateError
from meshgate.haproxy import bulk, transport
from meshgate.haproxy.commands import UnsafeRuntimeArgument, one_command
from meshgate.haproxy.runtime import RuntimeClient
from meshgate.plan import AddServer, RemoveServer, ReplaceMap, SetServerWeight

HEALTH = ir.HealthCheck(type="tcp", interval_ms=2000, rise=2, fall=3)


def add(backend: str) -> AddServer:
    return AddServer(backend, ir.Server("s", "127.0.0.1", 80, 1), HEALTH)


async def test_a_lane_runs_jobs_in_order_and_drains() -> None:
    lane, done = Lane("test"), list[object]()

    def job(number: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            await asyncio.sleep(0.01 * (3 - number))  # later jobs are quicker: order still kept
            done.append(number)

        return run

    for number in range(3):
        lane.submit(job(number))
    assert lane.busy()
    await lane.drained()
    assert done == [0, 1, 2]
    assert not lane.busy()
    await lane.stop()


async def test_a_failed_job_drops_those_queued_behind_it_until_cleared() -> None:
    lane, done = Lane("test"), list[object]()

    async def fail() -> None:
        raise MeshgateError("add server refused")

    async def later() -> None:
        done.append("later")

    lane.submit(fail)
    lane.submit(later)
    await lane.drained()
    assert lane.failure == "add server refused"
    assert done == []
    lane.clear_failure()
    lane.submit(later)
    await lane.drained()
    assert done == ["later"]
    await lane.stop()


async def test_a_latest_lane_skips_submissions_overtaken_by_newer_ones() -> None:
    lane, written = LatestLane(), list[int]()
    release = asyncio.Event()

    def write(version: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            if version == 0:
                await release.wait()
            written.append(version)

        return run

    lane.submit(write(0))
    await asyncio.sleep(0)
    lane.submit(write(1))
    lane.submit(write(2))
    release.set()
    await lane.drained()
    assert written == [0, 2]
    assert not lane.busy()


async def test_a_latest_lane_keeps_the_failure_of_its_last_job() -> None:
    lane = LatestLane()

    async def fail() -> None:
        raise OSError("disk full")

    lane.submit(fail)
    await lane.drained()
    assert lane.failure == "disk full"


async def test_a_latest_lane_starts_jobs_a_gap_apart_unless_someone_waits() -> None:
    lane, started = LatestLane(gap_s=0.3), list[float]()
    loop = asyncio.get_running_loop()

    async def write() -> None:
        started.append(loop.time())

    lane.submit(write)
    await asyncio.sleep(0.01)
    lane.submit(write)  # the first has just ended: this one waits for the gap
    await asyncio.sleep(0.1)
    assert len(started) == 1 and lane.busy()
    await asyncio.sleep(0.3)
    assert len(started) == 2 and started[1] - started[0] >= 0.29
    lane.submit(write)
    await asyncio.sleep(0.01)
    waited_from = loop.time()
    await lane.drained()  # a reload waiting for the files: no gap
    assert len(started) == 3 and started[2] - waited_from < 0.1
    assert not lane.busy()


def test_server_actions_of_a_kind_are_grouped_and_others_stay_alone() -> None:
    actions = [
        add("a"),
        add("b"),
        SetServerWeight("a", "s", 2),
        SetServerWeight("b", "s", 2),
        ReplaceMap("weights.map", ()),
        ReplaceMap("slots.map", ()),
        RemoveServer("a", "old"),
        RemoveServer("b", "old"),
    ]
    kinds = [(type(batch[0]).__name__, len(batch)) for batch in _batches(list(actions))]
    assert kinds == [
        ("AddServer", 2),
        ("SetServerWeight", 2),
        ("ReplaceMap", 1),
        ("ReplaceMap", 1),
        ("RemoveServer", 2),
    ]


def test_pipelined_requests_fit_the_buffer_and_keep_a_server_s_commands_together() -> None:
    runtime = RuntimeClient("/run/admin.sock", "/run/master.sock")
    groups = [
        [
            f"add server be{i}/s 127.0.0.1:80",
            f"enable health be{i}/s",
            f"set server be{i}/s state ready",
        ]
        for i in range(1000)
    ]
    chunks = runtime.pipeline_chunks(groups)
    assert len(chunks) > 1
    assert [line for chunk in chunks for line in chunk] == [c for g in groups for c in g]
    for chunk in chunks:
        assert chunk[0].startswith("add server")  # a group is never split
        request = "; ".join(f"@1 {line}" for line in chunk)
        assert len(transport.encode_request(request)) <= transport.MAX_REQUEST_BYTES


def test_a_command_with_a_separator_is_not_pipelined() -> None:
    with pytest.raises(UnsafeRuntimeArgument):
        one_command("set server a/b weight 1; del server a/b")


STATE_HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health "
    "srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord "
    "srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port"
)


def test_server_states_of_many_backends_read_in_one_request() -> None:
    reply = (
        f"1\n{STATE_HEADER}\n3 be1 1 s 127.0.0.1 2 0 1 1 0 1 0 2 6 0 0 0 - 8080 - 0 0 - - 0\n\n"
        "Can't find backend.\n\n"
        f"1\n{STATE_HEADER}\n4 be2 1 s 127.0.0.1 2 1 1 1 0 1 0 2 6 0 0 0 - 8081 - 0 0 - - 0\n\n"
    )
    states = {(s.backend, s.name): s for s in bulk.parse_states(reply)}
    assert set(states) == {("be1", "s"), ("be2", "s")}
    server = bulk.NewServer(
        "be1", "s", "127.0.0.1", 8080, "add server be1/s 127.0.0.1:8080", True, False
    )
    assert bulk.confirmed(server, states["be1", "s"])
    in_maintenance = bulk.NewServer("be2", "s", "127.0.0.1", 8081, "", True, False)
    assert not bulk.confirmed(in_maintenance, states["be2", "s"])
    elsewhere = bulk.NewServer("be1", "s", "127.0.0.1", 9000, "", True, False)
    assert not bulk.confirmed(elsewhere, states["be1", "s"])
    assert not bulk.confirmed(server, None)
    assert bulk.parse_states("Can't find backend.\n") == []
