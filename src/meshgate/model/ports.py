"""Which gateways may listen where: an index of what listens on each port, so that checking a
gateway costs a look-up per port and per virtual host it has, however many gateways there are.
Pure.

Two gateways may share a port only if both are plain http (or both terminate TLS) on the same
bind address and their virtual hosts are disjoint, with at most one default (no virtual hosts).
A port that redirects plain HTTP to HTTPS (`tls.redirect_http`) is taken too: no other gateway
may listen there, and two TLS ports may not redirect from the same one.

Comparing each gateway with every other one would cost the square of their number: 10,000
gateways sharing a port by virtual host made half a billion comparisons.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from meshgate.errors import Problem
from meshgate.model.gateway import Gateway

Tag = TypeVar("Tag", bound=Hashable)


def owner_name(gateway: Gateway) -> str:
    return f"gateway {gateway.namespace}/{gateway.name}"


@dataclass
class _Port(Generic[Tag]):
    """The gateways on one port: the first says what the port is (bind, tcp, tls)."""

    first: tuple[Gateway, Tag]
    default: tuple[Gateway, Tag] | None = None
    hosts: dict[str, tuple[Gateway, Tag]] = field(default_factory=dict)


@dataclass(frozen=True)
class Clash(Generic[Tag]):
    """A problem of the gateway checked, and the gateway (with its tag) it clashes with."""

    problem: Problem
    other: Gateway
    tag: Tag
    subject: str  # what both want, e.g. "port 80" or "a.example.com on port 80"


class PortIndex(Generic[Tag]):
    """Gateways added so far, by port, by virtual host and by redirect port. Each carries a
    tag (a document's index in a batch, say) that comes back with the clashes it causes."""

    def __init__(self) -> None:
        self._ports: dict[int, _Port[Tag]] = {}
        self._redirects: dict[int, tuple[Gateway, Tag]] = {}
        self.comparisons = 0  # look-ups made: what a test of the cost counts

    def add(self, gateway: Gateway, tag: Tag) -> None:
        number = gateway.port.number
        entry = self._ports.get(number)
        if entry is None:
            entry = self._ports[number] = _Port((gateway, tag))
        if not gateway.virtual_hosts and entry.default is None:
            entry.default = (gateway, tag)
        for host in gateway.virtual_hosts:
            entry.hosts.setdefault(host, (gateway, tag))
        redirect = gateway.tls.redirect_http if gateway.tls else None
        if redirect is not None:
            self._redirects.setdefault(redirect, (gateway, tag))

    def clashes(self, gateway: Gateway) -> list[Clash[Tag]]:
        """Why `gateway` cannot listen where it asks to, given the gateways added (one of the
        same namespace and name is itself, in an older version, and never a clash)."""
        found = self._redirect_clashes(gateway)
        entry = self._ports.get(gateway.port.number)
        if entry is None:
            return found
        port = gateway.port.number
        self.comparisons += 1
        other, tag = entry.first
        if _same(other, gateway):
            # Only another copy of itself (a batch naming it twice, reported as such) is there
            # first; the port's kind is its own.
            return found
        owner = owner_name(other)
        if other.bind != gateway.bind:
            reason = f"port {port} is already bound on {other.bind} by {owner}"
            return [*found, Clash(Problem("bind", reason), other, tag, f"port {port}")]
        if other.namespace != gateway.namespace and (
            other.on_service_plane or gateway.on_service_plane
        ):
            # Every service on a node reaches loopback ports: sharing one by virtual host
            # would let a namespace take requests meant for another's services.
            reason = (
                f"port {port} on the service plane belongs to namespace {other.namespace} "
                f"({owner}); namespaces never share a service-plane port"
            )
            return [*found, Clash(Problem("port", reason), other, tag, f"port {port}")]
        if "tcp" in (other.port.mode, gateway.port.mode):
            reason = f"port {port} is used by {owner}; only http gateways share a port"
            return [*found, Clash(Problem("port", reason), other, tag, f"port {port}")]
        if (other.tls is None) != (gateway.tls is None):
            # One listener either terminates TLS or does not; SNI picks among TLS gateways.
            which = "terminates TLS" if other.tls else "is plain HTTP"
            reason = (
                f"port {port} {which} for {owner}; gateways sharing a port "
                "must all have tls or all have none"
            )
            return [*found, Clash(Problem("tls", reason), other, tag, f"port {port}")]
        if not gateway.virtual_hosts:
            self.comparisons += 1
            if entry.default is not None and not _same(entry.default[0], gateway):
                default, default_tag = entry.default
                reason = (
                    f"port {port} already has a default gateway ({owner_name(default)}); "
                    "give one of them virtual_hosts"
                )
                subject = f"the default of port {port}"
                found.append(Clash(Problem("virtual_hosts", reason), default, default_tag, subject))
            return found
        # One problem per other gateway, naming the first host (in order) they share.
        shared: dict[tuple[str, str], tuple[str, Gateway, Tag]] = {}
        for host in sorted(gateway.virtual_hosts):
            self.comparisons += 1
            holder = entry.hosts.get(host)
            if holder is not None and not _same(holder[0], gateway):
                key = (holder[0].namespace, holder[0].name)
                shared.setdefault(key, (host, *holder))
        for host, holder_gateway, holder_tag in shared.values():
            reason = f"{host} on port {port} is already served by {owner_name(holder_gateway)}"
            subject = f"{host} on port {port}"
            found.append(
                Clash(Problem("virtual_hosts", reason), holder_gateway, holder_tag, subject)
            )
        return found

    def _redirect_clashes(self, gateway: Gateway) -> list[Clash[Tag]]:
        """Clashes of the plain-HTTP redirect listeners (`tls.redirect_http`) with other ports.
        Gateways on one TLS port may name the same redirect port: they share its listener."""
        found: list[Clash[Tag]] = []
        mine = gateway.tls.redirect_http if gateway.tls else None
        if mine is not None:
            self.comparisons += 2
            entry = self._ports.get(mine)
            if entry is not None and not _same(entry.first[0], gateway):
                other, tag = entry.first
                reason = f"port {mine} is the port of {owner_name(other)}"
                clash = Clash(Problem("tls.redirect_http", reason), other, tag, f"port {mine}")
                found.append(clash)
            sharing = self._redirects.get(mine)
            if sharing is not None and not _same(sharing[0], gateway):
                other, tag = sharing
                if (gateway.bind, gateway.port.number) != (other.bind, other.port.number):
                    reason = (
                        f"port {mine} already redirects to port {other.port.number} "
                        f"for {owner_name(other)}"
                    )
                    subject = f"redirect port {mine}"
                    found.append(Clash(Problem("tls.redirect_http", reason), other, tag, subject))
        self.comparisons += 1
        theirs = self._redirects.get(gateway.port.number)
        if theirs is not None and not _same(theirs[0], gateway):
            other, tag = theirs
            reason = f"port {gateway.port.number} redirects to HTTPS for {owner_name(other)}"
            found.append(Clash(Problem("port", reason), other, tag, f"port {gateway.port.number}"))
        return found


def _same(a: Gateway, b: Gateway) -> bool:
    return (a.namespace, a.name) == (b.namespace, b.name)


def port_conflicts(gateway: Gateway, others: Iterable[Gateway]) -> list[Problem]:
    """Why `gateway` cannot listen where it asks to, given the gateways already there."""
    index: PortIndex[None] = PortIndex()
    for other in others:
        if not _same(other, gateway):
            index.add(other, None)
    return [clash.problem for clash in index.clashes(gateway)]
