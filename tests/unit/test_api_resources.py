"""The resource endpoints over a real SqliteStore, through the ASGI interface."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from meshgate.api import create_app
from meshgate.store import Key, SqliteStore

CANARY = "sava:1.1/sava/port"
STABLE = "sava:1.0/sava/port"
MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]


def sava(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": "sava",
        "port": "9070/http",
        "routes": {STABLE: {"weight": "90%"}, CANARY: {"weight": "10%"}},
    }
    document.update(changes)
    return document


def service(name: str = STABLE, **changes: Any) -> dict[str, Any]:
    return {"kind": "service", "name": name, "instances": ["127.0.0.1:8081"], **changes}


def url(kind: str, name: str) -> str:
    return f"/api/v1/{kind}/{quote(name, safe='')}"


def errors(response: httpx.Response) -> list[tuple[str, str]]:
    return [(e["path"], e["message"]) for e in response.json()["errors"]]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(tmp_path / "store.db")
    yield store
    await store.close()


@pytest.fixture
async def make_client(store: SqliteStore) -> AsyncIterator[MakeClient]:
    clients: list[httpx.AsyncClient] = []

    async def make(**options: Any) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=create_app(store, **options))
        client = httpx.AsyncClient(transport=transport, base_url="http://meshgate")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def client(make_client: MakeClient) -> httpx.AsyncClient:
    return await make_client()


async def test_create_get_list_replace_delete(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/v1/gateways", json=sava())
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "sava" and body["namespace"] == "default"
    assert body["port"] == "9070/http"
    assert body["routes"][CANARY]["weight"] == 10
    assert created.headers["etag"] == f'"{body["version"]}"'
    assert created.headers["location"] == url("gateways", "sava") + "?namespace=default"

    fetched = await client.get(url("gateways", "sava"))
    assert fetched.status_code == 200
    assert fetched.json() == body

    listed = await client.get("/api/v1/gateways")
    assert [item["name"] for item in listed.json()["items"]] == ["sava"]

    replaced = await client.put(url("gateways", "sava"), json=sava(balance="leastconn"))
    assert replaced.status_code == 200
    assert replaced.json()["balance"] == "leastconn"
    assert replaced.json()["version"] > body["version"]

    deleted = await client.delete(url("gateways", "sava"))
    assert deleted.status_code == 204
    assert (await client.get(url("gateways", "sava"))).status_code == 404
    assert (await client.get("/api/v1/gateways")).json() == {"items": []}


async def test_put_creates_with_201_and_an_identical_put_keeps_the_version(
    client: httpx.AsyncClient,
) -> None:
    first = await client.put(url("services", STABLE), json=service())
    assert first.status_code == 201
    again = await client.put(url("services", STABLE), json=service())
    assert again.status_code == 200
    assert again.json()["version"] == first.json()["version"]


async def test_names_with_slash_and_colon_are_url_encoded(client: httpx.AsyncClient) -> None:
    encoded = url("services", STABLE)
    assert "%2F" in encoded and "%3A" in encoded
    response = await client.put(encoded, json={"kind": "service", "instances": ["127.0.0.1:1"]})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == STABLE
    assert (await client.get(encoded)).json()["name"] == STABLE
    # Unencoded slashes reach the same resource: the name is the rest of the path.
    assert (await client.get(f"/api/v1/services/{STABLE}")).status_code == 200
    assert (await client.delete(encoded)).status_code == 204


async def test_namespaces_keep_the_same_name_apart(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/v1/gateways", json=sava())).status_code == 201
    prod = await client.post("/api/v1/gateways?namespace=prod", json=sava(port=9080))
    assert prod.status_code == 201, prod.text
    assert prod.json()["namespace"] == "prod"
    in_body = await client.post("/api/v1/gateways", json=sava(namespace="test", port=9081))
    assert in_body.json()["namespace"] == "test"

    default = (await client.get(url("gateways", "sava"))).json()
    assert default["port"] == "9070/http"
    assert (await client.get(url("gateways", "sava") + "?namespace=prod")).json()["port"] == (
        "9080/http"
    )
    listed = await client.get("/api/v1/gateways?namespace=prod")
    assert [item["namespace"] for item in listed.json()["items"]] == ["prod"]
    assert (await client.delete(url("gateways", "sava") + "?namespace=prod")).status_code == 204
    assert (await client.get(url("gateways", "sava"))).status_code == 200


async def test_create_of_an_existing_resource_is_409(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/v1/gateways", json=sava())).status_code == 201
    response = await client.post("/api/v1/gateways", json=sava())
    assert response.status_code == 409
    assert errors(response)[0][0] == "name"
    assert "already exists" in errors(response)[0][1]


async def test_if_match_guards_replace_and_delete(client: httpx.AsyncClient) -> None:
    version = (await client.post("/api/v1/gateways", json=sava())).json()["version"]
    stale = await client.put(
        url("gateways", "sava"), json=sava(balance="first"), headers={"If-Match": "999"}
    )
    assert stale.status_code == 412
    assert errors(stale)[0][0] == "If-Match"
    current = await client.put(
        url("gateways", "sava"), json=sava(balance="first"), headers={"If-Match": f'"{version}"'}
    )
    assert current.status_code == 200
    missing = await client.put(
        url("gateways", "nope"), json=sava(name="nope", port=9071), headers={"If-Match": "*"}
    )
    assert missing.status_code == 412
    delete_stale = await client.delete(url("gateways", "sava"), headers={"If-Match": "1"})
    assert delete_stale.status_code == 412
    new_version = current.json()["version"]
    delete = await client.delete(url("gateways", "sava"), headers={"If-Match": str(new_version)})
    assert delete.status_code == 204


async def test_missing_resources_are_404_with_a_message(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get(url("gateways", "ghost")),
        await client.delete(url("services", "ghost") + "?namespace=prod"),
    ):
        assert response.status_code == 404
    assert errors(await client.get(url("gateways", "ghost"))) == [
        ("", "gateway default/ghost not found")
    ]
    assert errors(await client.delete(url("services", "ghost") + "?namespace=prod")) == [
        ("", "service prod/ghost not found")
    ]


async def test_unknown_kinds_and_routes_are_json_404s(client: httpx.AsyncClient) -> None:
    unknown = await client.get("/api/v1/widgets")
    assert unknown.status_code == 404 and "unknown kind" in errors(unknown)[0][1]
    nowhere = await client.get("/nowhere")
    assert nowhere.status_code == 404 and errors(nowhere)[0][0] == ""


async def test_yaml_bodies_are_accepted(client: httpx.AsyncClient) -> None:
    text = "name: sava\nport: 9070\nroutes:\n  a: {weight: 50%}\n  b:\n"
    response = await client.post(
        "/api/v1/gateways", content=text, headers={"Content-Type": "application/yaml"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["routes"]["a"]["weight"] == 50
    # Without a Content-Type, JSON is tried and then YAML.
    untyped = await client.put(url("gateways", "sava"), content=text.replace("50%", "60%"))
    assert untyped.status_code == 200, untyped.text


async def test_malformed_bodies_are_422(client: httpx.AsyncClient) -> None:
    broken_json = await client.post(
        "/api/v1/gateways", content="{", headers={"Content-Type": "application/json"}
    )
    assert broken_json.status_code == 422 and "not valid JSON" in errors(broken_json)[0][1]
    two = await client.post(
        "/api/v1/gateways", content="name: a\n---\nname: b\n", headers={"Content-Type": "text/yaml"}
    )
    assert two.status_code == 422 and "2 documents" in errors(two)[0][1]
    bad_namespace = await client.get("/api/v1/gateways?namespace=Not_Valid")
    assert bad_namespace.status_code == 422 and errors(bad_namespace)[0][0] == "namespace"


async def test_body_identity_must_match_the_url(client: httpx.AsyncClient) -> None:
    response = await client.put(url("gateways", "other"), json=sava())
    assert response.status_code == 422
    assert [path for path, _ in errors(response)] == ["name"]
    response = await client.post("/api/v1/gateways?namespace=prod", json=sava(namespace="test"))
    assert [path for path, _ in errors(response)] == ["namespace"]


async def test_invalid_gateway_is_422_with_its_path(client: httpx.AsyncClient) -> None:
    document = sava()
    document["routes"][CANARY]["condition"] = "< hdr(host) -i example.com >"
    response = await client.post("/api/v1/gateways", json=document)
    assert response.status_code == 422
    assert errors(response)[0][0] == f"routes.{CANARY}.condition"


def _with(route: str, **settings: Any) -> dict[str, Any]:
    document = sava()
    document["routes"][route].update(settings)
    return document


@pytest.mark.parametrize(
    ("document", "path"),
    [
        (_with(STABLE, weight="heavy"), f"routes.{STABLE}.weight"),
        (_with(STABLE, weight=50), "routes"),
        (_with(CANARY, condition="host == a.com and"), f"routes.{CANARY}.condition"),
        (sava(sticky="always"), "sticky"),
        (sava(extra=True), "extra"),
        (sava(port=0), "port.number"),
    ],
)
async def test_each_kind_of_bad_input_is_422_with_its_path(
    client: httpx.AsyncClient, document: dict[str, Any], path: str
) -> None:
    response = await client.post("/api/v1/gateways", json=document)
    assert response.status_code == 422
    assert [p for p, _ in errors(response)] == [path]


async def test_raw_acl_is_allowed_when_the_server_allows_it(make_client: MakeClient) -> None:
    client = await make_client(allow_raw_acl=True)
    document = sava()
    document["routes"][CANARY]["condition"] = "< hdr(host) -i example.com >"
    assert (await client.post("/api/v1/gateways", json=document)).status_code == 201


async def test_port_conflict_with_a_stored_gateway(client: httpx.AsyncClient) -> None:
    tcp = {"name": "db", "port": "9070/tcp", "namespace": "data"}
    assert (await client.post("/api/v1/gateways", json=tcp)).status_code == 201
    response = await client.post("/api/v1/gateways", json=sava())
    assert response.status_code == 422
    assert errors(response)[0][0] == "port"
    assert "gateway data/db" in errors(response)[0][1]


async def test_duplicate_virtual_host_on_a_shared_port(client: httpx.AsyncClient) -> None:
    first = sava(virtual_hosts=["sava.example.com"])
    assert (await client.post("/api/v1/gateways", json=first)).status_code == 201
    clash = sava(name="other", virtual_hosts=["sava.example.com", "x.example.com"])
    response = await client.put(url("gateways", "other"), json=clash)
    assert response.status_code == 422
    assert errors(response)[0][0] == "virtual_hosts"
    apart = sava(name="other", virtual_hosts=["x.example.com"])
    assert (await client.put(url("gateways", "other"), json=apart)).status_code == 201


async def test_a_rejected_write_leaves_the_store_unchanged(
    client: httpx.AsyncClient, store: SqliteStore
) -> None:
    await client.post("/api/v1/gateways", json=sava())
    before = await store.revision()
    rejected = [
        await client.post("/api/v1/gateways", json=sava(name="x", balance="bogus")),
        await client.put(url("gateways", "sava"), json=sava(port="9070/tcp", virtual_hosts="a.b")),
        await client.post("/api/v1/apply", json=[sava(name="y", port=9099), {"colour": 1}]),
    ]
    assert [r.status_code for r in rejected] == [422, 422, 422]
    assert await store.revision() == before


async def test_apply_is_all_or_nothing(client: httpx.AsyncClient, store: SqliteStore) -> None:
    bad = sava(name="broken", port=9071)
    bad["routes"][STABLE]["weight"] = "200%"
    response = await client.post("/api/v1/apply", json=[service(), sava(), bad])
    assert response.status_code == 422
    assert errors(response)[0][0] == f"documents.2.routes.{STABLE}.weight"
    assert await store.list() == []


async def test_apply_creates_configures_and_reports_unchanged(client: httpx.AsyncClient) -> None:
    first = await client.post("/api/v1/apply", json={"documents": [service(), sava()]})
    assert first.status_code == 200, first.text
    applied = first.json()["applied"]
    assert [(a["kind"], a["namespace"], a["name"], a["result"]) for a in applied] == [
        ("service", "default", STABLE, "created"),
        ("gateway", "default", "sava", "created"),
    ]
    assert applied[0]["version"] == applied[1]["version"]

    yaml_text = (
        f"kind: service\nname: {STABLE}\ninstances: ['127.0.0.1:8081']\n---\n"
        "name: sava\nport: 9070/http\nbalance: first\n"
        f"routes:\n  {STABLE}: {{weight: 90%}}\n  {CANARY}: {{weight: 10%}}\n"
    )
    second = await client.post(
        "/api/v1/apply", content=yaml_text, headers={"Content-Type": "application/yaml"}
    )
    assert second.status_code == 200, second.text
    results = [(a["name"], a["result"], a["version"]) for a in second.json()["applied"]]
    assert results[0] == (STABLE, "unchanged", applied[0]["version"])
    assert results[1][:2] == ("sava", "configured")
    assert results[1][2] > applied[1]["version"]
    service_now = (await client.get(url("services", STABLE))).json()
    assert service_now["version"] == applied[0]["version"]


async def test_apply_checks_ports_within_the_batch(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/apply", json=[sava(name="a"), sava(name="b")])
    assert response.status_code == 422
    assert [path for path, _ in errors(response)] == [
        "documents.0.virtual_hosts",
        "documents.1.virtual_hosts",
    ]


async def test_status_is_merged_from_the_agent_record(
    client: httpx.AsyncClient, store: SqliteStore
) -> None:
    created = (await client.post("/api/v1/gateways", json=sava())).json()
    assert created["status"] == {"applied": False, "state": "pending"}
    report = {"applied_version": created["version"], "error": None, "routes": {}}
    await store.put(Key("status.gateways", "default", "sava"), report)
    current = (await client.get(url("gateways", "sava"))).json()
    assert current["status"] == {**report, "applied": True}
    assert current["version"] == created["version"]
    listed = (await client.get("/api/v1/gateways")).json()["items"]
    assert listed[0]["status"]["applied"] is True

    changed = (await client.put(url("gateways", "sava"), json=sava(balance="first"))).json()
    assert changed["status"]["applied"] is False
    assert changed["status"]["applied_version"] == created["version"]

    await client.delete(url("gateways", "sava"))
    assert await store.get(Key("status.gateways", "default", "sava")) is None


async def test_token_guards_the_api_but_not_health_or_docs(make_client: MakeClient) -> None:
    client = await make_client(token="s3cret")
    denied = await client.get("/api/v1/gateways")
    assert denied.status_code == 401
    assert denied.headers["www-authenticate"] == "Bearer"
    assert errors(denied)[0][0] == "Authorization"
    wrong = await client.get("/api/v1/gateways", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    allowed = await client.get("/api/v1/gateways", headers={"Authorization": "Bearer s3cret"})
    assert allowed.status_code == 200
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/openapi.json")).status_code == 200
    assert (await client.get("/docs")).status_code == 200


async def test_extra_routers_are_routed_first_and_authenticated(
    make_client: MakeClient,
) -> None:
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/api/v1/gateways/{name:path}/stats")
    async def stats(name: str) -> dict[str, str]:
        return {"gateway": name}

    client = await make_client(token="t", extra_routers=[router])
    assert (await client.get(url("gateways", "a/b") + "/stats")).status_code == 401
    response = await client.get(
        url("gateways", "a/b") + "/stats", headers={"Authorization": "Bearer t"}
    )
    assert response.json() == {"gateway": "a/b"}


async def test_healthz_reports_readiness(make_client: MakeClient) -> None:
    state: dict[str, Any] = {"agent": "ok"}

    async def readiness() -> dict[str, Any]:
        return dict(state)

    client = await make_client(readiness=readiness)
    healthy = await client.get("/healthz")
    assert healthy.status_code == 200
    assert healthy.json()["status"] == "ok" and healthy.json()["agent"] == "ok"
    state.update(ok=False, agent="haproxy is not running")
    unhealthy = await client.get("/healthz")
    assert unhealthy.status_code == 503
    assert unhealthy.json()["status"] == "unavailable"


async def test_healthz_is_503_when_the_store_is_gone(
    client: httpx.AsyncClient, store: SqliteStore
) -> None:
    await store.close()
    response = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["store"].startswith("error")


async def test_openapi_documents_the_manifest_models(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert {"Gateway", "Service"} <= set(schema["components"]["schemas"])
    create = schema["paths"]["/api/v1/{kind}"]["post"]
    assert "application/yaml" in create["requestBody"]["content"]


async def test_oversized_bodies_are_413(make_client: MakeClient) -> None:
    client = await make_client(max_body_bytes=64)
    response = await client.post("/api/v1/gateways", json=sava())
    assert response.status_code == 413
    assert "larger than the server's limit of 64 bytes" in errors(response)[0][1]


async def test_framework_validation_errors_have_the_same_shape(make_client: MakeClient) -> None:
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/api/v1/echo")
    async def echo(limit: int) -> dict[str, int]:
        return {"limit": limit}

    client = await make_client(extra_routers=[router])
    response = await client.get("/api/v1/echo?limit=many")
    assert response.status_code == 422
    assert [path for path, _ in errors(response)] == ["limit"]


async def test_apply_wrapper_must_hold_a_list_and_nothing_else(client: httpx.AsyncClient) -> None:
    not_a_list = await client.post("/api/v1/apply", json={"documents": sava()})
    assert [p for p, _ in errors(not_a_list)] == ["documents"]
    extra = await client.post("/api/v1/apply", json={"documents": [sava()], "prune": True})
    assert errors(extra) == [("prune", "unknown field")]
    empty = await client.post("/api/v1/apply", json=[])
    assert empty.status_code == 422
    single = await client.post("/api/v1/apply", json=sava())
    assert single.json()["applied"][0]["result"] == "created"


DEEP = 50_000


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("[" * DEEP + "]" * DEEP, "application/json"),
        ('{"a":' * DEEP + "1" + "}" * DEEP, None),  # no type: tried as JSON, then YAML
        ("[" * DEEP + "]" * DEEP, "application/yaml"),
        ("a:\n" + "".join(" " * (2 * i) + "- \n" for i in range(1, 40)), "application/yaml"),
        ('{"name": "x", "port": 1, "routes": {"a": ' + "[" * 40 + "]" * 40 + "}}", None),
    ],
    ids=["json", "untyped", "yaml-flow", "yaml-block", "deep-field"],
)
async def test_deeply_nested_bodies_answer_422_with_a_message(
    make_client: MakeClient, store: SqliteStore, body: str, content_type: str | None
) -> None:
    client = await make_client()
    headers = {"content-type": content_type} if content_type else {}
    for path in ("/api/v1/apply", "/api/v1/gateways"):
        response = await client.post(path, content=body, headers=headers)
        assert response.status_code == 422, response.text
        assert any("nest" in message for _, message in errors(response))
    assert await store.list("gateways") == []


async def test_apply_puts_documents_without_a_namespace_into_the_requested_one(
    make_client: MakeClient,
) -> None:
    client = await make_client()
    documents = [service(), {**service("other"), "namespace": "team-a"}, sava()]
    response = await client.post("/api/v1/apply?namespace=team-a", json=documents)
    assert response.status_code == 200, response.text
    assert {e["namespace"] for e in response.json()["applied"]} == {"team-a"}
    found = await client.get(url("gateways", "sava"), params={"namespace": "team-a"})
    assert found.status_code == 200
    assert (await client.get(url("gateways", "sava"))).status_code == 404

    # A document that names another namespace is refused, and nothing is written.
    moved = [service("third"), {**service("elsewhere"), "namespace": "team-b"}]
    response = await client.post("/api/v1/apply?namespace=team-a", json=moved)
    assert response.status_code == 422
    assert errors(response) == [
        ("documents.1.namespace", "is 'team-b', but the request's namespace is 'team-a'")
    ]
    third = await client.get(url("services", "third"), params={"namespace": "team-a"})
    assert third.status_code == 404
    bad = await client.post("/api/v1/apply?namespace=Bad/Name", json=[service()])
    assert bad.status_code == 422 and errors(bad)[0][0] == "namespace"
