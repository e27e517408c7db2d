"""How registered instances live in the store. Pure, except for two small store helpers.

Each registered instance is one key of kind `instances` in its service's namespace, named
`SERVICE#ID`: '#' appears in neither service names nor instance ids, so the name splits back
unambiguously although service names contain '/' and ':'. The value repeats the service and the
id, so that a reader never has to parse the name. An instance registered with a TTL is put with
a store lease: when the lease lapses the store deletes the key, and the watch event that follows
makes the agent drain and remove the server.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from meshgate.model.service import Instance
from meshgate.store import Key, Record, Store

KIND = "instances"
SEPARATOR = "#"

ServiceKey = tuple[str, str]  # (namespace, service name)
INSTANCE_FIELDS = ("address", "port", "weight", "id", "netns", "node")


def instance_key(namespace: str, service: str, instance_id: str) -> Key:
    return Key(KIND, namespace, f"{service}{SEPARATOR}{instance_id}")


def service_prefix(service: str) -> str:
    return f"{service}{SEPARATOR}"


def to_value(service: str, instance: Instance, ttl_s: float | None) -> dict[str, Any]:
    value: dict[str, Any] = {
        "service": service,
        "id": instance.id,
        "address": instance.address,
        "port": instance.port,
        "weight": instance.weight,
    }
    if ttl_s is not None:
        value["ttl"] = ttl_s
    if instance.netns is not None:
        value["netns"] = instance.netns
    if instance.node is not None:
        value["node"] = instance.node
    return value


def from_value(value: dict[str, Any]) -> tuple[str, Instance] | None:
    """(service, instance) of a stored value; None for a value that does not validate (written
    by another version): it is skipped rather than allowed to stop the whole data plane."""
    service = value.get("service")
    if not isinstance(service, str):
        return None
    fields = {k: value[k] for k in INSTANCE_FIELDS if k in value}
    try:
        return service, Instance.model_validate(fields)
    except ValidationError:
        return None


def group_registered(records: Iterable[Record]) -> dict[ServiceKey, list[Instance]]:
    """Registered instances by (namespace, service), in key order (stable across passes)."""
    grouped: dict[ServiceKey, list[Instance]] = {}
    for record in records:
        parsed = from_value(record.value)
        if parsed is not None:
            service, instance = parsed
            grouped.setdefault((record.key.namespace, service), []).append(instance)
    return grouped


def describe(record: Record) -> dict[str, Any]:
    """A registered instance as the API returns it."""
    return {**record.value, "namespace": record.key.namespace, "source": "api"}


async def registered_for(store: Store, namespace: str, service: str) -> list[Record]:
    prefix = service_prefix(service)
    return [r for r in await store.list(KIND, namespace) if r.key.name.startswith(prefix)]
