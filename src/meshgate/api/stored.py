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


class StoredGatewayCache:
    def __init__(self) -> None:
        self._models = StoredGateways()
        self._index: PortIndex[None] | None = None
        self._indexed: list[Gateway] = []  # what the index was last checked against

    async def load(self, store: Store) -> list[Gateway]:
        """Every stored gateway that validates, in the store's order."""
        heads = await store.list("gateways", keys_only=True)
        return await self._models.refresh(heads, store.get, shared_table(store))

    def ports(self, gateways: list[Gateway]) -> PortIndex[None]:
        """An index of `gateways` (what `load` returned), as `PortIndex` built afresh from them
        would answer for any gateway whose place in it is not contested."""
        if self._index is None or not self._still_valid(gateways):
            self._index = PortIndex()
            for gateway in gateways:
                self._index.add(gateway, None)
        self._indexed = gateways
        return self._index

    def _still_valid(self, gateways: list[Gateway]) -> bool:
        """The same gateways in the same (the store's) order, those that changed holding no
        contested place and listening as before: compared in step, identity first."""
        assert self._index is not None
        if len(gateways) != len(self._indexed):
            return False
        for before, gateway in zip(self._indexed, gateways, strict=True):
            if before is gateway:
                continue
            if (
                (before.namespace, before.name) != (gateway.namespace, gateway.name)
                or self._index.contested(before)
                or listening(before) != listening(gateway)
            ):
                return False
        return True
