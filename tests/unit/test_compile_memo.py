"""Compiling with a memo of earlier passes gives exactly what compiling from scratch gives.

Each test walks one memo through a series of states, each differing from the last in one input
a gateway's compiled form depends on, and compares with a compile that has no memo."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from meshgate.compiler import DesiredState, compile_state, ir
from meshgate.compiler.build import CompileMemo
from meshgate.model import Certificate, Gateway, Instance, Resource, Service, validate_resource
from meshgate.plan import SetMapEntries, plan
from tests.tlscerts import Authority

SETTINGS = ir.Settings(run_dir="/run/mg")
CA = Authority()


def resource(**data: Any) -> Resource:
    return validate_resource(data)


def state(*resources: Resource, **registered: Sequence[Instance]) -> DesiredState:
    return DesiredState(
        gateways=[r for r in resources if isinstance(r, Gateway)],
        services=[r for r in resources if isinstance(r, Service)],
        certificates=[r for r in resources if isinstance(r, Certificate)],
        registered={("default", name): list(found) for name, found in registered.items()},
    )


def walk(*states: DesiredState) -> CompileMemo:
    """Compile each state with one memo, checking each against a compile without it."""
    memo = CompileMemo()
    for number, desired in enumerate(states):
        with_memo = compile_state(desired, SETTINGS, memo)
        fresh = compile_state(desired, SETTINGS)
        assert with_memo == fresh, f"state {number} compiled differently with the memo"
    return memo


def svc(name: str = "api", *instances: str, **fields: Any) -> Resource:
    return resource(
        kind="service", name=name, instances=list(instances or ["10.0.0.1:80"]), **fields
    )


def gw(
    name: str, port: int = 9000, routes: dict[str, Any] | None = None, **fields: Any
) -> Resource:
    return resource(name=name, port=port, routes=routes or {"api": {}}, **fields)


def test_a_changed_service_recompiles_the_gateways_that_route_to_it() -> None:
    memo = walk(
        state(svc("api", "10.0.0.1:80"), gw("a"), gw("b", 9001, {"[10.0.0.9:80]": {}})),
        state(svc("api", "10.0.0.2:80"), gw("a"), gw("b", 9001, {"[10.0.0.9:80]": {}})),
    )
    # The second pass reused gateway b and its port, and recompiled gateway a only.
    assert memo.gateways.hits == 1


def test_registered_instances_are_an_input() -> None:
    one = [Instance(address="10.0.0.5", port=80, id="r1")]
    two = [*one, Instance(address="10.0.0.6", port=80, id="r2")]
    base = (svc(), gw("a"))
    walk(state(*base), state(*base, api=one), state(*base, api=two), state(*base))


def test_a_weight_change_reuses_every_other_gateway_and_sets_only_changed_entries() -> None:
    others = [gw(f"g{n}", 9100 + n) for n in range(20)]
    before = state(
        svc(), svc("web"), *others, gw("c", routes={"api": {"weight": 90}, "web": {"weight": 10}})
    )
    after = state(
        svc(), svc("web"), *others, gw("c", routes={"api": {"weight": 10}, "web": {"weight": 90}})
    )
    memo = CompileMemo()
    running = compile_state(before, SETTINGS, memo).dataplane
    hits = memo.gateways.hits
    desired = compile_state(after, SETTINGS, memo).dataplane
    assert memo.gateways.hits - hits == 20
    assert desired == compile_state(after, SETTINGS).dataplane
    actions = plan(running, desired)
    # 80 of the 100 slots change owner: they are set (in one session, see the driver); the
    # weight that grows is set before the one that shrinks.
    assert [(type(a), a.name, len(a.entries)) for a in actions] == [
        (SetMapEntries, ir.DISPATCH_MAP, 80),
        (SetMapEntries, ir.WEIGHTS_MAP, 1),
        (SetMapEntries, ir.WEIGHTS_MAP, 1),
    ]
    assert [a.entries[0][1] for a in actions[1:]] == ["90", "10"]


def test_chained_gateways_follow_the_gateway_they_route_to() -> None:
    edge = gw("edge", 9000, {"inner": {}})
    walk(
        state(edge, gw("inner", 9001, {"[10.0.0.9:80]": {}})),
        state(edge, gw("inner", 9002, {"[10.0.0.9:80]": {}})),  # moved: the hop follows
        state(edge),  # gone: the route resolves to nothing
        state(edge, gw("inner", 9002, {"[10.0.0.9:80]": {}})),
        # The inner gateway is left out for a port clash: the hop to it resolves to nothing.
        state(
            gw("first", 9002, {"[10.0.0.8:80]": {}}), edge, gw("inner", 9002, {"[10.0.0.9:80]": {}})
        ),
    )


def test_ports_virtual_hosts_and_membership_changes() -> None:
    walk(
        state(
            svc(),
            gw("a", virtual_hosts=["a.example.com"]),
            gw("b", virtual_hosts=["b.example.com"]),
        ),
        state(
            svc(),
            gw("a", virtual_hosts=["a.example.com", "*.a.example.com"]),
            gw("b", virtual_hosts=["b.example.com"]),
        ),
        state(svc(), gw("a", virtual_hosts=["a.example.com"])),
        state(
            svc(),
            gw("a", 9005, virtual_hosts=["a.example.com"]),
            gw("b", virtual_hosts=["b.example.com"]),
        ),
        state(svc()),
        state(svc(), gw("a")),
    )


def test_certificates_are_an_input_of_their_port() -> None:
    first = resource(**CA.issue("a.example.com").document("site"))
    second = resource(**CA.issue("a.example.com", "www.a.example.com").document("site"))
    site = gw("a", 8443, {"[10.0.0.9:80]": {}}, tls={"certificates": ["site"]})
    walk(state(first, site), state(second, site), state(site), state(first, site))


def test_a_recompiled_gateway_keeps_its_slots_while_its_weights_are_the_same() -> None:
    """A registration recompiles every gateway routing to the service; their 100 slot entries
    are the ones kept from before, not equal copies, until a weight changes."""
    routes = {"api": {"weight": 70}, "web": {"weight": 30}}
    one = [Instance(address="10.0.0.5", port=80, id="r1")]
    base = (svc(), svc("web"), gw("a", routes=routes))
    memo = walk(state(*base))
    before = memo.last.dataplane.map_named(ir.DISPATCH_MAP)  # type: ignore[union-attr]
    assert before is not None and len(before.entries) == 100
    with_memo = compile_state(state(*base, api=one), SETTINGS, memo)
    assert with_memo == compile_state(state(*base, api=one), SETTINGS)
    after = with_memo.dataplane.map_named(ir.DISPATCH_MAP)
    assert after is not None
    assert all(x is y for x, y in zip(before.entries, after.entries, strict=True))
    changed = {"api": {"weight": 60}, "web": {"weight": 40}}
    compile_state(state(svc(), svc("web"), gw("a", routes=changed), api=one), SETTINGS, memo)
    again = memo.last.dataplane.map_named(ir.DISPATCH_MAP)  # type: ignore[union-attr]
    assert again is not None and again.entries != before.entries
