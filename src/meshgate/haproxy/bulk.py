"""Many server changes in a few round trips: one session on the worker, else pipelined.

An instance of a service that a thousand gateways route to is a thousand servers, one per
route's backend. Added one at a time, each takes four requests (`add server`, `enable
health`, `set server ... state ready`, reading its state back): seconds in all.

They go in one prompt-mode session on the worker's admin socket (`session`): 15-30 ms for a
thousand servers on 2.6, where HAProxy ends each reply with a prompt, so every command's reply
is checked and nothing is read back. When no session on the current worker can be had (an old
worker answers there after a reload), or one is cut, they are pipelined through the master
instead: `@1 add server ...; @1 enable health ...; @1 set server ... ready; @1 add server ...`
fills HAProxy's 16 kB request buffer with some thirty servers, and one state read per batch of
backends confirms them all, since the replies of a pipelined request run together without a
reliable separator. What neither confirms is returned to the caller, which does it again one
by one, the careful way (`RuntimeClient.add_server`, `remove_server`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from meshgate.haproxy import commands, replies, server_states, stat_csv
from meshgate.haproxy.commands import ServerAdminState
from meshgate.haproxy.replies import CommandKind, NoSuchServer, RuntimeCommandFailed
from meshgate.haproxy.runtime import RuntimeClient
from meshgate.haproxy.server_states import ServerState
from meshgate.haproxy.transport import RuntimeUnavailable

log = logging.getLogger(__name__)
# The statistics of every server of every proxy (type 4: servers), and how many backends are
# looked at one by one instead.
ALL_SERVERS_STATS = "show stat -1 4 -1"
FEW_BACKENDS = 8
# Commands per worker session: 6,000 take HAProxy 30-120 ms (2.6, 2 CPUs, loaded).
SESSION_LINES = 6_000
ServerRef = tuple[str, str]  # (backend, server)
# Pipelined requests on their way at once: well under the ten connections the master socket
# takes at a time, which the stats poller shares.
IN_FLIGHT = 4


@dataclass(frozen=True)
class NewServer:
    """A server to add: its `add server` line (from `commands.add_server`, so validated) and
    what to switch on after it."""

    backend: str
    name: str
    address: str  # canonical, as `show servers state` prints it
    port: int
    add_line: str
    check: bool
    agent: bool

    def lines(self) -> list[str]:
        lines = [self.add_line]
        if self.check:
            lines.append(commands.enable_health(self.backend, self.name))
        if self.agent:
            lines.append(commands.enable_agent(self.backend, self.name))
        lines.append(commands.set_server_state(self.backend, self.name, ServerAdminState.READY))
        return lines


async def run_groups(runtime: RuntimeClient, groups: Iterable[Sequence[str]]) -> str:
    """Every group's commands, in order, in as few requests as fit; the replies run together.

    A group never spans two requests, and groups are independent of each other, so requests
    go IN_FLIGHT at a time: HAProxy works on one while the agent's event loop, which other
    work shares, gets to the next."""
    chunks = runtime.pipeline_chunks(groups)
    limit = asyncio.Semaphore(IN_FLIGHT)

    async def send(chunk: list[str]) -> str:
        async with limit:
            return await runtime.pipeline(chunk)

    return "".join(await asyncio.gather(*(send(chunk) for chunk in chunks)))


def command_kind(line: str) -> CommandKind:
    """What a reply to this command looks like when it worked (see `replies.check_reply`)."""
    if line.startswith("add server "):
        return CommandKind.ADD_SERVER
    if line.startswith("del server "):
        return CommandKind.DEL_SERVER
    if line.startswith(("enable ", "disable ")):
        return CommandKind.HEALTH
    if line.startswith("show "):
        return CommandKind.READ
    if line.startswith("set server ") and " addr " in line:
        return CommandKind.SET_SERVER_ADDR
    return CommandKind.SET_SERVER


def failure(line: str, reply: str) -> RuntimeCommandFailed | None:
    """The error a command's own reply reports, None when it worked."""
    try:
        replies.check_reply(command_kind(line), reply)
    except RuntimeCommandFailed as error:
        return error
    return None


async def in_session(
    runtime: RuntimeClient, groups: Sequence[Sequence[str]]
) -> list[list[str]] | None:
    """Every group's commands in one session on the current worker, in order, and each
    group's replies; None when no session could be had, or it was cut (what ran is then
    unknown: the caller does it the pipelined way, which reads the state back)."""
    found: list[str] = []
    for lines in _session_chunks(groups):
        try:
            answered = await runtime.worker_session(lines)
        except RuntimeUnavailable as error:
            log.warning("worker session failed; through the master instead: %s", error)
            return None
        if answered is None:
            log.warning("no worker session; through the master instead")
            return None
        if len(answered) != len(lines):
            log.warning(
                "worker session cut after %d of %d replies; through the master instead",
                len(answered),
                len(lines),
            )
            return None
        found += answered
    out: list[list[str]] = []
    start = 0
    for group in groups:
        out.append(found[start : start + len(group)])
        start += len(group)
    return out


def _session_chunks(groups: Sequence[Sequence[str]]) -> list[list[str]]:
    """The groups' lines in sessions of at most SESSION_LINES (a group never split), so that
    each session ends well within the client's timeout however many servers change."""
    chunks: list[list[str]] = []
    for group in groups:
        if not chunks or (chunks[-1] and len(chunks[-1]) + len(group) > SESSION_LINES):
            chunks.append([])
        chunks[-1].extend(group)
    return chunks


async def states(runtime: RuntimeClient, backends: Iterable[str]) -> dict[ServerRef, ServerState]:
    """The servers of these backends as the worker has them, read in pipelined requests."""
    groups = [[commands.show_servers_state(b)] for b in sorted(set(backends))]
    if not groups:
        return {}
    found = parse_states(await run_groups(runtime, groups))
    return {(s.backend, s.name): s for s in found}


def parse_states(reply: str) -> list[ServerState]:
    """`show servers state` replies run together: each starts with the format version line,
    which only the first may keep. A backend HAProxy does not know answers an error sentence,
    which is no server line and is left out."""
    kept: list[str] = []
    for line in reply.splitlines():
        stripped = line.strip()
        if not stripped or (kept and stripped == "1"):
            continue
        if not stripped.startswith("#") and not stripped[0].isdigit():
            continue
        kept.append(line)
    if not kept:
        return []
    return server_states.parse_servers_state("\n".join(kept))


def confirmed(server: NewServer, state: ServerState | None) -> bool:
    return (
        state is not None
        and not state.admin_state.in_maintenance
        and (state.addr, state.port) == (server.address, server.port)
    )


async def add_servers(runtime: RuntimeClient, servers: Sequence[NewServer]) -> list[NewServer]:
    """Add and put in service; returns those not confirmed as added (an error, a request
    HAProxy dropped), for the caller to add one by one.

    In a session, a server whose replies all say it worked is added; one whose reply reports
    an error (it may exist already, from a change cut short) is done again the pipelined way
    with the others whose outcome is unknown, where the state read back tells."""
    if not servers:
        return []
    groups = [s.lines() for s in servers]
    found = await in_session(runtime, groups)
    if found is None:
        return await _add_pipelined(runtime, servers)
    failed = [
        server
        for server, group, answers in zip(servers, groups, found, strict=True)
        if any(failure(line, reply) for line, reply in zip(group, answers, strict=True))
    ]
    return await _add_pipelined(runtime, failed)


async def _add_pipelined(runtime: RuntimeClient, servers: Sequence[NewServer]) -> list[NewServer]:
    if not servers:
        return []
    await run_groups(runtime, (s.lines() for s in servers))
    found = await states(runtime, (s.backend for s in servers))
    return [s for s in servers if not confirmed(s, found.get((s.backend, s.name)))]


async def set_weights(
    runtime: RuntimeClient, weights: Sequence[tuple[str, str, int]]
) -> list[tuple[str, str, int]]:
    """`set server B/S weight W` for each; returns those to set again one by one. A successful
    `set server` answers nothing, so any text in the replies means one failed: all are then
    returned (setting a weight twice is harmless)."""
    lines = [[commands.set_server_weight(b, s, w)] for b, s, w in weights]
    if not lines:
        return []
    found = await in_session(runtime, lines)
    if found is not None:
        return [
            weight
            for weight, group, answers in zip(weights, lines, found, strict=True)
            if failure(group[0], answers[0])
        ]
    reply = await run_groups(runtime, lines)
    return [] if not reply.strip() else list(weights)


async def remove_servers(
    runtime: RuntimeClient,
    servers: Sequence[ServerRef],
    *,
    drain_timeout: float,
    poll_interval: float = 0.1,
) -> list[ServerRef]:
    """Drain, wait until none of them has a stream or a queued request (at most
    `drain_timeout`), then put in maintenance and delete. HAProxy refuses to delete a server
    while idle connections to it remain, which it closes soon after the server enters
    maintenance: deletes are tried again until the deadline. Returns the servers still there
    then (the caller removes them one by one, cutting what still runs)."""
    pending = await drain(runtime, servers)
    return await delete_drained(
        runtime, pending, deadline=time.monotonic() + drain_timeout, poll_interval=poll_interval
    )


async def drain(runtime: RuntimeClient, servers: Sequence[ServerRef]) -> list[ServerRef]:
    """Put in drain: no new request goes to them. Returns those HAProxy has (a server it does
    not know is removed already), to be deleted once idle (`delete_drained`)."""
    if not servers:
        return []
    drains = [[commands.set_server_state(b, s, ServerAdminState.DRAIN)] for b, s in servers]
    found = await in_session(runtime, drains)
    if found is None:
        await run_groups(runtime, drains)
        return list(servers)
    return [
        ref
        for ref, group, answers in zip(servers, drains, found, strict=True)
        if not isinstance(failure(group[0], answers[0]), NoSuchServer)
    ]


async def delete_drained(
    runtime: RuntimeClient,
    servers: Sequence[ServerRef],
    *,
    deadline: float,
    poll_interval: float = 0.1,
    make_way: Callable[[], Awaitable[None]] | None = None,
) -> list[ServerRef]:
    """Delete drained servers as they become idle, until `deadline` (monotonic); returns
    those still there then. `make_way` is awaited before each look: other commands to HAProxy
    that are in a hurry (an instance's servers to add) go first."""
    pending = set(servers)
    while pending and time.monotonic() < deadline:
        if make_way is not None:
            await make_way()
        busy = await _busy(runtime, pending)
        idle = pending - busy
        if idle:
            pending = busy | await _delete(runtime, sorted(idle))
        if pending:
            await asyncio.sleep(poll_interval)
    return sorted(pending)


def _delete_lines(backend: str, server: str) -> list[str]:
    return [
        commands.set_server_state(backend, server, ServerAdminState.MAINT),
        commands.del_server(backend, server),
    ]


async def _delete(runtime: RuntimeClient, servers: Sequence[ServerRef]) -> set[ServerRef]:
    """Put in maintenance and delete; returns the servers still there (HAProxy refuses to
    delete one with connections attached)."""
    groups = [_delete_lines(b, s) for b, s in servers]
    found = await in_session(runtime, groups)
    if found is None:
        await run_groups(runtime, groups)
        present = await states(runtime, {b for b, _ in servers})
        return set(servers) & present.keys()
    still: set[ServerRef] = set()
    for ref, group, answers in zip(servers, groups, found, strict=True):
        error = failure(group[-1], answers[-1])
        if error is not None and not isinstance(error, NoSuchServer):
            still.add(ref)
    return still


async def _busy(runtime: RuntimeClient, servers: set[ServerRef]) -> set[ServerRef]:
    """Those of `servers` with a stream or a queued request."""
    backends = sorted({b for b, _ in servers})
    # `show stat <proxy>` walks every proxy to find that one: past a few backends, one dump
    # of every server is cheaper (0.3 s for a thousand backends one by one, under 20 ms at once).
    groups = (
        [[commands.show_stat(b)] for b in backends]
        if len(backends) <= FEW_BACKENDS
        else [[ALL_SERVERS_STATS]]
    )
    found = await in_session(runtime, groups)
    reply = (
        "".join(answers[0] for answers in found)
        if found is not None
        else await run_groups(runtime, groups)
    )
    streams = stat_csv.server_streams(reply)
    return {ref for ref in servers if streams.get(ref, 0) > 0}
