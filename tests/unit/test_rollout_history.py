"""The route history: records that read as mappings, sharing their key index and idle readings."""

from __future__ import annotations

from meshgate.rollouts.history import CHUNK, Record, RouteHistory
from meshgate.rollouts.readings import Reading

A, B, C = ("default", "gw", "a"), ("default", "gw", "b"), ("default", "other", "a")


def test_records_read_back_as_recorded_and_share_what_did_not_change() -> None:
    history = RouteHistory(every_s=10.0, keep_s=30.0)
    idle = Reading(requests=5)
    history.record(0.0, {A: idle, B: Reading(requests=1)})
    history.record(10.0, {A: Reading(requests=5), B: Reading(requests=3)})
    (_, first), (taken, second) = history.records()
    assert taken == 10.0
    assert dict(second) == {A: Reading(requests=5), B: Reading(requests=3)}
    assert second[A] is idle  # equal to the last record's: that very object
    assert second.get(C) is None and C not in second and A in second and len(second) == 2
    assert list(second.items()) == [(A, idle), (B, Reading(requests=3))]
    # The same routes: one key index for both records, not a dictionary each.
    assert isinstance(first, Record) and isinstance(second, Record)
    assert second.index is first.index


def test_a_chunk_of_routes_none_of_which_moved_is_the_last_records() -> None:
    routes = [("default", f"g{n}", "r") for n in range(3 * CHUNK + 5)]
    history = RouteHistory(every_s=10.0, keep_s=600.0)
    idle = {route: Reading(requests=1) for route in routes}
    history.record(0.0, idle)
    busy = routes[CHUNK + 7]  # in the second chunk
    history.record(10.0, {**idle, busy: Reading(requests=9)})
    (_, first), (_, second) = history.records()
    assert isinstance(first, Record) and isinstance(second, Record)
    assert [a is b for a, b in zip(first.chunks, second.chunks, strict=True)] == [
        True, False, True, True,
    ]  # fmt: skip
    assert second[busy] == Reading(requests=9) and first[busy] == Reading(requests=1)
    assert dict(second) == {**idle, busy: Reading(requests=9)}
    assert second[routes[-1]] is idle[routes[-1]]


def test_a_route_added_or_gone_makes_a_new_index() -> None:
    history = RouteHistory(every_s=10.0, keep_s=600.0)
    history.record(0.0, {A: Reading(requests=1), B: Reading(requests=2)})
    history.record(10.0, {C: Reading(), A: Reading(requests=1)})
    history.record(20.0, {A: Reading(requests=1)})
    records = [dict(readings) for _, readings in history.records()]
    assert records[1] == {C: Reading(), A: Reading(requests=1)}
    assert records[2] == {A: Reading(requests=1)}
    latest = history.latest()
    assert latest is not None and latest[1][A] is history.records()[0][1][A]


def test_records_older_than_the_window_are_dropped() -> None:
    history = RouteHistory(every_s=10.0, keep_s=30.0)
    for second in range(0, 60, 10):
        history.record(float(second), {A: Reading(requests=second)})
    assert [taken for taken, _ in history.records()] == [20.0, 30.0, 40.0, 50.0]
    found = history.at_or_before(35.0)
    assert found is not None and found[0] == 30.0 and found[1][A] == Reading(requests=30)
    history.record(60.0, {})
    latest = history.latest()
    assert latest is not None and len(latest[1]) == 0
