"""Rollout readings across nodes: each agent's cumulative counters and latency buckets of a
gateway's routes (on `--metrics`), added up for the elected server's rollout controller. Every
field of a reading is a count, so the sum over nodes is the gateway's reading everywhere."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx

from meshgate.nodes.view import NodeStatuses
from meshgate.rollouts.readings import Reading
from meshgate.stats.histogram import BUCKETS

FETCH_TIMEOUT_S = 3.0


def reading_to_json(reading: Reading) -> dict[str, Any]:
    return {
        "requests": reading.requests,
        "errors": reading.errors,
        "latency": {str(i): n for i, n in enumerate(reading.latency) if n},
        "responses": list(reading.responses),
    }


def reading_from_json(data: dict[str, Any]) -> Reading:
    latency = [0] * BUCKETS
    for index, count in (data.get("latency") or {}).items():
        latency[int(index)] = int(count)
    return Reading(
        int(data["requests"]),
        int(data["errors"]),
        tuple(latency),
        tuple(int(n) for n in data["responses"]),
    )


def added(readings: list[Reading]) -> Reading:
    return Reading(
        sum(r.requests for r in readings),
        sum(r.errors for r in readings),
        tuple(sum(column) for column in zip(*(r.latency for r in readings), strict=True)),
        tuple(sum(column) for column in zip(*(r.responses for r in readings), strict=True)),
    )


class ClusterReadings:
    """`read_routes` for a rollout controller on a server: every Ready node's readings."""

    def __init__(self, nodes: NodeStatuses) -> None:
        self.nodes = nodes

    async def read(self, namespace: str, gateway: str) -> dict[str, Reading]:
        records, ready = await self.nodes.nodes()
        urls = [
            str(r.value["metrics"])
            for r in records
            if r.key.name in ready and r.value.get("metrics")
        ]
        path = f"/api/v1/gateways/{quote(gateway, safe='')}/readings"
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, trust_env=False) as client:
            answers = await asyncio.gather(
                *(client.get(url + path, params={"namespace": namespace}) for url in urls),
                return_exceptions=True,
            )
        by_route: dict[str, list[Reading]] = {}
        for answer in answers:
            # A node that does not answer is left out: its counters seem to go backwards,
            # which the rollout engine takes as a stretch it cannot measure.
            if isinstance(answer, BaseException) or answer.status_code != 200:
                continue
            for route, data in answer.json().items():
                by_route.setdefault(route, []).append(reading_from_json(data))
        return {route: added(found) for route, found in by_route.items()}
