"""Rules that span resources: which gateways may share a port, and what a route target names."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from meshgate.errors import Problem
from meshgate.model.certificate import Certificate
from meshgate.model.gateway import Gateway, inline_endpoint
from meshgate.model.service import Service


def port_conflicts(gateway: Gateway, others: Iterable[Gateway]) -> list[Problem]:
    """Why `gateway` cannot listen where it asks to, given the gateways already there."""
    problems = []
    for other in others:
        if (other.namespace, other.name) == (gateway.namespace, gateway.name):
            continue
        problems += _redirect_conflicts(gateway, other)
        if other.port.number != gateway.port.number:
            continue
        owner = f"gateway {other.namespace}/{other.name}"
        if other.bind != gateway.bind:
            reason = f"port {gateway.port.number} is already bound on {other.bind} by {owner}"
            problems.append(Problem("bind", reason))
        elif "tcp" in (other.port.mode, gateway.port.mode):
            reason = (
                f"port {gateway.port.number} is used by {owner}; only http gateways share a port"
            )
            problems.append(Problem("port", reason))
        elif (other.tls is None) != (gateway.tls is None):
            # One listener either terminates TLS or does not; SNI picks among TLS gateways.
            which = "terminates TLS" if other.tls else "is plain HTTP"
            reason = (
                f"port {gateway.port.number} {which} for {owner}; gateways sharing a port "
                "must all have tls or all have none"
            )
            problems.append(Problem("tls", reason))
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


def _redirect_conflicts(gateway: Gateway, other: Gateway) -> list[Problem]:
    """Clashes of the plain-HTTP redirect listeners (`tls.redirect_http`) with other ports.

    Gateways on one TLS port may name the same redirect port: they share its listener.
    """
    owner = f"gateway {other.namespace}/{other.name}"
    mine = gateway.tls.redirect_http if gateway.tls else None
    theirs = other.tls.redirect_http if other.tls else None
    problems = []
    if mine is not None and mine == other.port.number:
        reason = f"port {mine} is the port of {owner}"
        problems.append(Problem("tls.redirect_http", reason))
    if theirs is not None and theirs == gateway.port.number:
        reason = f"port {theirs} redirects to HTTPS for {owner}"
        problems.append(Problem("port", reason))
    if (
        mine is not None
        and mine == theirs
        and ((gateway.bind, gateway.port.number) != (other.bind, other.port.number))
    ):
        reason = f"port {mine} already redirects to port {other.port.number} for {owner}"
        problems.append(Problem("tls.redirect_http", reason))
    return problems


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
