"""`GET /api/v1/nodes[/{name}]`: the nodes whose agents share the store (SPEC section 5)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from meshgate.api.params import api_error
from meshgate.nodes.view import NodeStatuses


def nodes_router(nodes: NodeStatuses) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["nodes"])

    @router.get("/nodes", summary="Every node that joined, Ready or NotReady")
    async def list_nodes() -> dict[str, Any]:
        return {"items": await nodes.list_nodes()}

    @router.get("/nodes/{name}", summary="One node: address, labels, status, what it runs")
    async def read_node(name: Annotated[str, Path(description="node name")]) -> dict[str, Any]:
        found = await nodes.node(name)
        if found is None:
            raise api_error(404, f"node {name} not found")
        return found

    return router
