"""/docs and /redoc work offline: their scripts and styles come from the node itself."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from meshgate.api import create_app
from meshgate.store import SqliteStore

URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\s*:\s*["']([^"']+)["']""")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    store = await SqliteStore.open(tmp_path / "store.db")
    transport = httpx.ASGITransport(app=create_app(store, token="secret"))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://meshgate") as client:
            yield client
    finally:
        await store.close()


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_doc_pages_reference_no_other_host(client: httpx.AsyncClient, page: str) -> None:
    response = await client.get(page)  # open without the token, like /healthz
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    html = response.text
    assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html), "an absolute URL"
    referenced = [a or b for a, b in URL.findall(html)]
    assets = [url for url in referenced if url.endswith((".js", ".css", ".png"))]
    assert assets and "/openapi.json" in html
    for url in assets:
        assert url.startswith("/"), url
        asset = await client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 1000, url
