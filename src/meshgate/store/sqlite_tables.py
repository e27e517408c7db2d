"""The embedded store's tables and the synchronous SQL on them.

Every function takes the store's one connection and is called with its lock held, in a worker
thread or, for the idle polls' one-row reads, on the event loop (see `sqlite.SqliteStore`).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from meshgate.store.base import (
    CompactedError,
    ConflictError,
    Delete,
    Key,
    NotFoundError,
    Op,
    Put,
    Record,
    WatchEvent,
)

BUSY_TIMEOUT_SECONDS = 10.0
WATCH_BATCH_REVISIONS = 1000  # per read; whole revisions, so a transaction is never split

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


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: the sqlite3 module must not open transactions behind our back; we
    # BEGIN IMMEDIATE ourselves so a writer holds the write lock before it reads what it compares.
    # `timeout` is SQLite's busy timeout: how long to wait for another process's write lock.
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
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


def to_json(value: dict[str, Any]) -> str:
    # Keys keep their order: a gateway's routes are tried in the order they were written.
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _record(row: Sequence[Any]) -> Record:
    kind, namespace, name, value, create_revision, revision, lease = row
    return Record(Key(kind, namespace, name), json.loads(value), revision, create_revision, lease)


def get(conn: sqlite3.Connection, key: Key) -> Record | None:
    query = f"SELECT {_KV_COLUMNS} FROM kv WHERE {_KEY_MATCH}"
    row = conn.execute(query, _key_params(key)).fetchone()
    return None if row is None else _record(row)


def list_records(
    conn: sqlite3.Connection, kind: str | None, namespace: str | None, keys_only: bool
) -> list[Record]:
    # SQLite compares TEXT as UTF-8 bytes, which orders exactly like Python compares str.
    columns = _KEY_COLUMNS if keys_only else _KV_COLUMNS
    # Only the filters given, as plain equalities: `?1 IS NULL OR kind = ?1` kept SQLite from
    # the primary key, and listing the few certificates of a store of 10,000 gateways and
    # their status read all 20,000 rows (every write through the API lists them).
    filters = (("kind", kind), ("namespace", namespace))
    given = [(column, value) for column, value in filters if value is not None]
    where = " AND ".join(f"{column} = ?" for column, _ in given) or "1"
    query = f"SELECT {columns} FROM kv WHERE {where} ORDER BY kind, namespace, name"
    rows = conn.execute(query, tuple(value for _, value in given))
    return [_head(row) for row in rows] if keys_only else [_record(row) for row in rows]


def _head(row: Sequence[Any]) -> Record:
    """A keys-only record. The key was checked when it was written: it is not checked again,
    which halves the cost of listing 100,000 keys."""
    kind, namespace, name, _, create_revision, revision, lease = row
    key = _new_key(Key)
    _set(key, "kind", kind)
    _set(key, "namespace", namespace)
    _set(key, "name", name)
    return Record(key, {}, revision, create_revision, lease)


_new_key = object.__new__
_set = object.__setattr__


def _meta(conn: sqlite3.Connection) -> tuple[int, int]:
    revision, compact_revision = conn.execute(
        "SELECT revision, compact_revision FROM meta"
    ).fetchone()
    return int(revision), int(compact_revision)


def current_revision(conn: sqlite3.Connection) -> int:
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


def commit(
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
            return current_revision(conn), [False] * len(ops)  # nothing changes: no revision
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


def grant_lease(conn: sqlite3.Connection, ttl: float, now: float) -> int:
    cursor = conn.execute("INSERT INTO leases (ttl, expires_at) VALUES (?, ?)", (ttl, now + ttl))
    return int(cursor.lastrowid or 0)  # always set after an INSERT into a rowid table


def keepalive(conn: sqlite3.Connection, lease: int, now: float) -> None:
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


def revoke(conn: sqlite3.Connection, lease: int, history: int) -> int | None:
    with _write_transaction(conn):
        if conn.execute("SELECT 1 FROM leases WHERE id = ?", (lease,)).fetchone() is None:
            raise NotFoundError(f"lease {lease} does not exist")
        return _drop_leases(conn, [lease], history)


_DUE_LEASES = "SELECT id FROM leases WHERE expires_at <= ?"


def leases_due(conn: sqlite3.Connection, now: float) -> bool:
    return conn.execute(_DUE_LEASES + " LIMIT 1", (now,)).fetchone() is not None


def expire_leases(conn: sqlite3.Connection, now: float, history: int) -> int | None:
    # Look without the write lock first: nearly always nothing is due, and taking the write
    # lock on every tick in every process would make real writers queue behind sweepers.
    if not leases_due(conn, now):
        return None
    with _write_transaction(conn):
        # Read again under the lock: another store on the file may have swept them meanwhile.
        leases = [row[0] for row in conn.execute(_DUE_LEASES, (now,))]
        return _drop_leases(conn, leases, history) if leases else None


def keys_changed(
    conn: sqlite3.Connection, after: int, upto: int, kinds: tuple[str, ...]
) -> set[Key]:
    """The keys of `kinds` with an event after revision `after` up to `upto`: the keys alone,
    without reading the values of the events of other kinds in between (a thousand status
    writes per registered instance, when 1,000 gateways route to its service)."""
    conn.execute("BEGIN")
    try:
        _, compact_revision = _meta(conn)
        if after < compact_revision:
            raise CompactedError(after, compact_revision)
        rows = conn.execute(
            "SELECT DISTINCT kind, namespace, name FROM events"
            f" WHERE revision > ? AND revision <= ? AND kind IN ({','.join('?' * len(kinds))})",
            (after, upto, *kinds),
        )
        return {Key(kind, namespace, name) for kind, namespace, name in rows}
    finally:
        conn.execute("COMMIT")


def read_events(
    conn: sqlite3.Connection, after: int, kinds: tuple[str, ...] | None
) -> tuple[int, int, list[WatchEvent]]:
    """Up to a batch of revisions after `after`: (last revision covered, current, events)."""
    conn.execute("BEGIN")  # one snapshot for both the compaction check and the events
    try:
        revision, compact_revision = _meta(conn)
        if after < compact_revision:
            raise CompactedError(after, compact_revision)
        upto = min(revision, after + WATCH_BATCH_REVISIONS)
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
