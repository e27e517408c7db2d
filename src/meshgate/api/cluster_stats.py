"""`GET /api/v1/gateways/{name}/stats` on `meshgate server`: the gateway's stats from every
Ready node that serves `--metrics`, merged (`nodes.stats`), with a per-node breakdown."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter

from meshgate.api.params import parse_namespace, require_gateway
from meshgate.api.stats import NameParam, NamespaceParam
from meshgate.model.names import DEFAULT_NAMESPACE
from meshgate.nodes.stats import merge_gateway_stats
from meshgate.nodes.view import NodeStatuses
from meshgate.store import Store

FETCH_TIMEOUT_S = 3.0


def cluster_stats_router(store: Store, nodes: NodeStatuses) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["stats"])

    @router.get(
        "/gateways/{name:path}/stats",
        summary="Per-route stats summed over the nodes (percentiles from merged histograms), "
        "with each node's own under `nodes`",
    )
    async def gateway_stats(name: NameParam, namespace: NamespaceParam = None) -> dict[str, Any]:
        space = parse_namespace(namespace) or DEFAULT_NAMESPACE
        await require_gateway(store, space, name)
        records, ready = await nodes.nodes()
        endpoints = {
            r.key.name: str(r.value["metrics"])
            for r in records
            if r.key.name in ready and r.value.get("metrics")
        }
        path = f"/api/v1/gateways/{quote(name, safe='')}/stats"
        params = {"namespace": space, "histograms": "true"}
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, trust_env=False) as client:
            answers = await asyncio.gather(
                *(client.get(url + path, params=params) for url in endpoints.values()),
                return_exceptions=True,
            )
        per_node: dict[str, dict[str, Any]] = {}
        unreachable: dict[str, str] = {}
        for node, answer in zip(endpoints, answers, strict=True):
            if isinstance(answer, BaseException):
                unreachable[node] = str(answer) or type(answer).__name__
            elif answer.status_code != 200:
                unreachable[node] = f"HTTP {answer.status_code}"
            else:
                per_node[node] = answer.json()
        merged = merge_gateway_stats(space, name, per_node)
        merged["unreachable"] = unreachable
        return merged

    return router
