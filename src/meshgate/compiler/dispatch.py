"""Constant-time dispatch on a port of many virtual hosts: one map for every plain gateway.

A plain gateway (no pinned routes, no conditions, no policies) chooses a route by weight alone,
so on a shared port it needs no rules of its own before its fallback: after the rules of the
gateways that do need theirs, a few generic rules look its choice up by the gateway id the
host map gave (`txn.mg_gw`). A request then costs the same however many plain gateways share
its port.

Entries, by gateway id `G`:
- a gateway of one route, in `lone.map`: `G` -> backend;
- of several routes, in `dispatch.map`: 100 slots, `<draw>.G` -> backend (`<draw>.G.s` with
  `sticky: source`, drawn from a hash of the client address instead of at random), each route
  owning as many slots as its share of the weights.

Two maps, so that a weight change among 10,000 gateways of one route each swaps (or sets) the
few slots of the gateway that changed, not a map of 10,000 entries.

These rules cannot read a backend's availability (`nbsrv` takes a backend name, not a
variable), so the map itself follows it: the agent computes each gateway's entries over the
routes that have a usable server, weights renormalised (`entries` with `usable`), and leaves a
gateway without entries when none has, so its requests fall through to its exact fallback
walk (compiler.rules). The compiler, which knows nothing of health, writes every route as
usable. Pure.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import cast

from meshgate.compiler import ir
from meshgate.compiler.slots import SLOTS

SOURCE_SUFFIX = ".s"

# The generic rules' lookup keys, built from the gateway id the host map stored.
LONE_KEY = "var(txn.mg_gw)"
RANDOM_KEY = "rand(100),concat(.,txn.mg_gw)"
SOURCE_KEY = f"src,crc32(1),mod({SLOTS}),concat(.,txn.mg_gw,{SOURCE_SUFFIX})"


def is_plain(gateway: ir.GatewayRules) -> bool:
    """Chosen by weight alone: what the generic rules can do for it."""
    return (
        gateway.route_cookie_name is None
        and gateway.policy is None
        and not any(c.condition and c.strength > 0 for c in gateway.choices)
        and bool(gateway.choices)
    )


def slot_key(draw: int, gateway_id: str, sticky: str) -> str:
    suffix = SOURCE_SUFFIX if sticky == "source" else ""
    return f"{draw}.{gateway_id}{suffix}"


def key_expression(draw: str, gateway_id: str, sticky: str) -> str:
    """A slot key from a draw expression of 0-99, for a rule that names its gateway."""
    suffix = SOURCE_SUFFIX if sticky == "source" else ""
    return f"{draw},concat(.{gateway_id}{suffix})"


Entries = tuple[tuple[str, str], ...]


def entries(
    gateway_id: str, sticky: str, lone: bool, weights: tuple[tuple[str, int], ...]
) -> tuple[tuple[str, str], ...]:
    """dispatch.map entries of one gateway from (backend, weight) of its usable routes, in
    route order. `lone`: the gateway has one route (keyed by its id, no draw). No weight left,
    no entries."""
    total = sum(weight for _, weight in weights if weight > 0)
    if total <= 0:
        return ()
    if lone:
        ((backend, _),) = weights
        return ((gateway_id, backend),)
    owners: list[str] = []
    end = 0
    for backend, weight in weights:
        end += max(weight, 0)
        # The usable routes' weights no longer total 100: each keeps its share of what is
        # left, as closely as 100 slots can.
        owners += [backend] * (round(end * SLOTS / total) - len(owners))
    return tuple((slot_key(draw, gateway_id, sticky), owner) for draw, owner in enumerate(owners))


def gateway_entries(
    gateway: ir.GatewayRules,
    weight_of: Mapping[str, str],
    usable: Callable[[str], bool] | None = None,
) -> Entries:
    """One plain gateway's entries; `usable` (backend -> has a usable server) None: all are."""
    weights = tuple(
        (choice.backend, _weight(weight_of.get(choice.backend)))
        for choice in gateway.choices
        if usable is None or usable(choice.backend)
    )
    lone = len(gateway.choices) == 1
    if lone:  # one entry: cheaper to make than to keep (100,000 of them)
        return entries(gateway.gateway_id, gateway.sticky, lone, weights)
    # The compiler's maps and the driver's lay out the same gateways from the same inputs:
    # the last entries made for each gateway are shared, not made twice (100 slots each).
    inputs = (gateway.sticky, weights)
    last = _last_entries.get(gateway.gateway_id)
    if last is not None and last[0] == inputs:
        return last[1]
    made = entries(gateway.gateway_id, gateway.sticky, lone, weights)
    _last_entries[gateway.gateway_id] = (inputs, made)
    return made


# gateway id -> the inputs and entries last made for it (gateways of several routes only);
# kept to the gateways of the last frontends laid out (`_laid_out_gateways`).
_last_entries: dict[str, tuple[tuple[str, tuple[tuple[str, int], ...]], Entries]] = {}


def _weight(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


def is_generic(frontend: ir.Frontend) -> bool:
    """A port of several virtual hosts: its plain gateways are chosen by the generic rules.
    A port of one gateway keeps its exact per-request availability test (`nbsrv`): there is
    nothing to walk past, and the generic rules would only add the map's window."""
    return frontend.host_map is not None and len(frontend.gateways) > 1


def plain_gateways(frontends: Iterable[ir.Frontend]) -> list[ir.GatewayRules]:
    """The plain gateways of every port, in port then gateway order (the map's order)."""
    return [g for f in frontends for g in f.gateways if is_plain(g)]


def dispatch_maps(
    frontends: Iterable[ir.Frontend],
    weights: Sequence[tuple[str, str]],
    usable: Callable[[str], bool] | None = None,
) -> tuple[ir.MapFile, ir.MapFile]:
    """dispatch.map and lone.map: the entries of every plain gateway."""
    weight_of = dict(weights)
    laid_out = _laid_out_gateways(tuple(frontends))
    multi = laid_out.gateways[: laid_out.lone_from]
    lone = laid_out.gateways[laid_out.lone_from :]
    return (
        ir.MapFile(
            ir.DISPATCH_MAP,
            tuple(
                itertools.chain.from_iterable(gateway_entries(g, weight_of, usable) for g in multi)
            ),
        ),
        ir.MapFile(
            ir.LONE_MAP,
            tuple(
                itertools.chain.from_iterable(gateway_entries(g, weight_of, usable) for g in lone)
            ),
        ),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _Gateways:
    """The gateways of dispatch.map (plain, of several routes, on any port), then those of
    lone.map (plain, of one route), in port then gateway order: the maps' order. HAProxy
    knows only the maps a rule names: lone.map is named by the generic rules alone, so it
    holds the lone gateways of generic ports only (dispatch.map is also named by the fast path
    of a plain gateway alone on its port)."""

    frontends: tuple[ir.Frontend, ...]
    gateways: list[ir.GatewayRules]
    lone_from: int
    # Route backend -> its gateway's place; a backend in more gateways' routes (none of the
    # compiler's) has the others in `also_at`.
    at: dict[str, int]
    also_at: dict[str, list[int]]


def _laid_out_gateways(frontends: tuple[ir.Frontend, ...]) -> _Gateways:
    """`_Gateways` of these frontends; the last ones made when the frontends are the same
    objects: the compiler's layouts and the driver's share them (at 100,000 gateways, 9 MB)."""
    last = _last_gateways[0]
    if last is not None and _same_objects(last.frontends, frontends):
        return last
    multi = [g for g in plain_gateways(frontends) if len(g.choices) > 1]
    lone = [g for f in frontends if is_generic(f) for g in f.gateways if is_plain(g)]
    gateways = multi + [g for g in lone if len(g.choices) == 1]
    at: dict[str, int] = {}
    also_at: dict[str, list[int]] = {}
    for index, gateway in enumerate(gateways):
        for choice in gateway.choices:
            if at.setdefault(choice.backend, index) != index:
                also_at.setdefault(choice.backend, []).append(index)
    found = _Gateways(frontends, gateways, len(multi), at, also_at)
    _last_gateways[0] = found
    if len(_last_entries) > len(multi):  # gateways gone since: their entries go too
        ids = {g.gateway_id for g in multi}
        for gone in _last_entries.keys() - ids:
            del _last_entries[gone]
    return found


_last_gateways: list[_Gateways | None] = [None]


class Layouts:
    """dispatch.map and lone.map kept from one layout to the next, gateway by gateway. While
    the frontends are the same objects, only the gateways of routes whose weight or
    availability changed are laid out again: a weight change among 10,000 gateways lays out
    one, where walking all of them was most of the pass. Anything else (other frontends,
    usable routes given where they were not) lays them all out again.

    A lone gateway's part is its one entry or None, not a tuple of it: 100,000 of them."""

    def __init__(self) -> None:
        self._laid_out: _Gateways | None = None
        self._weights: Sequence[tuple[str, str]] = ()
        self._usable: frozenset[str] | None = None
        self._parts: list[Entries | tuple[str, str] | None] = []  # each gateway's entries
        self._maps: tuple[ir.MapFile, ir.MapFile] | None = None

    def maps(
        self, dataplane: ir.DataPlane, usable: frozenset[str]
    ) -> tuple[ir.MapFile, ir.MapFile]:
        """The maps of this data plane over the routes in `usable`."""
        weights = dataplane.map_named(ir.WEIGHTS_MAP)
        return self.lay_out(dataplane.frontends, weights.entries if weights else (), usable)

    def lay_out(
        self,
        frontends: tuple[ir.Frontend, ...],
        weights: Sequence[tuple[str, str]],
        usable: frozenset[str] | None = None,
    ) -> tuple[ir.MapFile, ir.MapFile]:
        """The maps of these frontends and weights, over the routes in `usable` (None: every
        route is usable)."""
        laid_out = self._laid_out
        if (
            self._maps is None
            or laid_out is None
            or not _same_objects(laid_out.frontends, frontends)
            or (usable is None) != (self._usable is None)
        ):
            return self._lay_out_all(frontends, weights, usable)
        changed = _changed_routes(weights, self._weights)
        if usable is not None and self._usable is not None and usable is not self._usable:
            changed |= usable.symmetric_difference(self._usable)
        self._weights, self._usable = weights, usable
        at, also_at = laid_out.at, laid_out.also_at
        touched = sorted(
            {
                *(at[backend] for backend in changed if backend in at),
                *(i for backend in changed for i in also_at.get(backend, ())),
            }
        )
        if not touched:
            return self._maps
        weight_of = _weights_of(
            weights, [c.backend for index in touched for c in laid_out.gateways[index].choices]
        )
        is_usable = None if usable is None else usable.__contains__
        for index in touched:
            self._parts[index] = self._part(index, weight_of, is_usable)
        dispatch_map, lone_map = self._maps
        if touched[0] < laid_out.lone_from:
            dispatch_map = self._map(ir.DISPATCH_MAP)
        if touched[-1] >= laid_out.lone_from:
            lone_map = self._map(ir.LONE_MAP)
        self._maps = (dispatch_map, lone_map)
        return self._maps

    def _lay_out_all(
        self,
        frontends: tuple[ir.Frontend, ...],
        weights: Sequence[tuple[str, str]],
        usable: frozenset[str] | None,
    ) -> tuple[ir.MapFile, ir.MapFile]:
        laid_out = self._laid_out = _laid_out_gateways(frontends)
        self._weights, self._usable = weights, usable
        weight_of = dict(weights)
        is_usable = None if usable is None else usable.__contains__
        self._parts = [self._part(i, weight_of, is_usable) for i in range(len(laid_out.gateways))]
        self._maps = (self._map(ir.DISPATCH_MAP), self._map(ir.LONE_MAP))
        return self._maps

    def _part(
        self,
        index: int,
        weight_of: Mapping[str, str],
        usable: Callable[[str], bool] | None,
    ) -> Entries | tuple[str, str] | None:
        assert self._laid_out is not None
        found = gateway_entries(self._laid_out.gateways[index], weight_of, usable)
        if index < self._laid_out.lone_from:
            return found
        return found[0] if found else None

    def _map(self, name: str) -> ir.MapFile:
        assert self._laid_out is not None
        lone_from = self._laid_out.lone_from
        if name == ir.DISPATCH_MAP:
            parts = cast(list[Entries], self._parts[:lone_from])
            return ir.MapFile(name, tuple(itertools.chain.from_iterable(parts)))
        lone = cast(list[tuple[str, str] | None], self._parts[lone_from:])
        return ir.MapFile(name, tuple(filter(None, lone)))


def _changed_routes(new: Sequence[tuple[str, str]], old: Sequence[tuple[str, str]]) -> set[str]:
    """The backends whose weight entry differs. A patch keeps each entry's place and the
    entry itself when its weight is the same, so the entries are told apart by identity, in
    C: hashing the 10,000 entries of both, on every weight change, cost more than laying out
    the gateway it changed."""
    if new is old:
        return set()
    if len(new) != len(old):
        return {backend for backend, _ in set(new).symmetric_difference(old)}
    differs = list(map(operator.is_not, new, old))
    moved = itertools.chain(itertools.compress(new, differs), itertools.compress(old, differs))
    return {backend for backend, weight in moved}


def _weights_of(weights: Sequence[tuple[str, str]], backends: list[str]) -> dict[str, str]:
    """The weights of these backends. The weights map is in backend order, so each is found
    by bisection; a dict of every entry, made for a weight change among 10,000 gateways,
    was a tenth of the pass. Entries not in that order are all read."""
    found: dict[str, str] = {}
    for backend in backends:
        at = bisect.bisect_left(weights, (backend,))
        if at == len(weights) or weights[at][0] != backend:
            return dict(weights)
        found[backend] = weights[at][1]
    return found


def _same_objects(old: tuple[object, ...], new: tuple[object, ...]) -> bool:
    return len(old) == len(new) and all(a is b for a, b in zip(old, new, strict=True))


def with_usable(
    dataplane: ir.DataPlane, usable: frozenset[str], layouts: Layouts | None = None
) -> ir.DataPlane:
    """`dataplane` with the dispatch maps over the routes in `usable` (those with a usable
    server); `layouts` spares laying them out again from the same inputs."""
    current = {m.name: m for m in dataplane.maps if m.name in ir.DISPATCH_MAPS}
    if len(current) != len(ir.DISPATCH_MAPS):
        return dataplane
    made = {m.name: m for m in (layouts or Layouts()).maps(dataplane, usable)}
    if all(made[name] is current[name] or made[name] == current[name] for name in made):
        return dataplane
    maps = tuple(made.get(m.name, m) for m in dataplane.maps)
    return dataclasses.replace(dataplane, maps=maps)


def usable_backends(
    dataplane: ir.DataPlane, states: Mapping[tuple[str, str], str]
) -> frozenset[str]:
    """The backends with a server HAProxy reports UP (`states`: (backend, server) -> UP, DOWN,
    MAINT) that `dataplane` keeps with a weight above 0. A server the data plane no longer
    has counts for nothing, so a route losing its last server leaves the map before the
    server goes. A server HAProxy has not reported yet counts for nothing either, unless no
    server of its backend has been reported: a backend HAProxy has just loaded (the poll
    that would list it is still to come) counts as usable, as HAProxy starts its servers."""
    return usable_among(dataplane.backends, states)


def usable_among(
    backends: Iterable[ir.Backend], states: Mapping[tuple[str, str], str]
) -> frozenset[str]:
    """`usable_backends` of these backends only."""
    return frozenset(backend.name for backend in backends if _usable(backend, states))


def _usable(backend: ir.Backend, states: Mapping[tuple[str, str], str]) -> bool:
    """A server with a weight is UP; or none of the backend's servers is reported yet and one
    has a weight. One walk without a list made: a registration at 1,000 gateways asks this
    of 1,000 backends twice (new servers, then their states)."""
    name = backend.name
    reported = weighed = False
    for server in backend.servers:
        status = states.get((name, server.name))
        if server.weight > 0:
            if status == "UP":
                return True
            weighed = True
        reported = reported or status is not None
    return weighed and not reported
