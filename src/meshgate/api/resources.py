"""The resource endpoints (SPEC §3): /api/v1/{kind}, /api/v1/{kind}/{name} and /api/v1/apply.

Resources are stored as their manifest document (`to_document`) under
Key(kind, namespace, name), kind plural. The agent reports on each one under
Key("status." + kind, namespace, name) with a value such as
`{"applied_version": 7, "error": None, ...}`; responses merge that in as `status`.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from meshgate.api.admission import (
    StoredGateways,
    admit,
    admit_batch,
    certificate_users,
    stored_certificates,
)
from meshgate.api.bodies import read_batch, read_document
from meshgate.api.certificates import certificate_status, public_document
from meshgate.certificate_files import inline_certificate_files
from meshgate.discovery.registry import registered_for
from meshgate.errors import Problem, ValidationFailed
from meshgate.model import (
    Certificate,
    Gateway,
    Resource,
    Service,
    resource_key,
    to_document,
    validate_resource,
)
from meshgate.model.names import DEFAULT_NAMESPACE, check_namespace
from meshgate.model.policies import hide_passwords
from meshgate.store import ConflictError, Delete, Key, Put, Record, Store

KINDS = {"gateways": "gateway", "services": "service", "certificates": "certificate"}
STATUS_PREFIX = "status."

KindParam = Annotated[str, Path(description="gateways, services or certificates")]
NameParam = Annotated[
    str, Path(description="resource name; URL-encode it, since names contain '/' and ':'")
]
NamespaceParam = Annotated[
    str | None, Query(description=f"namespace (default {DEFAULT_NAMESPACE!r})")
]
IfMatchHeader = Annotated[
    str | None,
    Header(alias="If-Match", description="only write if the resource is at this version"),
]


def api_error(status_code: int, message: str, path: str = "") -> HTTPException:
    """An HTTP error in the API's one error shape, `{"errors": [{"path", "message"}]}`."""
    return HTTPException(status_code, detail={"errors": [{"path": path, "message": message}]})


def status_key(key: Key) -> Key:
    """Where the agent reports on the resource at `key`."""
    return Key(STATUS_PREFIX + key.kind, key.namespace, key.name)


def present(record: Record, status: Record | None) -> dict[str, Any]:
    """A stored resource as the API returns it: its document, `version` and `status`."""
    if status is None:
        merged: dict[str, Any] = {"applied": False, "state": "pending"}
    else:
        applied = status.value.get("applied_version") == record.revision
        merged = {**status.value, "applied": applied}
    document = record.value
    if record.key.kind == "certificates":
        # Never the private key; and what the certificate says about itself, read now.
        document = public_document(document)
        merged.update(certificate_status(record.value, datetime.datetime.now(datetime.UTC)))
    elif record.key.kind == "gateways":
        document = hide_passwords(document)  # basic auth users without their hashes
    return {**document, "version": record.revision, "status": merged}


def _etag(record: Record) -> dict[str, str]:
    return {"ETag": f'"{record.revision}"'}


def _singular(kind: str) -> str:
    if kind in KINDS:
        return KINDS[kind]
    raise api_error(404, f"unknown kind {kind!r}; use one of: {', '.join(KINDS)}")


def _namespace(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_namespace(value)
    except ValueError as exc:
        raise ValidationFailed([Problem("namespace", str(exc))]) from None


def _key(kind: str, namespace: str, name: str) -> Key:
    try:
        return Key(kind, namespace, name)
    except ValueError:
        # Only a name no resource can have gets here (empty, NUL): it names nothing stored.
        raise api_error(404, f"{KINDS[kind]} {namespace}/{name} not found") from None


def _expected_version(if_match: str | None) -> int | str | None:
    """The version an `If-Match` header asks for: an int, "*" (any), or None (no header)."""
    if if_match is None:
        return None
    text = if_match.strip()
    if text == "*":
        return text
    text = text.removeprefix("W/").strip('"')
    if not text.isdigit():
        raise api_error(412, f"If-Match {if_match!r} is not a version number", "If-Match")
    return int(text)


def _check_version(expected: int | str | None, current: Record | None, what: str) -> None:
    if expected is None:
        return
    if current is None:
        raise api_error(412, f"{what} does not exist (If-Match: {expected})", "If-Match")
    if expected != "*" and expected != current.revision:
        message = f"{what} is at version {current.revision}, not {expected}"
        raise api_error(412, message, "If-Match")


def _describe(resource: Resource | Key) -> str:
    if isinstance(resource, Key):
        return f"{KINDS[resource.kind]} {resource.namespace}/{resource.name}"
    return f"{resource.kind} {resource.namespace}/{resource.name}"


def _location(kind: str, record: Record) -> str:
    name = quote(record.key.name, safe="")
    return f"/api/v1/{kind}/{name}?namespace={record.key.namespace}"


def manifest_schemas() -> dict[str, Any]:
    """JSON schemas of the manifest models, for the OpenAPI document's `components.schemas`."""
    schemas: dict[str, Any] = {}
    for model in (Gateway, Service, Certificate):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


_MANIFEST = {
    "oneOf": [
        {"$ref": "#/components/schemas/Gateway"},
        {"$ref": "#/components/schemas/Service"},
        {"$ref": "#/components/schemas/Certificate"},
    ]
}
_ONE_DOCUMENT = {
    "requestBody": {
        "required": True,
        "description": "one manifest document, as JSON or YAML",
        "content": {
            "application/json": {"schema": _MANIFEST},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}
_MANY_DOCUMENTS = {
    "requestBody": {
        "required": True,
        "description": "a JSON list of documents, {\"documents\": [...]}, or multi-document YAML",
        "content": {
            "application/json": {"schema": {"type": "array", "items": _MANIFEST}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}
_ERRORS = {"description": "errors: {\"errors\": [{\"path\": ..., \"message\": ...}]}"}


def _inline_batch(documents: list[Any]) -> list[Any]:
    """Every document of an apply with the certificate files it names read in."""
    inlined, problems = [], []
    for index, document in enumerate(documents):
        try:
            inlined.append(inline_certificate_files(document))
        except ValidationFailed as exc:
            problems += exc.prefixed(f"documents.{index}").problems
    if problems:
        raise ValidationFailed(problems)
    return inlined


def resources_router(store: Store, *, allow_raw_acl: bool = False) -> APIRouter:
    """The resource endpoints over `store`."""
    router = APIRouter(prefix="/api/v1", tags=["resources"])
    # Admission reads the stored gateways and then writes; serialising writes keeps two
    # requests from each passing the port check against a state the other is changing.
    write_lock = asyncio.Lock()
    stored_gateways = StoredGateways()

    async def gateways_in_store(kind: str) -> list[Gateway]:
        # A certificate is checked against the gateways serving it (they need its key).
        wanted = kind in ("gateway", "certificate")
        return stored_gateways(await store.list("gateways")) if wanted else []

    async def certificates_in_store() -> dict[tuple[str, str], Certificate]:
        return stored_certificates(await store.list("certificates"))

    async def certificate_in_use(key: Key) -> list[str]:
        services = []
        for record in await store.list("services", key.namespace):
            try:
                found = validate_resource(record.value, kind="service")
            except ValidationFailed:
                continue
            if isinstance(found, Service):
                services.append(found)
        gateways = stored_gateways(await store.list("gateways", key.namespace))
        return certificate_users((key.namespace, key.name), gateways, services)

    async def respond(record: Record, status_code: int = 200, **headers: str) -> JSONResponse:
        status = await store.get(status_key(record.key))
        return JSONResponse(
            present(record, status), status_code, headers={**_etag(record), **headers}
        )

    @router.post(
        "/apply",
        openapi_extra=_MANY_DOCUMENTS,
        responses={409: _ERRORS, 422: _ERRORS},
        summary="Create or replace many resources at once, all or nothing",
    )
    async def apply(request: Request) -> dict[str, Any]:
        documents = _inline_batch(await read_batch(request))
        async with write_lock:
            stored = stored_gateways(await store.list("gateways"))
            resources = admit_batch(
                documents,
                stored=stored,
                allow_raw_acl=allow_raw_acl,
                certificates=await certificates_in_store(),
            )
            ops: list[Put] = []
            outcomes: list[tuple[Resource, int | None, str]] = []
            for resource in resources:
                key = Key(*resource_key(resource))
                document = to_document(resource)
                current = await store.get(key)
                if current is not None and current.value == document:
                    # Rewriting it would bump its version and make the agent redo its work.
                    outcomes.append((resource, current.revision, "unchanged"))
                    continue
                expected = 0 if current is None else current.revision
                ops.append(Put(key, document, expect_revision=expected))
                outcomes.append((resource, None, "configured" if current else "created"))
            try:
                revision = await store.commit(ops) if ops else 0
            except ConflictError as exc:
                message = f"{_describe(exc.key)} changed while being applied; apply again"
                raise api_error(409, message) from None
        return {
            "applied": [
                {
                    "kind": resource.kind,
                    "namespace": resource.namespace,
                    "name": resource.name,
                    "version": revision if version is None else version,
                    "result": result,
                }
                for resource, version, result in outcomes
            ]
        }

    @router.get("/{kind}", summary="List resources of a kind in a namespace")
    async def list_resources(kind: KindParam, namespace: NamespaceParam = None) -> dict[str, Any]:
        _singular(kind)
        where = _namespace(namespace) or DEFAULT_NAMESPACE
        records = await store.list(kind, where)
        statuses = {s.key.name: s for s in await store.list(STATUS_PREFIX + kind, where)}
        return {"items": [present(r, statuses.get(r.key.name)) for r in records]}

    @router.post(
        "/{kind}",
        status_code=201,
        openapi_extra=_ONE_DOCUMENT,
        responses={409: _ERRORS, 422: _ERRORS},
        summary="Create a resource",
    )
    async def create(
        kind: KindParam, request: Request, namespace: NamespaceParam = None
    ) -> JSONResponse:
        singular = _singular(kind)
        where = _namespace(namespace)
        data = inline_certificate_files(await read_document(request))
        async with write_lock:
            others = await gateways_in_store(singular)
            resource = admit(
                data,
                kind=singular,
                name=None,
                namespace=where,
                others=others,
                allow_raw_acl=allow_raw_acl,
                certificates=await certificates_in_store(),
            )
            key = Key(*resource_key(resource))
            try:
                record = await store.put(key, to_document(resource), expect_revision=0)
            except ConflictError:
                message = f"{_describe(resource)} already exists; use PUT to replace it"
                raise api_error(409, message, "name") from None
        return await respond(record, 201, Location=_location(kind, record))

    @router.get("/{kind}/{name:path}", responses={404: _ERRORS}, summary="Read a resource")
    async def read(kind: KindParam, name: NameParam, namespace: NamespaceParam = None) -> Response:
        singular = _singular(kind)
        key = _key(kind, _namespace(namespace) or DEFAULT_NAMESPACE, name)
        record = await store.get(key)
        if record is None:
            raise api_error(404, f"{singular} {key.namespace}/{name} not found")
        return await respond(record)

    @router.put(
        "/{kind}/{name:path}",
        openapi_extra=_ONE_DOCUMENT,
        responses={201: {"description": "created"}, 412: _ERRORS, 422: _ERRORS},
        summary="Create or replace a resource",
    )
    async def replace(
        kind: KindParam,
        name: NameParam,
        request: Request,
        namespace: NamespaceParam = None,
        if_match: IfMatchHeader = None,
    ) -> Response:
        singular = _singular(kind)
        where = _namespace(namespace)
        expected = _expected_version(if_match)
        data = inline_certificate_files(await read_document(request))
        async with write_lock:
            others = await gateways_in_store(singular)
            resource = admit(
                data,
                kind=singular,
                name=name,
                namespace=where,
                others=others,
                allow_raw_acl=allow_raw_acl,
                certificates=await certificates_in_store(),
            )
            key = Key(*resource_key(resource))
            current = await store.get(key)
            _check_version(expected, current, _describe(resource))
            document = to_document(resource)
            if current is not None and current.value == document:
                return await respond(current)
            try:
                record = await store.put(
                    key, document, expect_revision=0 if current is None else current.revision
                )
            except ConflictError:
                raise api_error(409, f"{_describe(resource)} changed meanwhile; retry") from None
        if current is None:
            return await respond(record, 201, Location=_location(kind, record))
        return await respond(record)

    @router.delete(
        "/{kind}/{name:path}",
        status_code=204,
        responses={404: _ERRORS, 412: _ERRORS},
        summary="Delete a resource",
    )
    async def remove(
        kind: KindParam,
        name: NameParam,
        namespace: NamespaceParam = None,
        if_match: IfMatchHeader = None,
    ) -> Response:
        singular = _singular(kind)
        key = _key(kind, _namespace(namespace) or DEFAULT_NAMESPACE, name)
        expected = _expected_version(if_match)
        async with write_lock:
            current = await store.get(key)
            if current is None:
                raise api_error(404, f"{singular} {key.namespace}/{name} not found")
            _check_version(expected, current, _describe(key))
            users = await certificate_in_use(key) if kind == "certificates" else []
            if users:
                message = f"{_describe(key)} is in use by {', '.join(users)}; change them first"
                raise api_error(409, message)
            try:
                # The status goes with the resource, so a later resource of the same name does
                # not inherit it.
                ops = [Delete(key, expect_revision=current.revision), Delete(status_key(key))]
                if kind == "services":
                    # Its registered instances go too: a later service of the same name starts
                    # without them.
                    found = await registered_for(store, key.namespace, key.name)
                    ops += [Delete(record.key) for record in found]
                await store.commit(ops)
            except ConflictError:
                raise api_error(409, f"{_describe(key)} changed meanwhile; retry") from None
        return Response(status_code=204)

    return router
