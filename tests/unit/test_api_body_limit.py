"""The API's body-size limit: a setting, answered with 413 and a message that says what to do."""

from __future__ import annotations

from pathlib import Path

import httpx
from click.testing import CliRunner

from meshgate.api import create_app
from meshgate.cli import main
from meshgate.store import SqliteStore


async def test_a_body_over_the_limit_is_413_before_it_is_read(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "store.db")
    transport = httpx.ASGITransport(app=create_app(store, max_body_bytes=2048))
    async with httpx.AsyncClient(transport=transport, base_url="http://meshgate") as client:
        big = [{"kind": "service", "name": f"s{i}", "instances": []} for i in range(100)]
        response = await client.post("/api/v1/apply", json=big)
        assert response.status_code == 413
        (error,) = response.json()["errors"]
        assert error["message"] == (
            "the body is larger than the server's limit of 2,048 bytes; split the apply, "
            "or start meshgate with a larger --max-body"
        )
        small = await client.post("/api/v1/apply", json=big[:3])
        assert small.status_code == 200, small.text
    await store.close()


def test_up_refuses_a_size_it_cannot_read() -> None:
    for given in ("lots", "10x", "0", "5g"):
        result = CliRunner().invoke(main, ["up", "--max-body", given])
        assert result.exit_code == 2, (given, result.output)
        assert "is not a size from 1k to 4g" in result.output
