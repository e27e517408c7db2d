"""The stored gateways as admission needs them on every write, kept between writes.

With 10,000 gateways, listing every key, walking every stored gateway and finding the
service-plane ports on each write cost 50-100 ms a write, although a write changes one gateway.
Here the cache follows the store: a write reads the store's revision, the keys the watch saw
changed since the last write (`store.changes`), and only those values. The port index and the
service-plane ports are kept while the gateways that changed stay in place (same key, holding
no contested place, listening as before); the list of every gateway is made only when asked.
Anything else (a gateway created or deleted, a lost history) rebuilds them from what is held.
"""

from __future__ import annotations

from collections.abc import Iterator

from meshgate.api.admission import validated_gateway
from meshgate.model import Gateway
from meshgate.model.planes import service_plane_ports
from meshgate.model.ports import PortIndex, listening
from meshgate.store import Key, Record, Store
from meshgate.store.changes import changed_keys
from meshgate.validated import Table, shared_table

Name = tuple[str, str]  # (namespace, name)
# Past this many keys to read again, all values are listed at once.
READ_ONE_BY_ONE = 64


class StoredGatewayCache:
    def __init__(self) -> None:
        # Every stored gateway's version and model (None: it does not validate), in the
        # store's order (by key) when `_ordered`.
        self._held: dict[Name, tuple[int, Gateway | None]] = {}
        self._ordered = True
        self._revision: int | None = None  # the store revision `_held` is current at
        self._list: list[Gateway] | None = None
        self._index: PortIndex[None] | None = None
        self._plane: dict[int, Gateway] | None = None
        self.values_read = 0  # values read from the store: what a test of the cost counts
        self.relists = 0  # times every key was listed

    async def load(self, store: Store) -> list[Gateway]:
        """Every stored gateway that validates, in the store's order."""
        await self.follow(store)
        return self.gateways()

    async def follow(self, store: Store) -> None:
        """Bring the cache up to the store's current revision."""
        now = await store.revision()
        if self._revision is not None and now == self._revision:
            return
        changed = (
            None
            if self._revision is None
            else await changed_keys(store, self._revision, now, ("gateways",))
        )
        if changed is None:
            await self._relist(store)
        else:
            for key in sorted(changed):
                await self._reread(store, key)
        self._revision = now

    def gateways(self) -> list[Gateway]:
        """Every stored gateway that validates, in the store's order (made when asked)."""
        if self._list is None:
            if not self._ordered:
                self._held = dict(sorted(self._held.items()))
                self._ordered = True
            self._list = [model for _, model in self._held.values() if model is not None]
        return self._list

    def others(self) -> _Others:
        """The gateways, as an iterable made into a list only if iterated."""
        return _Others(self)

    def ports(self, gateways: list[Gateway] | None = None) -> PortIndex[None]:
        """An index of the stored gateways, as `PortIndex` built afresh from them would answer
        for any gateway whose place in it is not contested. (`gateways`: what `load` returned;
        the cache knows them.)"""
        if self._index is None:
            self._index = PortIndex()
            for gateway in self.gateways():
                self._index.add(gateway, None)
        return self._index

    def plane_ports(self) -> dict[int, Gateway]:
        """`service_plane_ports` of the stored gateways."""
        if self._plane is None:
            self._plane = service_plane_ports(self.gateways())
        return self._plane

    async def _relist(self, store: Store) -> None:
        """Every key listed (without values): those whose version is not the one held, and
        those held but no longer listed, are read again as changed keys are."""
        self.relists += 1
        heads = await store.list("gateways", keys_only=True)
        listed = {(h.key.namespace, h.key.name): h for h in heads}
        changed = [h.key for key, h in listed.items() if self._held.get(key, (0,))[0] != h.revision]
        changed += [Key("gateways", *key) for key in self._held.keys() - listed.keys()]
        records: dict[Key, Record | None] | None = None
        if len(changed) > READ_ONE_BY_ONE:
            # The first listing, or after a lost history: every value in one read, where one
            # read per key took seconds for a thousand gateways on a busy node.
            records = {r.key: r for r in await store.list("gateways")}
        for key in sorted(changed):
            await self._reread(store, key, records)

    async def _read(
        self,
        store: Store,
        store_key: Key,
        shared: Table,
        records: dict[Key, Record | None] | None = None,
    ) -> tuple[int, Gateway | None] | None:
        """A stored gateway's version and model: the model validated by whoever read that
        version first in this process (`validated`), else validated here and left there.
        `records`: the values listed already (a key missing there is gone)."""
        record = await store.get(store_key) if records is None else records.get(store_key)
        self.values_read += 1
        if record is None:
            return None
        where = ("gateways", store_key.namespace, store_key.name)
        found = shared.get(where)
        if found is not None and found[0] == record.revision:
            model = found[1]
        else:
            model = validated_gateway(record)
            shared[where] = (record.revision, model)
        return record.revision, model if isinstance(model, Gateway) else None

    async def _reread(
        self, store: Store, store_key: Key, records: dict[Key, Record | None] | None = None
    ) -> None:
        """One changed key: in place when the gateway was there and stays where it was."""
        key = (store_key.namespace, store_key.name)
        before = self._held.get(key)
        found = await self._read(store, store_key, shared_table(store), records)
        if found is None:
            if before is not None:
                del self._held[key]
                self._forget()
            return
        if before is not None and before[0] == found[0]:
            return
        self._held[key] = found
        self._list = None
        gateway = found[1]
        if before is None:
            self._ordered = False
            self._forget()
        elif not self._in_place(before[1], gateway):
            self._forget()
        elif self._plane is not None and gateway is not None and before[1] is not None:
            number = gateway.port.number
            if self._plane.get(number) is before[1]:
                self._plane[number] = gateway

    def _in_place(self, before: Gateway | None, after: Gateway | None) -> bool:
        """Whether the port index and the service-plane ports hold for the new version."""
        if before is None or after is None:
            return False
        return (
            not (self._index is not None and self._index.contested(before))
            and listening(before) == listening(after)
            and before.on_service_plane == after.on_service_plane
        )

    def _forget(self) -> None:
        self._index = self._plane = None
        self._list = None


class _Others:
    """The stored gateways for `admit`, which lists them only when the port index cannot
    answer (a contested place, a certificate's users)."""

    def __init__(self, cache: StoredGatewayCache) -> None:
        self._cache = cache

    def __iter__(self) -> Iterator[Gateway]:
        return iter(self._cache.gateways())
