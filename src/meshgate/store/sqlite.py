"""The embedded store: one SQLite file in WAL mode, shareable between objects and processes.

Nothing is cached in memory: every read goes to the file, and every write is one
`BEGIN IMMEDIATE` transaction that bumps the global revision in the `meta` row, so any number of
`SqliteStore` objects, in any number of processes, share one history. Each object wakes its own
watchers at once after its own writes, and polls the revision counter to notice everyone else's.

sqlite3 blocks, so every call runs in a worker thread (`asyncio.to_thread`) on the object's one
connection, serialised by a `threading.Lock`. The lock is taken inside the thread, not around the
await, so a cancelled caller can never leave the connection in use by two threads at once.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from meshgate.store.base import (
    CompactedError,
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

_BUSY_TIMEOUT_SECONDS = 10.0
_POLL_SECONDS = 0.1  # how soon a watch sees another process's write
_LEASE_SWEEP_SECONDS = 0.25  # how late past its TTL a lease may be expired
_WATCH_BATCH_REVISIONS = 1000  # per read; whole revisions, so a transaction is never split

_SCHEMA = """
BEGIN IMMEDIATE;
-- Events at or below compact_revision have been dropped.
CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 0),
    revision INTEGER NOT NULL, compact_revision INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (id, revision, compact_revision) VALUES (0, 0, 0);
CREATE TABLE IF NOT EXISTS kv (kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    value TEXT NOT NULL, create_revision INTEGER NOT NULL, mod_revision INTEGER NOT NULL,
    lease INTEGER, PRIMARY KEY (kind, namespace, name)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_by_lease ON kv (lease) WHERE lease IS NOT NULL;
-- position: the op's place in its transaction; all ops of a transaction share the revision.
CREATE TABLE IF NOT EXISTS events (revision INTEGER NOT NULL, position INTEGER NOT NULL,
    type TEXT NOT NULL, kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    value TEXT, PRIMARY KEY (revision, position)) WITHOUT ROWID;
-- AUTOINCREMENT so a revoked lease's id is never handed out again; expires_at is wall-clock
-- time.time(), so a lease outlives a restart of the process that granted it.
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY AUTOINCREMENT, ttl REAL NOT NULL,
    expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS leases_by_expiry ON leases (expires_at);
COMMIT;
"""

_KV_COLUMNS = "kind, namespace, name, value, create_revision, mod_revision, lease"
_KEY_COLUMNS = "kind, namespace, name, '{}', create_revision, mod_revision, lease"
_KEY_MATCH = "kind = ? AND namespace = ? AND name = ?"


# --- synchronous SQL, always called in a worker thread with the connection lock held ---------


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: the sqlite3 module must not open transactions behind our back; we
    # BEGIN IMMEDIATE ourselves so a writer holds the write lock before it reads what it compares.
    # `timeout` is SQLite's busy timeout: how long to wait for another process's write lock.
    conn = sqlite3.connect(
        path, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; never corrupt
        conn.executescript(_SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def _write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may already have rolled back (after some I/O errors, or a failed COMMIT may
        # leave the transaction open); either way the connection must be usable afterwards.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _key_params(key: Key) -> tuple[str, str, str]:
    return (key.kind, key.namespace, key.name)


def _to_json(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _record(row: Sequence[Any]) -> Record:
    kind, namespace, name, value, create_revision, revision, lease = row
    return Record(Key(kind, namespace, name), json.loads(value), revision, create_revision, lease)


def _get(conn: sqlite3.Connection, key: Key) -> Record | None:
    query = f"SELECT {_KV_COLUMNS} FROM kv WHERE {_KEY_MATCH}"
    row = conn.execute(query, _key_params(key)).fetchone()
    return None if row is None else _record(row)


def _list(
    conn: sqlite3.Connection, kind: str | None, namespace: str | None, keys_only: bool
) -> list[Record]:
    # SQLite compares TEXT as UTF-8 bytes, which orders exactly like Python compares str.
    columns = _KEY_COLUMNS if keys_only else _KV_COLUMNS
    query = (
        f"SELECT {columns} FROM kv WHERE (?1 IS NULL OR kind = ?1)"
        " AND (?2 IS NULL OR namespace = ?2) ORDER BY kind, namespace, name"
    )
    return [_record(row) for row in conn.execute(query, (kind, namespace))]


def _meta(conn: sqlite3.Connection) -> tuple[int, int]:
    revision, compact_revision = conn.execute(
        "SELECT revision, compact_revision FROM meta"
    ).fetchone()
    return int(revision), int(compact_revision)


def _current_revision(conn: sqlite3.Connection) -> int:
    return _meta(conn)[0]


def _bump_revision(conn: sqlite3.Connection, history: int) -> int:
    """Take the next revision inside the open write transaction; drop events beyond `history`."""
    revision, compact_revision = _meta(conn)
    revision += 1
    if revision - history > compact_revision:
        compact_revision = revision - history
        conn.execute("DELETE FROM events WHERE revision <= ?", (compact_revision,))
    conn.execute("UPDATE meta SET revision = ?, compact_revision = ?", (revision, compact_revision))
    return int(revision)


def _record_event(
    conn: sqlite3.Connection, revision: int, position: int, key: Key, value: str | None
) -> None:
    kind = "delete" if value is None else "put"
    params = (revision, position, kind, *_key_params(key), value)
    conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", params)


def _commit(
    conn: sqlite3.Connection, ops: Sequence[tuple[Op, str | None]], history: int, now: float
) -> tuple[int, list[Record | bool]]:
    """Apply `ops` (each with its value as JSON text) atomically: (revision, per-op result)."""
    with _write_transaction(conn):
        # Every compare sees the state before the transaction, as in etcd, and all are checked
        # before anything is written, so a failure leaves no trace and no revision bump.
        before: dict[Key, tuple[int, int] | None] = {}
        for op, _ in ops:
            query = f"SELECT create_revision, mod_revision FROM kv WHERE {_KEY_MATCH}"
            row = conn.execute(query, _key_params(op.key)).fetchone()
            before[op.key] = None if row is None else (row[0], row[1])
            actual = 0 if row is None else row[1]
            if op.expect_revision is not None and op.expect_revision != actual:
                raise ConflictError(op.key, op.expect_revision, actual)
        for op, _ in ops:
            if isinstance(op, Put) and op.lease is not None:
                alive = "SELECT 1 FROM leases WHERE id = ? AND expires_at > ?"
                if conn.execute(alive, (op.lease, now)).fetchone() is None:
                    raise NotFoundError(f"lease {op.lease} does not exist or has expired")
        if all(isinstance(op, Delete) and before[op.key] is None for op, _ in ops):
            return _current_revision(conn), [False] * len(ops)  # nothing changes: no revision
        revision = _bump_revision(conn, history)
        results: list[Record | bool] = []
        for position, (op, value) in enumerate(ops):
            existing = before[op.key]
            if isinstance(op, Put) and value is not None:
                create_revision = revision if existing is None else existing[0]
                row = (*_key_params(op.key), value, create_revision, revision, op.lease)
                conn.execute(
                    f"INSERT OR REPLACE INTO kv ({_KV_COLUMNS}) VALUES (?,?,?,?,?,?,?)", row
                )
                _record_event(conn, revision, position, op.key, value)
                results.append(_record(row))
            elif existing is not None:
                conn.execute(f"DELETE FROM kv WHERE {_KEY_MATCH}", _key_params(op.key))
                _record_event(conn, revision, position, op.key, None)
                results.append(True)
            else:
                results.append(False)
        return revision, results


def _grant_lease(conn: sqlite3.Connection, ttl: float, now: float) -> int:
    cursor = conn.execute("INSERT INTO leases (ttl, expires_at) VALUES (?, ?)", (ttl, now + ttl))
    return int(cursor.lastrowid or 0)  # always set after an INSERT into a rowid table


def _keepalive(conn: sqlite3.Connection, lease: int, now: float) -> None:
    # An expired lease stays dead even before a sweeper removes it: its keys are already doomed.
    query = "UPDATE leases SET expires_at = ? + ttl WHERE id = ? AND expires_at > ?"
    if conn.execute(query, (now, lease, now)).rowcount == 0:
        raise NotFoundError(f"lease {lease} does not exist or has expired")


def _drop_leases(conn: sqlite3.Connection, leases: list[int], history: int) -> int | None:
    """Delete `leases` and their keys in the open transaction; the new revision if keys went."""
    marks = ",".join("?" * len(leases))
    query = f"SELECT kind, namespace, name FROM kv WHERE lease IN ({marks}) ORDER BY 1, 2, 3"
    keys = [Key(*row) for row in conn.execute(query, leases)]
    conn.execute(f"DELETE FROM leases WHERE id IN ({marks})", leases)
    if not keys:
        return None
    revision = _bump_revision(conn, history)
    for position, key in enumerate(keys):
        conn.execute(f"DELETE FROM kv WHERE {_KEY_MATCH}", _key_params(key))
        _record_event(conn, revision, position, key, None)
    return revision


def _revoke(conn: sqlite3.Connection, lease: int, history: int) -> int | None:
    with _write_transaction(conn):
        if conn.execute("SELECT 1 FROM leases WHERE id = ?", (lease,)).fetchone() is None:
            raise NotFoundError(f"lease {lease} does not exist")
        return _drop_leases(conn, [lease], history)


_DUE_LEASES = "SELECT id FROM leases WHERE expires_at <= ?"


def _leases_due(conn: sqlite3.Connection, now: float) -> bool:
    return conn.execute(_DUE_LEASES + " LIMIT 1", (now,)).fetchone() is not None


def _expire_leases(conn: sqlite3.Connection, now: float, history: int) -> int | None:
    # Look without the write lock first: nearly always nothing is due, and taking the write
    # lock on every tick in every process would make real writers queue behind sweepers.
    if not _leases_due(conn, now):
        return None
    with _write_transaction(conn):
        # Read again under the lock: another store on the file may have swept them meanwhile.
        leases = [row[0] for row in conn.execute(_DUE_LEASES, (now,))]
        return _drop_leases(conn, leases, history) if leases else None


def _read_events(
    conn: sqlite3.Connection, after: int, kinds: tuple[str, ...] | None
) -> tuple[int, int, list[WatchEvent]]:
    """Up to a batch of revisions after `after`: (last revision covered, current, events)."""
    conn.execute("BEGIN")  # one snapshot for both the compaction check and the events
    try:
        revision, compact_revision = _meta(conn)
        if after < compact_revision:
            raise CompactedError(after, compact_revision)
        upto = min(revision, after + _WATCH_BATCH_REVISIONS)
        if upto <= after or kinds == ():
            return max(after, upto), revision, []
        query = "SELECT revision, type, kind, namespace, name, value FROM events"
        query += " WHERE revision > ? AND revision <= ?"
        if kinds is not None:
            query += f" AND kind IN ({','.join('?' * len(kinds))})"
        rows = conn.execute(query + " ORDER BY revision, position", (after, upto, *(kinds or ())))
        events = [
            WatchEvent(what, Key(kind, ns, name), at, None if value is None else json.loads(value))
            for at, what, kind, ns, name, value in rows
        ]
        return upto, revision, events
    finally:
        conn.execute("COMMIT")


# --- the asyncio shell -----------------------------------------------------------------------


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
            conn = await asyncio.to_thread(_connect, Path(path))
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
        return await self._run(_get, key)

    async def list(
        self, kind: str | None = None, namespace: str | None = None, *, keys_only: bool = False
    ) -> builtins.list[Record]:
        return await self._run(_list, kind, namespace, keys_only)

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
        return await self._run(_current_revision)

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
        return await self._run(_grant_lease, ttl_seconds, time.time())

    async def keepalive(self, lease: int) -> None:
        await self._run(_keepalive, lease, time.time())

    async def revoke(self, lease: int) -> None:
        revision = await self._run(_revoke, lease, self._history)
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
        encoded = [(op, _to_json(op.value) if isinstance(op, Put) else None) for op in ops]
        revision, results = await self._run(_commit, encoded, self._history, time.time())
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
                    after, current, events = await self._run(_read_events, after, kinds)
                except StoreClosedError:
                    return
                for event in events:
                    yield event
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
                revision = self._read_now(_current_revision)
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
                if not self._read_now(_leases_due, time.time()):
                    continue  # nothing due, or the connection is busy: the next tick looks
                revision = await self._run(_expire_leases, time.time(), self._history)
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
                self._conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_SECONDS * 1000)}")
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
