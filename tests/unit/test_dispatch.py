"""compiler.dispatch and agent.availability: dispatch.map over the routes with a usable server."""

from __future__ import annotations

import dataclasses
import itertools

from meshgate.agent import availability
from meshgate.compiler import dispatch, ir
from meshgate.plan import (
    DeleteMapEntries,
    RemoveServer,
    ReplaceMap,
    SetMapEntries,
    dispatch_changes,
    plan,
)

CHECK = ir.HealthCheck(type="tcp", interval_ms=1000, rise=1, fall=1)


def rules(gateway_id: str, *backends: str, sticky: ir.Sticky = "none") -> ir.GatewayRules:
    return ir.GatewayRules(
        gateway_id=gateway_id,
        namespace="default",
        name=gateway_id,
        sticky=sticky,
        route_cookie_name=None,
        choices=tuple(ir.RouteChoice(backend=b, condition=(), strength=100) for b in backends),
    )


def backend(name: str, *servers: tuple[str, int]) -> ir.Backend:
    return ir.Backend(
        name=name,
        mode="http",
        route=ir.RouteRef("default", "g", name),
        balance="roundrobin",
        servers=tuple(ir.Server(s, "127.0.0.1", 9000, weight) for s, weight in servers),
        health=CHECK,
    )


def owners(entries: tuple[tuple[str, str], ...]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for _, owner in entries:
        counted[owner] = counted.get(owner, 0) + 1
    return counted


def test_slots_follow_the_weights_of_the_usable_routes_renormalised() -> None:
    weights = {"a": "50", "b": "30", "c": "20"}
    gateway = rules("g1", "a", "b", "c")
    assert owners(dispatch.gateway_entries(gateway, weights)) == {"a": 50, "b": 30, "c": 20}
    without_a = dispatch.gateway_entries(gateway, weights, {"b", "c"}.__contains__)
    assert owners(without_a) == {"b": 60, "c": 40}
    assert [k for k, _ in without_a] == [f"{n}.g1" for n in range(100)]
    only_c = dispatch.gateway_entries(gateway, weights, {"c"}.__contains__)
    assert owners(only_c) == {"c": 100}  # still 100 slots: the rule draws one


def test_no_usable_route_or_no_weight_left_means_no_entries() -> None:
    gateway = rules("g1", "a", "b")
    assert dispatch.gateway_entries(gateway, {"a": "50", "b": "50"}, set().__contains__) == ()
    assert dispatch.gateway_entries(gateway, {"a": "0", "b": "0"}) == ()
    # The usable route weighs 0: its share is none, whatever the others'.
    assert dispatch.gateway_entries(gateway, {"a": "100", "b": "0"}, {"b"}.__contains__) == ()


def test_a_lone_route_is_one_entry_by_gateway_id() -> None:
    gateway = rules("g2", "a")
    assert dispatch.gateway_entries(gateway, {"a": "100"}) == (("g2", "a"),)
    assert dispatch.gateway_entries(gateway, {"a": "0"}) == ()
    assert dispatch.gateway_entries(gateway, {"a": "100"}, set().__contains__) == ()


def test_sticky_source_slots_have_their_own_keys() -> None:
    entries = dispatch.gateway_entries(
        rules("g3", "a", "b", sticky="source"), {"a": "50", "b": "50"}
    )
    assert entries[0] == ("0.g3.s", "a") and entries[-1] == ("99.g3.s", "b")


def test_only_plain_gateways_are_dispatched() -> None:
    plain = rules("g1", "a", "b")
    assert dispatch.is_plain(plain)
    pinned = ir.GatewayRules("g2", "d", "p", "route", "mg_route", plain.choices)
    conditional = ir.GatewayRules(
        "g3", "d", "c", "none", None, (ir.RouteChoice("a", (("true",),), 100),)
    )
    assert not dispatch.is_plain(pinned)
    assert not dispatch.is_plain(conditional)


OTHERS = tuple(rules(f"o{n}", "x", "y") for n in range(80))


OTHERS_UP = {("x", "x1"): "UP", ("y", "y1"): "UP"}


def dataplane(servers_a: tuple[tuple[str, int], ...]) -> ir.DataPlane:
    frontend = ir.Frontend(
        name="port_8080",
        bind="0.0.0.0",
        port=8080,
        mode="http",
        # Others, so that the map is large enough to be changed entry by entry.
        gateways=(rules("g1", "a", "b"), rules("g2", "b"), *OTHERS),
        host_map="port_8080.hosts.map",
        wildcard_map="port_8080.wildcards.map",
    )
    weights = (("a", "50"), ("b", "50"), ("x", "50"), ("y", "50"))
    frontends = (frontend,)
    return ir.DataPlane(
        settings=ir.Settings(run_dir="/run/mg"),
        frontends=frontends,
        backends=(
            backend("a", *servers_a),
            backend("b", ("b1", 1)),
            backend("x", ("x1", 1)),
            backend("y", ("y1", 1)),
        ),
        maps=(
            *dispatch.dispatch_maps(frontends, weights),
            ir.MapFile(ir.WEIGHTS_MAP, weights),
        ),
    )


def effective(running: ir.DataPlane, states: dict[tuple[str, str], str]) -> ir.DataPlane:
    return dispatch.with_usable(running, dispatch.usable_backends(running, states))


def test_usable_routes_follow_state_changes_without_going_over_every_backend() -> None:
    running = dataplane((("a1", 1), ("a2", 1)))
    states = {**OTHERS_UP, ("a", "a1"): "UP", ("a", "a2"): "UP", ("b", "b1"): "UP"}
    usable = availability.UsableRoutes()
    assert usable.of(running, states) == {"a", "b", "x", "y"}
    # A streamed change: only its backend is looked at again.
    states[("b", "b1")] = "DOWN"
    usable.changed("b")
    assert usable.of(running, states) == {"a", "x", "y"}
    # A poll: the backends whose servers read differently.
    polled = {**states, ("a", "a1"): "DOWN", ("a", "a2"): "DOWN", ("b", "b1"): "UP"}
    usable.changed_between(states, polled)
    assert usable.of(running, polled) == {"b", "x", "y"}
    # A change nobody told of is not seen until the backends change...
    polled[("x", "x1")] = "DOWN"
    assert usable.of(running, polled) == {"b", "x", "y"}
    # ... and new backends are worked out in full.
    assert usable.of(dataplane((("a1", 1),)), polled) == {"b", "y"}
    assert usable.of(dataplane((("a1", 1),)), polled) == dispatch.usable_backends(
        dataplane((("a1", 1),)), polled
    )


def test_a_route_is_usable_while_a_server_the_data_plane_keeps_is_up_with_weight() -> None:
    running = dataplane((("a1", 1), ("a2", 0)))
    states = {**OTHERS_UP, ("a", "a1"): "UP", ("a", "a2"): "UP", ("b", "b1"): "UP"}
    assert dispatch.usable_backends(running, states) == {"a", "b", "x", "y"}
    assert dispatch.usable_backends(running, {**states, ("a", "a1"): "DOWN"}) == {"b", "x", "y"}
    assert dispatch.usable_backends(running, {**states, ("a", "a1"): "MAINT"}) == {"b", "x", "y"}
    # A server HAProxy has not reported yet does not count, unless its backend is new to
    # HAProxy (none of its servers reported): loaded servers start up.
    seen = {**OTHERS_UP, ("b", "b1"): "UP"}
    assert dispatch.usable_backends(running, {**seen, ("a", "a2"): "UP"}) == {"b", "x", "y"}
    assert dispatch.usable_backends(running, seen) == {"a", "b", "x", "y"}


def test_usable_is_a_weighed_server_up_or_nothing_reported_yet_for_every_small_backend() -> None:
    """Every backend of up to three servers, each weighing 0 or 1 and reported UP, DOWN,
    MAINT or not yet, against the rule spelled out."""
    for size in range(4):
        for weights in itertools.product((0, 1), repeat=size):
            for reported in itertools.product((None, "UP", "DOWN", "MAINT"), repeat=size):
                servers = [(f"s{i}", w) for i, w in enumerate(weights)]
                states = {("r", s): r for (s, _), r in zip(servers, reported, strict=True) if r}
                weighed = [r for (_, w), r in zip(servers, reported, strict=True) if w > 0]
                expected = "UP" in weighed or (bool(weighed) and not states)
                found = dispatch.usable_among([backend("r", *servers)], states)
                assert (found == {"r"}) == expected, (weights, reported)


def test_a_route_losing_its_last_server_leaves_the_map_before_the_server_goes() -> None:
    states = {**OTHERS_UP, ("a", "a1"): "UP", ("b", "b1"): "UP"}
    running = effective(dataplane((("a1", 1),)), states)
    compiled = dataplane(())  # the instance was deregistered
    actions = plan(running, compiled)
    assert isinstance(actions[-1], RemoveServer)
    desired = effective(compiled, states)
    ordered = availability.with_dispatch_actions(actions, running, desired)
    kinds = [type(a) for a in ordered]
    assert kinds == [SetMapEntries, RemoveServer]
    (set_entries,) = [a for a in ordered if isinstance(a, SetMapEntries)]
    assert {v for _, v in set_entries.entries} == {"b"} and len(set_entries.entries) == 50


def test_every_route_down_deletes_the_gateways_entries_and_keeps_the_others() -> None:
    states = {**OTHERS_UP, ("a", "a1"): "UP", ("b", "b1"): "UP"}
    running = effective(dataplane((("a1", 1),)), states)
    down = effective(running, {**states, ("b", "b1"): "DOWN"})
    actions = availability.dispatch_actions(running, down)
    assert [type(a) for a in actions] == [SetMapEntries, DeleteMapEntries]
    (deleted,) = [a for a in actions if isinstance(a, DeleteMapEntries)]
    assert deleted.keys == ("g2",)
    # And back, once b is seen up again.
    up = effective(down, states)
    assert up.maps == running.maps
    assert effective(up, states) is up  # nothing changed: the same data plane


def test_many_changes_swap_the_map_instead() -> None:
    running = dataplane((("a1", 1),))
    down = {(b.name, server.name): "DOWN" for b in running.backends for server in b.servers}
    nothing = effective(running, down)
    swapped, deleted = availability.dispatch_actions(running, nothing)
    assert isinstance(swapped, ReplaceMap) and swapped.entries == ()
    # lone.map had one entry: deleting it is less than swapping.
    assert isinstance(deleted, DeleteMapEntries) and deleted.keys == ("g2",)


def test_haproxy_state_lines_are_read_as_server_statuses() -> None:
    from meshgate.agent.state_log import parse

    be = "default.shop.web.1a2b3c"
    down = (
        f"Server {be}/i1 is DOWN, reason: Layer4 connection problem, info: "
        '"Connection refused", check duration: 0ms. 0 active and 0 backup servers left.'
    )
    assert parse(down.encode()) == ((be, "i1"), "DOWN")
    up = f"Server {be}/i1 is UP, reason: Layer7 check passed, check duration: 1ms."
    assert parse(up.encode()) == ((be, "i1"), "UP")
    tracked = f"Server {be}/i1 is DOWN via mg_checks.a1/s0. 0 active and 0 backup servers left."
    assert parse(tracked.encode()) == ((be, "i1"), "DOWN")
    maint = f"Server {be}/i1 is going DOWN for maintenance. 0 active servers left."
    assert parse(maint.encode()) == ((be, "i1"), "MAINT")
    checker = ("mg_checks.0f16617d4f", "127.0.0.1_8080.64938bd5")
    lent = f"Server {'/'.join(checker)} is UP/READY (leaving forced maintenance)."
    assert parse(lent.encode()) == (checker, "UP")
    assert parse(b"backend default.shop.web.1a2b3c has no server available!") is None
    assert parse(b'127.0.0.1 "GET / HTTP/1.1" 200') is None


def test_layouts_lay_the_maps_out_again_only_when_what_they_come_from_changes() -> None:
    running = dataplane((("a1", 1),))
    layouts = dispatch.Layouts()
    every = frozenset({"a", "b", "x", "y"})
    first = layouts.maps(running, every)
    assert first == dispatch.dispatch_maps(
        running.frontends, running.map_named(ir.WEIGHTS_MAP).entries
    )  # type: ignore[union-attr]
    # Other backends, the same frontends, weights and usable routes: the same maps.
    other_servers = dataclasses.replace(running, frontends=tuple(running.frontends))
    assert layouts.maps(other_servers, frozenset(every)) is first
    without_b = layouts.maps(running, frozenset({"a", "x", "y"}))
    assert without_b is not first and without_b != first


def test_a_gateways_redrawn_slots_are_set_not_swapped() -> None:
    # Every slot of a two-route gateway changes owner: one session of entries set (a swap
    # would be three round trips through the master).
    old = dispatch.dispatch_maps(dataplane((("a1", 1),)).frontends, (("a", "100"), ("b", "0")))[0]
    new = dispatch.dispatch_maps(dataplane((("a1", 1),)).frontends, (("a", "0"), ("b", "100")))[0]
    (action,) = dispatch_changes(old, new)
    assert isinstance(action, SetMapEntries) and len(action.entries) == 100


def test_layouts_lay_out_again_only_the_gateways_whose_routes_changed() -> None:
    frontends = dataplane((("a1", 1),)).frontends
    layouts = dispatch.Layouts()
    every = frozenset({"a", "b", "x", "y"})
    for step in range(50):  # weights and usable routes that change every time
        weights = (("a", str(step)), ("b", str(100 - step)), ("x", "50"), ("y", "50"))
        usable = every - {"b"} if step % 3 == 0 else every
        laid_out = layouts.lay_out(frontends, weights, usable)
        assert laid_out == dispatch.dispatch_maps(frontends, weights, usable.__contains__)
    assert len(layouts._parts) == 2 + len(OTHERS)  # a part a gateway, no more
    # Only the first gateway's weights changed: the other's entries are the very same objects.
    before = layouts.lay_out(frontends, weights, every)
    other = {e for e in before[0].entries if e[1] in ("x", "y")}
    weights = (("a", "70"), ("b", "30"), ("x", "50"), ("y", "50"))
    after = layouts.lay_out(frontends, weights, every)
    assert after == dispatch.dispatch_maps(frontends, weights)
    assert {id(e) for e in after[0].entries if e[1] in ("x", "y")} == {id(e) for e in other}
    # Nothing that matters changed: the same maps.
    assert layouts.lay_out(frontends, weights, frozenset(every)) is after


def test_the_weights_of_a_few_routes_are_found_by_bisection_or_else_read_whole() -> None:
    ordered = tuple((f"b{n:03d}", str(n)) for n in range(200))
    assert dispatch._weights_of(ordered, ["b007", "b150"]) == {"b007": "7", "b150": "150"}
    # Not in backend order, or a backend without an entry: every entry is read.
    shuffled = ordered[100:] + ordered[:100]
    assert dispatch._weights_of(shuffled, ["b007"])["b007"] == "7"
    assert "missing" not in dispatch._weights_of(ordered, ["missing", "b001"])
