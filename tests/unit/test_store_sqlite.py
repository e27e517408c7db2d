"""The Store contract, run against both backends: the embedded SQLite file and a real etcd
(one member for the module, a fresh key prefix per test). Revisions are compared relative to
the store's revision when the test starts, as etcd's are global to the cluster. The tests
after the contract are about the SQLite file itself."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from meshgate.errors import MeshgateError
from meshgate.store import (
    CompactedError,
    ConflictError,
    Delete,
    Key,
    NotFoundError,
    Put,
    SqliteStore,
    Store,
    StoreClosedError,
    WatchEvent,
)
from meshgate.store.etcd import EtcdStore
from meshgate.store.target import parse_etcd_url
from tests.etcd_cluster import Cluster, etcd_cluster

GW_A = Key("gateways", "default", "a")
GW_B = Key("gateways", "default", "b")
SVC = Key("services", "default", "sava")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with etcd_cluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


Opener = Callable[[], Awaitable[Store]]


@pytest.fixture(params=["sqlite", "etcd"])
def open_store(request: pytest.FixtureRequest, db_path: Path) -> Opener:
    """Opens another store object on the test's one store (file, or etcd prefix)."""
    if request.param == "sqlite":
        return lambda: SqliteStore.open(db_path)
    cluster: Cluster = request.getfixturevalue("etcd")
    prefix = f"/meshgate-test-{uuid.uuid4().hex}/"
    request.addfinalizer(lambda: cluster.delete_prefix(prefix))
    target = parse_etcd_url(cluster.url, prefix=prefix)
    return lambda: EtcdStore.open(target)


@pytest.fixture
async def store(open_store: Opener) -> AsyncIterator[Store]:
    opened = await open_store()
    yield opened
    await opened.close()


@pytest.fixture
async def base(store: Store) -> int:
    """The revision before the test wrote anything."""
    return await store.revision()


@pytest.fixture
async def sqlite_store(db_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(db_path)
    yield opened
    await opened.close()


async def take(events: AsyncIterator[WatchEvent], count: int) -> list[WatchEvent]:
    return [await asyncio.wait_for(anext(events), 2.0) for _ in range(count)]


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def waiting_watch(store: Store) -> asyncio.Future[WatchEvent]:
    """The next event of a watch that has caught up and is already waiting for live writes."""
    pending = asyncio.ensure_future(anext(store.watch(await store.revision())))
    await asyncio.sleep(0.05)
    assert not pending.done()
    return pending


def summary(events: list[WatchEvent], base: int = 0) -> list[tuple[str, str, int]]:
    """(type, name, revision - base) of each event."""
    return [(e.type, e.key.name, e.revision - base) for e in events]


# --- CRUD and revisions ------------------------------------------------------------------------


async def test_satisfies_the_protocol(sqlite_store: SqliteStore) -> None:
    as_protocol: Store = sqlite_store
    assert await as_protocol.revision() == 0


async def test_put_then_get(store: Store, base: int) -> None:
    record = await store.put(GW_A, {"port": 80, "routes": ["x"]})
    assert record.key == GW_A
    assert record.value == {"port": 80, "routes": ["x"]}
    assert (record.revision, record.create_revision, record.lease) == (base + 1, base + 1, None)
    assert await store.get(GW_A) == record
    assert await store.get(GW_B) is None


async def test_values_keep_the_order_of_their_keys(store: Store) -> None:
    # A gateway's routes are tried in the order they were written (SPEC §1).
    routes = {"zeta": {"condition": "has cookie z"}, "alpha": {}, "mid": {"weight": 10}}
    await store.put(GW_A, {"routes": routes, "name": "a"})
    found = await store.get(GW_A)
    assert found is not None
    assert list(found.value) == ["routes", "name"]
    assert list(found.value["routes"]) == ["zeta", "alpha", "mid"]
    assert [list(r.value["routes"]) for r in await store.list("gateways")] == [
        ["zeta", "alpha", "mid"]
    ]


async def test_update_keeps_create_revision_and_bumps_revision(store: Store, base: int) -> None:
    await store.put(GW_A, {"v": 1})
    await store.put(GW_B, {"v": 1})
    updated = await store.put(GW_A, {"v": 2})
    assert (updated.revision - base, updated.create_revision - base) == (3, 1)
    assert await store.revision() == base + 3


async def test_delete(store: Store, base: int) -> None:
    await store.put(GW_A, {})
    assert await store.delete(GW_A) is True
    assert await store.get(GW_A) is None
    assert await store.delete(GW_A) is False
    assert await store.revision() == base + 2  # deleting nothing writes nothing


async def test_recreated_key_gets_a_new_create_revision(store: Store, base: int) -> None:
    await store.put(GW_A, {})
    await store.delete(GW_A)
    again = await store.put(GW_A, {})
    assert (again.create_revision - base, again.revision - base) == (3, 3)


async def test_conditional_delete(store: Store) -> None:
    first = await store.put(GW_A, {})
    second = await store.put(GW_A, {"changed": True})
    with pytest.raises(ConflictError) as stale:
        await store.delete(GW_A, expect_revision=first.revision)
    assert (stale.value.expected, stale.value.actual) == (first.revision, second.revision)
    assert await store.delete(GW_A, expect_revision=second.revision) is True
    with pytest.raises(NotFoundError):
        await store.delete(GW_A, expect_revision=second.revision)


async def test_values_are_copies(store: Store) -> None:
    value = {"nested": {"n": 1}}
    record = await store.put(GW_A, value)
    value["nested"]["n"] = 2
    record.value["nested"]["n"] = 3
    stored = await store.get(GW_A)
    assert stored is not None and stored.value == {"nested": {"n": 1}}


async def test_values_must_be_json(store: Store, base: int) -> None:
    with pytest.raises(TypeError):
        await store.put(GW_A, {"bad": {1, 2}})
    with pytest.raises(ValueError):
        await store.put(GW_A, {"bad": float("nan")})
    assert await store.revision() == base


def test_keys_are_validated() -> None:
    for kind, namespace, name in [
        ("", "ns", "n"),
        ("a/b", "ns", "n"),
        ("k", "a/b", "n"),
        ("k", "ns", ""),
        ("k", "ns", "a\x00b"),
    ]:
        with pytest.raises(ValueError):
            Key(kind, namespace, name)


async def test_names_with_slash_and_colon(store: Store) -> None:
    route = Key("gateways", "default", "sava:1.1/sava/port")
    plain = Key("gateways", "default", "sava")
    await store.put(route, {"w": 1})
    await store.put(plain, {"w": 2})
    got = await store.get(route)
    assert got is not None and got.value == {"w": 1}
    assert [r.key for r in await store.list("gateways")] == [plain, route]


async def test_list_filters_and_sorts(store: Store) -> None:
    keys = [
        Key("services", "prod", "z"),
        Key("gateways", "prod", "b"),
        Key("gateways", "default", "c"),
        Key("gateways", "prod", "a"),
        Key("status.gateways", "default", "c"),
    ]
    for key in keys:
        await store.put(key, {"name": key.name})
    assert [r.key for r in await store.list()] == sorted(keys)
    assert [r.key for r in await store.list("gateways")] == sorted(keys[1:4])
    assert [r.key.name for r in await store.list("gateways", "prod")] == ["a", "b"]
    assert [r.key.kind for r in await store.list(namespace="prod")] == ["gateways"] * 2 + [
        "services"
    ]
    assert await store.list("certificates") == []


async def test_a_keys_only_list_has_the_revisions_without_the_values(store: Store) -> None:
    first = await store.put(Key("gateways", "default", "a"), {"name": "a"})
    second = await store.put(Key("gateways", "default", "b"), {"name": "b"})
    heads = await store.list("gateways", keys_only=True)
    assert [(h.key.name, h.revision, h.create_revision, h.value) for h in heads] == [
        ("a", first.revision, first.revision, {}),
        ("b", second.revision, second.revision, {}),
    ]


# --- compare-and-swap and transactions ---------------------------------------------------------


async def test_create_only(store: Store) -> None:
    created = await store.put(GW_A, {"v": 1}, expect_revision=0)
    with pytest.raises(ConflictError) as exists:
        await store.put(GW_A, {"v": 2}, expect_revision=0)
    assert (exists.value.key, exists.value.expected, exists.value.actual) == (
        GW_A,
        0,
        created.revision,
    )
    assert isinstance(exists.value, MeshgateError)


async def test_compare_and_swap(store: Store) -> None:
    first = await store.put(GW_A, {"v": 1})
    second = await store.put(GW_A, {"v": 2}, expect_revision=first.revision)
    with pytest.raises(ConflictError) as stale:
        await store.put(GW_A, {"v": 3}, expect_revision=first.revision)
    assert (stale.value.expected, stale.value.actual) == (first.revision, second.revision)
    with pytest.raises(ConflictError) as absent:
        await store.put(GW_B, {}, expect_revision=7)
    assert absent.value.actual == 0
    stored = await store.get(GW_A)
    assert stored is not None and stored.value == {"v": 2}


async def test_commit_is_one_revision(store: Store, base: int) -> None:
    await store.put(SVC, {})
    revision = await store.commit([Put(GW_A, {"a": 1}), Put(GW_B, {"b": 1}), Delete(SVC)])
    assert revision == base + 2 == await store.revision()
    records = await store.list()
    assert [r.revision - base for r in records] == [2, 2]
    events = await take(store.watch(base + 1), 3)
    assert summary(events, base) == [("put", "a", 2), ("put", "b", 2), ("delete", "sava", 2)]


async def test_commit_is_all_or_nothing(store: Store, base: int) -> None:
    await store.put(SVC, {"v": 1})
    with pytest.raises(ConflictError) as failed:
        await store.commit([Put(GW_A, {}), Put(GW_B, {}, expect_revision=5), Delete(SVC)])
    assert failed.value.key == GW_B
    assert await store.revision() == base + 1
    assert [r.key for r in await store.list()] == [SVC]


async def test_commit_names_the_first_failing_key(store: Store) -> None:
    await store.put(GW_A, {})
    with pytest.raises(ConflictError) as failed:
        await store.commit([Put(GW_B, {}, expect_revision=3), Put(GW_A, {}, expect_revision=0)])
    assert failed.value.key == GW_B


async def test_empty_commit_writes_nothing(store: Store, base: int) -> None:
    await store.put(GW_A, {})
    assert await store.commit([]) == base + 1
    assert await store.commit([Delete(GW_B)]) == base + 1  # a no-op delete is no write either
    assert await store.revision() == base + 1


async def test_commit_rejects_a_key_twice(store: Store) -> None:
    with pytest.raises(ValueError):
        await store.commit([Put(GW_A, {}), Delete(GW_A)])


async def test_revisions_stay_unique_with_two_writers(open_store: Opener) -> None:
    one, two = await open_store(), await open_store()
    try:
        base = await one.revision()
        writes = [
            (one if i % 2 else two).put(Key("instances", "default", f"i{i}"), {"i": i})
            for i in range(40)
        ]
        records = await asyncio.gather(*writes)
        assert sorted(r.revision - base for r in records) == list(range(1, 41))
        assert await one.revision() == await two.revision() == base + 40
    finally:
        await one.close()
        await two.close()


# --- watch ----------------------------------------------------------------------------------


async def test_watch_replays_history_then_follows(store: Store, base: int) -> None:
    await store.put(GW_A, {"v": 1})
    await store.delete(GW_A)
    events = store.watch(base)
    replayed = await take(events, 2)
    assert summary(replayed, base) == [("put", "a", 1), ("delete", "a", 2)]
    assert replayed[0].value == {"v": 1} and replayed[1].value is None
    await store.put(GW_B, {"v": 2})
    live = await take(events, 1)
    assert summary(live, base) == [("put", "b", 3)] and live[0].value == {"v": 2}


async def test_watch_from_a_revision(store: Store, base: int) -> None:
    for name in "abc":
        await store.put(Key("gateways", "default", name), {})
    assert summary(await take(store.watch(base + 2), 1), base) == [("put", "c", 3)]


async def test_watch_waits_without_busy_looping(store: Store, base: int) -> None:
    pending = await waiting_watch(store)
    await asyncio.sleep(0.3)  # several poll periods: nothing happened, so nothing is yielded
    assert not pending.done()
    await store.put(GW_A, {})
    assert summary([await asyncio.wait_for(pending, 2.0)], base) == [("put", "a", 1)]


async def test_watch_filters_by_kind(store: Store, base: int) -> None:
    events = store.watch(base, kinds=["services", "certificates"])
    await store.put(GW_A, {})
    await store.put(SVC, {})
    await store.commit([Put(GW_B, {}), Delete(SVC)])
    assert summary(await take(events, 2), base) == [("put", "sava", 2), ("delete", "sava", 3)]


async def test_watch_sees_another_store_object(store: Store, open_store: Opener) -> None:
    waiting = await waiting_watch(store)
    other = await open_store()
    try:
        await other.put(GW_A, {"from": "other"})
        event = await asyncio.wait_for(waiting, 2.0)
        assert event.key == GW_A and event.value == {"from": "other"}
    finally:
        await other.close()


async def test_idle_reads_skip_a_busy_connection_and_keep_the_busy_timeout(
    sqlite_store: SqliteStore,
) -> None:
    """The polls' reads run on the loop's thread only when nothing else holds the connection,
    and never wait there for a lock."""

    def busy_timeout(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA busy_timeout").fetchone()[0])

    store = sqlite_store
    with store._lock:  # a write in progress on a worker thread
        assert store._read_now(busy_timeout) is None
    assert store._read_now(busy_timeout) == 0  # while the loop reads, it would not wait
    assert await store._run(busy_timeout) == 10_000  # restored for everything else


async def test_watch_sees_another_process(sqlite_store: SqliteStore, db_path: Path) -> None:
    waiting = await waiting_watch(sqlite_store)
    script = (
        "import asyncio, sys\n"
        "from meshgate.store import Key, SqliteStore\n"
        "async def main():\n"
        "    store = await SqliteStore.open(sys.argv[1])\n"
        "    await store.put(Key('instances', 'default', 'child'), {'ok': True})\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    command = [sys.executable, "-c", script, str(db_path)]
    await asyncio.to_thread(subprocess.run, command, check=True, timeout=30)
    event = await asyncio.wait_for(waiting, 2.0)
    assert (event.key.name, event.value) == ("child", {"ok": True})


async def test_keys_changed_between_two_revisions_are_those_of_the_kinds_asked(
    db_path: Path,
) -> None:
    """What the API's stored gateways follow: gateways written between two revisions, with
    the status writes in between left unread."""
    status = Key("status.gateways", "default", "a")
    async with await SqliteStore.open(db_path, history=8) as store:
        start = await store.revision()
        await store.put(GW_A, {"v": 1})
        await store.commit([Put(status, {"n": 0}), Put(SVC, {})])
        await store.put(GW_B, {"v": 1})
        middle = await store.revision()
        await store.delete(GW_A)
        end = await store.revision()
        assert await store.keys_changed(start, middle, ["gateways"]) == {GW_A, GW_B}
        assert await store.keys_changed(middle, end, ["gateways"]) == {GW_A}
        assert await store.keys_changed(start, end, ["services"]) == {SVC}
        assert await store.keys_changed(end, end, ["gateways"]) == set()
        for n in range(8):
            await store.put(status, {"n": n})
        with pytest.raises(CompactedError):
            await store.keys_changed(start, await store.revision(), ["gateways"])


async def test_watch_of_compacted_history_fails(db_path: Path) -> None:
    async with await SqliteStore.open(db_path, history=5) as small:
        for i in range(12):
            await small.put(GW_A, {"i": i})
        with pytest.raises(CompactedError) as compacted:
            await anext(small.watch(0))
        assert compacted.value.compact_revision == 7
        assert [e.value for e in await take(small.watch(7), 5)] == [{"i": i} for i in range(7, 12)]


async def test_watch_of_history_compacted_by_etcd_fails(etcd: Cluster) -> None:
    target = parse_etcd_url(etcd.url, prefix=f"/meshgate-test-{uuid.uuid4().hex}/")
    async with await EtcdStore.open(target) as store:
        base = await store.revision()
        for i in range(6):
            await store.put(GW_A, {"i": i})
        await store.compact(base + 4)
        with pytest.raises(CompactedError) as compacted:
            await anext(store.watch(base))
        assert compacted.value.compact_revision == base + 3  # history starts after it
        events = await take(store.watch(base + 3), 3)
        assert [e.value for e in events] == [{"i": i} for i in range(3, 6)]


async def test_watch_ends_when_the_store_closes(open_store: Opener) -> None:
    closing = await open_store()
    events = closing.watch(await closing.revision())
    pending = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.05)
    await closing.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, 2.0)


# --- leases ---------------------------------------------------------------------------------


async def test_keys_vanish_when_their_lease_expires(store: Store, base: int) -> None:
    lease = await store.grant_lease(0.5)
    record = await store.put(Key("instances", "default", "sava/1"), {"port": 8080}, lease=lease)
    await store.put(SVC, {})
    assert record.lease == lease
    events = store.watch(await store.revision())

    async def gone() -> bool:
        return await store.get(record.key) is None

    await eventually(gone, within=5.0)  # etcd's TTLs are whole seconds, its minimum is 1 s
    assert summary(await take(events, 1), base) == [("delete", "sava/1", 3)]
    assert await store.get(SVC) is not None
    with pytest.raises(NotFoundError):
        await store.keepalive(lease)


async def test_keepalive_extends_a_lease(store: Store) -> None:
    lease = await store.grant_lease(0.5)
    await store.put(GW_A, {}, lease=lease)
    for _ in range(12):
        await asyncio.sleep(0.2)
        await store.keepalive(lease)
    # 2.4 s later, past any TTL the backends give 0.5 s: alive only thanks to the keepalives.
    assert await store.get(GW_A) is not None


async def test_revoke_deletes_attached_keys(store: Store, base: int) -> None:
    lease = await store.grant_lease(30)
    await store.commit([Put(GW_A, {}, lease=lease), Put(GW_B, {}, lease=lease), Put(SVC, {})])
    events = store.watch(base + 1)
    await store.revoke(lease)
    assert summary(await take(events, 2), base) == [("delete", "a", 2), ("delete", "b", 2)]
    assert [r.key for r in await store.list()] == [SVC]
    with pytest.raises(NotFoundError):
        await store.revoke(lease)


async def test_put_without_lease_detaches_it(store: Store) -> None:
    lease = await store.grant_lease(30)
    await store.put(GW_A, {}, lease=lease)
    detached = await store.put(GW_A, {"kept": True})
    assert detached.lease is None
    await store.revoke(lease)
    assert await store.get(GW_A) == detached


async def test_unknown_leases_are_refused(store: Store, base: int) -> None:
    with pytest.raises(NotFoundError):
        await store.put(GW_A, {}, lease=999)
    with pytest.raises(NotFoundError):
        await store.keepalive(999)
    with pytest.raises(ValueError):
        await store.grant_lease(0)
    assert await store.revision() == base


async def test_lease_survives_reopen(db_path: Path) -> None:
    async with await SqliteStore.open(db_path) as first:
        lease = await first.grant_lease(30)
        await first.put(GW_A, {}, lease=lease)
    async with await SqliteStore.open(db_path) as second:
        record = await second.get(GW_A)
        assert record is not None and record.lease == lease
        await second.keepalive(lease)
        await second.revoke(lease)
        assert await second.get(GW_A) is None


async def test_lease_expires_while_closed(db_path: Path) -> None:
    async with await SqliteStore.open(db_path) as first:
        lease = await first.grant_lease(0.2)
        await first.put(GW_A, {}, lease=lease)
    await asyncio.sleep(0.3)
    async with await SqliteStore.open(db_path) as second:
        with pytest.raises(NotFoundError):
            await second.keepalive(lease)

        async def gone() -> bool:
            return await second.get(GW_A) is None

        await eventually(gone)


# --- lifecycle ------------------------------------------------------------------------------


async def test_reopen_keeps_data_and_revision(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "store.db"
    async with await SqliteStore.open(path) as first:
        await first.put(GW_A, {"v": 1})
        await first.commit([Put(GW_B, {"v": 2}), Put(SVC, {"v": 3})])
        before = await first.list()
    async with await SqliteStore.open(path) as second:
        assert await second.list() == before
        assert await second.revision() == 2
        assert (await second.put(GW_A, {"v": 4})).revision == 3
        assert summary(await take(second.watch(0), 1)) == [("put", "a", 1)]


async def test_close_stops_everything(open_store: Opener) -> None:
    closing = await open_store()
    await closing.put(GW_A, {})
    await closing.close()
    await closing.close()  # idempotent
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("store-")]
    with pytest.raises(StoreClosedError):
        await closing.get(GW_A)
    with pytest.raises(StoreClosedError):
        await closing.put(GW_A, {})
    with pytest.raises(StoreClosedError):
        closing.watch(0)


async def test_watch_reads_long_histories_in_batches(
    sqlite_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sqlite_store
    monkeypatch.setattr("meshgate.store.sqlite_tables.WATCH_BATCH_REVISIONS", 2)
    await store.commit([Put(GW_A, {}), Put(GW_B, {})])
    for i in range(4):
        await store.put(SVC, {"i": i})
    events = await take(store.watch(0), 6)
    assert [e.revision for e in events] == [1, 1, 2, 3, 4, 5]


async def test_a_consumer_may_stop_iterating(store: Store, base: int) -> None:
    await store.put(GW_A, {})
    async for event in store.watch(base):
        assert event.key == GW_A
        break
    await store.put(GW_B, {})  # the abandoned watch holds nothing up
    assert await store.revision() == base + 2


async def test_a_waiting_watch_holds_no_value_it_yielded(sqlite_store: SqliteStore) -> None:
    # A batch of events is up to a thousand revisions (an apply of 100,000 gateways): held
    # while the watch waits for the next write, its values stayed alive beside the pass
    # that read them.
    store = sqlite_store
    await store.commit([Put(GW_A, {"bulky": ["x"]}), Put(GW_B, {"bulky": ["y"]})])
    events = store.watch(0)
    taken = await take(events, 2)
    values = [e.value for e in taken]
    del taken
    waiting = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0.05)  # the watch has read everything and waits for a write
    assert not waiting.done()
    for value in values:
        holders = [r for r in gc.get_referrers(value) if isinstance(r, WatchEvent)]
        assert holders == [], "a yielded event is still held by the waiting watch"
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    await events.aclose()


def test_a_listing_of_one_kind_reads_only_that_kind(tmp_path: Path) -> None:
    """Listing the few certificates of a store of thousands of gateways (every write through
    the API does) must not read every row: SQLite's plan searches the primary key."""
    from meshgate.store import sqlite_tables

    conn = sqlite3.connect(tmp_path / "plan.db")
    conn.executescript(sqlite_tables._SCHEMA)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)  # with the values bound
    assert sqlite_tables.list_records(conn, "certificates", None, keys_only=False) == []
    assert sqlite_tables.list_records(conn, "gateways", "team-a", keys_only=True) == []
    conn.set_trace_callback(None)
    listings = [s for s in statements if s.startswith("SELECT")]
    assert len(listings) == 2
    for listing in listings:
        plan = " ".join(str(row[-1]) for row in conn.execute(f"EXPLAIN QUERY PLAN {listing}"))
        assert "USING PRIMARY KEY" in plan, (listing, plan)
    conn.close()
