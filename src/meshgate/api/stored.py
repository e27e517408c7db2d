"""The stored gateways as admission needs them on every write, kept between writes.

With 10,000 gateways, listing every key, walking every stored gateway and finding the
service-plane ports on each write cost 50-100 ms a write, although a write changes one gateway.
Here the cache follows the store: a write reads the store's revision, the keys the watch saw
changed since the last write (`store.changes`), and only those values. The port index and the
service-plane ports are kept while the gateways that changed stay in place (same key, holding
no contested place, listening as before); the list of every gateway is made only when asked.
Anything else (a gateway created or deleted, a lost history) rebuilds them from what is held.
After a batch (more than `READ_ONE_BY_ONE` keys changed, or none known) the keys are listed
and the models the apply and the agent's loader share are taken, and an apply warms the cache
in the background, so that the first write after it does not do that work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import structlog

from meshgate.api.admission import validated_gateway
from meshgate.model import Gateway
from meshgate.model.planes import service_plane_ports
from meshgate.model.ports import PortIndex, listening
from meshgate.store import Key, Record, Store, StoreError
from meshgate.store.changes import changed_keys
from meshgate.validated import Table, shared_table

log = structlog.get_logger("meshgate.api")
Name = tuple[str, str]  # (namespace, name)
# More changed keys than this since the last write: one listing with values, not a read each.
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
        self._warming: set[asyncio.Task[None]] = set()

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
        if changed is None or len(changed) > READ_ONE_BY_ONE:
            await self._relist(store)
        else:
            for key in sorted(changed):
                await self._reread(store, key)
        self._revision = now

    def warm_soon(self, store: Store, lock: asyncio.Lock) -> None:
        """After a batch (an apply), bring the cache, its port index and service-plane ports
        up to date in the background, holding the API's write `lock`: otherwise the first
        write after an apply of 10,000 gateways did it (150 ms, a second before the listing
        took the shared models) and was the slowest weight change of a run."""
        task = asyncio.get_running_loop().create_task(self._warm(store, lock))
        self._warming.add(task)
        task.add_done_callback(self._warming.discard)

    async def warmed(self) -> None:
        """Return once the warm-ups started so far are done."""
        await asyncio.gather(*self._warming)

    async def _warm(self, store: Store, lock: asyncio.Lock) -> None:
        async with lock:
            try:
                await self.follow(store)
            except StoreError as exc:  # the next write follows instead
                log.debug("stored gateways not warmed", error=str(exc))
                return
            self.ports()
            self.plane_ports()

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
        """Every key listed without its value, and a value read only for a version that
        neither this cache nor the shared table (the apply's and the agent loader's models)
        holds: after an apply of thousands, reading each value again took a second at
        10,000 gateways and held up the first weight change after it. Many to read are read
        in one listing with values."""
        self.relists += 1
        heads = await store.list("gateways", keys_only=True)
        listed = {(h.key.namespace, h.key.name): h.revision for h in heads}
        gone = self._held.keys() - listed.keys()
        for key in gone:
            del self._held[key]
        if gone:
            self._forget()
        shared = shared_table(store)
        unknown: list[Name] = []
        for key, revision in listed.items():
            held = self._held.get(key)
            if held is not None and held[0] == revision:
                continue
            found = shared.get(("gateways", *key))
            if found is not None and found[0] == revision:
                model = found[1]
                self._take(key, (revision, model if isinstance(model, Gateway) else None))
            else:
                unknown.append(key)
        if len(unknown) > READ_ONE_BY_ONE:
            wanted = set(unknown)
            records = [
                r for r in await store.list("gateways") if (r.key.namespace, r.key.name) in wanted
            ]
            self.values_read += len(records)
            for record in records:
                key = (record.key.namespace, record.key.name)
                wanted.discard(key)
                self._take(key, self._model(record, shared))
            for key in wanted & self._held.keys():  # deleted since the keys were listed
                del self._held[key]
                self._forget()
        else:
            for key in unknown:
                await self._reread(store, Key("gateways", *key))

    async def _read(
        self, store: Store, store_key: Key, shared: Table
    ) -> tuple[int, Gateway | None] | None:
        """A stored gateway's version and model (None: it is not stored)."""
        record = await store.get(store_key)
        self.values_read += 1
        return None if record is None else self._model(record, shared)

    def _model(self, record: Record, shared: Table) -> tuple[int, Gateway | None]:
        """A stored gateway's version and model: the model validated by whoever read that
        version first in this process (`validated`), else validated here and left there."""
        where = ("gateways", record.key.namespace, record.key.name)
        found = shared.get(where)
        if found is not None and found[0] == record.revision:
            model = found[1]
        else:
            model = validated_gateway(record)
            shared[where] = (record.revision, model)
        return record.revision, model if isinstance(model, Gateway) else None

    async def _reread(self, store: Store, store_key: Key) -> None:
        """One changed key, read on its own."""
        key = (store_key.namespace, store_key.name)
        found = await self._read(store, store_key, shared_table(store))
        if found is None:
            if key in self._held:
                del self._held[key]
                self._forget()
            return
        self._take(key, found)

    def _take(self, key: Name, found: tuple[int, Gateway | None]) -> None:
        """A gateway's version as read: in place when it was there and stays where it was."""
        before = self._held.get(key)
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
