"""Deciding how a new data plane reaches HAProxy: the smallest list of actions. Pure.

Map contents (route weights, virtual-host aliases) are data HAProxy can swap at run time, so a
change confined to maps needs no reload. Any change to frontends or backends needs a reload,
which the supervisor makes hitless.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshgate.compiler import ir


@dataclass(frozen=True)
class ReplaceMap:
    """Swap a map's whole content atomically (prepare / add / commit)."""

    name: str
    entries: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Reload:
    reason: str


Action = ReplaceMap | Reload


def plan(running: ir.DataPlane | None, desired: ir.DataPlane) -> list[Action]:
    if running is None:
        return [Reload("first configuration")]
    if running.settings != desired.settings:
        return [Reload("data-plane settings changed")]
    if running.frontends != desired.frontends:
        return [Reload("frontends changed")]
    if running.backends != desired.backends:
        return [Reload("backends changed")]
    if {m.name for m in running.maps} != {m.name for m in desired.maps}:
        return [Reload("map files added or removed")]
    return [
        ReplaceMap(new.name, new.entries)
        for new in desired.maps
        if running.map_named(new.name) != new
    ]
