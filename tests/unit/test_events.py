"""The event ring, its filters, `since=` parsing, and health transitions as events."""

from __future__ import annotations

import datetime

import pytest

from meshgate.agent.health import record_transitions, transitions
from meshgate.events import EventFilter, EventLog, instance_label, parse_since


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_ring_keeps_the_newest_events_with_increasing_ids() -> None:
    log = EventLog(capacity=3)
    for n in range(5):
        log.record("reload", f"reload {n}")
    kept = log.query()
    assert [e.message for e in kept] == ["reload 2", "reload 3", "reload 4"]
    assert [e.id for e in kept] == [3, 4, 5]
    assert [e.message for e in log.query(limit=2)] == ["reload 3", "reload 4"]


def test_filters_by_resource_type_time_and_id() -> None:
    clock = Clock()
    log = EventLog(clock=clock)
    log.record("applied", "v1", kind="gateway", namespace="default", name="sava")
    clock.now += 60
    log.record("applied", "v1", kind="gateway", namespace="team", name="sava")
    log.record("rejected", "bad", kind="gateway", namespace="default", name="sava")
    log.record("applied", "v1", kind="service", namespace="default", name="sava")

    def messages(where: EventFilter) -> list[tuple[str | None, str | None, str]]:
        return [(e.kind, e.namespace, e.type) for e in log.query(where)]

    assert messages(EventFilter(kind="gateway", namespace="default", name="sava")) == [
        ("gateway", "default", "applied"),
        ("gateway", "default", "rejected"),
    ]
    assert messages(EventFilter(type="applied", since=clock.now - 1)) == [
        ("gateway", "team", "applied"),
        ("service", "default", "applied"),
    ]
    assert [e.id for e in log.query(EventFilter(after=2))] == [3, 4]


def test_an_event_as_json_has_an_iso_time() -> None:
    log = EventLog(clock=lambda: 0.0)
    event = log.record("expired", "gone", kind="service", namespace="n", name="s", instance="a")
    assert event.as_dict() == {
        "id": 1,
        "time": "1970-01-01T00:00:00+00:00",
        "type": "expired",
        "message": "gone",
        "kind": "service",
        "namespace": "n",
        "name": "s",
        "instance": "a",
    }


def test_since_is_a_duration_back_or_a_zoned_time() -> None:
    assert parse_since("10m", 1000.0) == 400.0
    moment = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC).timestamp()
    assert parse_since("2026-01-02T03:04:05Z", 0) == moment
    with pytest.raises(ValueError, match="no time zone"):
        parse_since("2026-01-02T03:04:05", 0)
    with pytest.raises(ValueError, match="neither a duration"):
        parse_since("yesterday", 0)


def test_instance_label_names_the_address_once() -> None:
    assert instance_label("127.0.0.1:80", "127.0.0.1", 80) == "instance 127.0.0.1:80"
    assert instance_label("b", "::1", 80) == "instance b ([::1]:80)"


def test_health_transitions_become_events() -> None:
    up = {"id": "a", "address": "127.0.0.1", "port": 8081, "status": "UP"}
    before = {("default", "web"): [up, {**up, "id": "b", "port": 8082}]}
    after = {
        ("default", "web"): [{**up, "status": "DOWN"}, {**up, "id": "b", "port": 8082}],
        ("default", "new"): [up],  # a service seen for the first time: no transition
    }
    changed = transitions(before, after)
    assert [(c.instance, c.before, c.after) for c in changed] == [("a", "UP", "DOWN")]
    log = EventLog()
    record_transitions(log, changed)
    (event,) = log.query()
    assert (event.type, event.kind, event.name, event.instance) == ("health", "service", "web", "a")
    assert event.message == "instance a (127.0.0.1:8081) is DOWN (was UP)"
