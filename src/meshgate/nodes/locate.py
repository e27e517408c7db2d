"""Which node an instance runs on, for the API: the node a registration or manifest names,
else the node whose address is the instance's ("discovery fills it where it can"). Pure.

Agents decide locality for themselves (compiler.locality) from their own name and address;
this is the cluster-wide view the API shows, from the node records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from meshgate.store import Record


def node_addresses(records: Iterable[Record]) -> dict[str, str]:
    """Node name by node address; an address two nodes give names neither."""
    found: dict[str, str] = {}
    shared: set[str] = set()
    for record in records:
        address = record.value.get("address")
        if not isinstance(address, str) or not address:
            continue
        if address in found and found[address] != record.key.name:
            shared.add(address)
        found[address] = record.key.name
    return {address: name for address, name in found.items() if address not in shared}


def locate(instance: Mapping[str, Any], by_address: Mapping[str, str]) -> str | None:
    """The node of an instance as the API lists it, or None when it cannot be told."""
    named = instance.get("node")
    if isinstance(named, str) and named:
        return named
    address = instance.get("address")
    return by_address.get(address) if isinstance(address, str) else None
