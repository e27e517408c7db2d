"""Writes larger than one etcd transaction: how they are split, and a real etcd (at its default
--max-txn-ops of 128) taking 300 documents."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from meshgate.store import ConflictError, Key, Put
from meshgate.store.batches import MAX_TXN_OPS, commit_all, split
from meshgate.store.etcd import EtcdStore
from meshgate.store.target import parse_etcd_url
from tests.etcd_cluster import etcd_cluster


def test_split_by_count_and_by_bytes() -> None:
    assert split([1] * 300) == [range(0, 128), range(128, 256), range(256, 300)]
    assert split([1] * 128) == [range(0, 128)]
    assert split([]) == []
    assert split([400, 400, 400], max_bytes=1000) == [range(0, 2), range(2, 3)]
    # One op above the byte limit goes alone; etcd says whether it can take it.
    assert split([10, 5000, 10], max_bytes=1000) == [range(0, 1), range(1, 2), range(2, 3)]


def services(count: int) -> list[Put]:
    return [
        Put(Key("services", "default", f"s{i:03}"), {"name": f"s{i:03}"}, expect_revision=0)
        for i in range(count)
    ]


async def test_300_documents_on_a_default_etcd(tmp_path: Path) -> None:
    with etcd_cluster(tmp_path / "etcd") as cluster:
        target = parse_etcd_url(cluster.url, prefix=f"/meshgate-{uuid.uuid4().hex}/")
        async with await EtcdStore.open(target) as store:
            ops = services(300)
            # One transaction of 300 is what etcd refuses at its default.
            with pytest.raises(Exception, match="too many operations"):
                await store.commit(ops)
            revisions = await commit_all(store, ops)
            assert len(revisions) == 300
            assert len(set(revisions)) == 3  # 128 + 128 + 44, each one transaction
            stored = await store.list("services")
            assert [r.key.name for r in stored] == [f"s{i:03}" for i in range(300)]
            assert [r.revision for r in stored] == revisions

            # A compare that fails in the last transaction's part is found before any write.
            before = await store.revision()
            again = [
                Put(op.key, {"v": 2}, expect_revision=r)
                for op, r in zip(ops, revisions, strict=True)
            ]
            again[299] = Put(again[299].key, {"v": 2}, expect_revision=1)
            with pytest.raises(ConflictError) as caught:
                await commit_all(store, again)
            assert caught.value.key == again[299].key
            assert await store.revision() == before  # nothing written
            assert MAX_TXN_OPS == 128
