"""`GET /api/v1/flows` (a node's flows over a window, what a server's graph merges) and where
the graph's flows come from: this node's flow book (`up`), or every Ready node's (`server`)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Protocol

import httpx
from fastapi import APIRouter, Query

from meshgate.api.params import parse_namespace
from meshgate.errors import Problem, ValidationFailed
from meshgate.model.values import parse_duration_ms
from meshgate.nodes.view import NodeStatuses
from meshgate.stats.collector import StatsCollector
from meshgate.stats.flows import MAX_WINDOW_S
from meshgate.stats.flowview import flow_document, local_flows, merge_flows

FETCH_TIMEOUT_S = 3.0
DEFAULT_WINDOW = "60s"
WindowParam = Annotated[
    str,
    Query(description=f"the window the figures cover, 1s to {int(MAX_WINDOW_S)}s (e.g. 60s, 5m)"),
]
NamespaceParam = Annotated[str | None, Query(description="only this namespace (default: all)")]


def parse_window(value: str) -> float:
    """`?window=` in seconds; 422 naming the parameter when it is not a duration from 1s to
    the longest window a node keeps."""
    try:
        millis = parse_duration_ms(value)
    except ValueError as exc:
        raise ValidationFailed([Problem("window", str(exc))]) from None
    if not 1000 <= millis <= MAX_WINDOW_S * 1000:
        reason = f"must be from 1s to {int(MAX_WINDOW_S)}s, got {value!r}"
        raise ValidationFailed([Problem("window", reason)])
    return millis / 1000


def node_flows(stats: StatsCollector) -> bool:
    return stats.latency is not None and stats.latency.flows is not None


async def read_node_flows(
    stats: StatsCollector, window_s: float, namespace: str | None
) -> dict[str, Any]:
    await stats.refresh()
    book = stats.latency.flows if stats.latency is not None else None
    if book is None:
        return {"window_s": 0.0, "gateways": [], "recording": False}
    document = flow_document(book.window(window_s), stats.dataplane(), namespace)
    return {**document, "recording": True}


def flows_router(stats: StatsCollector) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["graph"])

    @router.get(
        "/flows",
        summary="This node's gateways over a window: routes' figures and callers by client "
        "address (what a server's graph merges)",
    )
    async def flows(
        window: WindowParam = DEFAULT_WINDOW, namespace: NamespaceParam = None
    ) -> dict[str, Any]:
        return await read_node_flows(stats, parse_window(window), parse_namespace(namespace))

    return router


class FlowSource(Protocol):
    async def read(self, window_s: float, namespace: str | None) -> FlowReading: ...


class FlowReading:
    """Merged flows (`merge_flows`), the nodes' addresses, and nodes that did not answer."""

    def __init__(
        self,
        merged: dict[tuple[str, str], Any] | None,
        nodes: dict[str, str],
        unreachable: dict[str, str] | None = None,
        span_s: float = 0.0,
    ) -> None:
        self.merged = merged  # None: no flows recorded anywhere
        self.nodes = nodes
        self.unreachable = unreachable or {}
        self.span_s = span_s  # the time the figures cover (the longest any node's did)


class LocalFlows:
    """A node of its own (`up`): its own flow book; no other nodes."""

    def __init__(self, stats: StatsCollector) -> None:
        self.stats = stats

    async def read(self, window_s: float, namespace: str | None) -> FlowReading:
        if not node_flows(self.stats):
            return FlowReading(None, {})
        document = await read_node_flows(self.stats, window_s, namespace)
        return FlowReading(local_flows(document), {}, span_s=float(document["window_s"]))


class ClusterFlows:
    """A server: every Ready node's flows (from its `--metrics` endpoint), merged."""

    def __init__(self, nodes: NodeStatuses) -> None:
        self.nodes = nodes

    async def read(self, window_s: float, namespace: str | None) -> FlowReading:
        records, ready = await self.nodes.nodes()
        addresses = {r.key.name: str(r.value["address"]) for r in records if r.value.get("address")}
        endpoints = {
            r.key.name: str(r.value["metrics"])
            for r in records
            if r.key.name in ready and r.value.get("metrics")
        }
        params = {"window": f"{int(window_s * 1000)}ms"}
        if namespace is not None:
            params["namespace"] = namespace
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, trust_env=False) as client:
            answers = await asyncio.gather(
                *(client.get(url + "/api/v1/flows", params=params) for url in endpoints.values()),
                return_exceptions=True,
            )
        documents: dict[str, dict[str, Any]] = {}
        unreachable: dict[str, str] = {}
        for node, answer in zip(endpoints, answers, strict=True):
            if isinstance(answer, BaseException):
                unreachable[node] = str(answer) or type(answer).__name__
            elif answer.status_code != 200:
                unreachable[node] = f"HTTP {answer.status_code}"
            else:
                documents[node] = answer.json()
        recording = any(d.get("recording") for d in documents.values())
        span_s = max((float(d.get("window_s") or 0.0) for d in documents.values()), default=0.0)
        merged = merge_flows(documents) if recording else None
        return FlowReading(merged, addresses, unreachable, span_s)
