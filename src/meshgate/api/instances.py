"""Run-time registration (SPEC §3): /api/v1/services/{name}/instances[/{id}].

Registering, updating and deregistering write one store key each (see `discovery.registry`);
the agent turns those writes into runtime server additions and drained removals, never a
reload. A TTL is a store lease, so it outlives a restart of the API: the lease's expiry time
is kept with it. Every input is validated before the store is touched, so a rejected request
changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from meshgate.api.bodies import parse_documents
from meshgate.api.params import api_error
from meshgate.api.resources import status_key
from meshgate.discovery import registry
from meshgate.errors import Problem, ValidationFailed
from meshgate.events import EventLog, EventType, instance_label
from meshgate.model.discovery import Registration
from meshgate.model.manifest import problems_from_pydantic
from meshgate.model.names import DEFAULT_NAMESPACE, check_namespace
from meshgate.model.service import Instance
from meshgate.nodes.keys import NODES, SCOPE
from meshgate.nodes.locate import locate, node_addresses
from meshgate.store import Key, NotFoundError, Record, Store

# A registration is a handful of fields; anything much larger is not one.
MAX_BODY_BYTES = 64 * 1024

ServiceName = Annotated[
    str, Path(description="service name; URL-encode it, since names contain '/' and ':'")
]
InstanceId = Annotated[str, Path(description="the instance id")]
NamespaceParam = Annotated[
    str | None, Query(description=f"namespace (default {DEFAULT_NAMESPACE!r})")
]
_REGISTRATION = {
    "requestBody": {
        "required": True,
        "description": "{address, port, weight?, id?, ttl?, netns?, node?}; ttl in seconds or 10s",
        "content": {"application/json": {"schema": Registration.model_json_schema()}},
    }
}
_OPTIONAL_REGISTRATION = {
    "requestBody": {**_REGISTRATION["requestBody"], "required": False},
}


def _namespace(value: str | None) -> str:
    try:
        return check_namespace(value) if value is not None else DEFAULT_NAMESPACE
    except ValueError as exc:
        raise ValidationFailed([Problem("namespace", str(exc))]) from None


async def _body(request: Request) -> Any | None:
    """The parsed body, or None when there is none (a bare heartbeat)."""
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ValidationFailed([Problem("", f"the body is larger than {MAX_BODY_BYTES} bytes")])
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ValidationFailed([Problem("", "the body is not UTF-8 text")]) from None
    if not text.strip():
        return None
    documents = parse_documents(text, request.headers.get("content-type"))
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise ValidationFailed([Problem("", "the body must be one JSON object")])
    return documents[0]


def _registration(data: Any) -> Registration:
    try:
        return Registration.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(problems_from_pydantic(exc)) from None


def _instance(registration: Registration, instance_id: str = "") -> Instance:
    return Instance(
        address=registration.address,
        port=registration.port,
        weight=registration.weight,
        id=instance_id or registration.id,
        netns=registration.netns,
        node=registration.node,
    )


def _not_registered(namespace: str, service: str, instance_id: str) -> Exception:
    message = (
        f"no instance {instance_id!r} is registered for service {namespace}/{service}"
        " (or its TTL lapsed); register it again"
    )
    return api_error(404, message, "id")


def _record(
    request: Request, type: EventType, namespace: str, service: str, record: Record
) -> None:
    """A registration event for `meshgate events` and `describe`."""
    instance_id = str(record.value.get("id"))
    label = instance_label(
        instance_id, str(record.value.get("address")), int(record.value.get("port", 0))
    )
    ttl = record.value.get("ttl")
    message = f"{label} {type}" + (f", ttl {ttl:g}s" if ttl else "")
    log: EventLog = request.app.state.events
    log.record(
        type, message, kind="service", namespace=namespace, name=service, instance=instance_id
    )


def instances_router(store: Store) -> APIRouter:
    """Mounted before the resource endpoints, which would take `.../instances` for a name."""
    router = APIRouter(prefix="/api/v1/services", tags=["instances"])
    # Serialised: an update reads the key's lease and then replaces it.
    write_lock = asyncio.Lock()

    async def service_document(namespace: str, name: str) -> dict[str, Any]:
        try:
            record = await store.get(Key("services", namespace, name))
        except ValueError:
            record = None
        if record is None:
            raise api_error(404, f"service {namespace}/{name} not found", "name")
        return record.value

    def check_manifest_ids(document: dict[str, Any], instance_id: str) -> None:
        listed = {i.get("id") for i in document.get("instances") or [] if isinstance(i, dict)}
        if instance_id in listed:
            message = f"the service's manifest already lists an instance with id {instance_id!r}"
            raise api_error(409, message, "id")

    async def write(
        namespace: str, service: str, instance: Instance, ttl_s: float | None
    ) -> tuple[Record, bool]:
        """Create or replace a registration; (record, created). Registering again what is
        already there, with the same TTL, is a heartbeat: no write, so no work for the agent."""
        key = registry.instance_key(namespace, service, instance.id)
        value = registry.to_value(service, instance, ttl_s)
        async with write_lock:
            current = await store.get(key)
            old_lease = current.lease if current is not None else None
            lease = None
            same_ttl = current is not None and current.value.get("ttl") == ttl_s
            if ttl_s is not None and old_lease is not None and same_ttl:
                with contextlib.suppress(NotFoundError):
                    await store.keepalive(old_lease)
                    lease = old_lease
            if current is not None and current.value == value and lease == old_lease:
                return current, False
            if ttl_s is not None and lease is None:
                lease = await store.grant_lease(ttl_s)
            record = await store.put(key, value, lease=lease)
            if old_lease is not None and old_lease != lease:
                # The key has left the old lease, so ending it deletes nothing.
                with contextlib.suppress(NotFoundError):
                    await store.revoke(old_lease)
        return record, current is None

    def answer(record: Record, status_code: int) -> JSONResponse:
        body = registry.describe(record)
        service = quote(str(body["service"]), safe="")
        location = (
            f"/api/v1/services/{service}/instances/{body['id']}?namespace={record.key.namespace}"
        )
        return JSONResponse(body, status_code, headers={"Location": location})

    @router.get("/{name:path}/instances", summary="A service's instances, from every source")
    async def list_instances(name: ServiceName, namespace: NamespaceParam = None) -> Any:
        where = _namespace(namespace)
        document = await service_document(where, name)
        status = await store.get(status_key(Key("services", where, name)))
        reported = {
            i["id"]: i
            for i in ((status.value.get("instances") if status else None) or [])
            if isinstance(i, dict) and "id" in i
        }
        items: list[dict[str, Any]] = []
        for listed in document.get("instances") or []:
            items.append({**listed, "source": "manifest"})
        for record in await registry.registered_for(store, where, name):
            items.append(registry.describe(record))
        items += [dict(i) for i in reported.values() if i.get("source") == "dns"]
        by_address = node_addresses(await store.list(NODES, SCOPE))
        for item in items:
            item["status"] = reported.get(item.get("id"), {}).get("status", "UNKNOWN")
            item["node"] = locate(item, by_address)
            item.pop("namespace", None)
            item.pop("service", None)
        return {"service": name, "namespace": where, "items": items}

    @router.post(
        "/{name:path}/instances",
        status_code=201,
        openapi_extra=_REGISTRATION,
        summary="Register an instance (with an optional TTL)",
    )
    async def register(
        name: ServiceName, request: Request, namespace: NamespaceParam = None
    ) -> JSONResponse:
        where = _namespace(namespace)
        registration = _registration(await _body(request))
        document = await service_document(where, name)
        instance = _instance(registration)
        check_manifest_ids(document, instance.id)
        record, created = await write(where, name, instance, registration.ttl)
        if created:
            _record(request, "registered", where, name, record)
        return answer(record, 201 if created else 200)

    @router.get("/{name:path}/instances/{instance_id}", summary="One registered instance")
    async def read_instance(
        name: ServiceName, instance_id: InstanceId, namespace: NamespaceParam = None
    ) -> JSONResponse:
        where = _namespace(namespace)
        await service_document(where, name)
        record = await _registered(where, name, instance_id)
        return answer(record, 200)

    async def _registered(namespace: str, name: str, instance_id: str) -> Record:
        record = await store.get(registry.instance_key(namespace, name, instance_id))
        if record is None:
            raise _not_registered(namespace, name, instance_id)
        return record

    @router.put(
        "/{name:path}/instances/{instance_id}",
        openapi_extra=_OPTIONAL_REGISTRATION,
        summary="Heartbeat (no body: refresh the TTL) or update (a registration body)",
    )
    async def heartbeat_or_update(
        name: ServiceName,
        instance_id: InstanceId,
        request: Request,
        namespace: NamespaceParam = None,
    ) -> JSONResponse:
        where = _namespace(namespace)
        data = await _body(request)
        if data is None:
            await service_document(where, name)
            record = await _registered(where, name, instance_id)
            if record.lease is not None:
                try:
                    await store.keepalive(record.lease)
                except NotFoundError:
                    raise _not_registered(where, name, instance_id) from None
            return answer(record, 200)
        if isinstance(data, dict) and data.get("id") not in (None, instance_id):
            message = f"{data['id']!r} does not match the id {instance_id!r} in the URL"
            raise ValidationFailed([Problem("id", message)])
        registration = _registration({**data, "id": instance_id})
        document = await service_document(where, name)
        instance = _instance(registration, instance_id)
        check_manifest_ids(document, instance.id)
        record, created = await write(where, name, instance, registration.ttl)
        if created:
            _record(request, "registered", where, name, record)
        return answer(record, 201 if created else 200)

    @router.delete(
        "/{name:path}/instances/{instance_id}",
        status_code=204,
        summary="Deregister an instance (it is drained, then removed)",
    )
    async def deregister(
        name: ServiceName,
        instance_id: InstanceId,
        request: Request,
        namespace: NamespaceParam = None,
    ) -> Response:
        where = _namespace(namespace)
        async with write_lock:
            record = await _registered(where, name, instance_id)
            # Before the key goes, so the registry watcher does not take it for an expiry.
            _record(request, "deregistered", where, name, record)
            await store.delete(record.key)
            if record.lease is not None:
                with contextlib.suppress(NotFoundError):
                    await store.revoke(record.lease)
        return Response(status_code=204)

    return router
