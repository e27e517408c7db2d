"""The stored gateways as admission needs them on every write, kept between writes.

With 10,000 gateways, reading and decoding every stored value and indexing every port on each
write cost about 0.1 s a write, although a write changes one gateway. Here the keys are listed
(without values), only values whose version changed are read, and the port index is kept while
the gateways that changed hold no contested place in it and listen as before
(`PortIndex.contested`).
"""

from __future__ import annotations

from meshgate.api.admission import StoredGateways
from meshgate.model import Gateway
from meshgate.model.ports import PortIndex, listening
from meshgate.store import Store
from meshgate.validated import shared_table

Key = tuple[str, str]


class StoredGatewayCache:
    def __init__(self) -> None:
        self._models = StoredGateways()
        self._index: PortIndex[None] | None = None
        self._indexed: dict[Key, Gateway] = {}

    async def load(self, store: Store) -> list[Gateway]:
        """Every stored gateway that validates, in the store's order."""
        heads = await store.list("gateways", keys_only=True)
        return await self._models.refresh(heads, store.get, shared_table(store))

    def ports(self, gateways: list[Gateway]) -> PortIndex[None]:
        """An index of `gateways` (what `load` returned), as `PortIndex` built afresh from them
        would answer for any gateway whose place in it is not contested."""
        indexed = self._indexed
        index = self._index
        if index is None or len(indexed) != len(gateways) or not self._still_valid(gateways):
            index = PortIndex()
            for gateway in gateways:
                index.add(gateway, None)
            self._index = index
        self._indexed = {(g.namespace, g.name): g for g in gateways}
        return index

    def _still_valid(self, gateways: list[Gateway]) -> bool:
        assert self._index is not None
        for gateway in gateways:
            before = self._indexed.get((gateway.namespace, gateway.name))
            if before is gateway:
                continue
            if (
                before is None
                or self._index.contested(before)
                or listening(before) != listening(gateway)
            ):
                return False
        return True
