"""Query and path values the read-only endpoints share: a namespace, and a gateway that must
exist (404 otherwise)."""

from __future__ import annotations

from meshgate.api.resources import api_error
from meshgate.errors import Problem, ValidationFailed
from meshgate.model.names import check_namespace
from meshgate.store import Key, Store


def parse_namespace(value: str | None) -> str | None:
    """`?namespace=` checked (422 naming the parameter); None when not given."""
    if value is None:
        return None
    try:
        return check_namespace(value)
    except ValueError as exc:
        raise ValidationFailed([Problem("namespace", str(exc))]) from None


async def require_gateway(store: Store, namespace: str, name: str) -> None:
    """404 unless the store holds gateway `namespace/name`."""
    try:
        key = Key("gateways", namespace, name)
    except ValueError:
        key = None  # a name no gateway can have
    if key is None or await store.get(key) is None:
        raise api_error(404, f"gateway {namespace}/{name} not found")
