"""Rollout commands (SPEC §8), A/B comparison of a gateway's routes and route anomalies.

`POST /api/v1/rollouts/{name}/pause|resume|abort`, `GET /api/v1/gateways/{name}/compare` and
`GET /api/v1/anomalies`. Mounted ahead of the resource routes, like the stats endpoint, so
these paths are not taken for resource names.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from meshgate.api.params import api_error, parse_namespace, require_gateway
from meshgate.errors import Problem, ValidationFailed
from meshgate.model.names import DEFAULT_NAMESPACE
from meshgate.model.values import parse_duration_ms
from meshgate.rollouts.analytics import RouteAnalytics
from meshgate.rollouts.compare import compare_routes
from meshgate.rollouts.controller import CommandRefusedError, RolloutController
from meshgate.rollouts.source import gateway_readings
from meshgate.stats.collector import StatsCollector
from meshgate.store import Store

NameParam = Annotated[str, Path(description="URL-encode it ('/' and ':')")]
NamespaceParam = Annotated[
    str | None, Query(description=f"namespace (default {DEFAULT_NAMESPACE!r})")
]
WindowParam = Annotated[
    str, Query(description="how far back to compare, e.g. 60s or 5m (at most 10m)")
]


def rollout_commands_router(controller: RolloutController) -> APIRouter:
    """Pause, resume and abort: any server can take them (the store arbitrates)."""
    router = APIRouter(prefix="/api/v1", tags=["rollouts"])

    @router.post(
        "/rollouts/{name:path}/{action}",
        summary="Pause, resume or abort a rollout; returns its status",
    )
    async def rollout_command(
        name: NameParam,
        action: Literal["pause", "resume", "abort"],
        namespace: NamespaceParam = None,
    ) -> dict[str, Any]:
        space = parse_namespace(namespace) or DEFAULT_NAMESPACE
        try:
            return await controller.command(space, name, action)
        except CommandRefusedError as exc:
            raise api_error(exc.status_code, str(exc)) from None

    return router


def rollouts_router(
    store: Store,
    controller: RolloutController,
    stats: StatsCollector,
    analytics: RouteAnalytics,
) -> APIRouter:
    """The rollout commands, and what a node's own analytics answer: comparisons, anomalies."""
    router = rollout_commands_router(controller)

    @router.get(
        "/gateways/{name:path}/compare",
        summary="Per-route success rate (95% interval) and latency, and a verdict per pair",
    )
    async def compare(
        name: NameParam, namespace: NamespaceParam = None, window: WindowParam = "5m"
    ) -> dict[str, Any]:
        space = parse_namespace(namespace) or DEFAULT_NAMESPACE
        try:
            seconds = parse_duration_ms(window) / 1000
        except ValueError as exc:
            raise ValidationFailed([Problem("window", str(exc))]) from None
        if not 1 <= seconds <= analytics.history.keep_s:
            limit = f"{analytics.history.keep_s:g}s"
            message = f"must be between 1s and {limit} (the history meshgate keeps)"
            raise ValidationFailed([Problem("window", message)])
        await require_gateway(store, space, name)
        current = await gateway_readings(stats, space, name)
        readings, covered = analytics.window(space, name, seconds, current)
        return {
            "gateway": name,
            "namespace": space,
            "window_s": round(covered, 1),
            **compare_routes(readings),
        }

    @router.get("/anomalies", summary="Open route anomalies and the recent openings and closings")
    async def anomalies(namespace: NamespaceParam = None) -> dict[str, Any]:
        wanted = parse_namespace(namespace)
        open_now = [
            {
                "namespace": key[0],
                "gateway": key[1],
                "route": key[2],
                "signal": found.signal,
                "description": found.describe(),
            }
            for key, found in analytics.open_anomalies()
            if wanted is None or key[0] == wanted
        ]
        events = [
            event.to_json()
            for event in analytics.events
            if wanted is None or event.route[0] == wanted
        ]
        return {"open": open_now, "events": events}

    return router
