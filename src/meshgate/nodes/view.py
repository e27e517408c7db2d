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

# A Ready node is stale when its heartbeat is this late (it beats every 3 s; its lease, and so
# its Ready, lasts 10 s)...
HEARTBEAT_LATE_S = 7.0
# ... or when it has not known for this long that it runs the store's state: an agent knows it
# after every pass it applies, when etcd's progress notifications tell it nothing changed for
# it, and at the latest with its re-list every 30 s, so a healthy node is never this far behind.
STALE_AFTER_S = 60.0


def _age(now: float, when: Any) -> float | None:
    return round(now - when, 1) if isinstance(when, int | float) else None


def node_view(
    record: Mapping[str, Any],
    heartbeat: Mapping[str, Any] | None,
    gateways: Mapping[str, Mapping[str, Any]],
    now: float | None = None,
) -> dict[str, Any]:
    """One node: Ready while its heartbeat key lives (it is on the node's lease); what it
    applied and what it refused (like Envoy's ACK and NACK), and whether it is stale or
    refusing, with why under `problems`."""
    now = time.time() if now is None else now
    beat = heartbeat or {}
    heartbeat_age = _age(now, beat.get("heartbeat"))
    current_age = _age(now, beat.get("current_at"))
    problems = []
    stale = False
    if heartbeat is not None:
        if heartbeat_age is not None and heartbeat_age > HEARTBEAT_LATE_S:
            stale = True
            problems.append(f"stale: no heartbeat for {heartbeat_age:g} s")
        if "current_at" in beat and (current_age is None or current_age > STALE_AFTER_S):
            stale = True
            since = "ever" if current_age is None else f"{current_age:g} s"
            problems.append(
                f"stale: not known to run the store's state for {since} "
                f"(applied revision {beat.get('applied_revision')})"
            )
    error = beat.get("error")
    refused = sorted(name for name, g in gateways.items() if g.get("error"))
    if error:
        problems.append(f"refusing revision {beat.get('attempted_revision')}: {error}")
    if refused:
        problems.append("refusing gateways: " + ", ".join(refused))
    return {
        "name": record.get("name"),
        "address": record.get("address"),
        "labels": record.get("labels", {}),
        "status": "Ready" if heartbeat is not None else "NotReady",
        "applied_revision": beat.get("applied_revision"),
        "applied_hash": beat.get("applied_hash"),
        "current_at": beat.get("current_at"),
        "attempted_revision": beat.get("attempted_revision"),
        "error": error,
        "stale": stale,
        "refusing": bool(error or refused),
        "problems": problems,
        "heartbeat": beat.get("heartbeat"),
        "heartbeat_age_s": heartbeat_age,
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
