"""A compile that patches the last result gives exactly what a full compile gives.

The states here share every unchanged resource object with the state before, as the store
loader's states do: that is what tells the compiler which gateways changed."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from meshgate.compiler import DesiredState, compile_state, ir
from meshgate.compiler.build import CompileMemo
from meshgate.compiler.locality import NodeIdentity
from meshgate.model import Gateway, Instance, Service, validate_resource

SETTINGS = ir.Settings(run_dir="/run/mg")


def resource(**data: Any) -> Any:
    return validate_resource(data)


def gw(name: str, weights: tuple[int, int] = (100, 0), **fields: Any) -> Gateway:
    fields.setdefault("virtual_hosts", [f"{name}.example.com"])
    routes = fields.pop("routes", None) or {
        "[10.0.0.1:80]": {"weight": weights[0]},
        "[10.0.0.2:80]": {"weight": weights[1]},
    }
    found: Gateway = resource(name=name, port=fields.pop("port", 9000), routes=routes, **fields)
    return found


def svc(name: str, *instances: str) -> Service:
    found: Service = resource(kind="service", name=name, instances=list(instances))
    return found


class Walk:
    """One memo through successive states, each checked against a compile without it."""

    def __init__(self) -> None:
        self.memo = CompileMemo()

    def compile(
        self,
        gateways: Sequence[Gateway],
        services: Sequence[Service] = (),
        registered: dict[tuple[str, str], list[Instance]] | None = None,
    ) -> Any:
        desired = DesiredState(
            gateways=list(gateways), services=list(services), registered=registered or {}
        )
        before = self.memo.patched
        compiled = compile_state(desired, SETTINGS, self.memo)
        assert compiled == compile_state(desired, SETTINGS)
        self.was_patched = self.memo.patched > before
        return compiled


def backend(compiled: Any, gateway: str) -> list[ir.Backend]:
    return [b for b in compiled.dataplane.backends if b.route.gateway == gateway]


def test_a_changed_gateway_is_recompiled_and_every_other_reused() -> None:
    gateways = [gw(f"g{n}") for n in range(50)]
    walk = Walk()
    first = walk.compile(gateways)
    assert not walk.was_patched
    gateways[7] = gw("g7", (30, 70))
    second = walk.compile(gateways)
    assert walk.was_patched
    assert backend(second, "g8") == backend(first, "g8")
    assert all(a is b for a, b in zip(backend(second, "g8"), backend(first, "g8"), strict=True))
    assert second.gateways[("default", "g8")] is first.gateways[("default", "g8")]
    assert second.gateways[("default", "g7")] is not first.gateways[("default", "g7")]
    weights = dict(second.dataplane.map_named(ir.WEIGHTS_MAP).entries)
    assert sorted(v for k, v in weights.items() if k.startswith("default.g7.")) == ["30", "70"]
    # Nothing changed: the same result again.
    assert walk.compile(gateways).dataplane is second.dataplane


def test_a_deleted_gateway_is_gone_and_an_added_one_there() -> None:
    gateways = [gw(f"g{n}") for n in range(10)]
    walk = Walk()
    walk.compile(gateways)
    del gateways[3]
    compiled = walk.compile(gateways)
    assert not walk.was_patched
    assert ("default", "g3") not in compiled.gateways
    assert not backend(compiled, "g3")
    gateways.append(gw("g3", (50, 50)))
    compiled = walk.compile(gateways)
    assert ("default", "g3") in compiled.gateways
    gateways[-1] = gw("g3", (60, 40))
    walk.compile(gateways)
    assert walk.was_patched


def test_changes_beyond_a_gateways_own_part_compile_in_full() -> None:
    gateways = [gw(f"g{n}") for n in range(10)]
    walk = Walk()
    walk.compile(gateways)
    for change in (
        gw("g1", virtual_hosts=["other.example.com"]),  # the port's host maps
        gw("g1", port=9001),  # a port of its own
        gw("g1", routes={"[10.0.0.3:80]": {}}),  # a backend of another name
        gw("g1", routes={"[10.0.0.1:80]": {"weight": 100, "condition": "has header X"},
                         "[10.0.0.2:80]": {"weight": 0}}),  # the frontend's rules
        gw("g1", policies={"allow": ["10.0.0.0/8"]}),  # policy maps
    ):  # fmt: skip
        gateways[1] = change
        walk.compile(gateways)
        assert not walk.was_patched, change
        gateways[1] = gw("g1", (40, 60))
        walk.compile(gateways)


def test_a_gateway_left_out_is_compiled_in_full_when_it_changes() -> None:
    others = [gw(f"g{n}") for n in range(6)]
    gateways = [gw("a"), gw("b", virtual_hosts=["a.example.com"]), *others]  # b clashes with a
    walk = Walk()
    compiled = walk.compile(gateways)
    assert compiled.gateways[("default", "b")].errors
    gateways[1] = gw("b", (20, 80), virtual_hosts=["a.example.com"])
    walk.compile(gateways)
    assert not walk.was_patched
    gateways[0] = gw("a", (20, 80))
    walk.compile(gateways)
    assert walk.was_patched


def test_services_instances_and_chains() -> None:
    api = svc("api", "10.0.1.1:80")
    inner = gw("inner", port=9001, routes={"api": {}}, virtual_hosts=[])
    edge = gw("edge", routes={"inner": {"weight": 100}, "[10.0.0.2:80]": {"weight": 0}})
    others = [gw(f"g{n}") for n in range(6)]
    walk = Walk()
    walk.compile([inner, edge, *others], [api])
    edge = gw("edge", routes={"inner": {"weight": 50}, "[10.0.0.2:80]": {"weight": 50}})
    walk.compile([inner, edge, *others], [api])
    assert walk.was_patched
    # The gateway chained to changes its routes: the edge reads only where it listens.
    inner = gw("inner", port=9001, routes={"api": {}, "[10.0.0.5:80]": {}}, virtual_hosts=[])
    walk.compile([inner, edge, *others], [api])
    assert not walk.was_patched  # a new backend
    registered = {("default", "api"): [Instance(address="10.0.1.2", port=80, id="r")]}
    walk.compile([inner, edge, *others], [api], registered)
    assert walk.was_patched  # new servers for the one gateway that routes to api
    edge = gw("edge", routes={"inner": {"weight": 10}, "[10.0.0.2:80]": {"weight": 90}})
    walk.compile([inner, edge, *others], [api], dict(registered))  # equal, not the same object
    assert walk.was_patched
    walk.compile([inner, edge, *others], [svc("api", "10.0.1.9:80")], registered)
    assert not walk.was_patched


def test_random_weight_changes_match_a_full_compile() -> None:
    chooser = random.Random(7)
    gateways = [gw(f"g{n}") for n in range(40)]
    walk = Walk()
    walk.compile(gateways)
    patched = 0
    for _ in range(60):
        for index in chooser.sample(range(len(gateways)), chooser.choice((1, 1, 2, 5))):
            first = chooser.choice((0, 25, 50, 100))
            gateways[index] = gw(f"g{index}", (first, 100 - first))
        walk.compile(gateways)
        patched += walk.was_patched
    assert patched == 60


def inst(address: str, instance_id: str, **fields: Any) -> Instance:
    return Instance(address=address, port=80, id=instance_id, **fields)


def test_a_registration_patches_the_gateways_of_its_service_and_no_other() -> None:
    api, other = svc("api", "10.0.1.1:80"), svc("other", "10.0.2.1:80")
    users = [gw(f"u{n}", routes={"api": {"weight": 100}, "other": {"weight": 0}}) for n in range(5)]
    unrelated = [gw(f"x{n}", routes={"other": {}}) for n in range(20)]
    gateways, services = [*users, *unrelated], [api, other]
    walk = Walk()
    before = walk.compile(gateways, services)
    key = ("default", "api")
    for registered in (
        {key: [inst("10.0.1.2", "r1")]},
        {key: [inst("10.0.1.2", "r1"), inst("10.0.1.3", "r2")]},
        {key: [inst("10.0.1.3", "r2")]},
        {key: [inst("10.0.1.1", "dup-of-a-listed-one"), inst("10.0.1.3", "r2")]},
        {},
    ):
        after = walk.compile(gateways, services, registered)
        assert walk.was_patched
        old_backends = {b.name: b for b in before.dataplane.backends}
        for backend in after.dataplane.backends:
            if backend.route.gateway.startswith("x"):
                assert backend is old_backends[backend.name]  # not even looked at
        for user in users:
            status = after.gateways[("default", user.name)].routes["api"]
            assert status.instances == 1 + len(registered.get(key, []))
        before = after


def test_a_registration_with_a_gateway_change_and_sticky_instances_matches_a_full_compile() -> None:
    api = svc("api", "10.0.1.1:80")
    sticky = resource(
        name="s", port=9000, virtual_hosts=["s.example.com"], sticky="instance",
        routes={"api": {"weight": 100}, "[10.0.0.2:80]": {"weight": 0}},
    )  # fmt: skip
    plain = gw("p", routes={"api": {"weight": 100}, "[10.0.0.2:80]": {"weight": 0}})
    others = [gw(f"g{n}") for n in range(6)]
    walk = Walk()
    walk.compile([sticky, plain, *others], [api])
    registered = {("default", "api"): [inst("10.0.1.2", "r1")]}
    plain = gw("p", routes={"api": {"weight": 60}, "[10.0.0.2:80]": {"weight": 40}})
    compiled = walk.compile([sticky, plain, *others], [api], registered)
    assert walk.was_patched
    servers = {b.route.gateway: b.servers for b in compiled.dataplane.backends if "api" in b.name}
    assert [s.cookie is not None for s in servers["s"]] == [True, True]
    assert [s.cookie for s in servers["p"]] == [None, None]


def test_registered_instances_on_a_node_with_prefer_local_match_a_full_compile() -> None:
    api = svc("api", "10.0.1.1:80")
    local = resource(
        name="l", port=9000, virtual_hosts=["l.example.com"], locality="prefer-local",
        routes={"api": {}},
    )  # fmt: skip
    plain = gw("p", routes={"api": {}})
    here = NodeIdentity("n1", "10.0.9.1")
    memo = CompileMemo()

    def compile_with(registered: dict[tuple[str, str], list[Instance]]) -> Any:
        state = DesiredState([local, plain], [api], registered, node=here)
        compiled = compile_state(state, SETTINGS, memo)
        assert compiled == compile_state(state, SETTINGS)
        return compiled

    compile_with({})
    before = memo.patched
    compiled = compile_with(
        {("default", "api"): [inst("10.0.9.1", "mine"), inst("10.0.7.1", "theirs", node="n2")]}
    )
    assert memo.patched == before + 1
    backups = {b.route.gateway: [s.backup for s in b.servers] for b in compiled.dataplane.backends}
    assert backups == {"l": [True, False, True], "p": [False, False, False]}
