"""Reading the store into the compiler's input, keeping each resource's version at hand."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from meshgate.compiler import DesiredState
from meshgate.compiler.locality import NodeIdentity
from meshgate.discovery import registry
from meshgate.discovery.dns import DnsFollower
from meshgate.discovery.sources import Sources, merge
from meshgate.errors import ValidationFailed
from meshgate.model import SINGULAR, Certificate, Gateway, Resource, Service, validate_resource
from meshgate.store import CompactedError, Record, Store, WatchEvent
from meshgate.store import Key as StoreKey
from meshgate.store.batches import MAX_TXN_OPS
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
    # The gateways written or deleted since the last load; None: listed afresh (any may have).
    changed_gateways: frozenset[Key] | None = None


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
    _registered_by_key: dict[StoreKey, Record] = field(default_factory=dict)
    # On etcd: the revision what is held is the state of.
    _revision: int | None = None
    # Each gateway as placed on this node, kept with the stored one it came from: the same
    # object from pass to pass tells the compiler it did not change.
    _placed: dict[Key, tuple[Gateway, Gateway | None]] = field(default_factory=dict)
    # The gateways the last load gave the compiler, and where each is among them.
    _gateways: _LoadedGateways | None = None

    async def load(
        self,
        changed: Collection[StoreKey] | Mapping[StoreKey, WatchEvent] | None = None,
        *,
        through: int = 0,
    ) -> Loaded:
        """The resources, with the instances registered through the API and found in DNS.
        `changed`: the keys written or deleted since the last load (any kind), when they are
        all known; None lists everything afresh.

        On etcd every load is the state of one revision. The first, and any without the
        watch's events, lists everything at one revision in one range (`_listed_at_once`).
        After it, `changed` is the watch's events since the last load (the newest per key)
        and `through` the revision up to which the watch has delivered every event: the
        events carry the records, so the load reads nothing from the store, and what it
        holds is the state as of `through` (the last state, plus every change after it)."""
        if not isinstance(self.store, SnapshotStore):
            return await self._load(self.store, changed)
        if isinstance(changed, Mapping) and self._held is not None and self._revision is not None:
            taken = self._take_events(changed.values(), through)
            if taken is not None:
                return taken
        for attempt in range(3):
            snapshot = self.store.snapshot()
            try:
                held, registered = await self._listed_at_once(snapshot)
            except CompactedError:
                # The revision was compacted while being read: read again, at a newer one.
                if attempt == 2:
                    raise
                continue
            assert snapshot.revision is not None
            self._held, self._revision = held, max(snapshot.revision, through)
            self._registered_by_key = {r.key: r for r in registered}
            self._registered = registered
            return self._finish(self._held, registered, None)
        raise AssertionError("unreachable")

    def _take_events(self, events: Iterable[WatchEvent], through: int) -> Loaded | None:
        """The last load brought up to `through` by the watch's events, reading nothing; None
        when an event does not carry its whole record (then the caller lists)."""
        assert self._held is not None and self._revision is not None
        fresh = [e for e in events if e.revision > self._revision]
        if any(e.type == "put" and e.record() is None for e in fresh):
            return None
        created: dict[str, list[Key]] = {}
        instances = False
        for event in fresh:
            kind = event.key.kind
            if kind in self._held:
                new = self._hold(event.key, event.record())
                if new is not None:
                    created.setdefault(kind, []).append(new)
            elif kind == registry.KIND:
                instances = True
                record = event.record()
                if record is None:
                    self._registered_by_key.pop(event.key, None)
                else:
                    self._registered_by_key[event.key] = record
        for kind, keys in created.items():
            _put_in_order(self._held[kind], kind, keys)
        if instances or self._registered is None:
            self._registered = sorted(self._registered_by_key.values(), key=lambda r: r.key)
        self._revision = max(self._revision, through)
        return self._finish(self._held, self._registered, _gateway_keys(e.key for e in fresh))

    async def _listed_at_once(
        self, snapshot: PinnedReads
    ) -> tuple[dict[str, dict[Key, Held]], list[Record]]:
        """Every resource kind and the registered instances, read at one revision in one
        range: keys only when most values are cached (the values that changed follow in one
        more read, at the same revision), with values when none is."""
        cold = not self._cache
        found = await snapshot.list_span((*KINDS, registry.KIND), keys_only=not cold)
        if not cold:
            found = await self._with_values(snapshot, found)
        held: dict[str, dict[Key, Held]] = {kind: {} for kind in KINDS}
        registered: list[Record] = []
        for record in found:
            kind = record.key.kind
            if kind == registry.KIND:
                registered.append(record)
                continue
            key = (kind, record.key.namespace, record.key.name)
            cached = self._cache.get(key)
            if cached is not None and cached[0] == record.revision:
                held[kind][key[1:]] = (_stamp(record), cached[1])
            else:
                held[kind][key[1:]] = (_stamp(record), self._validated(key, record))
        seen = {(kind, *key) for kind, found_here in held.items() for key in found_here}
        for gone in self._cache.keys() - seen:
            del self._cache[gone]
        # Creation order decides who keeps a contested port: the one that was there first.
        held["gateways"] = dict(
            sorted(held["gateways"].items(), key=lambda item: item[1][0].create_revision)
        )
        return held, registered

    async def _with_values(self, snapshot: PinnedReads, heads: list[Record]) -> list[Record]:
        """`heads` (keys only) with the values of those not held at their revision: read at
        the snapshot's revision, by key when few, else all in one more range."""
        needed = [h.key for h in heads if not self._known(h)]
        if not needed:
            return [self._known_record(h) for h in heads]
        if len(needed) > MAX_TXN_OPS:
            return await snapshot.list_span((*KINDS, registry.KIND))
        read = {r.key: r for r in await snapshot.get_many(needed)}
        return [read[h.key] if h.key in read else self._known_record(h) for h in heads]

    def _known(self, head: Record) -> bool:
        if head.key.kind == registry.KIND:
            known = self._registered_by_key.get(head.key)
            return known is not None and known.revision == head.revision
        cached = self._cache.get((head.key.kind, head.key.namespace, head.key.name))
        return cached is not None and cached[0] == head.revision

    def _known_record(self, head: Record) -> Record:
        """A keys-only record whose value is known: an instance's from the last load (its
        value is what is used); a resource's value is in the cache, validated, so the head
        does."""
        if head.key.kind == registry.KIND:
            return self._registered_by_key[head.key]
        return head

    async def _load(
        self, reads: Store | PinnedReads, changed: Collection[StoreKey] | None
    ) -> Loaded:
        changed_gateways: frozenset[Key] | None = None  # listed: any may have changed
        if changed is None or self._held is None:
            self._held = {kind: await self._listed(reads, kind) for kind in KINDS}
            self._registered = None
        else:
            changed_gateways = _gateway_keys(changed)
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
        return self._finish(self._held, self._registered, changed_gateways)

    def _finish(
        self,
        held: dict[str, dict[Key, Held]],
        registered_records: list[Record],
        changed_gateways: frozenset[Key] | None,
    ) -> Loaded:
        """What the compiler gets from what is held: the placed resources, with the instances
        registered through the API and found in DNS."""
        loaded = self._loaded(held, changed_gateways)
        if len(self._placed) > len(loaded.gateway_versions):
            for gone in self._placed.keys() - held["gateways"].keys():
                del self._placed[gone]
        api = registry.group_registered(registered_records)
        if self.dns is not None:
            self.dns.follow(loaded.state.services)
        registered, sources = merge(api, self.dns.instances() if self.dns else {})
        node = self.placement.node if self.placement else None
        state = dataclasses.replace(loaded.state, registered=registered, node=node)
        return dataclasses.replace(
            loaded,
            state=state,
            sources=sources,
            revision=self._revision,
            changed_gateways=changed_gateways,
        )

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
        return self._hold(store_key, await reads.get(store_key))

    def _hold(self, store_key: StoreKey, record: Record | None) -> Key | None:
        """Hold `record` (None: the resource is gone) in place of what the last load held;
        the key when it was created since (it goes last)."""
        assert self._held is not None
        held = self._held[store_key.kind]
        key = (store_key.namespace, store_key.name)
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

    def _loaded(
        self, held: dict[str, dict[Key, Held]], changed_gateways: frozenset[Key] | None
    ) -> Loaded:
        found = self._updated_gateways(held["gateways"], changed_gateways)
        if found is None:
            found = self._all_gateways(held["gateways"])
        self._gateways = found
        services: list[Service] = []
        service_versions: dict[Key, int] = {}
        certificates: list[Certificate] = []
        certificate_versions: dict[Key, int] = {}
        invalid = {("gateways", *key): reason for key, reason in found.invalid.items()}
        for kind, resources in held.items():
            if kind == "gateways":
                continue
            for key, (record, resource) in resources.items():
                if isinstance(resource, str):
                    invalid[(kind, *key)] = resource
                elif isinstance(resource, Certificate):
                    certificates.append(resource)
                    certificate_versions[key] = record.revision
                elif isinstance(resource, Service):
                    services.append(resource)
                    service_versions[key] = record.revision
        # Shared with the next load when no gateway changed: neither is changed in place.
        return Loaded(
            state=DesiredState(
                gateways=found.gateways, services=services, certificates=certificates
            ),
            gateway_versions=found.versions,
            service_versions=service_versions,
            invalid=invalid,
            certificate_versions=certificate_versions,
        )

    def _all_gateways(self, held: dict[Key, Held]) -> _LoadedGateways:
        found = _LoadedGateways()
        for key, (record, resource) in held.items():
            if isinstance(resource, str):
                found.invalid[key] = resource
            elif isinstance(resource, Gateway):
                placed = self._place(key, resource)
                if placed is not None:
                    found.at[key] = len(found.gateways)
                    found.gateways.append(placed)
                    found.versions[key] = record.revision
        return found

    def _updated_gateways(
        self, held: dict[Key, Held], changed: frozenset[Key] | None
    ) -> _LoadedGateways | None:
        """The last load's gateways with the changed ones in their places, when each was a
        valid gateway placed here and still is: a weight change among 10,000 gateways then
        copies two containers (in C) instead of walking them all. None: walk them all."""
        last = self._gateways
        if last is None or changed is None:
            return None
        updates: list[tuple[Key, int, Gateway]] = []
        for key in changed:
            at, now = last.at.get(key), held.get(key)
            if at is None or now is None or not isinstance(now[1], Gateway):
                return None
            placed = self._place(key, now[1])
            if placed is None:
                return None
            updates.append((key, now[0].revision, placed))
        if not updates:
            return last
        found = _LoadedGateways(list(last.gateways), dict(last.versions), last.at, last.invalid)
        for key, revision, placed in updates:
            found.gateways[last.at[key]] = placed
            found.versions[key] = revision
        return found

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


@dataclass
class _LoadedGateways:
    """The gateways of a load: those placed here in the order held, their versions and
    places, and why the invalid ones are."""

    gateways: list[Gateway] = field(default_factory=list)
    versions: dict[Key, int] = field(default_factory=dict)
    at: dict[Key, int] = field(default_factory=dict)
    invalid: dict[Key, str] = field(default_factory=dict)


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


def _gateway_keys(changed: Iterable[StoreKey]) -> frozenset[Key]:
    return frozenset((k.namespace, k.name) for k in changed if k.kind == "gateways")
