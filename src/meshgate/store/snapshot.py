"""Reads pinned to one revision: a store that can serve them (etcd) lets an agent render from
one consistent state of every kind, never from kinds read at different moments."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import Protocol, runtime_checkable

from meshgate.store.base import Key, Record, WatchEvent


class PinnedReads(Protocol):
    """`get` and `list` as of one revision: the first read's, which `revision` then holds."""

    revision: int | None

    async def get(self, key: Key) -> Record | None: ...

    async def list(
        self, kind: str | None = None, namespace: str | None = None, *, keys_only: bool = False
    ) -> list[Record]: ...

    async def list_span(
        self, kinds: Collection[str], *, keys_only: bool = False
    ) -> builtins.list[Record]:
        """Every record of `kinds`, sorted by key, in one read."""
        ...

    async def get_many(self, keys: Sequence[Key]) -> builtins.list[Record]:
        """The records of `keys` that exist, in one read (after another read set `revision`)."""
        ...


@runtime_checkable
class SnapshotStore(Protocol):
    def snapshot(self) -> PinnedReads: ...


@runtime_checkable
class ProgressWatchStore(Protocol):
    """A store whose watch also says, between events, up to which revision it has sent
    everything (etcd's progress notifications), through `progress`."""

    def watch_with_progress(
        self,
        from_revision: int,
        kinds: Collection[str] | None,
        progress: Callable[[int], None],
    ) -> AsyncIterator[WatchEvent]: ...
