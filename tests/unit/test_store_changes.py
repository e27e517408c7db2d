"""`changed_keys`: the keys of some kinds written between two revisions, from the history."""

from __future__ import annotations

from pathlib import Path

from meshgate.store import Delete, Key, Put
from meshgate.store.changes import changed_keys
from meshgate.store.sqlite import SqliteStore


async def test_the_keys_of_the_kinds_asked_for_and_none_past_the_history(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "db", history=5)
    try:
        start = await store.revision()
        await store.put(Key("gateways", "default", "a"), {"v": 1})
        await store.commit(
            [Put(Key("status.gateways", "default", f"s{n}"), {"n": n}) for n in range(50)]
        )
        await store.put(Key("gateways", "default", "b"), {"v": 1})
        await store.commit([Delete(Key("gateways", "default", "a"))])
        now = await store.revision()
        assert await changed_keys(store, start, now, ("gateways",)) == {
            Key("gateways", "default", "a"),
            Key("gateways", "default", "b"),
        }
        assert await changed_keys(store, now, now, ("gateways",)) == set()
        statuses = await changed_keys(store, start, now, ("status.gateways",))
        assert statuses is not None and len(statuses) == 50
        for n in range(6):  # more revisions than the history keeps
            await store.put(Key("services", "default", "s"), {"v": n})
        assert await changed_keys(store, start, await store.revision(), ("gateways",)) is None
    finally:
        await store.close()
