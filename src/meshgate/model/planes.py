"""What keeps one namespace's service plane its own: no route of another namespace may aim at
its loopback ports by address. Pure.

Route names resolve only inside their namespace already (SPEC §3); an address target
(`[127.0.0.1:PORT]`, or `targets:`) is the one way a gateway could name another namespace's
service-plane gateway, and it is refused like a name that does not resolve would be.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from meshgate.errors import Problem
from meshgate.model.gateway import Gateway, inline_endpoint, is_loopback


def service_plane_ports(gateways: Iterable[Gateway]) -> dict[int, Gateway]:
    """Loopback ports by the service-plane gateway that holds them (the first one named)."""
    ports: dict[int, Gateway] = {}
    for gateway in gateways:
        if gateway.on_service_plane:
            ports.setdefault(gateway.port.number, gateway)
    return ports


def foreign_plane_targets(gateway: Gateway, ports: Mapping[int, Gateway]) -> list[Problem]:
    """Routes of `gateway` that aim at another namespace's service-plane port on loopback."""
    problems = []
    for name, route in gateway.routes.items():
        endpoints = (
            [(t.address, t.port) for t in route.targets]
            if route.targets is not None
            else [e for e in [inline_endpoint(name)] if e is not None]
        )
        for address, port in endpoints:
            holder = ports.get(port)
            if holder is None or holder.namespace == gateway.namespace:
                continue
            if is_loopback(address):
                problems.append(
                    Problem(
                        f"routes.{name}",
                        f"{address}:{port} is the service-plane port of namespace "
                        f"{holder.namespace}; a route reaches only its own namespace's services",
                    )
                )
    return problems
