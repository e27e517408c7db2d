"""The store's contract: keys, records, transaction ops, watch events, errors and the protocol.

The shape follows etcd v3 on purpose, so that a distributed backend can implement the same
protocol without callers changing: one global revision counter bumped once per transaction,
per-key create/mod revisions, compare-on-revision transactions, watches that resume from a
revision, and leases whose expiry deletes the keys attached to them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from meshgate.errors import MeshgateError


@dataclass(frozen=True, order=True, slots=True)
class Key:
    """Where a value lives. Ordering is (kind, namespace, name), the order `list` returns."""

    kind: str
    namespace: str
    name: str

    def __post_init__(self) -> None:
        # A key-value backend lays keys out as ".../kind/namespace/name" and lists by prefix, so
        # kind and namespace must not contain the separator; the name may, being the last part.
        for part, value in (("kind", self.kind), ("namespace", self.namespace)):
            if not value or "/" in value:
                raise ValueError(f"key {part} must be non-empty and without '/': {value!r}")
        if not self.name:
            raise ValueError("key name must be non-empty")
        if "\x00" in self.kind + self.namespace + self.name:
            raise ValueError("key parts must not contain NUL characters")

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Record:
    """A stored value. `revision` is the key's mod revision: the resource's version."""

    key: Key
    value: dict[str, Any]
    revision: int
    create_revision: int
    lease: int | None


@dataclass(frozen=True)
class Put:
    """Write `value` at `key`. `expect_revision`: None = always, 0 = only if absent, N = only if
    the key's current revision is N. A put without `lease` detaches any lease the key had."""

    key: Key
    value: dict[str, Any]
    expect_revision: int | None = None
    lease: int | None = None


@dataclass(frozen=True)
class Delete:
    """Remove `key`; `expect_revision` as for `Put`."""

    key: Key
    expect_revision: int | None = None


Op = Put | Delete


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change. Every op of a transaction yields one event, all with the same revision."""

    type: Literal["put", "delete"]
    key: Key
    revision: int
    value: dict[str, Any] | None  # None for a delete
    # For a put, where the store's watch carries them (etcd's does): the key's create
    # revision and lease, so that the event is the whole record (see `record`). 0: not known.
    create_revision: int = 0
    lease: int | None = None

    def record(self) -> Record | None:
        """The record this put wrote, when the event carries all of it; else None."""
        if self.type != "put" or self.value is None or not self.create_revision:
            return None
        return Record(self.key, self.value, self.revision, self.create_revision, self.lease)


def check_ops(ops: Sequence[Op]) -> None:
    """Reject malformed transactions before any backend work, the same way in every backend."""
    seen: set[Key] = set()
    for op in ops:
        # etcd refuses a transaction that touches one key twice; refusing it everywhere keeps
        # callers from depending on an order of ops within a transaction.
        if op.key in seen:
            raise ValueError(f"{op.key} appears twice in one transaction")
        seen.add(op.key)
        if op.expect_revision is not None and op.expect_revision < 0:
            raise ValueError(f"{op.key}: expect_revision must be None or >= 0")
        if isinstance(op, Put) and not isinstance(op.value, dict):
            raise TypeError(f"{op.key}: value must be a dict, not {type(op.value).__name__}")


class StoreError(MeshgateError):
    """The store failed for a reason of its own (the database is locked too long, corrupt, ...)."""


class ConflictError(StoreError):
    """A compare-on-revision failed. `actual` is the key's current revision, 0 when absent."""

    def __init__(self, key: Key, expected: int, actual: int) -> None:
        self.key = key
        self.expected = expected
        self.actual = actual
        super().__init__(f"{key}: expected revision {expected}, found {actual}")


class NotFoundError(StoreError):
    """The key or lease the operation needs does not exist (or the lease has expired)."""


class StoreClosedError(StoreError):
    """The store was closed; open a new one."""


class CompactedError(StoreError):
    """A watch asked for history that has been discarded: re-list, then watch from that point."""

    def __init__(self, requested: int, compact_revision: int) -> None:
        self.requested = requested
        self.compact_revision = compact_revision
        super().__init__(
            f"revision {requested} is compacted; history starts after {compact_revision}"
        )


class Store(Protocol):
    """The operations every backend provides. All writes are atomic; reads see committed data."""

    async def get(self, key: Key) -> Record | None: ...

    async def list(
        self, kind: str | None = None, namespace: str | None = None, *, keys_only: bool = False
    ) -> list[Record]:
        """Records matching the filters, sorted by key. With `keys_only` their values are left
        empty (etcd's keys-only range): enough to tell from the revisions what changed, without
        reading every value."""
        ...

    async def put(
        self,
        key: Key,
        value: dict[str, Any],
        *,
        expect_revision: int | None = None,
        lease: int | None = None,
    ) -> Record: ...

    async def delete(self, key: Key, *, expect_revision: int | None = None) -> bool:
        """True if deleted; False if absent and `expect_revision` is None. With a compare, an
        absent key raises NotFoundError and a different revision ConflictError."""
        ...

    async def commit(self, ops: Sequence[Op]) -> int:
        """Apply all ops or none, under one new revision, which is returned. Compares are all
        checked first; the first failing one raises ConflictError. A transaction that changes
        nothing (no ops, or only deletes of absent keys) returns the current revision. A key
        may appear only once (ValueError otherwise), as in etcd."""
        ...

    async def revision(self) -> int:
        """The current global revision. To list and then follow changes without a gap, take it
        *before* listing and watch from it: replaying a change already listed is harmless."""
        ...

    def watch(
        self, from_revision: int, kinds: Collection[str] | None = None
    ) -> AsyncIterator[WatchEvent]:
        """Every event after `from_revision`, in order, then live ones until the store closes."""
        ...

    async def grant_lease(self, ttl_seconds: float) -> int:
        """A new lease id (opaque; never reused). Keys put with it go when it expires."""
        ...

    async def keepalive(self, lease: int) -> None:
        """Restart the lease's TTL; NotFoundError if it is unknown or already expired."""
        ...

    async def revoke(self, lease: int) -> None:
        """End the lease now, deleting its keys under one revision; NotFoundError if unknown."""
        ...

    async def close(self) -> None:
        """Release everything; later calls raise StoreClosedError and live watches end."""
        ...
