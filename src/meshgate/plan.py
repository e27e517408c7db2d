"""Deciding how a new data plane reaches HAProxy: the smallest list of actions. Pure.

Map contents (route weights, virtual-host aliases) and the servers of an existing backend are
data HAProxy can change at run time, so such changes need no reload: maps are swapped
atomically, servers are added, re-weighted, or drained and deleted. Anything else — a new or
changed frontend or backend, a server that HAProxy 2.6 cannot add at run time — needs a
reload, which the supervisor makes hitless.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass

from meshgate.compiler import ir


@dataclass(frozen=True)
class ReplaceMap:
    """Swap a map's whole content atomically (prepare / add / commit)."""

    name: str
    entries: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class AddServer:
    backend: str
    server: ir.Server
    health: ir.HealthCheck


@dataclass(frozen=True)
class SetServerWeight:
    backend: str
    server: str
    weight: int


@dataclass(frozen=True)
class RemoveServer:
    """Drain (no new traffic, running requests finish), then delete."""

    backend: str
    server: str


@dataclass(frozen=True)
class Reload:
    reason: str


RuntimeAction = ReplaceMap | AddServer | SetServerWeight | RemoveServer
Action = RuntimeAction | Reload


def plan(running: ir.DataPlane | None, desired: ir.DataPlane) -> list[Action]:
    """Actions that take HAProxy from `running` to `desired`, in the order to run them.

    New servers come first and departing ones last, so a route never goes without instances
    in between; maps come after the additions for the same reason.
    """
    if running is None:
        return [Reload("first configuration")]
    if running.settings != desired.settings:
        return [Reload("data-plane settings changed")]
    if running.frontends != desired.frontends:
        return [Reload("frontends changed")]
    if {m.name for m in running.maps} != {m.name for m in desired.maps}:
        return [Reload("map files added or removed")]
    old_backends = {b.name: b for b in running.backends}
    new_backends = {b.name: b for b in desired.backends}
    if old_backends.keys() != new_backends.keys():
        return [Reload("backends added or removed")]
    additions: list[AddServer] = []
    weights: list[SetServerWeight] = []
    removals: list[RemoveServer] = []
    for name, new in new_backends.items():
        old = old_backends[name]
        if dataclasses.replace(old, servers=()) != dataclasses.replace(new, servers=()):
            return [Reload(f"backend {name} changed")]
        old_servers = {s.name: s for s in old.servers}
        new_servers = {s.name: s for s in new.servers}
        for server_name, server in new_servers.items():
            before = old_servers.get(server_name)
            if before is None or (before.address, before.port, before.cookie) != (
                server.address,
                server.port,
                server.cookie,
            ):
                reason = _cannot_add_at_run_time(new, server)
                if reason:
                    return [Reload(reason)]
                if before is not None:
                    removals.append(RemoveServer(name, server_name))
                additions.append(AddServer(name, server, new.health))
            elif before.weight != server.weight:
                weights.append(SetServerWeight(name, server_name, server.weight))
        removals += [RemoveServer(name, s) for s in old_servers if s not in new_servers]
    maps: list[RuntimeAction] = [
        ReplaceMap(new_map.name, new_map.entries)
        for new_map in desired.maps
        if running.map_named(new_map.name) != new_map
    ]
    # A server whose address changed is removed before its replacement of the same name is
    # added; every other removal waits until additions and maps are in place.
    replaced = {(a.backend, a.server.name) for a in additions}
    first = [r for r in removals if (r.backend, r.server) in replaced]
    last = [r for r in removals if (r.backend, r.server) not in replaced]
    return [*first, *additions, *weights, *maps, *last]


def _cannot_add_at_run_time(backend: ir.Backend, server: ir.Server) -> str | None:
    """Why HAProxy 2.6 cannot add this server dynamically, or None if it can."""
    if server.cookie is not None:
        return "a server with a persistence cookie cannot be added at run time"
    try:
        ipaddress.ip_address(server.address)
    except ValueError:
        return "a server named by host name cannot be added at run time"
    health = backend.health
    if health.type == "agent" or health.port is not None or health.error_limit is not None:
        return "a server with agent, port or passive checks cannot be added at run time"
    return None
