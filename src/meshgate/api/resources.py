"""The resource endpoints (SPEC §3): /api/v1/{kind}, /api/v1/{kind}/{name} and /api/v1/apply.

Resources are stored as their manifest document (`to_document`) under
Key(kind, namespace, name), kind plural. The agent reports on each one under
Key("status." + kind, namespace, name) with a value such as
`{"applied_version": 7, "error": None, ...}`; responses merge that in as `status`.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Annotated, Any, ParamSpec, Protocol, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from meshgate.api import paging
from meshgate.api.admission import (
    StoredGateways,
    admit,
    admit_batch,
    certificate_users,
    cites_certificates,
    stored_certificates,
)
from meshgate.api.bodies import read_batch, read_document
from meshgate.api.certificates import certificate_status, public_document
from meshgate.api.params import api_error, parse_namespace
from meshgate.api.roundtrip import (
    keeps_stored_key,
    split_version,
    split_versions,
    with_stored_key,
)
from meshgate.api.stored import READ_ONE_BY_ONE, StoredGatewayCache
from meshgate.api.waiting import DEFAULT_WAIT_S, Written, wait_until_live
from meshgate.certificate_files import ApiFiles, inline_certificate_files
from meshgate.collection import collector_paused
from meshgate.discovery.registry import registered_for
from meshgate.errors import Problem, ValidationFailed
from meshgate.merge_patch import merge_patch
from meshgate.model import (
    Certificate,
    Gateway,
    Resource,
    Service,
    resource_key,
    to_document,
    validate_resource,
)
from meshgate.model.names import DEFAULT_NAMESPACE
from meshgate.model.policies import hide_passwords
from meshgate.model.ports import PortIndex
from meshgate.model.references import referrers, unresolved_routes
from meshgate.model.rollout import Rollout, rollout_problems
from meshgate.model.values import parse_duration_ms
from meshgate.store import ConflictError, Delete, Key, Put, Record, Store
from meshgate.store.batches import PartialCommitError, commit_all
from meshgate.validated import shared_table

KINDS = {
    "gateways": "gateway",
    "services": "service",
    "certificates": "certificate",
    "rollouts": "rollout",
}
# Every name a kind goes by in a URL: plural, singular, short.
KIND_NAMES = {
    **{plural: plural for plural in KINDS},
    **{singular: plural for plural, singular in KINDS.items()},
    "gw": "gateways",
    "svc": "services",
    "cert": "certificates",
}
STATUS_PREFIX = "status."

KindParam = Annotated[
    str,
    Path(description="gateways, services, certificates or rollouts (singular, short names too)"),
]
NameParam = Annotated[
    str, Path(description="resource name; URL-encode it, since names contain '/' and ':'")
]
NamespaceParam = Annotated[
    str | None, Query(description=f"namespace (default {DEFAULT_NAMESPACE!r})")
]
DryRunParam = Annotated[
    bool, Query(description="validate everything as for a write, and write nothing")
]
WaitParam = Annotated[
    str | None,
    Query(
        description="wait up to this long (e.g. 30s; empty: 60s) for the data plane to run the"
        " new versions; the answer's `wait` says whether it does, what was rejected and why,"
        " and what is not there yet"
    ),
]
ForceParam = Annotated[
    bool, Query(description="delete even though gateways route to it (they lose the route)")
]
LimitParam = Annotated[
    int | None,
    Query(ge=1, le=paging.MAX_LIMIT, description="at most this many items; then `continue`"),
]
ContinueParam = Annotated[
    str | None,
    Query(alias="continue", description="the `continue` of the previous page"),
]
IfMatchHeader = Annotated[
    str | None,
    Header(alias="If-Match", description="only write if the resource is at this version"),
]


def status_key(key: Key) -> Key:
    """Where the agent reports on the resource at `key`."""
    return Key(STATUS_PREFIX + key.kind, key.namespace, key.name)


class StatusSource(Protocol):
    """Where the API reads what the data plane reports on resources."""

    async def one(self, key: Key) -> Record | None: ...

    async def many(self, kind: str, namespace: str) -> dict[str, Record]: ...


@dataclass
class LocalStatuses:
    """The one agent's reports, under `status.KIND` (`up`)."""

    store: Store

    async def one(self, key: Key) -> Record | None:
        return await self.store.get(status_key(key))

    async def many(self, kind: str, namespace: str) -> dict[str, Record]:
        return {s.key.name: s for s in await self.store.list(STATUS_PREFIX + kind, namespace)}


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


def _kinds(kind: str) -> tuple[str, str]:
    """(plural, singular) of a kind as a URL names it."""
    plural = KIND_NAMES.get(kind.lower())
    if plural is None:
        raise api_error(404, f"unknown kind {kind!r}; use one of: {', '.join(KINDS)}")
    return plural, KINDS[plural]


P = ParamSpec("P")
T = TypeVar("T")


def _collector_paused(
    handler: Callable[P, Awaitable[T]],
) -> Callable[P, Awaitable[T]]:
    """The handler with Python's garbage collector paused while it runs (`collection`): an
    apply of 100,000 gateways spent a third of its time in full collections."""

    @functools.wraps(handler)
    async def paused(*args: P.args, **kwargs: P.kwargs) -> T:
        with collector_paused():
            return await handler(*args, **kwargs)

    return paused


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


def _check_version(
    expected: int | str | None, current: Record | None, what: str, path: str = "If-Match"
) -> None:
    if expected is None:
        return
    if current is None:
        raise api_error(412, f"{what} does not exist (version {expected} expected)", path)
    if expected != "*" and expected != current.revision:
        message = f"{what} is at version {current.revision}, not {expected}: it changed since"
        raise api_error(412, message, path)


def _wait_seconds(wait: str | None) -> float | None:
    """`?wait=30s` as seconds; `?wait` alone (or `true`) waits the default 60 s."""
    if wait is None:
        return None
    if wait in ("", "true"):
        return DEFAULT_WAIT_S
    try:
        return parse_duration_ms(wait) / 1000
    except ValueError as exc:
        raise ValidationFailed([Problem("wait", str(exc))]) from None


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
    for model in (Gateway, Service, Certificate, Rollout):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


_MANIFEST = {
    "oneOf": [
        {"$ref": "#/components/schemas/Gateway"},
        {"$ref": "#/components/schemas/Service"},
        {"$ref": "#/components/schemas/Certificate"},
        {"$ref": "#/components/schemas/Rollout"},
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
        "description": 'a JSON list of documents, {"documents": [...]}, or multi-document YAML',
        "content": {
            "application/json": {"schema": {"type": "array", "items": _MANIFEST}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}
_MERGE_PATCH = {
    "requestBody": {
        "required": True,
        "description": "a JSON merge patch (RFC 7396): members to set, null to remove",
        "content": {"application/merge-patch+json": {"schema": {"type": "object"}}},
    }
}
_ERRORS = {"description": 'errors: {"errors": [{"path": ..., "message": ...}]}'}


def _inparse_namespace(documents: list[Any], namespace: str | None) -> list[Any]:
    """Documents without a namespace of their own go into `namespace`, as `kubectl apply -n`
    does; one that names another namespace is refused rather than silently moved."""
    if namespace is None:
        return documents
    placed, problems = [], []
    for index, document in enumerate(documents):
        if isinstance(document, Mapping) and document.get("namespace", namespace) != namespace:
            message = f"is {document['namespace']!r}, but the request's namespace is {namespace!r}"
            problems.append(Problem(f"documents.{index}.namespace", message))
        elif isinstance(document, Mapping):
            document = {**document, "namespace": namespace}
        placed.append(document)
    if problems:
        raise ValidationFailed(problems)
    return placed


def _inline_batch(documents: list[Any], files: ApiFiles) -> list[Any]:
    """Every document of an apply with the certificate files it names read in."""
    inlined, problems = [], []
    for index, document in enumerate(documents):
        try:
            inlined.append(inline_certificate_files(document, api=files))
        except ValidationFailed as exc:
            problems += exc.prefixed(f"documents.{index}").problems
    if problems:
        raise ValidationFailed(problems)
    return inlined


def resources_router(
    store: Store,
    *,
    allow_raw_acl: bool = False,
    cert_dir: FilePath | None = None,
    statuses: StatusSource | None = None,
) -> APIRouter:
    """The resource endpoints over `store`; certificate files named in documents are read only
    under `cert_dir` (none at all without it); status from `statuses` (default: the one
    agent's)."""
    files = ApiFiles(cert_dir)
    router = APIRouter(prefix="/api/v1", tags=["resources"])
    reports: StatusSource = statuses or LocalStatuses(store)
    # Admission reads the stored gateways and then writes; serialising writes keeps two
    # requests from each passing the port check against a state the other is changing.
    write_lock = asyncio.Lock()
    stored_gateways = StoredGateways()
    cached_gateways = StoredGatewayCache()

    async def gateways_in_store(kind: str) -> Iterable[Gateway]:
        # A certificate is checked against the gateways serving it (they need its key).
        if kind not in ("gateway", "certificate"):
            return []
        await cached_gateways.follow(store)
        # Listed only if admission needs them all: a weight change does not.
        return cached_gateways.others()

    def ports_of(kind: str) -> PortIndex[None] | None:
        return cached_gateways.ports() if kind == "gateway" else None

    def plane_ports_of(kind: str) -> dict[int, Gateway] | None:
        return cached_gateways.plane_ports() if kind == "gateway" else None

    async def certificates_cited_by(documents: Iterable[Any]) -> dict[tuple[str, str], Certificate]:
        """The stored certificates, when one of `documents` may name one: listing and
        validating them all is a trip to the store that a weight change has no need of, and
        during instance churn each trip waits its turn behind the agent's."""
        if not any(cites_certificates(document) for document in documents):
            return {}
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
        gateways = stored_gateways(await store.list("gateways", key.namespace), key.namespace)
        return certificate_users((key.namespace, key.name), gateways, services)

    async def check_rollouts(written: list[tuple[str, Resource]]) -> None:
        """Rollouts must drive an existing gateway's route, one rollout per gateway. `written`
        holds (error path prefix, resource) of everything written together."""
        rollouts = [(prefix, r) for prefix, r in written if isinstance(r, Rollout)]
        if not rollouts:
            return
        keys = {resource_key(r) for _, r in written}
        gateways = {(g.namespace, g.name): g for g in stored_gateways(await store.list("gateways"))}
        gateways.update({(r.namespace, r.name): r for _, r in written if isinstance(r, Gateway)})
        others = [r for _, r in rollouts]
        for record in await store.list("rollouts"):
            try:
                stored = validate_resource(record.value, kind="rollout")
            except ValidationFailed:
                continue  # no longer valid: it drives nothing
            if isinstance(stored, Rollout) and resource_key(stored) not in keys:
                others.append(stored)
        problems = []
        for prefix, rollout in rollouts:
            for problem in rollout_problems(rollout, gateways, others):
                path = f"{prefix}.{problem.path}" if prefix else problem.path
                problems.append(Problem(path, problem.message))
        if problems:
            raise ValidationFailed(problems)

    async def respond(record: Record, status_code: int = 200, **headers: str) -> JSONResponse:
        status = await reports.one(record.key)
        return JSONResponse(
            present(record, status), status_code, headers={**_etag(record), **headers}
        )

    async def in_use(key: Key) -> list[str]:
        """What a delete of `key` would break: gateways serving a certificate (or services
        trusting it), gateways routing to a service or a gateway."""
        if key.kind == "certificates":
            return await certificate_in_use(key)
        if key.kind not in ("gateways", "services"):
            return []
        gateways = stored_gateways(await store.list("gateways", key.namespace), key.namespace)
        if key.kind == "gateways":
            if await store.get(Key("services", key.namespace, key.name)) is not None:
                return []  # routes of that name lead to the service, which stays
            return referrers(key.namespace, key.name, gateways, exclude=key.name)
        return referrers(key.namespace, key.name, gateways)

    async def keep_key(document: Any, path: str = "") -> Any:
        """A certificate from `get` output, with the key it has in the store."""
        if not keeps_stored_key(document):
            return document
        namespace = str(document.get("namespace") or DEFAULT_NAMESPACE)
        try:
            stored = await store.get(Key("certificates", namespace, str(document.get("name"))))
            return with_stored_key(document, stored.value if stored is not None else None)
        except ValueError:
            return document  # no certificate can have that name: admission says why
        except ValidationFailed as exc:
            raise exc.prefixed(path) if path else exc from None

    async def current_records(resources: list[Resource]) -> dict[Key, Record] | None:
        """For a batch of thousands, the stored records of the kinds it writes, one listing
        a kind: a read per document, each a trip to the store's thread, was most of an
        apply of 10,000 gateways. None for a small batch (read one by one)."""
        if len(resources) <= READ_ONE_BY_ONE:
            return None
        held: dict[Key, Record] = {}
        for kind in {Key(*resource_key(r)).kind for r in resources}:
            held.update((record.key, record) for record in await store.list(kind))
        return held

    async def route_warnings(resources: list[Resource]) -> list[list[str]]:
        """For each resource, the routes of a gateway that will lead nowhere once written.
        Only the targets named are looked up: the cost follows the batch, not the store."""
        written = {(f"{r.kind}s", r.namespace, r.name) for r in resources}
        # A batch of thousands lists each kind's keys once instead of a read per route.
        listed: dict[str, set[tuple[str, str]]] | None = (
            {} if len(resources) > READ_ONE_BY_ONE else None
        )

        async def stored(kind: str, namespace: str, name: str) -> bool:
            if listed is None:
                return await store.get(_key(kind, namespace, name)) is not None
            if kind not in listed:
                heads = await store.list(kind, keys_only=True)
                listed[kind] = {(h.key.namespace, h.key.name) for h in heads}
            return (namespace, name) in listed[kind]

        async def names(kind: str, gateway: Gateway) -> set[str]:
            found = set()
            for route in gateway.routes:
                key = (kind, gateway.namespace, route)
                if key in written or await stored(*key):
                    found.add(route)
            return found

        return [
            unresolved_routes(r, await names("services", r), await names("gateways", r))
            if isinstance(r, Gateway)
            else []
            for r in resources
        ]

    @router.post(
        "/apply",
        openapi_extra=_MANY_DOCUMENTS,
        responses={409: _ERRORS, 412: _ERRORS, 422: _ERRORS},
        summary="Create or replace many resources at once, all or nothing",
    )
    @_collector_paused
    async def apply(
        request: Request,
        dry_run: DryRunParam = False,
        wait: WaitParam = None,
        namespace: NamespaceParam = None,
    ) -> dict[str, Any]:
        wait_s = _wait_seconds(wait)
        placed = _inparse_namespace(await read_batch(request), parse_namespace(namespace))
        documents = _inline_batch(placed, files)
        async with write_lock:
            documents = [await keep_key(d, f"documents.{i}") for i, d in enumerate(documents)]
            documents, versions = split_versions(documents)
            stored = stored_gateways(await store.list("gateways"))
            resources = admit_batch(
                documents,
                stored=stored,
                allow_raw_acl=allow_raw_acl,
                certificates=await certificates_cited_by(documents),
            )
            await check_rollouts([(f"documents.{i}", r) for i, r in enumerate(resources)])
            ops: list[Put] = []
            outcomes: list[tuple[Resource, int | None, str]] = []
            held = await current_records(resources)
            for index, resource in enumerate(resources):
                key = Key(*resource_key(resource))
                document = to_document(resource)
                current = held.get(key) if held is not None else await store.get(key)
                if index in versions:
                    path = f"documents.{index}.version"
                    _check_version(versions[index], current, _describe(resource), path)
                if current is not None and current.value == document:
                    # Rewriting it would bump its version and make the agent redo its work.
                    outcomes.append((resource, current.revision, "unchanged"))
                    continue
                expected = 0 if current is None else current.revision
                ops.append(Put(key, document, expect_revision=expected))
                outcomes.append((resource, None, "configured" if current else "created"))
            warnings = await route_warnings(resources)
            revisions_written: list[int] = []
            if not dry_run and ops:
                try:
                    # More documents than one etcd transaction holds go in several.
                    revisions_written = await commit_all(store, ops)
                except PartialCommitError as exc:
                    message = (
                        f"{_describe(exc.key)} changed while being applied; the first "
                        f"{exc.written} of the {len(ops)} changed documents were written; "
                        "apply again"
                    )
                    raise api_error(409, message) from None
                except ConflictError as exc:
                    message = f"{_describe(exc.key)} changed while being applied; apply again"
                    raise api_error(409, message) from None
                if any(op.key.kind == "gateways" for op in ops):
                    cached_gateways.warm_soon(store, write_lock)
        revisions = iter(revisions_written)  # one per changed document, in order
        applied: list[dict[str, Any]] = [
            {
                "kind": resource.kind,
                "namespace": resource.namespace,
                "name": resource.name,
                "version": next(revisions, None) if version is None else version,
                "result": result,
                "warnings": warned,
            }
            for (resource, version, result), warned in zip(outcomes, warnings, strict=True)
        ]
        if not dry_run:
            # The models just admitted are what the stored documents validate to: the agent's
            # loader takes them instead of validating a second copy of each (at 100,000
            # gateways, half a minute and 300 MB).
            shared = shared_table(store)
            for entry, (resource, version, _) in zip(applied, outcomes, strict=True):
                if version is None and isinstance(resource, Gateway):
                    where = ("gateways", resource.namespace, resource.name)
                    if shared.get(where, (-1, ""))[0] < entry["version"]:
                        shared[where] = (entry["version"], resource)
        if dry_run:
            for entry, resource in zip(applied, resources, strict=True):
                document = to_document(resource)
                entry["document"] = (
                    public_document(document) if isinstance(resource, Certificate) else document
                )
            return {"dry_run": True, "applied": applied}
        answer: dict[str, Any] = {"applied": applied}
        if wait_s is not None:
            written = [Written(e["kind"], e["namespace"], e["name"], e["version"]) for e in applied]
            many = None if isinstance(reports, LocalStatuses) else reports
            answer["wait"] = (await wait_until_live(store, written, wait_s, many)).as_dict()
        return answer

    @router.get("/{kind}", summary="List resources of a kind in a namespace")
    async def list_resources(
        kind: KindParam,
        namespace: NamespaceParam = None,
        limit: LimitParam = None,
        continue_token: ContinueParam = None,
    ) -> dict[str, Any]:
        kind, _ = _kinds(kind)
        where = parse_namespace(namespace) or DEFAULT_NAMESPACE
        if limit is None and continue_token is None:
            records = await store.list(kind, where)
            found = await reports.many(kind, where)
            return {"items": [present(r, found.get(r.key.name)) for r in records]}
        # A page: the keys alone are listed (cheap), the values of the page's only are read.
        heads = await store.list(kind, where, keys_only=True)
        page, following = paging.page([h.key.name for h in heads], limit, continue_token)
        items = []
        for name in page:
            record = await store.get(Key(kind, where, name))
            if record is not None:  # deleted since it was listed
                items.append(present(record, await reports.one(record.key)))
        return {"items": items, "continue": following}

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
        kind, singular = _kinds(kind)
        where = parse_namespace(namespace)
        # A create needs no version: the resource must not exist at any.
        data, _ = split_version(inline_certificate_files(await read_document(request), api=files))
        async with write_lock:
            others = await gateways_in_store(singular)
            resource = admit(
                data,
                kind=singular,
                name=None,
                namespace=where,
                others=others,
                allow_raw_acl=allow_raw_acl,
                certificates=await certificates_cited_by([data]),
                ports=ports_of(singular),
                plane_ports=plane_ports_of(singular),
            )
            await check_rollouts([("", resource)])
            key = Key(*resource_key(resource))
            try:
                record = await store.put(key, to_document(resource), expect_revision=0)
            except ConflictError:
                message = f"{_describe(resource)} already exists; use PUT to replace it"
                raise api_error(409, message, "name") from None
        return await respond(record, 201, Location=_location(kind, record))

    @router.get("/{kind}/{name:path}", responses={404: _ERRORS}, summary="Read a resource")
    async def read(kind: KindParam, name: NameParam, namespace: NamespaceParam = None) -> Response:
        kind, singular = _kinds(kind)
        key = _key(kind, parse_namespace(namespace) or DEFAULT_NAMESPACE, name)
        record = await store.get(key)
        if record is None:
            raise api_error(404, f"{singular} {key.namespace}/{name} not found")
        return await respond(record)

    async def write_one(
        kind: str, name: str, namespace: str | None, data: Any, expected: int | str | None
    ) -> Response:
        """Admit `data` as the resource KIND/NAME and write it, if at version `expected`."""
        singular = KINDS[kind]
        data = inline_certificate_files(data, api=files)
        async with write_lock:
            if isinstance(data, dict) and kind == "certificates":
                where = {"namespace": namespace or DEFAULT_NAMESPACE, "name": name}
                data = await keep_key({"kind": "certificate", **where, **data})
            data, given = split_version(data)
            if expected is None:
                expected = given
            others = await gateways_in_store(singular)
            resource = admit(
                data,
                kind=singular,
                name=name,
                namespace=namespace,
                others=others,
                allow_raw_acl=allow_raw_acl,
                certificates=await certificates_cited_by([data]),
                ports=ports_of(singular),
                plane_ports=plane_ports_of(singular),
            )
            await check_rollouts([("", resource)])
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
        kind, _ = _kinds(kind)
        where = parse_namespace(namespace)
        expected = _expected_version(if_match)
        return await write_one(kind, name, where, await read_document(request), expected)

    @router.patch(
        "/{kind}/{name:path}",
        openapi_extra=_MERGE_PATCH,
        responses={404: _ERRORS, 412: _ERRORS, 422: _ERRORS},
        summary="Change part of a resource (JSON merge patch, RFC 7396)",
    )
    async def patch(
        kind: KindParam,
        name: NameParam,
        request: Request,
        namespace: NamespaceParam = None,
        if_match: IfMatchHeader = None,
    ) -> Response:
        kind, singular = _kinds(kind)
        key = _key(kind, parse_namespace(namespace) or DEFAULT_NAMESPACE, name)
        changes = await read_document(request)
        if not isinstance(changes, dict):
            raise ValidationFailed([Problem("", "a merge patch must be a JSON object")])
        expected = _expected_version(if_match)
        current = await store.get(key)
        if current is None:
            raise api_error(404, f"{singular} {key.namespace}/{name} not found")
        if expected is None and "version" not in changes:
            # Read, change, write: the write must find what was read, or another writer's
            # change in between would be undone.
            expected = current.revision
        patched = merge_patch(current.value, changes)
        return await write_one(kind, name, key.namespace, patched, expected)

    @router.delete(
        "/{kind}/{name:path}",
        status_code=204,
        responses={404: _ERRORS, 409: _ERRORS, 412: _ERRORS},
        summary="Delete a resource",
    )
    async def remove(
        kind: KindParam,
        name: NameParam,
        namespace: NamespaceParam = None,
        if_match: IfMatchHeader = None,
        force: ForceParam = False,
    ) -> Response:
        kind, singular = _kinds(kind)
        key = _key(kind, parse_namespace(namespace) or DEFAULT_NAMESPACE, name)
        expected = _expected_version(if_match)
        async with write_lock:
            current = await store.get(key)
            if current is None:
                raise api_error(404, f"{singular} {key.namespace}/{name} not found")
            _check_version(expected, current, _describe(key))
            # A certificate in use is never deleted: the gateways serving it could not load.
            users = [] if force and kind != "certificates" else await in_use(key)
            if users:
                message = f"{_describe(key)} is in use by {', '.join(users)}; change them first"
                if kind != "certificates":
                    message += " or delete with force (?force=true, --force)"
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
