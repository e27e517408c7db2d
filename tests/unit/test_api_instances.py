"""Run-time registration endpoints over a real SqliteStore, through the ASGI interface."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from meshgate.api import create_app
from meshgate.discovery import registry
from meshgate.store import Key, SqliteStore

NAME = "sava:1.0/sava/port"
BASE = f"/api/v1/services/{quote(NAME, safe='')}/instances"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(tmp_path / "store.db")
    yield store
    await store.close()


@pytest.fixture
async def client(store: SqliteStore) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://meshgate") as client:
        document = {"kind": "service", "name": NAME, "instances": ["127.0.0.1:8081"]}
        assert (await client.post("/api/v1/services", json=document)).status_code == 201
        yield client


def errors(response: httpx.Response) -> list[str]:
    return [e["path"] for e in response.json()["errors"]]


async def test_register_list_heartbeat_and_deregister(
    client: httpx.AsyncClient, store: SqliteStore
) -> None:
    created = await client.post(BASE, json={"address": "127.0.0.2", "port": 80, "weight": 5})
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["id"], body["service"], body["source"]) == ("127.0.0.2:80", NAME, "api")
    assert created.headers["Location"].startswith(f"{BASE}/127.0.0.2:80")
    record = await store.get(Key("instances", "default", f"{NAME}#127.0.0.2:80"))
    assert record is not None and record.lease is None

    listed = (await client.get(BASE)).json()["items"]
    assert [(i["id"], i["source"], i["status"]) for i in listed] == [
        ("127.0.0.1:8081", "manifest", "UNKNOWN"),
        ("127.0.0.2:80", "api", "UNKNOWN"),
    ]
    again = await client.post(BASE, json={"address": "127.0.0.2", "port": 80, "weight": 5})
    assert again.status_code == 200  # the same registration: nothing written
    assert (await store.get(record.key)) == record

    assert (await client.put(f"{BASE}/127.0.0.2:80")).status_code == 200
    assert (await client.delete(f"{BASE}/127.0.0.2:80")).status_code == 204
    assert (await client.delete(f"{BASE}/127.0.0.2:80")).status_code == 404
    assert (await client.put(f"{BASE}/127.0.0.2:80")).status_code == 404


async def test_ttl_is_a_lease_that_a_heartbeat_renews(
    client: httpx.AsyncClient, store: SqliteStore
) -> None:
    response = await client.post(BASE, json={"address": "127.0.0.3", "port": 80, "ttl": 1})
    assert response.status_code == 201
    key = registry.instance_key("default", NAME, "127.0.0.3:80")
    lease = (await store.get(key)).lease  # type: ignore[union-attr]
    assert lease is not None
    for _ in range(4):  # 2 s in all, twice the TTL, kept alive
        await asyncio.sleep(0.5)
        assert (await client.put(f"{BASE}/127.0.0.3:80")).status_code == 200
    assert await store.get(key) is not None
    await asyncio.sleep(1.6)
    assert await store.get(key) is None
    heartbeat = await client.put(f"{BASE}/127.0.0.3:80")
    assert heartbeat.status_code == 404
    assert "register it again" in heartbeat.json()["errors"][0]["message"]


async def test_update_replaces_the_lease_and_dropping_ttl_keeps_it_forever(
    client: httpx.AsyncClient, store: SqliteStore
) -> None:
    url = f"{BASE}/b"
    created = await client.put(url, json={"address": "127.0.0.4", "port": 80, "ttl": "30s"})
    assert created.status_code == 201
    key = registry.instance_key("default", NAME, "b")
    first = (await store.get(key)).lease  # type: ignore[union-attr]
    same = await client.put(url, json={"address": "127.0.0.4", "port": 80, "ttl": "30s"})
    assert same.status_code == 200 and (await store.get(key)).lease == first  # type: ignore[union-attr]
    moved = await client.put(url, json={"address": "127.0.0.5", "port": 80, "ttl": 60})
    assert moved.json()["address"] == "127.0.0.5"
    second = (await store.get(key)).lease  # type: ignore[union-attr]
    assert second not in (None, first)
    forever = await client.put(url, json={"address": "127.0.0.5", "port": 80})
    assert forever.status_code == 200 and "ttl" not in forever.json()
    assert (await store.get(key)).lease is None  # type: ignore[union-attr]
    mismatch = await client.put(url, json={"address": "127.0.0.5", "port": 80, "id": "c"})
    assert (mismatch.status_code, errors(mismatch)) == (422, ["id"])


@pytest.mark.parametrize(
    ("body", "paths"),
    [
        ({"address": "not an address", "port": 80}, ["address"]),
        ({"address": "web.example.com", "port": 80}, ["address"]),
        ({"address": "127.0.0.1", "port": 0}, ["port"]),
        ({"address": "127.0.0.1", "port": "http"}, ["port"]),
        ({"address": "127.0.0.1", "port": 80, "ttl": 0}, ["ttl"]),
        ({"address": "127.0.0.1", "port": 80, "ttl": "forever"}, ["ttl"]),
        ({"address": "127.0.0.1", "port": 80, "weight": 1000}, ["weight"]),
        ({"address": "127.0.0.1", "port": 80, "id": "no spaces"}, ["id"]),
        ({"port": 80}, ["address"]),
        ({"address": "127.0.0.1", "port": 80, "colour": "red"}, ["colour"]),
    ],
)
async def test_bad_registrations_name_the_field_and_change_nothing(
    client: httpx.AsyncClient, store: SqliteStore, body: dict[str, Any], paths: list[str]
) -> None:
    before = await store.revision()
    response = await client.post(BASE, json=body)
    assert response.status_code == 422, response.text
    assert errors(response) == paths
    assert await store.revision() == before


async def test_unknown_service_namespace_and_id_clash(
    client: httpx.AsyncClient, store: SqliteStore
) -> None:
    before = await store.revision()
    unknown = await client.post(
        "/api/v1/services/nope/instances", json={"address": "127.0.0.1", "port": 80}
    )
    assert (unknown.status_code, errors(unknown)) == (404, ["name"])
    elsewhere = await client.post(
        BASE, params={"namespace": "team-b"}, json={"address": "127.0.0.1", "port": 80}
    )
    assert elsewhere.status_code == 404  # the service exists in "default" only
    clash = await client.post(
        BASE, json={"address": "127.0.0.9", "port": 80, "id": "127.0.0.1:8081"}
    )
    assert (clash.status_code, errors(clash)) == (409, ["id"])
    bad_namespace = await client.post(
        BASE, params={"namespace": "Bad_NS"}, json={"address": "127.0.0.1", "port": 80}
    )
    assert (bad_namespace.status_code, errors(bad_namespace)) == (422, ["namespace"])
    garbage = await client.post(
        BASE, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert garbage.status_code == 422
    assert await store.revision() == before


async def test_deleting_a_service_deletes_its_registrations(
    client: httpx.AsyncClient, store: SqliteStore
) -> None:
    await client.post(BASE, json={"address": "127.0.0.2", "port": 80})
    assert len(await store.list("instances")) == 1
    deleted = await client.delete(f"/api/v1/services/{quote(NAME, safe='')}")
    assert deleted.status_code == 204
    assert await store.list("instances") == []


async def test_names_with_instances_segments_and_openapi(client: httpx.AsyncClient) -> None:
    odd = "x/instances"
    document = {"kind": "service", "name": odd}
    assert (await client.post("/api/v1/services", json=document)).status_code == 201
    url = f"/api/v1/services/{quote(odd, safe='')}/instances"
    created = await client.post(url, json={"address": "127.0.0.1", "port": 80, "id": "i1"})
    assert created.json()["service"] == odd
    assert (await client.get(f"{url}/i1")).json()["id"] == "i1"
    schema = (await client.get("/openapi.json")).json()
    assert "/api/v1/services/{name}/instances" in schema["paths"]
