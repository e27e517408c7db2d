"""Reading the store into the compiler's input, keeping each resource's version at hand."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import NamedTuple

from meshgate.compiler import DesiredState
from meshgate.compiler.locality import NodeIdentity
from meshgate.discovery import registry
from meshgate.discovery.dns import DnsFollower
from meshgate.discovery.sources import Sources, merge
from meshgate.errors import ValidationFailed
from meshgate.model import SINGULAR, Certificate, Gateway, Resource, Service, validate_resource
from meshgate.store import CompactedError, Record, Store
from meshgate.store import Key as StoreKey
from meshgate.store.snapshot import PinnedReads, SnapshotStore
from meshgate.validated import shared_table

Key = tuple[str, str]


@dataclass(frozen=True)
class Loaded:
    state: DesiredState
    gateway_versions: dict[Key, int]
    service_versions: dict[Key, int]
    # Stored documents that no longer validate (written by an older version): reported, skipped.
    invalid: dict[tuple[str, str, str], str]
    # Where each run-time instance came from: service -> instance id -> "api" | "dns".
    sources: Sources = field(default_factory=dict)
    certificate_versions: dict[Key, int] = field(default_factory=dict)
    # The one store revision everything was read at, where the store pins reads (etcd).
    revision: int | None = None


@dataclass(frozen=True)
class Placement:
    """The node an agent runs: which gateways it serves, and where they listen by default."""

    labels: dict[str, str]
    address: str | None = None

    @property
    def node(self) -> NodeIdentity | None:
        """The node itself, for locality (every node has the label `node: NAME`)."""
        name = self.labels.get("node")
        return None if name is None else NodeIdentity(name, self.address)

    def place(self, gateway: Gateway) -> Gateway | None:
        """The gateway as this node serves it, or None when its `nodes:` exclude the node.
        A gateway listening on every address listens on the node's address instead."""
        if not gateway.placed_on(self.labels):
            return None
        if self.address is not None and gateway.bind == "0.0.0.0":
            return gateway.model_copy(update={"bind": self.address})
        return gateway


ResourceKey = tuple[str, str, str]  # (kind, namespace, name)


class Stamp(NamedTuple):
    """What a load keeps of a stored record besides its resource: the value itself (about
    1.3 kB a gateway as a dict) is the resource's, validated."""

    revision: int
    create_revision: int


def _stamp(record: Record) -> Stamp:
    return Stamp(record.revision, record.create_revision)


Held = tuple[Stamp, Resource | str]  # a record's versions with its resource, or why it is invalid


@dataclass
class DesiredLoader:
    """Reads and validates stored resources, re-validating only those whose version changed:
    with thousands of gateways, validation would otherwise dominate every pass.

    Given the keys written since the last load (the agent's watch sees them), a load reads
    only those and keeps the rest as last loaded: listing 10,000 keys alone took longer than
    the rest of a weight change's pass."""

    store: Store
    dns: DnsFollower | None = None  # answers for services that name DNS records
    placement: Placement | None = None  # on many nodes: this node's part; else every gateway
    _cache: dict[ResourceKey, tuple[int, Resource | str]] = field(default_factory=dict)
    # What the last load held, by kind; gateways in creation order, the others in key order.
    _held: dict[str, dict[Key, Held]] | None = None
    _registered: list[Record] | None = None  # the instances registered through the API
    # Each gateway as placed on this node, kept with the stored one it came from: the same
    # object from pass to pass tells the compiler it did not change.
    _placed: dict[Key, tuple[Gateway, Gateway | None]] = field(default_factory=dict)

    async def load(self, changed: Collection[StoreKey] | None = None) -> Loaded:
        """The resources, with the instances registered through the API and found in DNS.
        `changed`: the keys written or deleted since the last load (any kind), when they are
        all known; None lists everything afresh. On etcd every kind is read at one revision
        (the first read's): a write landing between two reads cannot make a state no revision
        ever held; every key is listed then, as the watch's keys are not known to be complete
        up to that revision."""
        if not isinstance(self.store, SnapshotStore):
            return await self._load(self.store, changed)
        for attempt in range(3):
            snapshot = self.store.snapshot()
            try:
                loaded = await self._load(snapshot, None)
                return dataclasses.replace(loaded, revision=snapshot.revision)
            except CompactedError:
                # The revision was compacted while being read: read again, at a newer one.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _load(
        self, reads: Store | PinnedReads, changed: Collection[StoreKey] | None
    ) -> Loaded:
        if changed is None or self._held is None:
            self._held = {kind: await self._listed(reads, kind) for kind in KINDS}
            self._registered = None
        else:
            created: dict[str, list[Key]] = {}
            for key in changed:
                if key.kind in self._held:
                    new = await self._reread(reads, key)
                    if new is not None:
                        created.setdefault(key.kind, []).append(new)
                elif key.kind == registry.KIND:
                    self._registered = None
            for kind, keys in created.items():
                _put_in_order(self._held[kind], kind, keys)
        if self._registered is None or changed is None:
            self._registered = await reads.list(registry.KIND)
        loaded = self._loaded(self._held)
        if len(self._placed) > len(loaded.gateway_versions):
            for gone in self._placed.keys() - self._held["gateways"].keys():
                del self._placed[gone]
        api = registry.group_registered(self._registered)
        if self.dns is not None:
            self.dns.follow(loaded.state.services)
        registered, sources = merge(api, self.dns.instances() if self.dns else {})
        node = self.placement.node if self.placement else None
        state = dataclasses.replace(loaded.state, registered=registered, node=node)
        return dataclasses.replace(loaded, state=state, sources=sources)

    async def _listed(self, reads: Store | PinnedReads, kind: str) -> dict[Key, Held]:
        held: dict[Key, Held] = {}
        seen: set[ResourceKey] = set()
        for head in await reads.list(kind, keys_only=True):
            key = (kind, head.key.namespace, head.key.name)
            found = await self._current(reads, key, head)
            if found is None:
                continue  # deleted since it was listed
            seen.add(key)
            held[key[1:]] = found
        for gone in [k for k in self._cache if k[0] == kind and k not in seen]:
            del self._cache[gone]
        if kind == "gateways":
            # Creation order decides who keeps a contested port: the one that was there first.
            held = dict(sorted(held.items(), key=lambda item: item[1][0].create_revision))
        return held

    async def _reread(self, reads: Store | PinnedReads, store_key: StoreKey) -> Key | None:
        """Bring one resource up to date in what the last load held; the key when it was
        created since (it was put last)."""
        assert self._held is not None
        held = self._held[store_key.kind]
        key = (store_key.namespace, store_key.name)
        record = await reads.get(store_key)
        before = held.get(key)
        if record is None:
            held.pop(key, None)
            self._cache.pop((store_key.kind, *key), None)
            return None
        if before is not None and before[0].revision == record.revision:
            return None
        found = (_stamp(record), self._validated((store_key.kind, *key), record))
        if before is not None and before[0].create_revision == record.create_revision:
            held[key] = found  # in place: its position is its creation's
            return None
        held.pop(key, None)
        held[key] = found
        return key

    def _loaded(self, held: dict[str, dict[Key, Held]]) -> Loaded:
        gateways: list[Gateway] = []
        gateway_versions: dict[Key, int] = {}
        services: list[Service] = []
        service_versions: dict[Key, int] = {}
        certificates: list[Certificate] = []
        certificate_versions: dict[Key, int] = {}
        invalid: dict[tuple[str, str, str], str] = {}
        for kind, found in held.items():
            for key, (record, resource) in found.items():
                if isinstance(resource, str):
                    invalid[(kind, *key)] = resource
                elif isinstance(resource, Gateway):
                    placed = self._place(key, resource)
                    if placed is not None:
                        gateways.append(placed)
                        gateway_versions[key] = record.revision
                elif isinstance(resource, Certificate):
                    certificates.append(resource)
                    certificate_versions[key] = record.revision
                elif isinstance(resource, Service):
                    services.append(resource)
                    service_versions[key] = record.revision
        return Loaded(
            state=DesiredState(gateways=gateways, services=services, certificates=certificates),
            gateway_versions=gateway_versions,
            service_versions=service_versions,
            invalid=invalid,
            certificate_versions=certificate_versions,
        )

    def _place(self, key: Key, gateway: Gateway) -> Gateway | None:
        if self.placement is None:
            return gateway
        kept = self._placed.get(key)
        if kept is None or kept[0] is not gateway:
            kept = self._placed[key] = (gateway, self.placement.place(gateway))
        return kept[1]

    async def _current(
        self, reads: Store | PinnedReads, key: ResourceKey, head: Record
    ) -> Held | None:
        """The resource at `head` (a keys-only record): from the cache when its version is
        the cached one, else read and validated. With thousands of gateways, reading and
        parsing every value on every pass would cost more than the pass's compile."""
        cached = self._cache.get(key)
        if cached is not None and cached[0] == head.revision:
            return _stamp(head), cached[1]
        record = await reads.get(head.key)
        if record is None:
            return None
        return _stamp(record), self._validated(key, record)

    def _validated(self, key: ResourceKey, record: Record) -> Resource | str:
        shared = shared_table(self.store) if key[0] == "gateways" else None
        found = shared.get(key) if shared is not None else None
        if found is not None and found[0] == record.revision:
            self._cache[key] = found
            return found[1]
        singular = SINGULAR[key[0]]
        result: Resource | str
        try:
            # A certificate that expired since it was stored still loads: it keeps being
            # served, and its status says it has expired.
            result = validate_resource(
                record.value, allow_raw_acl=True, kind=singular, allow_expired=True
            )
        except ValidationFailed as exc:
            result = str(exc)
        self._cache[key] = (record.revision, result)
        if shared is not None:
            shared[key] = (record.revision, result)
        return result


KINDS = ("gateways", "services", "certificates")


def _put_in_order(held: dict[Key, Held], kind: str, created: list[Key]) -> None:
    """Gateways in creation order (the one created first keeps a contested port): those
    created since the last load go last, among themselves by creation. Other kinds by key."""
    if kind == "gateways":
        items = sorted(((k, held.pop(k)) for k in created), key=lambda i: i[1][0].create_revision)
        held.update(items)
        return
    ordered = sorted(held.items())
    held.clear()
    held.update(ordered)
