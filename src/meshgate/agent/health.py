"""Instance status for services: UP, DOWN or MAINT, and where each instance came from.

Health is what HAProxy's checks say, read from `show stat` through the stats collector's poll
(one poll serves stats and health). A service's instances are servers in every route backend
that targets the service; an instance is UP when any of those backends has it up (a client
reaching it through that route is served), MAINT when every one has it in maintenance or
draining, DOWN otherwise. An instance of a service that no route uses is checked by no one:
its status is UNKNOWN until a route targets the service.

`InstanceHealth` is pure state: the agent tells it, on every pass, which instances each
service has (`update`), the poller feeds it HAProxy's view (`observe`), and the agent's
status publication reads the result (`status`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshgate.compiler import Compiled, GatewayResult
from meshgate.events import EventLog, instance_label
from meshgate.model.service import Instance, Service
from meshgate.stats.collector import StatsCollector

ServiceKey = tuple[str, str]
ServerKey = tuple[str, str]  # (backend, server) as HAProxy names them
GatewayKey = tuple[str, str]
UNKNOWN = "UNKNOWN"
POLL_S = 1.0


@dataclass(frozen=True)
class Member:
    id: str
    address: str
    port: int
    source: str  # manifest | api | dns


def aggregate(statuses: Sequence[str]) -> str:
    """One instance's status from its status in each route backend ("" = not listed)."""
    seen = [s for s in statuses if s]
    if not seen:
        return UNKNOWN
    if "UP" in seen:
        return "UP"
    if all(s == "MAINT" for s in seen):
        return "MAINT"
    return "DOWN"


def members_of(
    service: Service, registered: Sequence[Instance], sources: Mapping[str, str]
) -> list[Member]:
    """The instances the compiler serves for `service`, in its order, with their source."""
    manifest = {i.id for i in service.instances}
    listed = [Member(i.id, i.address, i.port, "manifest") for i in service.instances]
    listed += [
        Member(i.id, i.address, i.port, sources.get(i.id, "api"))
        for i in registered
        if i.id not in manifest
    ]
    return listed


def service_backends(compiled: Compiled) -> dict[ServiceKey, list[str]]:
    """The route backends that serve each service."""
    return _by_service(_service_routes(key, result) for key, result in compiled.gateways.items())


def _service_routes(key: GatewayKey, result: GatewayResult) -> tuple[tuple[ServiceKey, str], ...]:
    """(service, route backend) of each of the gateway's routes to a service."""
    return tuple(
        ((key[0], route.target), route.backend)
        for route in result.routes.values()
        if route.kind == "service"
    )


def _by_service(
    routes: Iterable[tuple[tuple[ServiceKey, str], ...]],
) -> dict[ServiceKey, list[str]]:
    found: dict[ServiceKey, list[str]] = {}
    for service, backend in itertools.chain.from_iterable(routes):
        found.setdefault(service, []).append(backend)
    return found


class InstanceHealth:
    def __init__(self, dns_errors: Callable[[], Mapping[ServiceKey, str]] | None = None) -> None:
        self._members: dict[ServiceKey, list[Member]] = {}
        self._backends: dict[ServiceKey, list[str]] = {}
        # Each gateway's routes to services, of the gateways that have some.
        self._routes: dict[GatewayKey, tuple[tuple[ServiceKey, str], ...]] = {}
        self._servers: dict[ServerKey, str] = {}
        self._dns_errors = dns_errors
        self._reported: dict[ServiceKey, list[dict[str, Any]]] = {}

    def update(
        self,
        services: Sequence[Service],
        registered: Mapping[ServiceKey, Sequence[Instance]],
        sources: Mapping[ServiceKey, Mapping[str, str]],
        compiled: Compiled,
        changed: Collection[GatewayKey] | None = None,
    ) -> None:
        """What each service has now, after an agent pass compiled it. `changed`: the only
        gateways whose routes may differ since the last update (None: any may); among
        10,000 gateways a pass changed one of, the others are not looked at."""
        self._members = {
            (s.namespace, s.name): members_of(
                s,
                registered.get((s.namespace, s.name), ()),
                sources.get((s.namespace, s.name), {}),
            )
            for s in services
        }
        results = compiled.gateways
        if changed is None:
            self._routes, changed = {}, results.keys()
        for key in changed:
            result = results.get(key)
            routes = _service_routes(key, result) if result is not None else ()
            if routes:
                self._routes[key] = routes
            else:
                self._routes.pop(key, None)
        self._backends = _by_service(self._routes.values())
        self._reported = {key: self._report(key) for key in self._members}

    def observe(self, servers: Mapping[ServerKey, str]) -> bool:
        """HAProxy's latest view of its servers; True when some service's report changed."""
        self._servers = dict(servers)
        reported = {key: self._report(key) for key in self._members}
        changed = reported != self._reported
        self._reported = reported
        return changed

    def reported(self) -> dict[ServiceKey, list[dict[str, Any]]]:
        """Every service's instance report, as `status` publishes it."""
        return dict(self._reported)

    def status(self, key: ServiceKey) -> dict[str, Any]:
        """The part of a service's status this module owns."""
        status: dict[str, Any] = {"instances": self._reported.get(key, [])}
        error = self._dns_errors().get(key) if self._dns_errors else None
        if error:
            status["dns_error"] = error
        return status

    def _report(self, key: ServiceKey) -> list[dict[str, Any]]:
        backends = self._backends.get(key, [])
        return [
            {
                "id": member.id,
                "address": member.address,
                "port": member.port,
                "status": aggregate([self._servers.get((b, member.id), "") for b in backends]),
                "source": member.source,
            }
            for member in self._members.get(key, [])
        ]


@dataclass(frozen=True)
class Transition:
    service: ServiceKey
    instance: str
    address: str
    port: int
    before: str
    after: str


def transitions(
    before: Mapping[ServiceKey, Sequence[Mapping[str, Any]]],
    after: Mapping[ServiceKey, Sequence[Mapping[str, Any]]],
) -> list[Transition]:
    """Instances whose status changed between two reports (new and departed ones are not
    transitions: their coming and going has events of its own)."""
    found = []
    for key, instances in after.items():
        earlier = {i["id"]: i["status"] for i in before.get(key, ())}
        for instance in instances:
            old = earlier.get(instance["id"])
            new = instance["status"]
            if old is not None and old != new:
                address, port = instance["address"], instance["port"]
                found.append(Transition(key, instance["id"], address, port, old, new))
    return found


def record_transitions(events: EventLog, changed: Sequence[Transition]) -> None:
    for change in changed:
        namespace, service = change.service
        label = instance_label(change.instance, change.address, change.port)
        events.record(
            "health",
            f"{label} is {change.after} (was {change.before})",
            kind="service",
            namespace=namespace,
            name=service,
            instance=change.instance,
        )


async def poll_health(
    health: InstanceHealth,
    collector: StatsCollector,
    republish: Callable[[], Awaitable[None]],
    interval_s: float = POLL_S,
    events: EventLog | None = None,
    states_seen: Callable[[Mapping[ServerKey, str], float], Awaitable[None]] | None = None,
) -> None:
    """Read HAProxy's server states every `interval_s` (sharing the stats poll) and have the
    agent publish again when an instance's status changed, recording each change in
    `events`; every poll's states go to `states_seen` too. Runs until cancelled."""
    while True:
        snapshot = await collector.refresh(max_age_s=interval_s / 2)
        states = {key: server.status for key, server in snapshot.servers.items()}
        if states_seen is not None:
            # First: a route whose last server went down leaves the dispatch map (compiler.
            # dispatch) before anything else is done with the news.
            await states_seen(states, snapshot.taken_at)
        before = health.reported()
        if health.observe(states):
            if events is not None:
                record_transitions(events, transitions(before, health.reported()))
            await republish()
        await asyncio.sleep(interval_s)
