"""The loader on etcd: a listing reads every kind in one range at one revision, and the watch's
events bring a load up to date without reading at all; either way the result is what a full
listing of the store at that revision gives. On a real etcd, its requests counted."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from meshgate.agent.desired import DesiredLoader, Loaded
from meshgate.discovery import registry
from meshgate.store import Key, WatchEvent
from meshgate.store.etcd import EtcdStore
from meshgate.store.target import parse_etcd_url
from tests.etcd_cluster import etcd_cluster
from tests.unit.test_desired_loader import gateway, same

API = Key("services", "default", "api")
WATCHED = ("gateways", "services", "instances", "certificates")


class CountingEtcd(EtcdStore):
    """The real store; each request it sends to etcd is counted by path."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.requests: list[str] = []

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(path)
        return await super()._call(path, body)


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with etcd_cluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster.url


@pytest.fixture
async def store(cluster_url: str) -> AsyncIterator[CountingEtcd]:
    # A prefix of its own for each test: one etcd for the module.
    target = parse_etcd_url(cluster_url, prefix=f"/meshgate-{uuid.uuid4().hex}/")
    opened = await CountingEtcd.open(target)
    try:
        yield opened
    finally:
        await opened.close()


def service(instances: list[str]) -> dict[str, Any]:
    return {"kind": "service", "name": "api", "instances": instances}


def instance(number: int) -> tuple[Key, dict[str, Any]]:
    value = {"service": "api", "id": f"i{number}", "address": "10.0.1.1", "port": 8000 + number}
    return registry.instance_key("default", "api", f"i{number}"), value


async def listed(store: EtcdStore) -> Loaded:
    """What a loader that never loaded before reads now."""
    return await DesiredLoader(store).load()


async def events_since(store: EtcdStore, revision: int) -> dict[Key, WatchEvent]:
    """The watch's events after `revision` up to now, the newest per key."""
    now = await store.revision()
    found: dict[Key, WatchEvent] = {}
    if now == revision:
        return found
    async for event in store.watch(revision, kinds=WATCHED):
        found[event.key] = event
        if event.revision >= now:
            break
    return found


async def test_a_listing_reads_every_kind_in_one_range(store: CountingEtcd) -> None:
    keys = [Key("gateways", "default", f"g{n}") for n in range(5)]
    for key in keys:
        await store.put(key, gateway(key.name))
    await store.put(API, service(["10.0.0.9:80"]))
    await store.put(*instance(1))
    loader = DesiredLoader(store)
    store.requests.clear()
    first = await loader.load()
    assert store.requests == ["/v3/kv/range"]  # cold: values and all, in one range
    assert first.revision == await store.revision()
    assert len(first.state.registered[("default", "api")]) == 1

    store.requests.clear()
    again = await loader.load()  # a re-list with nothing changed: keys only
    assert store.requests == ["/v3/kv/range"]
    assert all(a is b for a, b in zip(again.state.gateways, first.state.gateways, strict=True))

    await store.put(keys[2], gateway("g2", 30))
    await store.put(*instance(2))
    await store.delete(keys[4])
    store.requests.clear()
    third = await loader.load()  # the changed values in one read at the same revision
    assert store.requests == ["/v3/kv/range", "/v3/kv/txn"]
    same(third, await listed(store))
    assert third.revision == await store.revision()


async def test_the_watch_events_bring_a_load_up_to_date_without_reads(
    store: CountingEtcd,
) -> None:
    keys = {n: Key("gateways", "default", f"g{n}") for n in range(6)}
    for key in keys.values():
        await store.put(key, gateway(key.name))
    await store.put(API, service(["10.0.0.9:80"]))
    await store.put(*instance(1))
    loader = DesiredLoader(store)
    first = await loader.load()
    assert first.revision is not None

    await store.put(keys[3], gateway("g3", 40))
    await store.delete(keys[5])
    await store.delete(keys[1])
    await store.put(Key("gateways", "default", "new"), gateway("new"))
    await store.put(keys[1], gateway("g1", 60))  # created again: now the newest
    await store.put(API, service(["10.0.0.8:80"]))
    await store.put(*instance(2))
    await store.delete(instance(1)[0])
    await store.put(
        Key("services", "default", "bad"), {"kind": "service", "name": "bad", "instances": "x"}
    )
    events = await events_since(store, first.revision)
    now = await store.revision()

    store.requests.clear()
    second = await loader.load(events, through=now)
    assert store.requests == []
    assert second.revision == now
    same(second, await listed(store))
    assert [g.name for g in second.state.gateways] == ["g0", "g2", "g3", "g4", "new", "g1"]
    unchanged = {g.name: g for g in first.state.gateways}
    for found in second.state.gateways:
        if found.name in ("g0", "g2", "g4"):
            assert found is unchanged[found.name]
    assert [i.id for i in second.state.registered[("default", "api")]] == ["i2"]
    assert ("services", "default", "bad") in second.invalid

    # Nothing written, the watch further on: the same objects, at the later revision.
    store.requests.clear()
    third = await loader.load({}, through=now + 5)
    assert store.requests == []
    assert third.revision == now + 5
    assert all(a is b for a, b in zip(third.state.gateways, second.state.gateways, strict=True))


async def test_events_the_listing_already_holds_are_passed_over(store: CountingEtcd) -> None:
    """The watch starts before the first listing: it replays what the listing read."""
    key = Key("gateways", "default", "g")
    start = await store.revision()
    await store.put(key, gateway("g", 10))
    await store.put(key, gateway("g", 20))
    loader = DesiredLoader(store)
    first = await loader.load()
    replayed = await events_since(store, start)  # the put of weight 10 among them
    older = {key: dataclasses.replace(replayed[key], value=gateway("g", 10))}
    second = await loader.load(older, through=await store.revision())
    assert second.state.gateways[0] is first.state.gateways[0]  # weight 20 still


async def test_an_event_without_its_record_makes_the_load_list(store: CountingEtcd) -> None:
    key = Key("gateways", "default", "g")
    await store.put(key, gateway("g", 10))
    loader = DesiredLoader(store)
    first = await loader.load()
    assert first.revision is not None
    written = await store.put(key, gateway("g", 20))
    bare = WatchEvent("put", key, written.revision, gateway("g", 20))  # no create revision
    store.requests.clear()
    second = await loader.load({key: bare}, through=written.revision)
    assert store.requests[0] == "/v3/kv/range"
    same(second, await listed(store))
