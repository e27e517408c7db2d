"""Events for registrations whose TTL lapsed.

The store deletes a registration when its lease expires, and says no more than "deleted". A
deletion is an expiry when the API did not deregister the instance (it records that event
before it deletes the key) and its service still exists (deleting a service deletes its
registrations).
"""

from __future__ import annotations

import time
from typing import Any

from meshgate.discovery import registry
from meshgate.events import EventFilter, EventLog, instance_label
from meshgate.store import CompactedError, Key, Store

# A deregistration recorded this recently explains a deletion.
DEREGISTERED_WITHIN_S = 60.0


def _deregistered(events: EventLog, namespace: str, service: str, instance_id: str) -> bool:
    recent = events.query(
        EventFilter(
            type="deregistered",
            kind="service",
            namespace=namespace,
            name=service,
            since=time.time() - DEREGISTERED_WITHIN_S,
        )
    )
    return any(event.instance == instance_id for event in recent)


async def record_expiries(store: Store, events: EventLog) -> None:
    """Watch registrations and record an `expired` event for each lapsed TTL, until cancelled."""
    known: dict[Key, dict[str, Any]] = {r.key: r.value for r in await store.list(registry.KIND)}
    revision = await store.revision()
    while True:
        try:
            async for event in store.watch(revision, kinds=(registry.KIND,)):
                revision = event.revision
                if event.type == "put" and event.value is not None:
                    known[event.key] = event.value
                    continue
                value = known.pop(event.key, None)
                if value is None or value.get("ttl") is None:
                    continue
                namespace, service = event.key.namespace, str(value.get("service"))
                instance_id = str(value.get("id"))
                if _deregistered(events, namespace, service, instance_id):
                    continue
                if await store.get(Key("services", namespace, service)) is None:
                    continue
                label = instance_label(
                    instance_id, str(value.get("address")), int(value.get("port", 0))
                )
                events.record(
                    "expired",
                    f"{label} expired: no heartbeat within its ttl of {value['ttl']:g}s",
                    kind="service",
                    namespace=namespace,
                    name=service,
                    instance=instance_id,
                )
        except CompactedError:
            known = {r.key: r.value for r in await store.list(registry.KIND)}
            revision = await store.revision()
