"""etcd's JSON gateway spoken in plain data: key layout, base64, and the bodies of ranges,
transactions and watches, and the records and events in its replies. Pure: no I/O.

The gateway is etcd's own grpc-gateway over the v3 API: every bytes field is base64 and every
int64 a decimal string, and fields at their default value (0, false, PUT) are left out.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from meshgate.store.base import (
    ConflictError,
    Delete,
    Key,
    Op,
    Put,
    Record,
    WatchEvent,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def to_json(value: dict[str, Any]) -> bytes:
    # As the embedded store writes values: NaN is refused, and keys keep their order (a
    # gateway's routes are tried in the order they were written).
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range_end for "every key starting with prefix": the prefix with its last byte
    that is not 0xff incremented (etcd's clientv3.GetPrefixRangeEnd)."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"  # every key


def as_int(value: Any) -> int:
    return int(value) if value is not None else 0


@dataclass(frozen=True)
class Layout:
    """Where meshgate's keys live: `{prefix}{kind}/{namespace}/{name}`."""

    prefix: str = "/meshgate/"

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/") or not self.prefix.endswith("/"):
            raise ValueError(f"store prefix must start and end with '/': {self.prefix!r}")

    def encode(self, key: Key) -> bytes:
        return f"{self.prefix}{key}".encode()

    def decode(self, raw: bytes) -> Key | None:
        """The key stored at `raw`, or None for a key under the prefix that meshgate did not
        write (it is skipped rather than trusted)."""
        text = raw.decode("utf-8", errors="replace")
        if not text.startswith(self.prefix):
            return None
        parts = text[len(self.prefix) :].split("/", 2)
        if len(parts) != 3:
            return None
        try:
            return Key(*parts)
        except ValueError:
            return None

    def range_of(self, kind: str | None, namespace: str | None) -> tuple[bytes, bytes]:
        """(key, range_end) of the narrowest prefix that holds the keys asked for; a namespace
        without a kind spans kinds, so it is filtered after reading."""
        prefix = self.prefix
        if kind is not None:
            prefix += f"{kind}/"
            if namespace is not None:
                prefix += f"{namespace}/"
        raw = prefix.encode()
        return raw, prefix_end(raw)


def range_body(
    layout: Layout, kind: str | None, namespace: str | None, keys_only: bool
) -> dict[str, Any]:
    start, end = layout.range_of(kind, namespace)
    return {"key": b64(start), "range_end": b64(end), "keys_only": keys_only}


def span_body(layout: Layout, kinds: Collection[str], keys_only: bool) -> dict[str, Any]:
    """One range over every kind of `kinds` (and any kind sorting between them: filter)."""
    start, end = watch_range(layout, kinds)
    return {"key": b64(start), "range_end": b64(end), "keys_only": keys_only}


def pinned_reads_body(layout: Layout, keys: Sequence[Key], revision: int) -> dict[str, Any]:
    """A read-only transaction of one range per key, each at `revision`: one round trip."""
    return {
        "success": [
            {"request_range": {"key": b64(layout.encode(key)), "revision": str(revision)}}
            for key in keys
        ]
    }


def pinned_reads_records(layout: Layout, reply: dict[str, Any]) -> list[Record]:
    kvs = [
        kv
        for response in reply.get("responses", [])
        for kv in response.get("response_range", {}).get("kvs", [])
    ]
    return [r for kv in kvs if (r := record(layout, kv)) is not None]


def record(layout: Layout, kv: dict[str, Any], *, keys_only: bool = False) -> Record | None:
    key = layout.decode(unb64(kv["key"]))
    if key is None:
        return None
    value = {} if keys_only else json.loads(unb64(kv.get("value", "")) or b"{}")
    lease = as_int(kv.get("lease")) or None
    return Record(key, value, as_int(kv["mod_revision"]), as_int(kv["create_revision"]), lease)


def records(
    layout: Layout, kvs: Sequence[dict[str, Any]], namespace: str | None, keys_only: bool
) -> list[Record]:
    found = [r for kv in kvs if (r := record(layout, kv, keys_only=keys_only)) is not None]
    if namespace is not None:
        found = [r for r in found if r.key.namespace == namespace]
    # etcd orders by bytes, where "status.x/" sorts before "status/"; the protocol orders by
    # (kind, namespace, name).
    return sorted(found, key=lambda r: r.key)


def txn_body(layout: Layout, ops: Sequence[Op], encoded: Sequence[bytes | None]) -> dict[str, Any]:
    """One transaction: every compare of `ops`, their writes on success, and on failure a
    keys-only read of each compared key, to tell which compare failed and why."""
    compares = []
    failure = []
    success: list[dict[str, Any]] = []
    for op, value in zip(ops, encoded, strict=True):
        key = b64(layout.encode(op.key))
        if op.expect_revision is not None:
            compares.append(
                {
                    "key": key,
                    "target": "MOD",
                    "result": "EQUAL",
                    "mod_revision": str(op.expect_revision),
                }
            )
            failure.append({"request_range": {"key": key, "keys_only": True}})
        if isinstance(op, Put):
            assert value is not None
            put: dict[str, Any] = {"key": key, "value": b64(value), "prev_kv": True}
            if op.lease is not None:
                put["lease"] = str(op.lease)
            success.append({"request_put": put})
        else:
            success.append({"request_delete_range": {"key": key}})
    return {"compare": compares, "success": success, "failure": failure}


def first_conflict(ops: Sequence[Op], reply: dict[str, Any]) -> ConflictError:
    """The ConflictError of the first compare that failed, from the failure branch's reads."""
    compared = [op for op in ops if op.expect_revision is not None]
    for op, response in zip(compared, reply.get("responses", []), strict=False):
        kvs = response.get("response_range", {}).get("kvs", [])
        actual = as_int(kvs[0]["mod_revision"]) if kvs else 0
        if actual != op.expect_revision:
            assert op.expect_revision is not None
            return ConflictError(op.key, op.expect_revision, actual)
    # Every compare holds now: the key changed and changed back between the two reads.
    op = compared[0]
    assert op.expect_revision is not None
    return ConflictError(op.key, op.expect_revision, -1)


def txn_results(ops: Sequence[Op], reply: dict[str, Any], revision: int) -> list[Record | bool]:
    """Per op: the written Record for a put, whether something was deleted for a delete."""
    results: list[Record | bool] = []
    for op, response in zip(ops, reply.get("responses", []), strict=True):
        if isinstance(op, Delete):
            results.append(as_int(response.get("response_delete_range", {}).get("deleted")) > 0)
            continue
        previous = response.get("response_put", {}).get("prev_kv")
        created = as_int(previous["create_revision"]) if previous else revision
        results.append(Record(op.key, json.loads(to_json(op.value)), revision, created, op.lease))
    return results


def watch_range(layout: Layout, kinds: Collection[str] | None) -> tuple[bytes, bytes]:
    """The one key range that holds every kind of `kinds` (all of meshgate's keys for None):
    from the first kind to the end of the last, so keys of kinds sorting outside it (the
    nodes' `status...` keys, for an agent's resource watch) never reach the watcher."""
    if not kinds:
        return layout.range_of(None, None)
    first, _ = layout.range_of(min(kinds), None)
    _, end = layout.range_of(max(kinds), None)
    return first, end


def watch_body(layout: Layout, after: int, kinds: Collection[str] | None = None) -> dict[str, Any]:
    start, end = watch_range(layout, kinds)
    return {
        "create_request": {
            "key": b64(start),
            "range_end": b64(end),
            "start_revision": str(after + 1),
            # A quiet watch still hears the cluster's revision now and then.
            "progress_notify": True,
        }
    }


def watch_events(
    layout: Layout, result: dict[str, Any], kinds: Collection[str] | None
) -> list[WatchEvent]:
    events = []
    for event in result.get("events", []):
        kv = event["kv"]
        key = layout.decode(unb64(kv["key"]))
        if key is None or (kinds is not None and key.kind not in kinds):
            continue
        revision = as_int(kv["mod_revision"])
        if event.get("type") == "DELETE":
            events.append(WatchEvent("delete", key, revision, None))
        else:
            value = json.loads(unb64(kv.get("value", "")))
            created = as_int(kv.get("create_revision"))
            lease = as_int(kv.get("lease")) or None
            events.append(WatchEvent("put", key, revision, value, created, lease))
    return events
