"""EtcdStore's reads at one revision and its watch's progress reports, on a real etcd."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshgate.store import CompactedError, Key
from meshgate.store.etcd import EtcdStore
from meshgate.store.snapshot import ProgressWatchStore, SnapshotStore
from meshgate.store.sqlite import SqliteStore
from meshgate.store.target import parse_etcd_url
from tests.etcd_cluster import etcd_cluster

GW = Key("gateways", "default", "gw")
SVC = Key("services", "default", "svc")
BEAT = Key("status.heartbeats", "cluster", "a")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EtcdStore]:
    with etcd_cluster(tmp_path / "etcd") as cluster:
        target = parse_etcd_url(cluster.url, prefix=f"/meshgate-{uuid.uuid4().hex}/")
        async with await EtcdStore.open(target) as opened:
            yield opened


async def test_a_snapshot_reads_every_kind_at_its_first_read_revision(store: EtcdStore) -> None:
    first = await store.put(GW, {"v": 1})
    snapshot = store.snapshot()
    assert [r.value for r in await snapshot.list("gateways")] == [{"v": 1}]
    assert snapshot.revision == first.revision
    # Writes after the first read are not seen by the later reads of the same snapshot.
    await store.put(GW, {"v": 2})
    await store.put(SVC, {"v": 1})
    assert await snapshot.list("services") == []
    found = await snapshot.get(GW)
    assert found is not None and found.value == {"v": 1}
    fresh = store.snapshot()
    assert [r.value for r in await fresh.list("services")] == [{"v": 1}]
    assert fresh.revision == await store.revision()


async def test_a_snapshot_revision_compacted_meanwhile_is_compacted_error(
    store: EtcdStore,
) -> None:
    await store.put(GW, {"v": 1})
    snapshot = store.snapshot()
    await snapshot.list("gateways")
    await store.put(GW, {"v": 2})
    await store.compact(await store.revision())
    with pytest.raises(CompactedError):
        await snapshot.get(GW)


async def test_a_quiet_watch_hears_the_revision_it_is_current_at(store: EtcdStore) -> None:
    progress: list[int] = []
    events = store.watch_with_progress(await store.revision(), ["gateways"], progress.append)
    reader = asyncio.create_task(anext(events))
    # Writes outside the watched kinds move the revision on without an event for the watch.
    for beat in range(3):
        await store.put(BEAT, {"beat": beat})
    written = await store.revision()
    for _ in range(50):  # the test etcd notifies progress every second
        if progress and progress[-1] >= written:
            break
        await asyncio.sleep(0.1)
    assert progress and progress[-1] >= written
    assert not reader.done()
    await store.put(GW, {"v": 1})
    event = await asyncio.wait_for(reader, 5)
    assert (event.key, event.revision) == (GW, await store.revision())
    assert progress == sorted(progress)


async def test_only_etcd_offers_snapshots_and_progress(tmp_path: Path, store: EtcdStore) -> None:
    assert isinstance(store, SnapshotStore) and isinstance(store, ProgressWatchStore)
    embedded = await SqliteStore.open(tmp_path / "store.db")
    try:
        assert not isinstance(embedded, SnapshotStore)
        assert not isinstance(embedded, ProgressWatchStore)
    finally:
        await embedded.close()


async def test_a_span_and_pinned_reads_of_several_keys_are_at_the_snapshot_revision(
    store: EtcdStore,
) -> None:
    first = await store.put(GW, {"v": 1})
    await store.put(SVC, {"v": 1})
    await store.put(BEAT, {"beat": 1})
    snapshot = store.snapshot()
    found = await snapshot.list_span(["gateways", "services"], keys_only=True)
    assert [(r.key, r.value) for r in found] == [(GW, {}), (SVC, {})]
    await store.put(GW, {"v": 2})
    await store.delete(SVC)
    other = Key("gateways", "default", "other")
    read = await snapshot.get_many([GW, SVC, other])
    assert [(r.key, r.value) for r in read] == [(GW, {"v": 1}), (SVC, {"v": 1})]
    assert read[0].create_revision == first.revision
    await store.compact(await store.revision())
    with pytest.raises(CompactedError):
        await snapshot.get_many([GW])


async def test_a_watch_event_carries_the_whole_record(store: EtcdStore) -> None:
    lease = await store.grant_lease(30)
    first = await store.put(GW, {"v": 1}, lease=lease)
    events = store.watch(first.revision - 1, ["gateways"])
    second = await store.put(GW, {"v": 2}, lease=lease)
    created, changed = await anext(events), await anext(events)
    assert created.record() == first
    assert changed.record() == second
    assert changed.create_revision == first.revision and changed.lease == lease
