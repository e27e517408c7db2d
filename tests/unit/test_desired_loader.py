"""The loader given the keys written since its last load gives what a full listing gives, and
keeps the same object for every resource that was not written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshgate.agent.desired import DesiredLoader, Loaded
from meshgate.store import Key
from meshgate.store.sqlite import SqliteStore


def gateway(name: str, weight: int = 100, **fields: Any) -> dict[str, Any]:
    return {
        "kind": "gateway", "name": name, "namespace": "default", "port": 9000,
        "virtual_hosts": [f"{name}.example.com"],
        "routes": {"[10.0.0.1:80]": {"weight": weight}, "[10.0.0.2:80]": {"weight": 100 - weight}},
        **fields,
    }  # fmt: skip


def same(a: Loaded, b: Loaded) -> None:
    assert a.state.gateways == b.state.gateways  # in creation order
    assert a.state.services == b.state.services
    assert a.gateway_versions == b.gateway_versions
    assert a.service_versions == b.service_versions
    assert a.invalid == b.invalid
    assert a.state.registered == b.state.registered


async def test_a_load_of_the_written_keys_matches_a_full_listing(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "db")
    loader = DesiredLoader(store)
    try:
        keys = {n: Key("gateways", "default", f"g{n}") for n in range(8)}
        for n, key in keys.items():
            await store.put(key, gateway(f"g{n}"))
        api = Key("services", "default", "api")
        await store.put(api, {"kind": "service", "name": "api", "instances": ["10.0.0.9:80"]})
        first = await loader.load()
        written = {keys[3], keys[5], keys[1], Key("gateways", "default", "new"), api}
        await store.put(keys[3], gateway("g3", 40))
        await store.delete(keys[5])
        await store.delete(keys[1])
        await store.put(Key("gateways", "default", "new"), gateway("new"))
        await store.put(keys[1], gateway("g1", 60))  # created again: now the newest but one
        await store.put(api, {"kind": "service", "name": "api", "instances": ["10.0.0.8:80"]})
        bad = Key("services", "default", "bad")
        await store.put(bad, {"kind": "service", "name": "bad", "instances": "nonsense"})
        second = await loader.load(written | {bad})
        same(second, await DesiredLoader(store).load())
        names = [g.name for g in second.state.gateways]
        assert names == ["g0", "g2", "g3", "g4", "g6", "g7", "new", "g1"]
        unchanged = {g.name: g for g in first.state.gateways}
        for found in second.state.gateways:
            if found.name in ("g0", "g2", "g4", "g6", "g7"):
                assert found is unchanged[found.name]
        assert ("services", "default", "bad") in second.invalid
        # Nothing written: the same objects again.
        third = await loader.load(set())
        assert all(a is b for a, b in zip(third.state.gateways, second.state.gateways, strict=True))
    finally:
        await store.close()


async def test_gateways_updated_in_place_are_put_in_their_places(tmp_path: Path) -> None:
    """Updates of gateways that stay valid take their places in a copy of the last load's
    list; a gateway made invalid, and then valid again, is a full walk each time: all of
    them match a full listing."""
    store = await SqliteStore.open(tmp_path / "db")
    loader = DesiredLoader(store)
    try:
        keys = [Key("gateways", "default", f"g{n}") for n in range(6)]
        for key in keys:
            await store.put(key, gateway(key.name))
        first = await loader.load()
        await store.put(keys[4], gateway("g4", 30))
        await store.put(keys[1], gateway("g1", 70))
        second = await loader.load({keys[4], keys[1]})
        assert second.changed_gateways == {("default", "g4"), ("default", "g1")}
        same(second, await DesiredLoader(store).load())
        assert second.state.gateways is not first.state.gateways  # the last load's, untouched
        assert [g.name for g in first.state.gateways] == [k.name for k in keys]
        assert (
            first.gateway_versions[("default", "g4")] < second.gateway_versions[("default", "g4")]
        )
        await store.put(keys[2], {**gateway("g2"), "port": "not a port"})
        third = await loader.load({keys[2]})
        same(third, await DesiredLoader(store).load())
        assert ("gateways", "default", "g2") in third.invalid
        await store.put(keys[2], gateway("g2", 10))
        fourth = await loader.load({keys[2]})
        same(fourth, await DesiredLoader(store).load())
        assert [g.name for g in fourth.state.gateways] == [k.name for k in keys]
        assert (await loader.load(set())).state.gateways is fourth.state.gateways
    finally:
        await store.close()
