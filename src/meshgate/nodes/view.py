"""Nodes and per-node status as the API shows them: `GET /api/v1/nodes`, and a resource's
`status.applied` and `status.nodes` when agents on many nodes report on it."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meshgate.nodes.keys import (
    HEARTBEATS,
    NODES,
    SCOPE,
    node_key,
    node_status_key,
    status_prefix,
)
from meshgate.store import Key, Record, Store


def node_view(
    record: Mapping[str, Any],
    heartbeat: Mapping[str, Any] | None,
    gateways: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """One node: Ready while its heartbeat key lives (it is on the node's lease)."""
    return {
        "name": record.get("name"),
        "address": record.get("address"),
        "labels": record.get("labels", {}),
        "status": "Ready" if heartbeat is not None else "NotReady",
        "applied_revision": heartbeat.get("applied_revision") if heartbeat else None,
        "heartbeat": heartbeat.get("heartbeat") if heartbeat else None,
        "heartbeat_age_s": (
            round(time.time() - heartbeat["heartbeat"], 1)
            if heartbeat and isinstance(heartbeat.get("heartbeat"), int | float)
            else None
        ),
        "versions": record.get("versions", {}),
        "gateways": dict(gateways),
    }


def per_node(status: Mapping[str, Any]) -> dict[str, Any]:
    """What one node reports on one resource: `{version, state, error}`, and for a service
    each instance's health as that node's HAProxy sees it (`instances: {ID: STATUS}`)."""
    errors = status.get("errors") or []
    report: dict[str, Any] = {
        "version": status.get("applied_version"),
        "state": status.get("state", "serving" if not errors else "rejected"),
        "error": "; ".join(str(e) for e in errors) or None,
    }
    instances = status.get("instances")
    if isinstance(instances, list):
        report["instances"] = {
            str(i.get("id")): i.get("status") for i in instances if isinstance(i, dict)
        }
    return report


def merged_status(reports: Mapping[str, Mapping[str, Any]], ready: set[str]) -> dict[str, Any]:
    """One status out of the nodes' reports: the details of the first ready node that
    reports (routes, instances), `nodes` with each node's `{version, state, error}`, and
    `applied_version` set only when every ready node it is placed on runs the same version,
    so that the resource reads as applied exactly when all of them run its current one."""
    if not reports:
        return {}
    names = sorted(reports)
    # A ready node refusing the resource speaks for it: `apply --wait` stops at a refusal.
    base = next(
        (reports[n] for n in names if n in ready and reports[n].get("state") == "rejected"),
        next((reports[n] for n in names if n in ready), reports[names[0]]),
    )
    nodes = {name: per_node(reports[name]) for name in names}
    versions = {nodes[name]["version"] for name in names if name in ready}
    return {
        **base,
        "applied_version": versions.pop() if len(versions) == 1 else None,
        "nodes": nodes,
    }


@dataclass
class NodeStatuses:
    """Reads the agents' per-node status keys for the API (`api.resources` status source)."""

    store: Store

    async def nodes(self) -> tuple[list[Record], set[str]]:
        records = await self.store.list(NODES, SCOPE)
        ready = {r.key.name for r in await self.store.list(HEARTBEATS, SCOPE, keys_only=True)}
        return records, ready

    async def one(self, key: Key) -> Record | None:
        records, ready = await self.nodes()
        reports = {}
        for node in records:
            found = await self.store.get(node_status_key(node.key.name, key))
            if found is not None:
                reports[node.key.name] = found.value
        return _record(key, merged_status(reports, ready))

    async def many(self, kind: str, namespace: str) -> dict[str, Record]:
        records, ready = await self.nodes()
        by_name: dict[str, dict[str, Mapping[str, Any]]] = {}
        for node in records:
            kind_here = f"{status_prefix(node.key.name)}.{kind}"
            for found in await self.store.list(kind_here, namespace):
                by_name.setdefault(found.key.name, {})[node.key.name] = found.value
        out = {}
        for name, reports in by_name.items():
            record = _record(Key(kind, namespace, name), merged_status(reports, ready))
            if record is not None:
                out[name] = record
        return out

    async def list_nodes(self) -> list[dict[str, Any]]:
        records, _ = await self.nodes()
        return [await self._view(record) for record in records]

    async def node(self, name: str) -> dict[str, Any] | None:
        record = await self.store.get(node_key(name))
        return None if record is None else await self._view(record)

    async def _view(self, record: Record) -> dict[str, Any]:
        name = record.key.name
        heartbeat = await self.store.get(Key(HEARTBEATS, SCOPE, name))
        gateways = {
            f"{r.key.namespace}/{r.key.name}": per_node(r.value)
            for r in await self.store.list(f"{status_prefix(name)}.gateways")
        }
        return node_view(record.value, heartbeat.value if heartbeat else None, gateways)


def _record(key: Key, status: dict[str, Any]) -> Record | None:
    return Record(key, status, 0, 0, None) if status else None
