"""Which gateways route to a service or a gateway: the reason a delete is refused. Pure."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from meshgate.model.gateway import Gateway, inline_endpoint


def routes_to(gateway: Gateway, target: str) -> list[str]:
    """The gateway's routes whose target is the service or gateway named `target`."""
    return [
        name
        for name, route in gateway.routes.items()
        if name == target and route.targets is None and inline_endpoint(name) is None
    ]


def referrers(
    namespace: str, target: str, gateways: Iterable[Gateway], *, exclude: str | None = None
) -> list[str]:
    """`gateway NAME (route ROUTE)` for every gateway of `namespace` routing to `target`;
    `exclude` leaves out a gateway (one does not refer to itself through a route)."""
    found = []
    for gateway in gateways:
        if gateway.namespace != namespace or gateway.name == exclude:
            continue
        for route in routes_to(gateway, target):
            found.append(f"gateway {gateway.name} (route {route})")
    return found


def unresolved_message(route: str, target: str, namespace: str) -> str:
    """What a gateway's status and an apply's warnings say of a route that leads nowhere."""
    return (
        f"routes.{route}: target {target!r} does not exist (no service or gateway of that name"
        f" in namespace {namespace}); the route gets no traffic"
    )


def unresolved_routes(
    gateway: Gateway, services: Collection[str], gateways: Collection[str]
) -> list[str]:
    """A message for each route of `gateway` whose target is neither one of `services` nor
    another of `gateways` (names in the gateway's namespace): SPEC §1 rule 5."""
    return [
        unresolved_message(name, name, gateway.namespace)
        for name, route in gateway.routes.items()
        if route.targets is None
        and inline_endpoint(name) is None
        and name not in services
        and (name not in gateways or name == gateway.name)
    ]
