"""What the endpoints share: the API's error shape, a checked `?namespace=`, and a gateway that
must exist (404 otherwise)."""

from __future__ import annotations

from fastapi import HTTPException

from meshgate.errors import Problem, ValidationFailed
from meshgate.model.names import check_namespace
from meshgate.store import Key, Store


def api_error(status_code: int, message: str, path: str = "") -> HTTPException:
    """An HTTP error in the API's one error shape, `{"errors": [{"path", "message"}]}`."""
    return HTTPException(status_code, detail={"errors": [{"path": path, "message": message}]})


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
