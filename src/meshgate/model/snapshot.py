"""Rules that span resources: the certificates gateways and services name, and what a route
target names. Which gateways may share a port is `ports`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from meshgate.errors import Problem
from meshgate.model.certificate import Certificate
from meshgate.model.gateway import Gateway, inline_endpoint
from meshgate.model.service import Service


def certificate_problems(
    gateway: Gateway, certificates: Mapping[tuple[str, str], Certificate]
) -> list[Problem]:
    """Certificates a gateway names that do not exist in its namespace, or cannot be served."""
    if gateway.tls is None:
        return []
    problems = []
    for index, name in enumerate(gateway.tls.certificates):
        certificate = certificates.get((gateway.namespace, name))
        path = f"tls.certificates.{index}"
        if certificate is None:
            where = f"namespace {gateway.namespace}"
            problems.append(Problem(path, f"certificate {name!r} does not exist in {where}"))
        elif not certificate.servable:
            reason = f"certificate {name!r} has no private key; it can only serve as a CA"
            problems.append(Problem(path, reason))
    return problems


def ca_problems(
    service: Service, certificates: Mapping[tuple[str, str], Certificate]
) -> list[Problem]:
    """A service's `tls.ca` that names no certificate of its namespace."""
    if service.tls is None or service.tls.ca is None:
        return []
    if (service.namespace, service.tls.ca) in certificates:
        return []
    reason = f"certificate {service.tls.ca!r} does not exist in namespace {service.namespace}"
    return [Problem("tls.ca", reason)]


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
