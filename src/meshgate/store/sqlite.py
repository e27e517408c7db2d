"""The embedded store: one SQLite file in WAL mode, shareable between objects and processes.

Nothing is cached in memory: every read goes to the file, and every write is one
`BEGIN IMMEDIATE` transaction that bumps the global revision in the `meta` row, so any number of
`SqliteStore` objects, in any number of processes, share one history. Each object wakes its own
watchers at once after its own writes, and polls the revision counter to notice everyone else's.

sqlite3 blocks, so every call runs in a worker thread (`asyncio.to_thread`) on the object's one
connection, serialised by a `threading.Lock`. The lock is taken inside the thread, not around the
await, so a cancelled caller can never leave the connection in use by two threads at once.
The tables and the SQL on them are in `sqlite_tables`.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from pathlib import Path
from typing import Any, TypeVar

from meshgate.store import sqlite_tables as tables
from meshgate.store.base import (
    ConflictError,
    Delete,
    Key,
    NotFoundError,
    Op,
    Put,
    Record,
    StoreClosedError,
    StoreError,
    WatchEvent,
    check_ops,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

_POLL_SECONDS = 0.1  # how soon a watch sees another process's write
_LEASE_SWEEP_SECONDS = 0.25  # how late past its TTL a lease may be expired


class SqliteStore:
    """`Store` on a SQLite file. Create with `await SqliteStore.open(path)`; end with
    `await store.close()`, or use `async with await SqliteStore.open(path) as store:`."""

    def __init__(self, conn: sqlite3.Connection, history: int) -> None:
        """Use `open`."""
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.Lock()
        self._closed = False
        self._history = history
        self._watchers: set[asyncio.Event] = set()  # one per live watch, set to wake it
        self._seen_revision = 0
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def open(cls, path: str | Path, *, history: int = 10_000) -> SqliteStore:
        """Open (creating it and its directory if needed) the store at `path`, and start its
        background tasks on the running loop. `history`: how many past revisions of events
        a watch can replay; older ones are compacted away."""
        if history < 1:
            raise ValueError("history must be at least 1")
        try:
            conn = await asyncio.to_thread(tables.connect, Path(path))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store at {path}: {exc}") from exc
        store = cls(conn, history)
        store._seen_revision = await store.revision()
        store._tasks = [
            asyncio.create_task(store._poll_foreign_writes(), name="store-poll"),
            asyncio.create_task(store._sweep_leases(), name="store-lease-sweep"),
        ]
        return store

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def get(self, key: Key) -> Record | None:
        return await self._read(tables.get, key)

    async def list(
        self, kind: str | None = None, namespace: str | None = None, *, keys_only: bool = False
    ) -> builtins.list[Record]:
        return await self._run(tables.list_records, kind, namespace, keys_only)

    async def put(
        self,
        key: Key,
        value: dict[str, Any],
        *,
        expect_revision: int | None = None,
        lease: int | None = None,
    ) -> Record:
        _, (record,) = await self._apply([Put(key, value, expect_revision, lease)])
        assert isinstance(record, Record)  # a put always yields its record
        return record

    async def delete(self, key: Key, *, expect_revision: int | None = None) -> bool:
        """True if deleted; False if absent and unconditional. A conditional delete of an absent
        key raises NotFoundError (not ConflictError), so callers can answer "404"."""
        try:
            _, (deleted,) = await self._apply([Delete(key, expect_revision)])
        except ConflictError as exc:
            if exc.actual == 0:
                raise NotFoundError(f"{key} does not exist") from exc
            raise
        if deleted is False and expect_revision is not None:
            raise NotFoundError(f"{key} does not exist")
        return deleted is True

    async def commit(self, ops: Sequence[Op]) -> int:
        revision, _ = await self._apply(ops)
        return revision

    async def revision(self) -> int:
        return await self._read(tables.current_revision)

    async def keys_changed(self, after: int, upto: int, kinds: Collection[str]) -> set[Key]:
        """The keys of `kinds` written or deleted after revision `after` up to `upto` (see
        `store.changes`); CompactedError when that history is gone."""
        return await self._read(tables.keys_changed, after, upto, tuple(sorted(set(kinds))))

    def watch(
        self, from_revision: int, kinds: Collection[str] | None = None
    ) -> AsyncIterator[WatchEvent]:
        """Events after `from_revision`. CompactedError comes from the first `__anext__` (as it
        would from a server); the iteration ends quietly when the store is closed."""
        if self._closed:
            raise StoreClosedError("store is closed")
        if from_revision < 0:
            raise ValueError("from_revision must be >= 0")
        return self._watch(from_revision, None if kinds is None else tuple(sorted(set(kinds))))

    async def grant_lease(self, ttl_seconds: float) -> int:
        if not ttl_seconds > 0:
            raise ValueError("a lease needs a positive TTL")
        return await self._run(tables.grant_lease, ttl_seconds, time.time())

    async def keepalive(self, lease: int) -> None:
        await self._run(tables.keepalive, lease, time.time())

    async def revoke(self, lease: int) -> None:
        revision = await self._run(tables.revoke, lease, self._history)
        if revision is not None:
            self._notify(revision)

    async def close(self) -> None:
        """Stop the background tasks, end every watch and close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        for wake in self._watchers:
            wake.set()
        await asyncio.to_thread(self._disconnect)

    # --- internals ---

    async def _apply(self, ops: Sequence[Op]) -> tuple[int, builtins.list[Record | bool]]:
        check_ops(ops)
        if not ops:
            return await self.revision(), []
        # Serialise here, before the database is touched: a bad value must not cost a lock.
        encoded = [(op, tables.to_json(op.value) if isinstance(op, Put) else None) for op in ops]
        revision, results = await self._run(tables.commit, encoded, self._history, time.time())
        self._notify(revision)
        return revision, results

    async def _watch(self, after: int, kinds: tuple[str, ...] | None) -> AsyncIterator[WatchEvent]:
        wake = asyncio.Event()
        self._watchers.add(wake)
        try:
            while not self._closed:
                # Clear before reading: a write landing after our snapshot sets it again, so the
                # wait below returns at once instead of sleeping through it.
                wake.clear()
                try:
                    after, current, events = await self._run(tables.read_events, after, kinds)
                except StoreClosedError:
                    return
                # Each event let go of as it is handed over, none held while waiting: a batch is
                # up to WATCH_BATCH_REVISIONS revisions of events with their values (an apply of
                # 100,000 gateways: 300 MB), of which the watcher keeps what it needs.
                events.reverse()
                while events:
                    yield events.pop()
                if after >= current:
                    await wake.wait()
        finally:
            self._watchers.discard(wake)

    def _notify(self, revision: int) -> None:
        if revision > self._seen_revision:
            self._seen_revision = revision
            for wake in self._watchers:
                wake.set()

    async def _poll_foreign_writes(self) -> None:
        # Writes by other objects and processes wake nobody here; the revision counter is the
        # cheapest thing to read to notice them, and only worth reading while someone watches.
        while True:
            await asyncio.sleep(_POLL_SECONDS)
            if not self._watchers:
                continue
            try:
                revision = self._read_now(tables.current_revision)
            except StoreClosedError:
                return
            except StoreError:
                logger.warning("store poll failed; will retry", exc_info=True)
                continue
            if revision is not None:
                self._notify(revision)

    async def _sweep_leases(self) -> None:
        # Every store on the file sweeps; the write transaction makes each expiry happen once.
        while True:
            await asyncio.sleep(_LEASE_SWEEP_SECONDS)
            try:
                if not self._read_now(tables.leases_due, time.time()):
                    continue  # nothing due, or the connection is busy: the next tick looks
                revision = await self._run(tables.expire_leases, time.time(), self._history)
            except StoreClosedError:
                return
            except StoreError:
                logger.warning("lease sweep failed; will retry", exc_info=True)
                continue
            if revision is not None:
                self._notify(revision)

    async def _run(self, call: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise StoreClosedError("store is closed")
        return await asyncio.to_thread(self._call_locked, call, *args)

    async def _read(self, read: Callable[..., T], *args: object) -> T:
        """A short read (a key, the revision): on the event loop's thread when the connection
        is free at once, else in a worker thread. A trip through a worker thread waits for
        the GIL behind whatever the loop is computing, milliseconds each on a busy node (a
        gateway write of the API makes several), where the read itself takes microseconds."""
        boxed: tuple[T] | None = self._read_now(_boxed, read, *args)
        if boxed is not None:
            return boxed[0]
        return await self._run(read, *args)

    def _read_now(self, read: Callable[..., T], *args: object) -> T | None:
        """`read` on the event loop's own thread, for the idle loops' one-row reads: 14 a second
        through a worker thread cost the node more CPU than all its other idle work. None when
        the connection is in use, or another process keeps the file locked (readers of a WAL
        database wait only in rare cases, such as recovery; never the loop): the caller tries
        again on its next tick."""
        if self._closed:
            raise StoreClosedError("store is closed")
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self._conn is None:
                raise StoreClosedError("store is closed")
            self._conn.execute("PRAGMA busy_timeout = 0")
            try:
                return read(self._conn, *args)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    return None
                raise StoreError(f"sqlite: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite: {exc}") from exc
            finally:
                self._conn.execute(
                    f"PRAGMA busy_timeout = {int(tables.BUSY_TIMEOUT_SECONDS * 1000)}"
                )
        finally:
            self._lock.release()

    def _call_locked(self, call: Callable[..., T], *args: object) -> T:
        with self._lock:
            if self._conn is None:
                raise StoreClosedError("store is closed")
            try:
                return call(self._conn, *args)
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite: {exc}") from exc

    def _disconnect(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _boxed(conn: sqlite3.Connection, read: Callable[..., T], *args: object) -> tuple[T]:
    """What `read` returns, in a tuple: a None it returns is then told from "not now"."""
    return (read(conn, *args),)
