"""Which instances are on the node an agent compiles for, and how a route prefers them. Pure.

On many nodes each agent compiles its own data plane, so "local" is decided per node at
compile time. A route with `locality: prefer-local` keeps its local instances as active
servers and makes the others HAProxy `backup` servers, all used at once (`option
allbackups`) and only while no local one is available. Preference therefore acts inside one
route's backend: the choice between routes, by weight, is untouched, and a route counts as
available as long as any of its instances is (`nbsrv` counts backups when no active server
is left).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from meshgate.model.service import Instance


@dataclass(frozen=True)
class NodeIdentity:
    """The node a data plane is compiled for: its name (`agent --node`) and address."""

    name: str
    address: str | None = None


def node_of(instance: Instance, here: NodeIdentity) -> str | None:
    """The node an instance runs on: the one it names, else this node when its address is
    this node's (or a loopback address, which only ever reaches the node that connects to
    it), else unknown."""
    if instance.node is not None:
        return instance.node
    if instance.address == here.address or _is_loopback(instance.address):
        return here.name
    return None


def is_local(instance: Instance, here: NodeIdentity | None) -> bool:
    """Whether an instance runs on this node; on a single node (`up`), every instance does."""
    return here is None or node_of(instance, here) == here.name


def netns_here(instance: Instance, here: NodeIdentity | None) -> str | None:
    """The network namespace to reach an instance through, from this node. A namespace is a
    host's own: from another node the instance is reached at its address, since a namespace
    of that name there (if any) is a different one."""
    if instance.netns is None or here is None or instance.node in (None, here.name):
        return instance.netns
    return None


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a host name: not known to be local
        return False
