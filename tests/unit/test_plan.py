"""Plan transcripts: given the running data plane and the desired one, these actions."""

from __future__ import annotations

from typing import Any

from meshgate.compiler import DesiredState, compile_state, ir
from meshgate.model import Gateway, Instance, Resource, Service, validate_resource
from meshgate.plan import (
    ENTRIES_PER_PAYLOAD,
    Action,
    AddServer,
    Reload,
    RemoveServer,
    ReplaceMap,
    SetMapEntries,
    SetServerWeight,
    map_changes,
    plan,
)

SETTINGS = ir.Settings(run_dir="/run/mg")


def resource(**data: Any) -> Resource:
    return validate_resource(data)


def dataplane(
    *resources: Resource, settings: ir.Settings = SETTINGS, **registered: Any
) -> ir.DataPlane:
    state = DesiredState(
        gateways=[r for r in resources if isinstance(r, Gateway)],
        services=[r for r in resources if isinstance(r, Service)],
        registered={("default", name): instances for name, instances in registered.items()},
    )
    return compile_state(state, settings).dataplane


def sava(weights: tuple[Any, Any] = ("90%", "10%"), **fields: Any) -> Resource:
    data = {
        "name": "sava",
        "port": 9070,
        "virtual_hosts": ["sava.example.com"],
        "routes": {
            "sava:1.0": {"weight": weights[0]},
            "sava:1.1": {"weight": weights[1], "condition": "has cookie beta"},
        },
    }
    return resource(**{**data, **fields})


SERVICES = (
    resource(kind="service", name="sava:1.0", instances=["127.0.0.1:8081"]),
    resource(kind="service", name="sava:1.1", instances=["127.0.0.1:8091"]),
)
RUNNING = dataplane(sava(), *SERVICES)


def gid(dataplane: ir.DataPlane) -> str:
    (gateway,) = dataplane.frontends[0].gateways
    return gateway.gateway_id


def test_nothing_running_means_a_reload() -> None:
    assert plan(None, RUNNING) == [Reload("first configuration")]


def test_nothing_changed_means_nothing_to_do() -> None:
    assert plan(RUNNING, dataplane(sava(), *SERVICES)) == []


def map_actions(actions: list[Action]) -> list[tuple[str, str, tuple[tuple[str, str], ...]]]:
    return [
        (type(a).__name__, a.name, a.entries)
        for a in actions
        if isinstance(a, ReplaceMap | SetMapEntries)
    ]


def test_only_weights_changed_sets_the_changed_weights_and_swaps_the_small_slots_map() -> None:
    desired = dataplane(sava(("50%", "50%")), *SERVICES)
    actions = plan(RUNNING, desired)
    v0, v1 = (backend_named(desired, s).name for s in ("sava:1.0", "sava:1.1"))
    slots = desired.map_named(ir.SLOTS_MAP)
    assert slots is not None
    # 90/10 -> 50/50: 40 slots change hands, more commands than swapping the 100 entries; the
    # weight that grows is set first, so the routes never weigh 0 together.
    assert map_actions(actions) == [
        ("ReplaceMap", ir.SLOTS_MAP, slots.entries),
        ("SetMapEntries", ir.WEIGHTS_MAP, ((v1, "50"),)),
        ("SetMapEntries", ir.WEIGHTS_MAP, ((v0, "50"),)),
    ]
    assert len(actions) == 3
    assert sum(backend == v1 for _, backend in slots.entries) == 50
    assert gid(desired) in slots.entries[0][0]


def test_implicit_weights_changing_set_the_weights_too() -> None:
    running = dataplane(sava((None, None)), *SERVICES)
    desired = dataplane(sava((None, "20%")), *SERVICES)
    weights = [a.entries for a in plan(running, desired) if a.name == ir.WEIGHTS_MAP]
    assert [[value for _, value in entries] for entries in weights] == [["80"], ["20"]]


def test_a_map_whose_keys_change_is_swapped_whole() -> None:
    old = ir.MapFile("m.map", (("a", "1"), ("b", "2")))
    new = ir.MapFile("m.map", (("a", "1"), ("c", "2")))
    assert map_changes(old, new) == [ReplaceMap("m.map", new.entries)]


def test_values_are_set_one_by_one_while_that_takes_fewer_commands_than_a_swap() -> None:
    keys = [f"k{n}" for n in range(10 * ENTRIES_PER_PAYLOAD)]
    old = ir.MapFile("m.map", tuple((k, "x") for k in keys))
    new = ir.MapFile("m.map", tuple((k, "y") for k in keys))
    assert map_changes(old, new) == [ReplaceMap("m.map", new.entries)]
    few = ir.MapFile("m.map", (*new.entries[:12], *old.entries[12:]))
    assert map_changes(old, few) == [SetMapEntries("m.map", few.entries[:12])]


def test_a_virtual_host_alias_replaces_the_host_map_only() -> None:
    desired = dataplane(sava(virtual_hosts=["sava.example.com", "www.sava.example.com"]), *SERVICES)
    hosts = desired.map_named("port_9070.hosts.map")
    assert hosts is not None
    assert plan(RUNNING, desired) == [ReplaceMap("port_9070.hosts.map", hosts.entries)]
    assert [host for host, _ in hosts.entries] == ["sava.example.com", "www.sava.example.com"]


def test_a_wildcard_alias_replaces_the_wildcard_map_only() -> None:
    desired = dataplane(sava(virtual_hosts=["sava.example.com", "*.sava.example.com"]), *SERVICES)
    wildcards = desired.map_named("port_9070.wildcards.map")
    assert wildcards is not None
    assert plan(RUNNING, desired) == [ReplaceMap("port_9070.wildcards.map", wildcards.entries)]


def test_weights_and_aliases_together_change_the_maps_in_name_order() -> None:
    desired = dataplane(
        sava(("0%", "100%"), virtual_hosts=["sava.example.com", "sava.example.org"]), *SERVICES
    )
    assert [(kind, name) for kind, name, _ in map_actions(plan(RUNNING, desired))] == [
        ("ReplaceMap", "port_9070.hosts.map"),
        ("ReplaceMap", ir.SLOTS_MAP),
        ("SetMapEntries", ir.WEIGHTS_MAP),
        ("SetMapEntries", ir.WEIGHTS_MAP),
    ]


def test_first_virtual_host_of_a_lone_gateway_reloads() -> None:
    running = dataplane(sava(virtual_hosts=[]), *SERVICES)
    assert plan(running, RUNNING) == [Reload("frontends changed")]


def test_a_new_route_reloads() -> None:
    desired = dataplane(
        resource(
            name="sava",
            port=9070,
            virtual_hosts=["sava.example.com"],
            routes={
                "sava:1.0": {"weight": 80},
                "sava:1.1": {"weight": 10, "condition": "has cookie beta"},
                "[127.0.0.1:8099]": {"weight": 10},
            },
        ),
        *SERVICES,
    )
    assert plan(RUNNING, desired) == [Reload("frontends changed")]


def test_a_new_gateway_reloads() -> None:
    desired = dataplane(
        sava(), resource(name="other", port=9080, routes={"sava:1.0": {}}), *SERVICES
    )
    assert plan(RUNNING, desired) == [Reload("frontends changed")]


def test_a_changed_condition_reloads() -> None:
    desired = dataplane(
        sava(
            routes={
                "sava:1.0": {"weight": 90},
                "sava:1.1": {"weight": 10, "condition": "has cookie b"},
            }
        ),
        *SERVICES,
    )
    assert plan(RUNNING, desired) == [Reload("frontends changed")]


def backend_named(dataplane_: ir.DataPlane, route: str) -> ir.Backend:
    return next(b for b in dataplane_.backends if b.route.route == route)


def test_a_new_instance_is_added_at_run_time() -> None:
    extra = Instance(address="127.0.0.1", port=8082)
    desired = dataplane(sava(), *SERVICES, **{"sava:1.0": [extra]})
    backend = backend_named(desired, "sava:1.0")
    added = next(s for s in backend.servers if s.port == 8082)
    assert plan(RUNNING, desired) == [AddServer(backend.name, added, backend.health)]


def test_a_departed_instance_is_drained_and_removed() -> None:
    running = dataplane(
        sava(), *SERVICES, **{"sava:1.0": [Instance(address="127.0.0.1", port=8082)]}
    )
    backend = backend_named(running, "sava:1.0")
    assert plan(running, RUNNING) == [RemoveServer(backend.name, "127.0.0.1:8082")]


def test_an_instance_weight_is_set_at_run_time() -> None:
    heavier = resource(
        kind="service",
        name="sava:1.0",
        instances=[{"address": "127.0.0.1", "port": 8081, "weight": 7}],
    )
    desired = dataplane(sava(), heavier, SERVICES[1])
    backend = backend_named(desired, "sava:1.0")
    assert plan(RUNNING, desired) == [SetServerWeight(backend.name, "127.0.0.1:8081", 7)]


def test_a_moved_instance_is_replaced_under_the_same_name() -> None:
    moved = resource(
        kind="service",
        name="sava:1.0",
        instances=[{"address": "127.0.0.2", "port": 8081, "id": "a"}],
    )
    before = resource(
        kind="service",
        name="sava:1.0",
        instances=[{"address": "127.0.0.1", "port": 8081, "id": "a"}],
    )
    running = dataplane(sava(), before, SERVICES[1])
    desired = dataplane(sava(), moved, SERVICES[1])
    backend = backend_named(desired, "sava:1.0")
    assert plan(running, desired) == [
        RemoveServer(backend.name, "a"),
        AddServer(backend.name, backend.servers[0], backend.health),
    ]


def test_additions_come_before_maps_and_removals_last() -> None:
    two = resource(kind="service", name="sava:1.0", instances=["127.0.0.1:8081", "127.0.0.1:8083"])
    running = dataplane(sava(), two, SERVICES[1])
    swapped = resource(
        kind="service", name="sava:1.0", instances=["127.0.0.1:8083", "127.0.0.1:8084"]
    )
    desired = dataplane(sava(("50%", "50%")), swapped, SERVICES[1])
    backend = backend_named(desired, "sava:1.0")
    new_server = next(s for s in backend.servers if s.port == 8084)
    actions = plan(running, desired)
    assert actions[0] == AddServer(backend.name, new_server, backend.health)
    assert [type(a) for a in actions[1:-1]] == [ReplaceMap, SetMapEntries, SetMapEntries]
    assert actions[-1] == RemoveServer(backend.name, "127.0.0.1:8081")


def test_a_server_with_a_persistence_cookie_needs_a_reload() -> None:
    running = dataplane(sava(sticky="instance"), *SERVICES)
    desired = dataplane(
        sava(sticky="instance"),
        *SERVICES,
        **{"sava:1.0": [Instance(address="127.0.0.1", port=8082)]},
    )
    assert plan(running, desired) == [
        Reload("a server with a persistence cookie cannot be added at run time")
    ]


def test_a_changed_health_check_reloads() -> None:
    checked = resource(
        kind="service",
        name="sava:1.0",
        instances=["127.0.0.1:8081"],
        health_check={"type": "http", "path": "/health"},
    )
    desired = dataplane(sava(), checked, SERVICES[1])
    backend = backend_named(desired, "sava:1.0")
    assert plan(RUNNING, desired) == [Reload(f"backend {backend.name} changed")]


def test_changed_settings_reload() -> None:
    desired = dataplane(sava(), *SERVICES, settings=ir.Settings(run_dir="/run/other"))
    assert plan(RUNNING, desired) == [Reload("data-plane settings changed")]
    longer = ir.Settings(run_dir="/run/mg", hard_stop_after_ms=60_000)
    assert plan(RUNNING, dataplane(sava(), *SERVICES, settings=longer)) == [
        Reload("data-plane settings changed")
    ]


def test_removing_everything_reloads() -> None:
    assert plan(RUNNING, dataplane()) == [Reload("frontends changed")]


def test_plans_are_pure() -> None:
    desired = dataplane(sava(("50%", "50%")), *SERVICES)
    assert plan(RUNNING, desired) == plan(RUNNING, desired)
    assert plan(RUNNING, RUNNING) == []
