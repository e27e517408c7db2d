"""The HTTP API as one FastAPI application: routes, auth, and errors in one JSON shape."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException

from meshgate import __version__
from meshgate.api.bodies import MAX_BODY_BYTES, BodyTooLargeError
from meshgate.api.events import router as events_router
from meshgate.api.instances import instances_router
from meshgate.api.params import api_error
from meshgate.api.resources import StatusSource, manifest_schemas, resources_router
from meshgate.errors import ValidationFailed
from meshgate.events import EventLog
from meshgate.store import Store, StoreError

logger = logging.getLogger(__name__)

Readiness = Callable[[], Awaitable[dict[str, Any]]]
DOCS_ASSETS = "/docs-assets"
# Module level, not built per app: FastAPI resolves a dependency's annotations by name in this
# module's globals.
_bearer = HTTPBearer(auto_error=False, description="the token meshgate was started with")
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _errors(status_code: int, errors: list[dict[str, str]], **headers: str) -> JSONResponse:
    return JSONResponse({"errors": errors}, status_code, headers=headers or None)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    if isinstance(detail, dict) and "errors" in detail:
        return JSONResponse(detail, exc.status_code, headers=exc.headers)
    # Starlette's own errors (no route, method not allowed) carry a plain string.
    errors = [{"path": "", "message": str(detail)}]
    return _errors(exc.status_code, errors, **(exc.headers or {}))


async def _request_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for item in exc.errors():
        loc = [str(part) for part in item.get("loc", ())]
        # FastAPI puts where the value came from first ("query", "header", ...); the name of
        # the parameter is the path a user can act on.
        if loc and loc[0] in ("query", "path", "header", "cookie", "body"):
            loc = loc[1:]
        errors.append({"path": ".".join(loc), "message": str(item.get("msg", "invalid"))})
    return _errors(422, errors)


async def _validation_failed(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationFailed)
    errors = [{"path": p.path, "message": p.message} for p in exc.problems]
    return _errors(422, errors)


async def _too_large(request: Request, exc: Exception) -> JSONResponse:
    return _errors(413, [{"path": "", "message": str(exc)}])


async def _store_failed(request: Request, exc: Exception) -> JSONResponse:
    logger.error("store request failed: %s", exc)
    return _errors(503, [{"path": "", "message": f"the store is unavailable: {exc}"}])


def bearer_auth(token: str) -> Callable[..., Awaitable[None]]:
    """A dependency that admits requests carrying `Authorization: Bearer <token>`."""
    expected = token.encode()

    async def require_token(credentials: BearerCredentials) -> None:
        given = b"" if credentials is None else credentials.credentials.encode()
        # Constant time, so the token cannot be guessed one character at a time.
        if not secrets.compare_digest(given, expected):
            error = api_error(401, "a valid bearer token is required", "Authorization")
            error.headers = {"WWW-Authenticate": "Bearer"}
            raise error

    return require_token


def create_app(
    store: Store,
    *,
    allow_raw_acl: bool = False,
    token: str | None = None,
    cert_dir: Path | None = None,
    readiness: Readiness | None = None,
    gateways_ready: Callable[[], dict[str, Any]] | None = None,
    extra_routers: Sequence[APIRouter] = (),
    statuses: StatusSource | None = None,
    events: EventLog | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The API over `store`. `readiness` reports on the rest of the node (the agent) for
    /healthz; a result with `"ok": False` makes it 503. With `token`, the resource endpoints
    and every router in `extra_routers` need it; /healthz, /readyz (`gateways_ready`: every
    gateway served, else those that are not) and the docs stay open.

    `extra_routers` are routed before the resource endpoints, so that a route such as
    /api/v1/gateways/{name}/stats is not taken for a gateway named ".../stats".
    `events` is the node's event log (the agent records into it too); without one the app
    keeps its own.
    """
    # /docs and /redoc load Swagger UI and ReDoc from files shipped in a Python package, not from
    # a CDN: the docs work on a machine without internet access, and the page asks no other
    # host for anything (Swagger UI's validator badge would: it is off).
    app = FastAPIOffline(
        title="meshgate",
        version=__version__,
        description="Control plane for HAProxy gateways: manifests in, configuration out.",
        static_url=DOCS_ASSETS,
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.events = events if events is not None else EventLog()
    app.state.max_body_bytes = max_body_bytes
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(ValidationFailed, _validation_failed)
    app.add_exception_handler(BodyTooLargeError, _too_large)
    app.add_exception_handler(StoreError, _store_failed)

    dependencies = [Depends(bearer_auth(token))] if token else []
    for router in [*extra_routers, events_router]:
        app.include_router(router, dependencies=dependencies)
    # Before the resource endpoints too: they would take ".../instances" for part of a name.
    app.include_router(instances_router(store), dependencies=dependencies)
    app.include_router(
        resources_router(store, allow_raw_acl=allow_raw_acl, cert_dir=cert_dir, statuses=statuses),
        dependencies=dependencies,
    )

    @app.get("/healthz", tags=["health"], summary="Whether the API, store and agent are up")
    async def healthz() -> JSONResponse:
        report: dict[str, Any] = {"status": "ok", "store": "ok"}
        healthy = True
        try:
            report["revision"] = await store.revision()
        except Exception as exc:  # any failure to answer means "not ready", whatever its type
            report["store"] = f"error: {exc}"
            healthy = False
        if readiness is not None:
            try:
                extra = await readiness()
            except Exception as exc:
                extra = {"ok": False, "error": str(exc)}
            report.update(extra)
            healthy = healthy and extra.get("ok", True) is not False
        if not healthy:
            report["status"] = "unavailable"
        return JSONResponse(report, 200 if healthy else 503)

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Whether every gateway is served; those that are not, with why",
    )
    async def readyz() -> JSONResponse:
        if gateways_ready is None:
            return JSONResponse({"status": "ok", "not_serving": {}})
        report = gateways_ready()
        ready = report.pop("ok") is True
        return JSONResponse(
            {"status": "ok" if ready else "unavailable", **report}, 200 if ready else 503
        )

    def openapi() -> dict[str, Any]:
        # The manifest bodies are parsed by hand (to accept YAML), so FastAPI cannot see their
        # models; their schemas are added here for the request bodies to refer to.
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(manifest_schemas())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
