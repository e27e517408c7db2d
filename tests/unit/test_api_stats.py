"""The stats endpoint over a real SqliteStore and a collector fed by a stand-in HAProxy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from meshgate.api import create_app
from meshgate.api.stats import stats_router
from meshgate.compiler import ir
from meshgate.haproxy.processes import ProcEntry, ProcInfo
from meshgate.haproxy.stat_csv import CountedRow, StatRow, StatType, counted
from meshgate.stats.collector import StatsCollector
from meshgate.store import Key, Put, SqliteStore

NAME = "shop/front"  # a name with '/', sent URL-encoded
BACKEND = "default.shop_front.web.abc123"


class Haproxy:
    """Answers the collector's two questions: which workers, and their counters."""

    async def processes(self) -> ProcInfo:
        worker = ProcEntry(42, "worker", 0, 1, "2.6")
        return ProcInfo(ProcEntry(1, "master", 0, 1, "2.6"), 0, [worker], [], [])

    async def worker_stats(self, pid: int) -> list[StatRow]:
        return [
            StatRow(BACKEND, "BACKEND", StatType.BACKEND, "UP", "", "", "http", req_tot=7,
                    hrsp_2xx=6, hrsp_5xx=1),
            StatRow(BACKEND, "i1", StatType.SERVER, "UP", "", "", "http", req_tot=7),
        ]  # fmt: skip

    async def worker_parts(self, pid: int) -> AsyncIterator[list[CountedRow]]:
        yield [counted(row) for row in await self.worker_stats(pid)]


def dataplane() -> ir.DataPlane:
    backend = ir.Backend(
        name=BACKEND,
        mode="http",
        route=ir.RouteRef("default", NAME, "web"),
        balance="roundrobin",
        servers=(ir.Server("i1", "127.0.0.1", 8080, 1),),
        health=ir.HealthCheck("tcp", 2000, 2, 3),
    )
    return ir.DataPlane(ir.Settings(run_dir="/run"), backends=(backend,))


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    store = await SqliteStore.open(tmp_path / "store.db")
    await store.commit([Put(Key("gateways", "default", NAME), {"name": NAME})])
    running = dataplane()
    collector = StatsCollector(Haproxy(), lambda: running)  # type: ignore[arg-type]
    app = create_app(store, extra_routers=[stats_router(store, collector)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://meshgate"
    ) as http:
        yield http
    await store.close()


async def test_stats_of_a_gateway_whose_name_has_a_slash(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/api/v1/gateways/{quote(NAME, safe='')}/stats")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["gateway"], body["namespace"]) == (NAME, "default")
    web = body["routes"]["web"]
    assert (web["requests"], web["responses"]["5xx"]) == (7, 1)
    assert web["instances"] == [
        {
            "id": "i1", "address": "127.0.0.1", "port": 8080, "status": "UP", "requests": 7,
            "active": 0, "responses": {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0},
            "latency_ms": {"avg": None, "p50": None, "p90": None, "p99": None},
        }
    ]  # fmt: skip


async def test_the_resource_itself_is_still_reachable(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/api/v1/gateways/{quote(NAME, safe='')}")
    assert response.status_code == 200, response.text
    assert response.json()["name"] == NAME


async def test_unknown_gateway_or_namespace_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/gateways/nothing/stats")).status_code == 404
    other = await client.get(
        f"/api/v1/gateways/{quote(NAME, safe='')}/stats", params={"namespace": "other"}
    )
    assert other.status_code == 404
    assert other.json()["errors"][0]["message"] == f"gateway other/{NAME} not found"


async def test_an_invalid_namespace_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/gateways/x/stats", params={"namespace": "Bad_NS"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == "namespace"
