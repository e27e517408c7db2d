"""Expired registrations become events; deregistrations and deleted services do not."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshgate.discovery import registry
from meshgate.discovery.expiries import record_expiries
from meshgate.events import EventLog
from meshgate.model.service import Instance
from meshgate.store import Key, SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(tmp_path / "store.db")
    yield store
    await store.close()


async def register(store: SqliteStore, instance_id: str, ttl: float | None) -> Key:
    instance = Instance(address="127.0.0.1", port=9000, id=instance_id)
    key = registry.instance_key("default", "web", instance_id)
    lease = await store.grant_lease(ttl) if ttl else None
    await store.put(key, registry.to_value("web", instance, ttl), lease=lease)
    return key


async def until(condition: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_lapsed_ttl_is_an_expired_event(store: SqliteStore) -> None:
    await store.put(Key("services", "default", "web"), {"kind": "service", "name": "web"})
    events = EventLog()
    watcher = asyncio.create_task(record_expiries(store, events))
    try:
        await asyncio.sleep(0.05)
        await register(store, "lapses", ttl=0.3)
        explained = await register(store, "leaves", ttl=30)
        kept = await register(store, "stays", ttl=None)
        events.record("deregistered", "x", kind="service", namespace="default", name="web",
                      instance="leaves")  # fmt: skip
        await store.delete(explained)
        await store.delete(kept)  # no ttl: a deletion, never an expiry
        await until(lambda: any(e.type == "expired" for e in events.query()))
        await asyncio.sleep(0.3)  # time for a wrong event about the others to show
        expired = [e for e in events.query() if e.type == "expired"]
        assert [(e.name, e.instance) for e in expired] == [("web", "lapses")]
        message = "instance lapses (127.0.0.1:9000) expired: no heartbeat within its ttl of 0.3s"
        assert expired[0].message == message
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def test_registrations_of_a_deleted_service_did_not_expire(store: SqliteStore) -> None:
    events = EventLog()
    key = await register(store, "a", ttl=30)
    watcher = asyncio.create_task(record_expiries(store, events))
    try:
        await asyncio.sleep(0.05)
        await store.delete(key)  # as the service's deletion does, with no service left
        await asyncio.sleep(0.3)
        assert events.query() == []
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
