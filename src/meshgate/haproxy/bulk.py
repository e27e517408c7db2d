"""Many server changes in a few round trips: commands pipelined through the master socket.

An instance of a service that a thousand gateways route to is a thousand servers, one per
route's backend. Added one at a time, each takes four requests (`add server`, `enable
health`, `set server ... state ready`, reading its state back): seconds in all. Pipelined,
`@1 add server ...; @1 enable health ...; @1 set server ... ready; @1 add server ...` fills
HAProxy's 16 kB request buffer with some thirty servers, and one state read per batch of
backends confirms them all.

The replies of a pipelined request run together without a reliable separator, so outcomes are
never read from them: the state is read back, and what it does not confirm is returned to the
caller, which does it again one by one, the careful way (`RuntimeClient.add_server`,
`remove_server`), where each reply is checked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from meshgate.haproxy import commands, server_states, stat_csv
from meshgate.haproxy.commands import ServerAdminState
from meshgate.haproxy.runtime import RuntimeClient
from meshgate.haproxy.server_states import ServerState
from meshgate.haproxy.stat_csv import StatType

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
    """Add and put in service; returns those the state read back does not show as added (an
    error, a request HAProxy dropped), for the caller to add one by one."""
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
    if not servers:
        return []
    backends = {b for b, _ in servers}
    drain = ServerAdminState.DRAIN
    await run_groups(runtime, ([commands.set_server_state(b, s, drain)] for b, s in servers))
    deadline = time.monotonic() + drain_timeout
    pending = set(servers)
    while pending and time.monotonic() < deadline:
        busy = await _busy(runtime, backends, pending)
        idle = pending - busy
        if idle:
            await run_groups(runtime, (_delete_lines(b, s) for b, s in sorted(idle)))
            present = await states(runtime, {b for b, _ in idle})
            pending = busy | (idle & present.keys())
        if pending:
            await asyncio.sleep(poll_interval)
    return sorted(pending)


def _delete_lines(backend: str, server: str) -> list[str]:
    return [
        commands.set_server_state(backend, server, ServerAdminState.MAINT),
        commands.del_server(backend, server),
    ]


async def _busy(
    runtime: RuntimeClient, backends: Iterable[str], servers: set[ServerRef]
) -> set[ServerRef]:
    reply = await run_groups(runtime, ([commands.show_stat(b)] for b in sorted(set(backends))))
    return {
        (row.pxname, row.svname)
        for row in stat_csv.parse_stat_csv(reply)
        if row.type is StatType.SERVER
        and (row.pxname, row.svname) in servers
        and (row.scur > 0 or row.qcur > 0)
    }
