"""Admission's stored gateways kept between writes: the same answers as reading and indexing
everything afresh, with only changed values read and the port index kept across weight changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshgate.api.admission import admit, stored_gateways
from meshgate.api.stored import READ_ONE_BY_ONE, StoredGatewayCache
from meshgate.errors import ValidationFailed
from meshgate.model import Gateway, to_document, validate_resource
from meshgate.model.ports import PortIndex, port_conflicts
from meshgate.store import Key
from meshgate.store.sqlite import SqliteStore


def gateway(name: str, **fields: Any) -> Gateway:
    fields.setdefault("port", 9000)
    fields.setdefault("routes", {"[127.0.0.1:1]": {}})
    found = validate_resource({"name": name, **fields})
    assert isinstance(found, Gateway)
    return found


async def put(store: SqliteStore, found: Gateway) -> None:
    await store.put(Key("gateways", found.namespace, found.name), to_document(found))


class CountingStore:
    """The store, counting the values read one by one."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.gets = 0

    async def list(self, *args: Any, **kwargs: Any) -> Any:
        return await self.store.list(*args, **kwargs)

    async def revision(self) -> int:
        return await self.store.revision()

    def watch(self, *args: Any, **kwargs: Any) -> Any:
        return self.store.watch(*args, **kwargs)

    async def get(self, key: Key) -> Any:
        self.gets += 1
        return await self.store.get(key)


def problems(candidate: Gateway, others: list[Gateway], ports: PortIndex[None] | None) -> Any:
    try:
        admit(to_document(candidate), kind="gateway", name=None, namespace=None,
              others=others, ports=ports)  # fmt: skip
    except ValidationFailed as exc:
        return [(p.path, p.message) for p in exc.problems]
    return []


async def test_only_changed_values_are_read_and_answers_match_a_fresh_index(
    tmp_path: Path,
) -> None:
    store = await SqliteStore.open(tmp_path / "db")
    try:
        for n in range(20):
            await put(store, gateway(f"g{n}", virtual_hosts=[f"h{n}.example.com"]))
        counting = CountingStore(store)
        cache = StoredGatewayCache()
        first = await cache.load(counting)  # type: ignore[arg-type]
        assert counting.gets == 20
        index = cache.ports(first)
        await put(
            store, gateway("g5", virtual_hosts=["h5.example.com"], routes={"[127.0.0.1:2]": {}})
        )
        second = await cache.load(counting)  # type: ignore[arg-type]
        assert counting.gets == 21  # the changed one only
        assert second == stored_gateways(await store.list("gateways"))
        assert cache.ports(second) is index  # g5 holds no place another claimed
        candidates = [
            gateway("g5", virtual_hosts=["h6.example.com"]),  # another's host
            gateway("g5", virtual_hosts=["h5.example.com"], bind="127.0.0.1"),  # another bind
            gateway("g5", port="9000/tcp"),
            gateway("new", virtual_hosts=["h1.example.com", "n.example.com"]),
            gateway("new", virtual_hosts=["n.example.com"]),
            gateway("g0", virtual_hosts=["h0.example.com"], bind="127.0.0.1"),  # the port's first
            gateway("g0"),  # without hosts: the port's default
        ]
        for candidate in candidates:
            fresh = [p.message for p in port_conflicts(candidate, second)]
            assert [m for _, m in problems(candidate, second, index)] == fresh, candidate.name
            assert problems(candidate, second, None) == problems(candidate, second, index)
        # A new version that moves is indexed afresh.
        await put(store, gateway("g0", port=9001, virtual_hosts=["h0.example.com"]))
        third = await cache.load(counting)  # type: ignore[arg-type]
        assert cache.ports(third) is not index
        await store.delete(Key("gateways", "default", "g7"))
        assert len(await cache.load(counting)) == 19  # type: ignore[arg-type]
    finally:
        await store.close()


def test_a_place_claimed_twice_is_contested_and_checked_afresh() -> None:
    # Two stored gateways with one host (written before a rule got stricter, say).
    a = gateway("a", virtual_hosts=["x.example.com"])
    b = gateway("b", virtual_hosts=["x.example.com"])
    index: PortIndex[None] = PortIndex()
    index.add(a, None)
    index.add(b, None)
    assert index.contested(a)
    assert not index.contested(b)
    for moved in (gateway("a", virtual_hosts=["y.example.com"]), gateway("a", bind="127.0.0.1")):
        assert problems(moved, [a, b], index) == problems(moved, [a, b], None)


async def test_admission_and_the_loader_share_one_model_per_stored_gateway(
    tmp_path: Path,
) -> None:
    from meshgate.agent.desired import DesiredLoader

    store = await SqliteStore.open(tmp_path / "db")
    try:
        for n in range(3):
            await put(store, gateway(f"g{n}", virtual_hosts=[f"h{n}.example.com"]))
        loaded = await DesiredLoader(store).load()
        admitted = await StoredGatewayCache().load(store)
        assert all(a is b for a, b in zip(admitted, loaded.state.gateways, strict=True))
        await put(store, gateway("g1", virtual_hosts=["h1.example.com"], bind="127.0.0.1"))
        admitted = await StoredGatewayCache().load(store)
        again = await DesiredLoader(store).load()
        assert {id(g) for g in admitted} == {id(g) for g in again.state.gateways}
    finally:
        await store.close()


async def test_an_apply_hands_its_models_to_the_loader(tmp_path: Path) -> None:
    import httpx

    from meshgate.agent.desired import DesiredLoader
    from meshgate.api import create_app

    store = await SqliteStore.open(tmp_path / "db")
    try:
        transport = httpx.ASGITransport(app=create_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://meshgate") as client:
            documents = [to_document(gateway(f"g{n}", virtual_hosts=[f"h{n}.example.com"]))
                         for n in range(3)]  # fmt: skip
            response = await client.post("/api/v1/apply", json=documents)
            assert response.status_code == 200, response.text
        loaded = await DesiredLoader(store).load()
        fresh = stored_gateways(await store.list("gateways"))
        assert loaded.state.gateways == fresh  # what validating the stored documents gives
        shared = {g.name: g for g in (await StoredGatewayCache().load(store))}
        assert all(g is shared[g.name] for g in loaded.state.gateways)
    finally:
        await store.close()


async def test_the_cache_follows_writes_made_elsewhere_and_relists_past_the_history(
    tmp_path: Path,
) -> None:
    """Writes by another store object on the same file (another process, say) are seen: a
    change in place is read alone, a creation or deletion rebuilds the index, and when the
    history since the last write is gone every key is listed again."""
    store = await SqliteStore.open(tmp_path / "db", history=5)
    other = await SqliteStore.open(tmp_path / "db", history=5)
    try:
        for n in range(4):
            await put(store, gateway(f"g{n}", virtual_hosts=[f"h{n}.example.com"]))
        cache = StoredGatewayCache()
        await cache.load(store)
        assert (cache.relists, cache.values_read) == (1, 4)
        index, plane = cache.ports(), cache.plane_ports()
        moved = gateway("g2", virtual_hosts=["h2.example.com"], routes={"[127.0.0.1:2]": {}})
        await put(other, moved)
        assert await cache.load(store) == stored_gateways(await store.list("gateways"))
        assert (cache.relists, cache.values_read) == (1, 5)
        assert cache.ports() is index and cache.plane_ports() is plane
        await put(other, gateway("a0", virtual_hosts=["a.example.com"]))  # sorts first
        await other.delete(Key("gateways", "default", "g3"))
        found = await cache.load(store)
        assert [g.name for g in found] == ["a0", "g0", "g1", "g2"]
        assert found == stored_gateways(await store.list("gateways"))
        assert cache.ports() is not index
        assert cache.relists == 1
        for n in range(8):  # more revisions than the history keeps
            await put(other, gateway("g1", virtual_hosts=["h1.example.com"], port=9000 + n))
        found = await cache.load(store)
        assert cache.relists == 2
        assert found == stored_gateways(await store.list("gateways"))
        assert cache.plane_ports() == {}  # none is on loopback
    finally:
        await other.close()
        await store.close()


async def test_after_a_batch_the_cache_takes_the_shared_models_and_reads_no_value_alone(
    tmp_path: Path,
) -> None:
    """After a batch of more gateways than are read one by one (an apply, the first write
    after it), the cache lists the keys and takes the models the loader (or the apply) left
    in the shared table; what nobody validated yet is read in one listing, not key by key."""
    from meshgate.agent.desired import DesiredLoader

    count = 3 * READ_ONE_BY_ONE
    store = await SqliteStore.open(tmp_path / "db")
    try:
        for n in range(count):
            await put(store, gateway(f"g{n}", virtual_hosts=[f"h{n}.example.com"]))
        counting = CountingStore(store)
        cache = StoredGatewayCache()
        found = await cache.load(counting)  # type: ignore[arg-type]
        # Nothing shared yet: every value, in one listing.
        assert (counting.gets, cache.values_read, cache.relists) == (0, count, 1)
        assert found == stored_gateways(await store.list("gateways"))
        for n in range(count):  # a batch: every gateway moves to another port
            await put(store, gateway(f"g{n}", virtual_hosts=[f"h{n}.example.com"], port=9001))
        # The loader shares its models by store object: the same one here.
        loaded = await DesiredLoader(counting).load()  # type: ignore[arg-type]
        gets = counting.gets
        found = await cache.load(counting)  # type: ignore[arg-type]
        assert (counting.gets - gets, cache.values_read, cache.relists) == (0, count, 2)
        theirs = {g.name: g for g in loaded.state.gateways}
        assert all(g is theirs[g.name] for g in found)
        assert found == stored_gateways(await store.list("gateways"))
    finally:
        await store.close()


async def test_a_warm_up_after_a_batch_leaves_the_next_write_nothing_to_read_or_index(
    tmp_path: Path,
) -> None:
    """What an apply starts once it has written: the next write finds the cache current and
    its port index built (it waits for the write lock the warm-up holds)."""
    import asyncio

    store = await SqliteStore.open(tmp_path / "db")
    try:
        for n in range(100):
            await put(store, gateway(f"g{n}", virtual_hosts=[f"h{n}.example.com"]))
        counting = CountingStore(store)
        cache, lock = StoredGatewayCache(), asyncio.Lock()
        async with lock:
            cache.warm_soon(counting, lock)  # type: ignore[arg-type]
            await asyncio.sleep(0.01)
            assert cache.relists == 0  # it waits for the writer that started it
        await cache.warmed()
        index, plane, read = cache.ports(), cache.plane_ports(), cache.values_read
        assert (cache.relists, read) == (1, 100)
        await cache.follow(counting)  # type: ignore[arg-type]
        assert cache.values_read == read and counting.gets == 0
        assert cache.ports() is index and cache.plane_ports() is plane
    finally:
        await store.close()


async def test_the_first_listing_reads_every_value_at_once(tmp_path: Path) -> None:
    """A thousand gateways read one by one took seconds on a busy node (each read a trip to
    the store's thread): past a few, the cache lists the values instead; later writes are
    read one by one."""
    store = await SqliteStore.open(tmp_path / "db")
    counting = CountingStore(store)
    try:
        many = READ_ONE_BY_ONE + 6
        for n in range(many):
            await put(store, gateway(f"g{n}", virtual_hosts=[f"h{n}.example.com"]))
        cache = StoredGatewayCache()
        found = await cache.load(counting)  # type: ignore[arg-type]
        assert found == stored_gateways(await store.list("gateways"))
        assert (cache.relists, cache.values_read, counting.gets) == (1, many, 0)
        await put(store, gateway("g1", virtual_hosts=["h1.example.com"], port=9001))
        await cache.load(counting)  # type: ignore[arg-type]
        assert (cache.values_read, counting.gets) == (many + 1, 1)
    finally:
        await store.close()
