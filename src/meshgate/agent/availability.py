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


def effective(dataplane: ir.DataPlane, states: Mapping[ServerKey, str]) -> ir.DataPlane:
    """`dataplane` with dispatch.map over the routes with a server up in `states` that
    `dataplane` keeps: a server it no longer has makes no route usable, so a route whose last
    server is leaving is out of the map before the server goes."""
    usable = dispatch.usable_backends(dataplane, states)
    return dispatch.with_usable(dataplane, usable.__contains__)


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
