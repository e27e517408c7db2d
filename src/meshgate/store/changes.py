"""Which keys of some kinds were written or deleted between two revisions, from the watch.

A reader that keeps a copy of many keys (the API's stored gateways) brings it up to date by
reading only these keys again, where listing every key cost time in proportion to all of them
(about 50 ms for 10,000 gateways, on every write).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Protocol, runtime_checkable

from meshgate.store.base import Key, Store, StoreError
from meshgate.store.snapshot import ProgressWatchStore


@runtime_checkable
class KeysChangedStore(Protocol):
    """A store that answers `changed_keys` itself (the embedded one)."""

    async def keys_changed(self, after: int, upto: int, kinds: Collection[str]) -> set[Key]: ...


# A history read is one or two reads of the store; past this something is wrong (a revision
# without events, a stalled connection) and the caller lists everything instead.
CHANGES_TIMEOUT_S = 2.0


async def changed_keys(
    store: Store, after: int, upto: int, kinds: Collection[str]
) -> set[Key] | None:
    """The keys of `kinds` changed after revision `after` up to `upto` (the store's revision,
    read by the caller), perhaps with some changed after `upto` too; None when the history is
    not there any more (compacted), cannot be read now, or cannot say (etcd): the caller lists
    the keys then."""
    if upto <= after:
        return set()
    if isinstance(store, ProgressWatchStore):
        # etcd's revisions count writes anywhere in the cluster, outside meshgate's prefix
        # too: a revision may have no event here, and a watch would wait for one.
        return None
    try:
        async with asyncio.timeout(CHANGES_TIMEOUT_S):
            if isinstance(store, KeysChangedStore):
                # One query for those keys: the watch below reads every event of every
                # kind in between, values and all (status writes included).
                return await store.keys_changed(after, upto, kinds)
            return await _follow(store, after, upto, frozenset(kinds))
    except (TimeoutError, StoreError):
        return None


async def _follow(store: Store, after: int, upto: int, kinds: frozenset[str]) -> set[Key]:
    changed: set[Key] = set()
    # Every revision has at least one event, of some kind: following all kinds reaches `upto`
    # without waiting for a write after it (a watch of some kinds alone would wait there).
    events = store.watch(after)
    try:
        async for event in events:
            if event.key.kind in kinds:
                changed.add(event.key)
            if event.revision >= upto:
                break
    finally:
        # Left early: end the watch now (an etcd stream, a waiter on the file), not when
        # the collector finds it.
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
    return changed
