"""The watched directory against a real store: files applied, changed, broken, removed, and a
removal noticed after a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshgate.store import Key, SqliteStore
from meshgate.watchdir.poller import ManifestDirWatcher

SERVICE = "kind: service\nname: {name}\ninstances: ['127.0.0.1:{port}']\n"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(tmp_path / "store.db")
    yield store
    await store.close()


async def names(store: SqliteStore) -> list[str]:
    return [r.key.name for r in await store.list("services")]


async def test_files_added_changed_broken_and_removed(store: SqliteStore, tmp_path: Path) -> None:
    watched = tmp_path / "m"
    watched.mkdir()
    watcher = ManifestDirWatcher(store, watched)
    (watched / "a.yaml").write_text(SERVICE.format(name="x", port=1))
    (watched / ".a.yaml.swp").write_text("junk")
    (watched / "notes.txt").write_text("junk")
    result = await watcher.scan()
    assert result.applied == ["a.yaml"] and result.rejected == {}
    assert await names(store) == ["x"]

    revision = await store.revision()
    assert (await watcher.scan()).applied == []  # nothing changed: nothing written
    assert await store.revision() == revision

    (watched / "a.yaml").write_text(SERVICE.format(name="y", port=2))
    assert (await watcher.scan()).applied == ["a.yaml"]
    assert await names(store) == ["y"]  # x was a.yaml's and a.yaml no longer defines it

    (watched / "a.yaml").write_text("kind: service\nname: y\ninstances: ['nope']\n")
    broken = await watcher.scan()
    assert list(broken.rejected) == ["a.yaml"]
    assert "instances.0" in broken.rejected["a.yaml"][0]
    assert await names(store) == ["y"]
    assert (await watcher.scan()).rejected == {}  # reported once, not every second

    (watched / "a.yaml").unlink()
    assert (await watcher.scan()).removed == ["a.yaml"]
    assert await names(store) == []
    assert await store.get(Key("services", "default", "y")) is None


async def test_a_file_removed_while_stopped_is_noticed_at_the_next_start(
    store: SqliteStore, tmp_path: Path
) -> None:
    watched = tmp_path / "m"
    watched.mkdir()
    (watched / "a.yaml").write_text(SERVICE.format(name="x", port=1))
    await ManifestDirWatcher(store, watched).scan()
    (watched / "a.yaml").unlink()
    result = await ManifestDirWatcher(store, watched).scan()  # a new process, same store
    assert result.removed == ["a.yaml"]
    assert await names(store) == []


async def test_a_port_clash_with_the_store_is_refused_whole(
    store: SqliteStore, tmp_path: Path
) -> None:
    await store.put(
        Key("gateways", "default", "taken"),
        {"kind": "gateway", "name": "taken", "namespace": "default", "port": "9000/http",
         "routes": {"x": {}}},
    )  # fmt: skip
    watched = tmp_path / "m"
    watched.mkdir()
    (watched / "b.yaml").write_text(
        SERVICE.format(name="s", port=1) + "---\nname: g\nport: 9000/http\nroutes: {s: {}}\n"
    )
    result = await ManifestDirWatcher(store, watched).scan()
    assert list(result.rejected) == ["b.yaml"]
    assert await names(store) == []  # the service of the same file was not written either
