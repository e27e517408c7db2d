"""Events: what happened to which resource, kept in a bounded ring for `meshgate events`,
`meshgate describe` and `GET /api/v1/events`.

Events are recorded where they happen (the agent's pass, the health poll, the registry
watcher) and never written to the store: they are a recent history for people, not state. The
ring holds the last `capacity` events; the oldest go first. Pure, apart from reading the clock.
"""

from __future__ import annotations

import datetime
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from meshgate.model.values import format_endpoint, parse_duration_ms

EventType = Literal[
    "applied",  # the data plane runs a resource's new version
    "rejected",  # a resource's version was left out of the data plane, with the reason
    "warning",  # a resource is served, but not all of it works (a route to nothing)
    "reload",  # HAProxy reloaded (with why)
    "reconcile_failed",  # a whole pass failed; the last good configuration keeps serving
    "health",  # an instance's health changed (UP, DOWN, MAINT)
    "registered",  # an instance was registered through the API
    "deregistered",  # an instance was deregistered through the API
    "expired",  # a registered instance's TTL lapsed
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
DEFAULT_CAPACITY = 1000


@dataclass(frozen=True)
class Event:
    id: int  # increasing: `after=ID` reads only what came later
    time: float  # seconds since the epoch
    type: EventType
    message: str
    kind: str | None = None  # gateway, service or certificate; None for the node's own events
    namespace: str | None = None
    name: str | None = None
    instance: str | None = None  # the instance id, for health and registration events

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["time"] = datetime.datetime.fromtimestamp(self.time, datetime.UTC).isoformat()
        return found


@dataclass(frozen=True)
class EventFilter:
    """Which events a reader wants; None matches anything."""

    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    type: str | None = None
    since: float | None = None  # seconds since the epoch
    after: int | None = None  # an event id

    def matches(self, event: Event) -> bool:
        return (
            (self.kind is None or event.kind == self.kind)
            and (self.namespace is None or event.namespace == self.namespace)
            and (self.name is None or event.name == self.name)
            and (self.type is None or event.type == self.type)
            and (self.since is None or event.time >= self.since)
            and (self.after is None or event.id > self.after)
        )


def instance_label(instance_id: str, address: str, port: int) -> str:
    """`instance ID (ADDRESS:PORT)`, or `instance ADDRESS:PORT` when that is its id."""
    where = format_endpoint(address, port)
    return f"instance {where}" if instance_id == where else f"instance {instance_id} ({where})"


def parse_since(text: str, now: float) -> float:
    """`since=` as a duration back from now (`10m`) or an ISO 8601 time with a zone."""
    try:
        return now - parse_duration_ms(text) / 1000
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (10m) nor a time (2026-01-02T03:04:05Z)"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone; add Z or +00:00")
    return moment.timestamp()


class EventLog:
    """The last `capacity` events, oldest first."""

    def __init__(
        self, capacity: int = DEFAULT_CAPACITY, clock: Callable[[], float] = time.time
    ) -> None:
        self._events: deque[Event] = deque(maxlen=capacity)
        self._ids = itertools.count(1)
        self._clock = clock

    def record(
        self,
        type: EventType,
        message: str,
        *,
        kind: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        instance: str | None = None,
    ) -> Event:
        event = Event(
            next(self._ids), self._clock(), type, message, kind, namespace, name, instance
        )
        self._events.append(event)
        return event

    def query(self, where: EventFilter = EventFilter(), limit: int | None = None) -> list[Event]:
        """Matching events, oldest first; with `limit`, the newest `limit` of them."""
        found = [event for event in self._events if where.matches(event)]
        return found[-limit:] if limit is not None else found
