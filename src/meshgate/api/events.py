"""GET /api/v1/events: the node's recent events, filtered by resource, type and time."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from meshgate.errors import Problem, ValidationFailed
from meshgate.events import EVENT_TYPES, EventFilter, EventLog, parse_since

# Singular or plural, as everywhere else; events name kinds in the singular.
EVENT_KINDS = {
    "gateway": "gateway",
    "gateways": "gateway",
    "service": "service",
    "services": "service",
    "certificate": "certificate",
    "certificates": "certificate",
    "rollout": "rollout",
    "rollouts": "rollout",
}
MAX_LIMIT = 10_000

router = APIRouter(prefix="/api/v1", tags=["events"])


def event_log(request: Request) -> EventLog:
    """The app's event log (`create_app` sets it)."""
    log: EventLog = request.app.state.events
    return log


def event_filter(
    kind: Annotated[
        str | None, Query(description=", ".join(sorted(set(EVENT_KINDS.values()))))
    ] = None,
    namespace: Annotated[str | None, Query()] = None,
    name: Annotated[str | None, Query()] = None,
    type: Annotated[str | None, Query(description=", ".join(EVENT_TYPES))] = None,
    since: Annotated[str | None, Query(description="a duration back (10m) or a time")] = None,
    after: Annotated[int | None, Query(description="only events with a larger id")] = None,
) -> EventFilter:
    problems = []
    if kind is not None and kind.lower() not in EVENT_KINDS:
        known = ", ".join(sorted(set(EVENT_KINDS.values())))
        problems.append(Problem("kind", f"{kind!r} is not one of: {known}"))
    if type is not None and type not in EVENT_TYPES:
        problems.append(Problem("type", f"{type!r} is not one of: {', '.join(EVENT_TYPES)}"))
    moment = None
    if since is not None:
        try:
            moment = parse_since(since, time.time())
        except ValueError as exc:
            problems.append(Problem("since", str(exc)))
    if problems:
        raise ValidationFailed(problems)
    return EventFilter(
        kind=EVENT_KINDS[kind.lower()] if kind is not None else None,
        namespace=namespace,
        name=name,
        type=type,
        since=moment,
        after=after,
    )


@router.get("/events", summary="Recent events: applied, rejected, reloads, health, registrations")
async def list_events(
    where: Annotated[EventFilter, Depends(event_filter)],
    log: Annotated[EventLog, Depends(event_log)],
    limit: Annotated[int | None, Query(ge=1, le=MAX_LIMIT, description="the newest N")] = None,
) -> dict[str, Any]:
    return {"items": [event.as_dict() for event in log.query(where, limit)]}
