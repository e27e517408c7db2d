"""A small synchronous client of the REST API (SPEC §3), as the CLI uses it.

Transport failures and error answers become the project's own exceptions here, so callers deal
with "unreachable" and "the server said no (these problems)" and never with httpx.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from meshgate.errors import MeshgateError, Problem

DEFAULT_SERVER = "http://127.0.0.1:7700"


class ClientError(MeshgateError):
    """A request did not succeed. `problems` are what to show the user."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class UnreachableError(ClientError):
    """Nothing answered at the server address."""

    def __init__(self, server: str, reason: str) -> None:
        self.server = server
        super().__init__([Problem("", f"cannot reach meshgate at {server}: {reason}")])


class ApiError(ClientError):
    """The server answered with an error status."""

    def __init__(self, status_code: int, problems: list[Problem]) -> None:
        self.status_code = status_code
        super().__init__(problems)


def _problems(response: httpx.Response) -> list[Problem]:
    try:
        errors = response.json()["errors"]
        return [Problem(str(e.get("path", "")), str(e["message"])) for e in errors]
    except (ValueError, KeyError, TypeError, AttributeError):
        # Not our error shape (a proxy in between, or not a meshgate server at all).
        text = response.text.strip()[:200] or response.reason_phrase
        return [Problem("", f"HTTP {response.status_code}: {text}")]


def _json(response: httpx.Response, field: str) -> Any:
    """`field` of a JSON object answer; anything else means we are not talking to meshgate."""
    try:
        return response.json()[field]
    except (ValueError, KeyError, TypeError):
        where = str(response.request.url)
        raise ClientError([Problem("", f"unexpected answer from {where}")]) from None


def _name_path(kind: str, name: str) -> str:
    # Names contain '/' and ':'; encoded, they stay one path segment on the way through.
    return f"/api/v1/{kind}/{quote(name, safe='')}"


class MeshgateClient:
    """Client of one server. `kind` arguments are plural API kinds (`gateways`, `services`)."""

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.server, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> MeshgateClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def apply(self, documents: Sequence[Any]) -> list[dict[str, Any]]:
        """POST /api/v1/apply; one `{kind, namespace, name, version, result}` per document."""
        applied: list[dict[str, Any]] = self.apply_batch(documents)["applied"]
        return applied

    def apply_batch(
        self, documents: Sequence[Any], *, dry_run: bool = False, wait_s: float | None = None
    ) -> dict[str, Any]:
        """POST /api/v1/apply: the whole answer, `applied` (with each document's `warnings`),
        and with `wait_s` the `wait` outcome; with `dry_run` nothing is written and each entry
        carries the `document` as it would be stored."""
        # YAML can hold values JSON cannot (dates); as text they fail validation with a path,
        # where an encoder error would only say "not serializable".
        body = json.dumps({"documents": list(documents)}, default=str)
        params: dict[str, str] = {}
        if dry_run:
            params["dry_run"] = "true"
        # An apply of many documents takes the server a while: the answer is waited for as long
        # as the connection lives, so a client never reports a time-out for an apply the
        # server is still doing (and then does).
        options: dict[str, Any] = {"timeout": httpx.Timeout(30.0, read=None)}
        if wait_s is not None:
            params["wait"] = f"{int(wait_s * 1000)}ms"
        response = self._request(
            "POST",
            "/api/v1/apply",
            content=body,
            params=params,
            headers={"Content-Type": "application/json"},
            **options,
        )
        _json(response, "applied")
        answer: dict[str, Any] = response.json()
        return answer

    def list(
        self, kind: str, *, namespace: str = "default", page_size: int = 500
    ) -> list[dict[str, Any]]:
        """Every resource of a kind, read a page at a time (one large answer would hold the
        server, and this client, for the whole list at once)."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            params: dict[str, str | int] = {"namespace": namespace, "limit": page_size}
            if token:
                params["continue"] = token
            response = self._request("GET", f"/api/v1/{kind}", params=params)
            items += _json(response, "items")
            token = response.json().get("continue")
            if not token:
                return items

    def get(self, kind: str, name: str, *, namespace: str = "default") -> dict[str, Any]:
        response = self._request("GET", _name_path(kind, name), params={"namespace": namespace})
        _json(response, "name")  # only to check that the answer is a resource
        resource: dict[str, Any] = response.json()
        return resource

    def gateway_stats(self, name: str, *, namespace: str = "default") -> dict[str, Any]:
        """GET /api/v1/gateways/{name}/stats: per-route counters, rates, latencies."""
        path = f"{_name_path('gateways', name)}/stats"
        response = self._request("GET", path, params={"namespace": namespace})
        _json(response, "routes")  # only to check that the answer is stats
        stats: dict[str, Any] = response.json()
        return stats

    def graph(self, *, namespace: str | None = None, window: str = "60s") -> dict[str, Any]:
        """GET /api/v1/graph: gateways, services and callers, with weights and traffic."""
        params = {"window": window, **({"namespace": namespace} if namespace else {})}
        response = self._request("GET", "/api/v1/graph", params=params)
        _json(response, "edges")
        found: dict[str, Any] = response.json()
        return found

    def compare(
        self, gateway: str, *, window: str = "5m", namespace: str = "default"
    ) -> dict[str, Any]:
        """GET /api/v1/gateways/{name}/compare: per-route figures and a verdict per pair."""
        path = f"{_name_path('gateways', gateway)}/compare"
        response = self._request("GET", path, params={"namespace": namespace, "window": window})
        _json(response, "pairs")
        comparison: dict[str, Any] = response.json()
        return comparison

    def rollout_command(
        self, name: str, action: str, *, namespace: str = "default"
    ) -> dict[str, Any]:
        """POST /api/v1/rollouts/{name}/{pause|resume|abort}: the rollout's new status."""
        path = f"{_name_path('rollouts', name)}/{action}"
        response = self._request("POST", path, params={"namespace": namespace})
        _json(response, "phase")
        status: dict[str, Any] = response.json()
        return status

    def delete(
        self, kind: str, name: str, *, namespace: str = "default", force: bool = False
    ) -> None:
        params = {"namespace": namespace, **({"force": "true"} if force else {})}
        self._request("DELETE", _name_path(kind, name), params=params)

    def patch(
        self,
        kind: str,
        name: str,
        changes: dict[str, Any],
        *,
        namespace: str = "default",
        version: int | None = None,
    ) -> dict[str, Any]:
        """PATCH with a JSON merge patch; with `version`, only if the resource is still at it."""
        headers = {"Content-Type": "application/merge-patch+json"}
        if version is not None:
            headers["If-Match"] = f'"{version}"'
        response = self._request(
            "PATCH",
            _name_path(kind, name),
            params={"namespace": namespace},
            content=json.dumps(changes),
            headers=headers,
        )
        _json(response, "name")
        resource: dict[str, Any] = response.json()
        return resource

    def events(self, **filters: str | int | None) -> builtins.list[dict[str, Any]]:
        """GET /api/v1/events with the filters given (kind, namespace, name, type, since,
        after, limit), oldest first."""
        params = {k: str(v) for k, v in filters.items() if v is not None}
        items: builtins.list[dict[str, Any]] = _json(
            self._request("GET", "/api/v1/events", params=params), "items"
        )
        return items

    # --- instances registered at run time (SPEC §3) ---

    def register_instance(
        self, service: str, registration: dict[str, Any], *, namespace: str = "default"
    ) -> dict[str, Any]:
        """POST /api/v1/services/{service}/instances: the registered instance, with its id."""
        path = f"{_name_path('services', service)}/instances"
        response = self._request("POST", path, params={"namespace": namespace}, json=registration)
        _json(response, "id")
        registered: dict[str, Any] = response.json()
        return registered

    def heartbeat_instance(
        self, service: str, instance_id: str, *, namespace: str = "default"
    ) -> dict[str, Any]:
        """PUT without a body: refresh the instance's TTL."""
        path = f"{_name_path('services', service)}/instances/{quote(instance_id, safe='')}"
        response = self._request("PUT", path, params={"namespace": namespace})
        _json(response, "id")
        instance: dict[str, Any] = response.json()
        return instance

    def list_instances(
        self, service: str, *, namespace: str = "default"
    ) -> builtins.list[dict[str, Any]]:
        """Every instance of the service, from all sources, with its health."""
        path = f"{_name_path('services', service)}/instances"
        response = self._request("GET", path, params={"namespace": namespace})
        items: builtins.list[dict[str, Any]] = _json(response, "items")
        return items

    def deregister_instance(
        self, service: str, instance_id: str, *, namespace: str = "default"
    ) -> None:
        path = f"{_name_path('services', service)}/instances/{quote(instance_id, safe='')}"
        self._request("DELETE", path, params={"namespace": namespace})

    def _request(self, method: str, path: str, **options: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **options)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise UnreachableError(self.server, str(exc) or type(exc).__name__) from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            message = f"meshgate at {self.server} failed: {reason}"
            raise ClientError([Problem("", message)]) from None
        if response.is_error:
            raise ApiError(response.status_code, _problems(response))
        return response
