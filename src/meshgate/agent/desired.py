"""Reading the store into the compiler's input, keeping each resource's version at hand."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from meshgate.compiler import DesiredState
from meshgate.compiler.locality import NodeIdentity
from meshgate.discovery import registry
from meshgate.discovery.dns import DnsFollower
from meshgate.discovery.sources import Sources, merge
from meshgate.errors import ValidationFailed
from meshgate.model import SINGULAR, Certificate, Gateway, Resource, Service, validate_resource
from meshgate.store import CompactedError, Record, Store
from meshgate.store.snapshot import PinnedReads, SnapshotStore

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


@dataclass
class DesiredLoader:
    """Reads and validates stored resources, re-validating only those whose version changed:
    with thousands of gateways, validation would otherwise dominate every pass."""

    store: Store
    dns: DnsFollower | None = None  # answers for services that name DNS records
    placement: Placement | None = None  # on many nodes: this node's part; else every gateway
    _cache: dict[tuple[str, str, str], tuple[int, Resource | str]] = field(default_factory=dict)

    async def load(self) -> Loaded:
        """The resources, with the instances registered through the API and found in DNS.
        On etcd every kind is read at one revision (the first read's): a write landing
        between two reads cannot make a state no revision ever held."""
        if not isinstance(self.store, SnapshotStore):
            return await self._load(self.store)
        for attempt in range(3):
            snapshot = self.store.snapshot()
            try:
                loaded = await self._load(snapshot)
                return dataclasses.replace(loaded, revision=snapshot.revision)
            except CompactedError:
                # The revision was compacted while being read: read again, at a newer one.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _load(self, reads: Store | PinnedReads) -> Loaded:
        loaded = await self._load_resources(reads)
        api = registry.group_registered(await reads.list(registry.KIND))
        if self.dns is not None:
            self.dns.follow(loaded.state.services)
        registered, sources = merge(api, self.dns.instances() if self.dns else {})
        node = self.placement.node if self.placement else None
        state = dataclasses.replace(loaded.state, registered=registered, node=node)
        return dataclasses.replace(loaded, state=state, sources=sources)

    async def _load_resources(self, reads: Store | PinnedReads) -> Loaded:
        gateways: list[tuple[Record, Gateway]] = []
        services: list[Service] = []
        service_versions: dict[Key, int] = {}
        certificates: list[Certificate] = []
        certificate_versions: dict[Key, int] = {}
        invalid: dict[tuple[str, str, str], str] = {}
        seen: set[tuple[str, str, str]] = set()
        for kind in ("gateways", "services", "certificates"):
            for head in await reads.list(kind, keys_only=True):
                key = (kind, head.key.namespace, head.key.name)
                found = await self._current(reads, key, head)
                if found is None:
                    continue  # deleted since it was listed
                record, resource = found
                seen.add(key)
                if isinstance(resource, str):
                    invalid[key] = resource
                elif isinstance(resource, Gateway):
                    placed = self.placement.place(resource) if self.placement else resource
                    if placed is not None:
                        gateways.append((record, placed))
                elif isinstance(resource, Certificate):
                    certificates.append(resource)
                    certificate_versions[(resource.namespace, resource.name)] = record.revision
                elif isinstance(resource, Service):
                    services.append(resource)
                    service_versions[(resource.namespace, resource.name)] = record.revision
        for gone in self._cache.keys() - seen:
            del self._cache[gone]
        # Creation order decides who keeps a contested port: the gateway that was there first.
        gateways.sort(key=lambda pair: pair[0].create_revision)
        return Loaded(
            state=DesiredState(
                gateways=[g for _, g in gateways], services=services, certificates=certificates
            ),
            gateway_versions={(g.namespace, g.name): r.revision for r, g in gateways},
            service_versions=service_versions,
            invalid=invalid,
            certificate_versions=certificate_versions,
        )

    async def _current(
        self, reads: Store | PinnedReads, key: tuple[str, str, str], head: Record
    ) -> tuple[Record, Resource | str] | None:
        """The resource at `head` (a keys-only record): from the cache when its version is
        the cached one, else read and validated. With thousands of gateways, reading and
        parsing every value on every pass would cost more than the pass's compile."""
        cached = self._cache.get(key)
        if cached is not None and cached[0] == head.revision:
            return head, cached[1]
        record = await reads.get(head.key)
        if record is None:
            return None
        return record, self._validated(key, record)

    def _validated(self, key: tuple[str, str, str], record: Record) -> Resource | str:
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
        return result
