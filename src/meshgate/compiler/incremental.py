"""Compiling a change to a few gateways in the time those gateways take, not the whole state's.

A full compile walks every gateway: it resolves their routes, indexes their ports, looks for
chains that loop, groups them into frontends and sorts every backend and map entry. With the
per-gateway memo an unchanged gateway is not compiled again, but that walk alone took about
0.1 s at 10,000 gateways, on the path of every weight change.

`patch` starts instead from the last compile's result and replaces the parts of the gateways
whose objects changed (the store loader keeps an unchanged resource's object), when nothing
outside those parts can have changed with them:

- services, certificates, settings and the node compiled for are the last compile's;
- registered instances may differ: the gateways that route to a service whose instances
  changed (an index says which) get new servers in their part, and nothing else changes
  with them; so registering an instance costs the gateways that use its service, not all;
- the same gateways, in the same order, each changed one accepted last time;
- a changed gateway listens as before (port, bind, virtual hosts, TLS, client timeout): the
  port checks, the frontends, the redirects, the certificates served and what gateways chained
  to it read are then unchanged;
- its compiled rules are equal to the last ones (the frontend holding them is unchanged), its
  backends have the same names and the same TLS (the CA files are unchanged), it chains to the
  same gateways (no loop can appear), and neither version has policies (their maps are built
  from every gateway's).

Anything else returns None and the caller compiles in full. The result is equal to what a
full compile of the same state gives; the tests compare the two.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from meshgate.compiler import dispatch, ir
from meshgate.compiler import tls as tls_parts
from meshgate.model.certificate import Certificate
from meshgate.model.gateway import Gateway
from meshgate.model.service import Instance, Service
from meshgate.model.snapshot import Target, resolve_target

if TYPE_CHECKING:
    from meshgate.compiler.build import CompiledGateway, GatewayResult

Key = tuple[str, str]
# Beyond this share of changed gateways a full compile costs about the same.
MOST_CHANGED = 0.25


@dataclass
class LastCompile:
    """A full or patched compile's inputs and result, with where each part sits in it."""

    settings: ir.Settings
    gateways: tuple[Gateway, ...]
    services: tuple[Service, ...]
    certificates: tuple[Certificate, ...]
    registered: Mapping[Key, Sequence[Instance]]
    services_by_key: dict[Key, Service]
    certificates_by_key: dict[Key, Certificate]
    all_by_key: dict[Key, Gateway]  # every gateway, for resolving routes
    served: dict[Key, Gateway]  # the accepted ones
    parts: dict[Key, CompiledGateway]  # of the accepted ones
    dataplane: ir.DataPlane
    results: dict[Key, GatewayResult]
    backend_at: dict[str, int]  # backend name -> position in dataplane.backends
    weight_at: dict[str, int]  # backend name -> position in the weights map
    slots: dict[Key, tuple[tuple[str, str], ...]]  # slots.map entries, by gateway
    slotted: list[Key]  # the gateways with slots.map entries, in the map's order
    # Which accepted gateways route to each service (by its key): those a change of its
    # registered instances concerns.
    users: dict[Key, set[Key]] = field(default_factory=dict)
    node: object = None  # the node compiled for (DesiredState.node): a patch needs the same
    # The dispatch maps, kept gateway by gateway from one patch to the next.
    dispatch_layouts: dispatch.Layouts = field(default_factory=dispatch.Layouts)


def shape(gateway: Gateway) -> tuple[object, ...]:
    """What other gateways, the port checks and the frontends read of a gateway."""
    return (
        gateway.port,
        gateway.bind,
        tuple(gateway.virtual_hosts),
        gateway.tls,
        gateway.timeouts.client,
    )


def has_policies(gateway: Gateway) -> bool:
    return gateway.policies is not None or any(r.policies for r in gateway.routes.values())


def record(
    settings: ir.Settings,
    gateways: Sequence[Gateway],
    services: Sequence[Service],
    certificates: Sequence[Certificate],
    registered: Mapping[Key, Sequence[Instance]],
    parts: Mapping[Key, CompiledGateway],
    served: Mapping[Key, Gateway],
    dataplane: ir.DataPlane,
    results: Mapping[Key, GatewayResult],
) -> LastCompile:
    """The record of a full compile, for the next `patch`."""
    weights = dataplane.map_named(ir.WEIGHTS_MAP)
    return LastCompile(
        settings=settings,
        gateways=tuple(gateways),
        services=tuple(services),
        certificates=tuple(certificates),
        registered=registered,
        services_by_key={(s.namespace, s.name): s for s in services},
        certificates_by_key={(c.namespace, c.name): c for c in certificates},
        all_by_key={(g.namespace, g.name): g for g in gateways},
        served=dict(served),
        parts=dict(parts),
        dataplane=dataplane,
        results=dict(results),
        backend_at={b.name: i for i, b in enumerate(dataplane.backends)},
        weight_at={e[0]: i for i, e in enumerate(weights.entries if weights else ())},
        slots={key: part.slots for key, part in parts.items()},
        slotted=[key for key in sorted(parts) if parts[key].slots],
        users=_users(parts),
    )


def _services_of(key: Key, part: CompiledGateway) -> set[Key]:
    return {(key[0], s.target) for s in part.statuses.values() if s.kind == "service"}


def _users(parts: Mapping[Key, CompiledGateway]) -> dict[Key, set[Key]]:
    users: dict[Key, set[Key]] = {}
    for key, part in parts.items():
        for service in _services_of(key, part):
            users.setdefault(service, set()).add(key)
    return users


def changed_services(
    new: Mapping[Key, Sequence[Instance]], old: Mapping[Key, Sequence[Instance]]
) -> set[Key]:
    """The services whose registered instances differ."""
    if new is old:
        return set()
    return {k for k in new.keys() | old.keys() if tuple(new.get(k, ())) != tuple(old.get(k, ()))}


def _same_items(new: Sequence[object], old: Sequence[object]) -> bool:
    return len(new) == len(old) and all(a is b for a, b in zip(new, old, strict=True))


def patch(
    last: LastCompile,
    settings: ir.Settings,
    gateways: Sequence[Gateway],
    services: Sequence[Service],
    certificates: Sequence[Certificate],
    registered: Mapping[Key, Sequence[Instance]],
    compile_part: Callable[[Gateway, Mapping[str, Target]], CompiledGateway],
    reinstance: Callable[[Gateway, CompiledGateway, Set[Key]], CompiledGateway],
) -> tuple[ir.DataPlane, dict[Key, GatewayResult], frozenset[Key]] | None:
    """The data plane and results for this state, from `last`, which is brought up to date;
    None when a full compile is needed (see the module's docstring). `compile_part` compiles
    a changed gateway; `reinstance` gives an unchanged one's part new servers for the
    services named."""
    if (
        settings != last.settings
        or len(gateways) != len(last.gateways)
        or not _same_items(services, last.services)
        or not _same_items(certificates, last.certificates)
    ):
        return None
    instances_changed = changed_services(registered, last.registered)
    changed = [(i, g) for i, g in enumerate(gateways) if g is not last.gateways[i]]
    if len(changed) > MOST_CHANGED * len(gateways):
        return None
    new_parts: dict[Key, tuple[Gateway, CompiledGateway]] = {}
    for index, new in changed:
        old = last.gateways[index]
        key = (new.namespace, new.name)
        old_part = last.parts.get(key)
        if (
            old_part is None
            or key != (old.namespace, old.name)
            or shape(new) != shape(old)
            or has_policies(new)
            or has_policies(old)
        ):
            return None
        targets = _targets(new, old, last)
        if targets is None:
            return None
        part = compile_part(new, targets)
        if not _fits(part, old_part):
            return None
        new_parts[key] = (new, part)
    reinstanced: set[Key] = set()  # given new servers only: they route where they did
    for service in instances_changed:
        for key in last.users.get(service, ()):
            if key in new_parts:
                continue  # compiled above, with the new instances
            gateway = last.served[key]
            if has_policies(gateway):
                return None
            new_parts[key] = (gateway, reinstance(gateway, last.parts[key], instances_changed))
            reinstanced.add(key)
    return _apply(last, gateways, registered, new_parts, reinstanced)


def _targets(gateway: Gateway, old: Gateway, last: LastCompile) -> dict[str, Target] | None:
    """The gateway's resolved routes, as a full compile resolves them; None when it chains to
    other gateways than before or a service's CA is missing (it would not be accepted)."""
    raw = _resolved(gateway, last)
    if tls_parts.missing_cas(gateway, raw, last.services_by_key, last.certificates_by_key):
        return None
    if _chained(raw) != _chained(_resolved(old, last)):
        return None
    return {
        route: Target("unresolved", t.name)
        if t.kind == "gateway" and (gateway.namespace, t.name) not in last.served
        else t
        for route, t in raw.items()
    }


def _resolved(gateway: Gateway, last: LastCompile) -> dict[str, Target]:
    return {
        route: resolve_target(gateway, route, last.services_by_key, last.all_by_key)
        for route in gateway.routes
    }


def _chained(targets: Mapping[str, Target]) -> set[str]:
    return {t.name for t in targets.values() if t.kind == "gateway"}


def _fits(part: CompiledGateway, old: CompiledGateway) -> bool:
    """Whether the new part replaces the old one in place."""
    return (
        part.rules == old.rules
        and len(part.backends) == len(old.backends)
        and all(
            (b.name, b.tls) == (o.name, o.tls) and b.policy is None and o.policy is None
            for b, o in zip(part.backends, old.backends, strict=True)
        )
        and [w[0] for w in part.weights] == [w[0] for w in old.weights]
    )


def _apply(
    last: LastCompile,
    gateways: Sequence[Gateway],
    registered: Mapping[Key, Sequence[Instance]],
    new_parts: Mapping[Key, tuple[Gateway, CompiledGateway]],
    reinstanced: Set[Key] = frozenset(),
) -> tuple[ir.DataPlane, dict[Key, GatewayResult], frozenset[Key]]:
    """The last compile with these parts in place; and the gateways whose result may differ."""
    if not new_parts:
        last.gateways, last.registered = tuple(gateways), registered
        return last.dataplane, last.results, frozenset()
    dataplane = last.dataplane
    backends = list(dataplane.backends)
    weights_map = dataplane.map_named(ir.WEIGHTS_MAP)
    weights = list(weights_map.entries if weights_map else ())
    results = dict(last.results)
    slots_changed = False
    weights_changed = backends_changed = False
    for key, (gateway, part) in new_parts.items():
        old = last.parts[key]
        for backend in part.backends:
            at = last.backend_at[backend.name]
            if backends[at] is not backend and backends[at] != backend:
                backends[at], backends_changed = backend, True
        if part.weights is not old.weights:  # a part given new servers keeps its weights
            for entry in part.weights:
                at = last.weight_at[entry[0]]
                if weights[at] != entry:
                    weights[at], weights_changed = entry, True
        if part.slots != last.slots[key]:
            if bool(part.slots) != bool(last.slots[key]):
                last.slotted = sorted(
                    {*last.slotted, key} if part.slots else {*last.slotted} - {key}
                )
            last.slots[key] = part.slots
            slots_changed = True
        results[key] = part.result
        if part.statuses is not old.statuses and key not in reinstanced:
            before, after = _services_of(key, old), _services_of(key, part)
            if before != after:
                for service in before - after:
                    last.users[service].discard(key)
                for service in after:
                    last.users.setdefault(service, set()).add(key)
        last.parts[key] = part
        last.all_by_key[key] = last.served[key] = gateway
    maps = list(dataplane.maps)
    if weights_changed:
        # The frontends are the same (a patch changes no shape): only weights can differ.
        weights_entries = tuple(weights)
        laid_out = last.dispatch_layouts.lay_out(dataplane.frontends, weights_entries)
        dispatched = {m.name: m for m in laid_out}
        for index, map_file in enumerate(maps):
            if map_file.name == ir.WEIGHTS_MAP:
                maps[index] = ir.MapFile(ir.WEIGHTS_MAP, weights_entries)
            elif map_file.name in dispatched:
                maps[index] = dispatched[map_file.name]
    if slots_changed:
        ordered = (last.slots[k] for k in last.slotted)
        slots = ir.MapFile(ir.SLOTS_MAP, tuple(itertools.chain.from_iterable(ordered)))
        maps = [slots if m.name == ir.SLOTS_MAP else m for m in maps]
    # The same backends keep the same tuple: what follows a data plane's backends (route
    # availability) tells a weight change from new servers by its identity.
    kept = dataplane.backends
    dataplane = replace(
        dataplane, backends=tuple(backends) if backends_changed else kept, maps=tuple(maps)
    )
    last.gateways, last.registered = tuple(gateways), registered
    last.dataplane, last.results = dataplane, results
    return dataplane, results, frozenset(new_parts)
