"""Rules that span resources: which gateways may share a port, and what a route target names."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from meshgate.errors import Problem
from meshgate.model.gateway import Gateway, inline_endpoint
from meshgate.model.service import Service


def port_conflicts(gateway: Gateway, others: Iterable[Gateway]) -> list[Problem]:
    """Why `gateway` cannot listen where it asks to, given the gateways already there."""
    problems = []
    for other in others:
        if (other.namespace, other.name) == (gateway.namespace, gateway.name):
            continue
        if other.port.number != gateway.port.number:
            continue
        owner = f"gateway {other.namespace}/{other.name}"
        if other.bind != gateway.bind:
            reason = f"port {gateway.port.number} is already bound on {other.bind} by {owner}"
            problems.append(Problem("bind", reason))
        elif "tcp" in (other.port.mode, gateway.port.mode):
            reason = f"port {gateway.port.number} is used by {owner}; only http gateways share a port"
            problems.append(Problem("port", reason))
        elif not other.virtual_hosts and not gateway.virtual_hosts:
            reason = (
                f"port {gateway.port.number} already has a default gateway ({owner}); "
                "give one of them virtual_hosts"
            )
            problems.append(Problem("virtual_hosts", reason))
        else:
            shared = sorted(set(other.virtual_hosts) & set(gateway.virtual_hosts))
            if shared:
                reason = f"{shared[0]} on port {gateway.port.number} is already served by {owner}"
                problems.append(Problem("virtual_hosts", reason))
    return problems


TargetKind = Literal["service", "gateway", "address", "inline", "unresolved"]


@dataclass(frozen=True)
class Target:
    kind: TargetKind
    name: str  # the service or gateway name, or the route name for address/inline targets


def resolve_target(
    gateway: Gateway,
    route_name: str,
    services: Mapping[tuple[str, str], Service],
    gateways: Mapping[tuple[str, str], Gateway],
) -> Target:
    """What a route points at; services win over gateways of the same name (SPEC §1 rule 5)."""
    route = gateway.routes[route_name]
    if route.targets is not None:
        return Target("inline", route_name)
    if inline_endpoint(route_name) is not None:
        return Target("address", route_name)
    key = (gateway.namespace, route_name)
    if key in services:
        return Target("service", route_name)
    if key in gateways and route_name != gateway.name:
        return Target("gateway", route_name)
    return Target("unresolved", route_name)
