"""Writes larger than one etcd transaction may hold, and how far each is atomic. Pure.

etcd refuses a transaction of more than `--max-txn-ops` operations (128 by default) or a request
over `--max-request-bytes` (1.5 MiB by default). A write of more is split into transactions of
at most MAX_TXN_OPS operations and MAX_TXN_BYTES bytes of values, in the order given. Each
transaction is all or nothing; the write as a whole is not: see `EtcdStore.commit_batches`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from meshgate.store.base import ConflictError, Key, Op, Store

MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
# Under etcd's default --max-request-bytes (1.5 MiB) once base64 (4/3) and the JSON around the
# values are added.
MAX_TXN_BYTES = 768 * 1024


class PartialCommitError(ConflictError):
    """A compare failed in a later transaction of a split write: the first `written` ops are
    stored (at their revisions), the others are not."""

    def __init__(self, key: Key, expected: int, actual: int, written: int) -> None:
        super().__init__(key, expected, actual)
        self.written = written


@runtime_checkable
class BatchingStore(Protocol):
    async def commit_batches(self, ops: Sequence[Op]) -> list[int]: ...


def split(
    sizes: Sequence[int], max_ops: int = MAX_TXN_OPS, max_bytes: int = MAX_TXN_BYTES
) -> list[range]:
    """Consecutive index ranges over ops of the given value sizes, each within both limits
    (an op larger than `max_bytes` alone: etcd says whether it can take it)."""
    batches: list[range] = []
    start, used = 0, 0
    for index, size in enumerate(sizes):
        if index > start and (index - start >= max_ops or used + size > max_bytes):
            batches.append(range(start, index))
            start, used = index, 0
        used += size
    if start < len(sizes):
        batches.append(range(start, len(sizes)))
    return batches


async def commit_all(store: Store, ops: Sequence[Op]) -> list[int]:
    """Write `ops`, returning the revision each was written at: in one transaction where the
    store has no limit on its size (the embedded store), split where it has (etcd)."""
    if isinstance(store, BatchingStore):
        return await store.commit_batches(ops)
    revision = await store.commit(ops)
    return [revision] * len(ops)
