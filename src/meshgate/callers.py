"""Who a client address is: a service (one of its instances has the address), else a node,
else `external` (SPEC §6). Pure.

Addresses are compared as IP addresses (an IPv4 client HAProxy reports as `::ffff:a.b.c.d` is
`a.b.c.d`); instances given by host name never match. 127.0.0.1 (or ::1) means a process on the
node that recorded the request, so it matches the instances on that node (at the node's
address, placed on it, or at a loopback address without a `node`), and is otherwise that node.
When the address belongs to instances of several services it names none of them: the caller is
then the node or `external`. Services a gateway routes to are not taken as its callers: on one
host every instance and every client may share 127.0.0.1, and a test client calling a gateway
is far likelier than a service calling itself through one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

EXTERNAL = "external"
OTHER = "other"  # the flow book's bucket of clients beyond its table (`stats.flows`)
LOCAL = frozenset({"127.0.0.1", "::1"})


@dataclass(frozen=True)
class Endpoint:
    """A registered instance's address, its service and (when known) the node it runs on."""

    namespace: str
    service: str
    address: str
    node: str | None = None


@dataclass(frozen=True)
class Caller:
    id: str
    kind: str  # service | node | external
    name: str
    namespace: str | None


def canonical(address: str) -> str | None:
    """An IP address in canonical form (IPv4-mapped IPv6 as IPv4); None for anything else."""
    text = address.strip().strip("[]")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _is_local(address: str) -> bool:
    """The address a process reaches its own host's services from (what the kernel picks as
    the source towards any loopback address). Other loopback addresses are taken as hosts of
    their own: tests and single-machine demos give each node one (127.0.0.11, .12, ...)."""
    return address in LOCAL


def external(namespace: str, name: str = EXTERNAL) -> Caller:
    return Caller(f"external:{namespace}/{name}", "external", name, namespace)


class CallerIndex:
    def __init__(self, endpoints: Iterable[Endpoint], nodes: Mapping[str, str] | None = None):
        """`nodes`: node name -> its address."""
        self._by_address: dict[str, list[Endpoint]] = {}
        for endpoint in endpoints:
            address = canonical(endpoint.address)
            if address is not None:
                self._by_address.setdefault(address, []).append(endpoint)
        self._nodes: dict[str, str] = {}  # address -> node name
        self._node_addresses: dict[str, str] = {}  # node name -> address
        for name, value in sorted((nodes or {}).items()):
            address = canonical(value)
            if address is not None:
                self._nodes.setdefault(address, name)
                self._node_addresses[name] = address

    def resolve(
        self,
        client: str,
        *,
        namespace: str,
        node: str | None = None,
        targets: frozenset[str] = frozenset(),
    ) -> Caller:
        """The caller of a gateway in `namespace` from `client`, recorded on `node` (None on a
        node of its own); `targets`: the services the gateway routes to."""
        if client == OTHER:
            return external(namespace, OTHER)
        address = canonical(client)
        if address is None:
            return external(namespace)
        local = _is_local(address)
        found = [
            e
            for e in self._by_address.get(address, [])
            if not (local and e.node is not None and node is not None and e.node != node)
        ]
        if local and node is not None:
            found += self._on_node(node)
        candidates = {
            (e.namespace, e.service)
            for e in found
            if not (e.namespace == namespace and e.service in targets)
        }
        same = {c for c in candidates if c[0] == namespace}
        chosen = same if same else candidates
        if len(chosen) == 1:
            space, service = next(iter(chosen))
            return Caller(f"service:{space}/{service}", "service", service, space)
        named = self._nodes.get(address) or (node if local else None)
        if named is not None:
            return Caller(f"node:{named}", "node", named, None)
        return external(namespace)

    def _on_node(self, node: str) -> list[Endpoint]:
        """Instances on `node`: at its address, or placed on it. A process there calling its
        own node's gateway over loopback (`localhost:PORT`, the service plane) comes from
        127.0.0.1, not from the address it is registered with."""
        address = self._node_addresses.get(node)
        at_address = self._by_address.get(address, []) if address is not None else []
        placed = [e for found in self._by_address.values() for e in found if e.node == node]
        return [*at_address, *placed]
