"""Route availability in dispatch.map: the agent's side of compiler.dispatch. Pure.

The compiler writes dispatch.map as if every route had a usable server. What HAProxy runs is
that map over the routes that do (`dispatch.with_usable`), so the driver keeps the running
data plane in that form: each data plane it applies is first given the availability last
seen, and the map actions the planner made against the compiler's form are replaced by the
changes between the running map and this one (`dispatch_actions`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from meshgate.compiler import dispatch, ir
from meshgate.plan import (
    Action,
    DeleteMapEntries,
    RemoveServer,
    ReplaceMap,
    SetMapEntries,
    dispatch_changes,
)

ServerKey = tuple[str, str]


class UsableRoutes:
    """`dispatch.usable_backends` kept up to date: worked out in full for new backends, then
    only for the backends whose servers changed state since (`changed`). A registration at
    1,000 gateways streams 1,000 server state changes, and going over every backend for each
    burst of them was most of the agent's event loop time after the pass itself."""

    def __init__(self) -> None:
        self._backends: tuple[ir.Backend, ...] | None = None
        self._by_name: dict[str, ir.Backend] = {}
        self._usable: frozenset[str] = frozenset()
        self._dirty: set[str] = set()

    def changed(self, backend: str) -> None:
        """A server of `backend` changed state."""
        self._dirty.add(backend)

    def changed_between(
        self, old: Mapping[ServerKey, str] | None, new: Mapping[ServerKey, str]
    ) -> None:
        """The backends whose servers' states differ between two readings."""
        if old is None:
            self._backends = None  # nothing to compare with: all of them
            return
        self._dirty.update(key[0] for key, state in new.items() if old.get(key) != state)
        self._dirty.update(key[0] for key in old.keys() - new.keys())

    def of(self, dataplane: ir.DataPlane, states: Mapping[ServerKey, str]) -> frozenset[str]:
        # Identity of the backends, not of the data plane: the dispatch maps laid out over
        # the usable routes make another data plane of the same backends.
        if dataplane.backends is not self._backends:
            self._backends = dataplane.backends
            self._by_name = {backend.name: backend for backend in dataplane.backends}
            self._usable = dispatch.usable_backends(dataplane, states)
        elif self._dirty:
            again = [self._by_name[name] for name in self._dirty if name in self._by_name]
            self._usable = (self._usable - self._dirty) | dispatch.usable_among(again, states)
        self._dirty.clear()
        return self._usable


def is_dispatch_action(action: Action) -> bool:
    return (
        isinstance(action, ReplaceMap | SetMapEntries | DeleteMapEntries)
        and action.name in ir.DISPATCH_MAPS
    )


def dispatch_actions(running: ir.DataPlane | None, desired: ir.DataPlane) -> list[Action]:
    """The changes that take the running dispatch maps to the desired ones."""
    actions: list[Action] = []
    for name in ir.DISPATCH_MAPS:
        new = desired.map_named(name)
        old = running.map_named(name) if running is not None else None
        if new is not None and old is not None and new is not old:
            actions += dispatch_changes(old, new)
    return actions


def with_dispatch_actions(
    actions: Sequence[Action], running: ir.DataPlane | None, desired: ir.DataPlane
) -> list[Action]:
    """`actions` with their dispatch.map changes made against the running map. They go before
    the trailing server removals (as the planner orders maps), so a route that loses its last
    server has left the map when the server is drained."""
    kept = [a for a in actions if not is_dispatch_action(a)]
    end = len(kept)
    while end > 0 and isinstance(kept[end - 1], RemoveServer):
        end -= 1
    return [*kept[:end], *dispatch_actions(running, desired), *kept[end:]]
