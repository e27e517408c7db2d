"""Lists a page at a time: `?limit=&continue=` in the API, and the client reading every page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from meshgate.api import create_app, paging
from meshgate.client import MeshgateClient
from meshgate.errors import ValidationFailed
from meshgate.store import SqliteStore
from tests.unit.test_cli import Serve, serve  # noqa: F401  (the fixture)


def test_pages_follow_the_sorted_names() -> None:
    names = [f"g{i:02}" for i in range(7)]
    first, token = paging.page(names, 3, None)
    assert first == ["g00", "g01", "g02"] and token
    second, token = paging.page(names, 3, token)
    assert second == ["g03", "g04", "g05"] and token
    last, token = paging.page(names, 3, token)
    assert (last, token) == (["g06"], None)
    # A resource deleted between pages changes nothing before or after it.
    rest, _ = paging.page([n for n in names if n != "g04"], 3, paging.encode_token("g02"))
    assert rest == ["g03", "g05", "g06"]
    with pytest.raises(ValidationFailed) as caught:
        paging.page(names, 3, "not-a-token")
    assert caught.value.problems[0].path == "continue"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    store = await SqliteStore.open(tmp_path / "store.db")
    transport = httpx.ASGITransport(app=create_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://meshgate") as client:
        yield client
    await store.close()


async def test_the_api_answers_a_page_and_where_the_next_begins(
    client: httpx.AsyncClient,
) -> None:
    documents = [
        {"name": f"g{i}", "port": 9070, "virtual_hosts": [f"h{i}.example.com"],
         "routes": {"[127.0.0.1:8081]": {}}}
        for i in range(5)
    ]  # fmt: skip
    assert (await client.post("/api/v1/apply", json=documents)).status_code == 200
    seen: list[str] = []
    token = None
    while True:
        params = {"limit": "2", **({"continue": token} if token else {})}
        body = (await client.get("/api/v1/gateways", params=params)).json()
        assert len(body["items"]) <= 2
        assert all("status" in item and "version" in item for item in body["items"])
        seen += [item["name"] for item in body["items"]]
        token = body["continue"]
        if token is None:
            break
    assert seen == ["g0", "g1", "g2", "g3", "g4"]
    everything = (await client.get("/api/v1/gateways")).json()
    assert [item["name"] for item in everything["items"]] == seen
    for params, path in (({"limit": "0"}, "limit"), ({"continue": "%%%"}, "continue")):
        bad = await client.get("/api/v1/gateways", params=params)
        assert bad.status_code == 422 and bad.json()["errors"][0]["path"] == path


def test_the_client_reads_every_page(serve: Serve) -> None:  # noqa: F811
    url = serve()
    with MeshgateClient(url) as api:
        documents = [
            {"kind": "service", "name": f"s{i}", "instances": [f"127.0.0.1:{8000 + i}"]}
            for i in range(7)
        ]
        api.apply(documents)
        listed = api.list("services", page_size=3)
    assert [item["name"] for item in listed] == [f"s{i}" for i in range(7)]
