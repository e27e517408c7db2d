"""Persistent, watchable state: the `Store` protocol and its embedded SQLite implementation."""

from meshgate.store.base import (
    CompactedError,
    ConflictError,
    Delete,
    Key,
    NotFoundError,
    Op,
    Put,
    Record,
    Store,
    StoreClosedError,
    StoreError,
    WatchEvent,
)
from meshgate.store.sqlite import SqliteStore

__all__ = [
    "CompactedError",
    "ConflictError",
    "Delete",
    "Key",
    "NotFoundError",
    "Op",
    "Put",
    "Record",
    "SqliteStore",
    "Store",
    "StoreClosedError",
    "StoreError",
    "WatchEvent",
]
