"""One health check per instance per node: hidden checker backends, tracked by route servers.

Every route backend has its own server for each instance it routes to, so when a thousand
gateways route to one service, each instance would be checked a thousand times per interval,
and HAProxy needs a file descriptor per checked server (at 100,000 gateways it refuses to
start). Instead, the node checks each instance endpoint once, in a checker backend, and every
route server for that endpoint follows it with `track <checker>/<server>`: it is UP, DOWN or
in maintenance exactly when the checker server is.

The `option httpchk` / `http-check` / `tcp-check` lines and `timeout check` are backend-level,
so there is one checker backend per distinct check profile. A checker backend is never routed
to: no frontend rule names it, and it is not in the IR's route backends, so stats, metrics,
the graph and the dashboard never show it.

Servers that keep their own check (tried against HAProxy 2.6.12):
- agent checks: the agent sets each server's weight, a property of the server itself;
- passive checks (`observe ... on-error mark-down`, from `error_limit` or prefer-local's fail
  fast): HAProxy accepts `observe` beside `track` but never marks a tracking server down for
  errors in traffic, because the tracker has no check of its own to fail.

HAProxy 2.6 cannot track a server added at run time ("unable to use ... for tracking as it is
a dynamic server") and cannot delete a server that the configuration file tracks. So each
checker also has a few spare servers, in maintenance (not checked) at an address of 0.0.0.0:0:
an instance added at run time at an endpoint the configuration does not check borrows one
(`set server ... addr`, then ready), and its route servers track it; the spare goes back to
maintenance when nothing tracks it any more, and the next reload gives the endpoint a server
of its own (see `agent.driver`). Each spare is a checked server to HAProxy, which counts a
file descriptor for it at start: a checker has as many spares as endpoints, at least
MIN_SPARES and at most MAX_SPARES.

Pure: the same data plane gives the same checkers and names.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

from meshgate.compiler import ir, naming


@dataclass(frozen=True)
class Profile:
    """Everything of a backend that decides how its servers are checked."""

    mode: ir.Mode
    health: ir.HealthCheck
    tls: ir.ServerTls | None  # checks of `ssl` servers go over TLS too
    timeout_connect_ms: int | None  # bounds a check's connect phase


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int
    netns: str | None


MIN_SPARES = 2
MAX_SPARES = 8


@dataclass(frozen=True)
class Checker:
    name: str
    profile: Profile
    servers: tuple[tuple[str, Endpoint], ...]  # (server name, endpoint), sorted by name

    @property
    def spares(self) -> tuple[str, ...]:
        """Names of the spare servers lent to endpoints added at run time."""
        count = min(MAX_SPARES, max(MIN_SPARES, len(self.servers)))
        return tuple(naming.spare_server_name(number) for number in range(count))


def keeps_own_check(backend: ir.Backend, server: ir.Server) -> bool:
    """Whether this route server is checked by itself rather than tracking a checker."""
    return _checks_own(backend) or server.fail_fast


def decides_own_states(backend: ir.Backend) -> bool:
    """Whether a server of this route backend may keep its own check (`keeps_own_check`), so
    that HAProxy decides its state there. Only such a backend streams all its servers' state
    changes to the agent. The others' servers follow a checker server, which streams its own
    once for all of them, and their other changes are the agent's own commands, which HAProxy
    logs as notices: those backends stream only alerts (a DOWN from a check of their own, had
    a server no spare checker to track). A registration at 1,000 gateways would otherwise
    stream 2,000 lines that tell the agent nothing new, each waking the stream in HAProxy's
    other thread."""
    return _checks_own(backend) or backend.prefer_local


def _checks_own(backend: ir.Backend) -> bool:
    return backend.health.type == "agent" or backend.health.error_limit is not None


def profile_of(backend: ir.Backend) -> Profile:
    return Profile(
        mode=backend.mode,
        health=backend.health,
        tls=backend.tls,
        timeout_connect_ms=backend.timeout_connect_ms,
    )


@functools.lru_cache(maxsize=4096)
def checker_name(profile: Profile) -> str:
    # repr of frozen dataclasses of plain values: the same profile, the same text, everywhere.
    return naming.checker_backend_name(naming.short_hash(repr(profile), length=10))


@functools.lru_cache(maxsize=65536)
def _server_name(endpoint: Endpoint) -> str:
    return naming.checked_server_name(endpoint.address, endpoint.port, endpoint.netns)


def endpoint_of(server: ir.Server) -> Endpoint:
    return Endpoint(server.address, server.port, server.netns)


def tracked(backend: ir.Backend, server: ir.Server) -> tuple[str, str] | None:
    """(checker backend, checker server) that this route server tracks, or None when it keeps
    its own check."""
    if keeps_own_check(backend, server):
        return None
    return checker_name(profile_of(backend)), _server_name(endpoint_of(server))


def shared_servers(backend: ir.Backend) -> tuple[object, ...]:
    """The backend's servers and what their lines and checks read of it: the routes to one
    service have all of it equal (a registration at 1,000 gateways gives them one tuple of
    servers), so it is looked at once for all of them."""
    return (
        backend.servers,
        backend.health,
        backend.tls,
        backend.mode,
        backend.timeout_connect_ms,
    )


def checkers(backends: Iterable[ir.Backend]) -> tuple[Checker, ...]:
    """The checker backends that the route servers of `backends` track, sorted by name."""
    profiles: dict[str, Profile] = {}
    servers: dict[str, dict[str, Endpoint]] = {}
    seen: set[tuple[object, ...]] = set()
    for backend in backends:
        same = shared_servers(backend)
        if same in seen:
            continue
        seen.add(same)
        profile: Profile | None = None
        for server in backend.servers:
            if keeps_own_check(backend, server):
                continue
            if profile is None:
                profile = profile_of(backend)
                name = checker_name(profile)
                profiles.setdefault(name, profile)
                checked = servers.setdefault(name, {})
            endpoint = endpoint_of(server)
            checked.setdefault(_server_name(endpoint), endpoint)
    return tuple(
        Checker(name, profiles[name], tuple(sorted(servers[name].items())))
        for name in sorted(profiles)
    )


def checked_refs(backends: Iterable[ir.Backend]) -> frozenset[tuple[str, str]]:
    """Every (checker backend, server) that the configuration of these backends defines."""
    return frozenset(
        (checker.name, server) for checker in checkers(backends) for server, _ in checker.servers
    )
