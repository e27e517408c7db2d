"""The service plane (SPEC §6): `plane: service` gateways on every node's loopback, instances
that name their node, `locality: prefer-local`, and what keeps namespaces apart on it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from meshgate.agent.desired import Placement
from meshgate.agent.driver import check_extras
from meshgate.api.admission import admit, admit_batch
from meshgate.compiler import DesiredState, compile_state, ir, render_files
from meshgate.compiler.locality import NodeIdentity, is_local, netns_here, node_of
from meshgate.errors import Problem, ValidationFailed
from meshgate.haproxy.commands import add_server
from meshgate.model import Gateway, Instance, Service, validate_resource
from meshgate.model.discovery import Registration
from meshgate.nodes.keys import node_key
from meshgate.nodes.locate import locate, node_addresses
from meshgate.plan import AddServer, RemoveServer, plan
from meshgate.store import Record
from tests.haproxy_check import check_files, haproxy_or_skip

SETTINGS = ir.Settings(run_dir="/run/mg")
HOST1 = NodeIdentity("host-1", "10.0.0.11")


def plane_gateway(**fields: Any) -> Gateway:
    data = {"name": "b", "port": 9100, "plane": "service", "routes": {"b1": {}}, **fields}
    resource = validate_resource(data)
    assert isinstance(resource, Gateway)
    return resource


def problems(data: dict[str, Any]) -> list[Problem]:
    with pytest.raises(ValidationFailed) as caught:
        validate_resource(data)
    return caught.value.problems


def paths(data: dict[str, Any]) -> list[str]:
    return [p.path for p in problems(data)]


# --- validation -------------------------------------------------------------------------


def test_plane_service_implies_loopback_and_every_node() -> None:
    gateway = plane_gateway()
    assert gateway.bind == "127.0.0.1"
    assert gateway.nodes is None
    assert gateway.on_service_plane
    # The stored document validates again as written.
    again = validate_resource(gateway.model_dump(exclude_defaults=True))
    assert again == gateway


def test_plane_service_accepts_another_loopback_bind() -> None:
    assert plane_gateway(bind="::1").bind == "::1"
    assert plane_gateway(bind="127.0.0.2").bind == "127.0.0.2"


def test_a_bad_plane_is_rejected_with_the_values_allowed() -> None:
    (problem,) = problems({"name": "b", "port": 9100, "plane": "mesh"})
    assert problem.path == "plane"
    assert "ingress" in problem.message and "service" in problem.message


def test_plane_service_with_a_bind_that_is_not_loopback_is_rejected() -> None:
    (problem,) = problems({"name": "b", "port": 9100, "plane": "service", "bind": "10.0.0.1"})
    assert problem.path == "bind"
    assert "loopback" in problem.message


def test_plane_service_with_nodes_is_rejected() -> None:
    data = {"name": "b", "port": 9100, "plane": "service", "nodes": {"zone": "a"}}
    (problem,) = problems(data)
    assert problem.path == "nodes"
    assert "every node" in problem.message


@pytest.mark.parametrize("where", ["gateway", "route"])
def test_a_bad_locality_is_rejected_with_its_path(where: str) -> None:
    data: dict[str, Any] = {"name": "b", "port": 9100, "routes": {"b1": {}}}
    if where == "gateway":
        data["locality"] = "nearest"
        expected = "locality"
    else:
        data["routes"]["b1"]["locality"] = "nearest"
        expected = "routes.b1.locality"
    (problem,) = problems(data)
    assert problem.path == expected
    assert "prefer-local" in problem.message


def test_route_locality_overrides_the_gateways() -> None:
    gateway = plane_gateway(locality="prefer-local", routes={"b1": {}, "b2": {"locality": "any"}})
    assert gateway.route_locality("b1") == "prefer-local"
    assert gateway.route_locality("b2") == "any"
    assert plane_gateway().route_locality("b1") == "any"


@pytest.mark.parametrize("bad", ["Host_2", "-a", "a" * 64, "a.b", ""])
def test_a_bad_node_name_on_an_instance_is_rejected(bad: str) -> None:
    data = {
        "kind": "service",
        "name": "b1",
        "instances": [{"address": "10.0.0.12", "port": 80, "node": bad}],
    }
    (problem,) = problems(data)
    assert problem.path == "instances.0.node"
    assert "node name" in problem.message


def test_a_registration_names_its_node_and_a_bad_one_is_rejected() -> None:
    assert Registration(address="10.0.0.12", port=80, node="host-2").node == "host-2"
    with pytest.raises(ValueError, match="not a node name"):
        Registration.model_validate({"address": "10.0.0.12", "port": 80, "node": "Host 2"})


# --- locality ---------------------------------------------------------------------------


def test_an_instance_is_on_the_node_it_names_else_the_node_of_its_address() -> None:
    named = Instance(address="10.0.0.12", port=80, node="host-3")
    by_address = Instance(address="10.0.0.11", port=80)
    loopback = Instance(address="127.0.0.1", port=80)
    unknown = Instance(address="10.0.0.99", port=80)
    assert node_of(named, HOST1) == "host-3"
    assert node_of(by_address, HOST1) == "host-1"
    assert node_of(loopback, HOST1) == "host-1"
    assert node_of(unknown, HOST1) is None
    assert [is_local(i, HOST1) for i in (named, by_address, loopback, unknown)] == [
        False,
        True,
        True,
        False,
    ]
    # On a single node every instance is local.
    assert is_local(unknown, None)


def test_a_network_namespace_is_entered_only_on_the_instances_own_node() -> None:
    mine = Instance(address="10.9.0.2", port=80, netns="blue", node="host-1")
    theirs = Instance(address="10.9.0.2", port=80, netns="blue", node="host-2")
    unnamed = Instance(address="10.9.0.2", port=80, netns="blue")
    assert netns_here(mine, HOST1) == "blue"
    assert netns_here(theirs, HOST1) is None
    assert netns_here(unnamed, HOST1) == "blue"
    assert netns_here(theirs, None) == "blue"


def services() -> list[Service]:
    made = []
    for name, hosts in (("b1", (11, 12, 13)), ("b2", (13,))):
        service = validate_resource(
            {
                "kind": "service",
                "name": name,
                "instances": [
                    {"address": f"10.0.0.{h}", "port": 8000, "id": f"h{h}"} for h in hosts
                ],
            }
        )
        assert isinstance(service, Service)
        made.append(service)
    return made


def compiled(gateway: Gateway, node: NodeIdentity | None) -> ir.DataPlane:
    state = DesiredState(gateways=[gateway], services=services(), node=node)
    return compile_state(state, SETTINGS).dataplane


def servers(dataplane: ir.DataPlane, route: str) -> dict[str, tuple[bool, bool]]:
    (backend,) = [b for b in dataplane.backends if b.route.route == route]
    return {s.name: (s.backup, s.fail_fast) for s in backend.servers}


def test_prefer_local_keeps_local_instances_active_and_others_as_backups() -> None:
    gateway = plane_gateway(
        locality="prefer-local", routes={"b1": {"weight": "90%"}, "b2": {"weight": "10%"}}
    )
    dataplane = compiled(gateway, HOST1)
    assert servers(dataplane, "b1") == {
        "h11": (False, True),
        "h12": (True, False),
        "h13": (True, False),
    }
    # No local instance: every one is a backup, all used at once.
    assert servers(dataplane, "b2") == {"h13": (True, False)}
    assert all(b.prefer_local for b in dataplane.backends)
    text = render_files(dataplane)["haproxy.cfg"]
    assert text.count("option allbackups") == 2
    assert "server h11 10.0.0.11:8000 " in text
    assert "observe layer4 error-limit 1 on-error mark-down" in text
    # The local instance checks itself (a passive check needs its own); the backups follow
    # the node's one check of each remote instance (compiler.checks).
    assert re.search(r"server h12 10\.0\.0\.12:8000 weight 100 track mg_checks\.\S+ backup", text)
    assert re.search(r"server \S+ 10\.0\.0\.12:8000 check inter 2000 rise 2 fall 3\n", text)


def test_locality_changes_no_weight_between_routes() -> None:
    weighted = {"b1": {"weight": "90%"}, "b2": {"weight": "10%"}}
    preferring = compiled(plane_gateway(locality="prefer-local", routes=weighted), HOST1)
    balancing = compiled(plane_gateway(routes=weighted), HOST1)
    assert preferring.map_named(ir.WEIGHTS_MAP) == balancing.map_named(ir.WEIGHTS_MAP)
    assert preferring.map_named(ir.SLOTS_MAP) == balancing.map_named(ir.SLOTS_MAP)
    assert preferring.frontends == balancing.frontends


def test_without_a_node_or_with_locality_any_there_are_no_backups() -> None:
    preferring = plane_gateway(locality="prefer-local")
    for dataplane in (compiled(preferring, None), compiled(plane_gateway(), HOST1)):
        assert set(servers(dataplane, "b1").values()) == {(False, False)}
        assert not any(b.prefer_local for b in dataplane.backends)


def test_a_service_plane_gateway_routes_exactly_as_an_ingress_one() -> None:
    routes = {
        "b1": {"weight": "90%", "condition": "has header x-canary"},
        "b2": {"weight": "10%"},
    }
    edge = validate_resource(
        {"name": "b", "port": 9100, "bind": "127.0.0.1", "sticky": "route", "routes": routes}
    )
    assert isinstance(edge, Gateway)
    plane = plane_gateway(sticky="route", routes=routes)
    assert compiled(edge, HOST1) == compiled(plane, HOST1)


def test_prefer_local_configuration_is_accepted_by_haproxy(tmp_path: Path) -> None:
    haproxy = haproxy_or_skip()
    gateway = plane_gateway(locality="prefer-local", routes={"b1": {}, "b2": {}})
    dataplane = compiled(gateway, HOST1)
    dataplane = dataclasses.replace(
        dataplane, settings=dataclasses.replace(dataplane.settings, run_dir=str(tmp_path))
    )
    accepted, output = check_files(haproxy, tmp_path, render_files(dataplane))
    assert accepted, output


def test_placement_leaves_a_service_plane_gateway_on_loopback() -> None:
    placement = Placement({"node": "host-1"}, "10.0.0.11")
    placed = placement.place(plane_gateway())
    assert placed is not None and placed.bind == "127.0.0.1"
    assert placement.node == HOST1
    edge = validate_resource({"name": "e", "port": 80, "routes": {"b1": {}}})
    assert isinstance(edge, Gateway)
    placed_edge = placement.place(edge)
    assert placed_edge is not None and placed_edge.bind == "10.0.0.11"


# --- run time ---------------------------------------------------------------------------


def test_an_instance_that_becomes_remote_is_added_again_as_a_backup() -> None:
    gateway = plane_gateway(locality="prefer-local", routes={"b1": {}})
    running = compiled(gateway, HOST1)
    moved = [
        s
        if s.name != "b1"
        else s.model_copy(
            update={"instances": [i.model_copy(update={"node": "host-2"}) for i in s.instances]}
        )
        for s in services()
    ]
    desired = compile_state(
        DesiredState(gateways=[gateway], services=moved, node=HOST1), SETTINGS
    ).dataplane
    actions = plan(running, desired)
    (backend,) = [b.name for b in desired.backends if b.route.route == "b1"]
    assert RemoveServer(backend, "h11") in actions
    (added,) = [a for a in actions if isinstance(a, AddServer)]
    assert added.server.name == "h11" and added.server.backup
    assert actions.index(RemoveServer(backend, "h11")) < actions.index(added)


def test_add_server_says_backup_and_a_local_server_fails_fast() -> None:
    command = add_server("be", "h12", "10.0.0.12", 80, check=True, backup=True)
    assert command.endswith(" check backup")
    health = ir.HealthCheck(type="tcp", interval_ms=2000, rise=2, fall=3)
    extras = check_extras(health, "http", fail_fast=True)
    assert extras is not None
    assert extras.words() == ["observe layer4", "error-limit 1", "on-error mark-down"]
    assert check_extras(health, "http") is None
    # A service's own passive check wins over the default.
    passive = dataclasses.replace(health, error_limit=5)
    extras = check_extras(passive, "http", fail_fast=True)
    assert extras is not None and "error-limit 5" in extras.words()


# --- namespaces -------------------------------------------------------------------------


def team_gateway(namespace: str, **fields: Any) -> dict[str, Any]:
    return {"name": "b", "port": 9100, "namespace": namespace, "routes": {"b1": {}}, **fields}


def stored(data: dict[str, Any]) -> Gateway:
    resource = validate_resource(data)
    assert isinstance(resource, Gateway)
    return resource


def test_namespaces_never_share_a_service_plane_port() -> None:
    theirs = stored(team_gateway("team-a", plane="service"))
    mine = team_gateway("team-b", plane="service", virtual_hosts=["b.internal"])
    with pytest.raises(ValidationFailed) as caught:
        admit(mine, kind="gateway", name=None, namespace=None, others=[theirs])
    (problem,) = caught.value.problems
    assert problem.path == "port"
    assert "namespace team-a" in problem.message
    # The same namespace may share it by virtual host, as at the edge.
    ours = team_gateway("team-a", name="c", plane="service", virtual_hosts=["c.internal"])
    admit(ours, kind="gateway", name=None, namespace=None, others=[theirs])


def test_a_route_cannot_aim_at_another_namespaces_service_plane_port() -> None:
    theirs = stored(team_gateway("team-a", plane="service"))
    by_address = team_gateway("team-b", port=9200, routes={"[127.0.0.1:9100]": {}})
    by_targets = team_gateway("team-b", port=9201, routes={"x": {"targets": ["127.0.0.1:9100"]}})
    for data, path in ((by_address, "routes.[127.0.0.1:9100]"), (by_targets, "routes.x")):
        with pytest.raises(ValidationFailed) as caught:
            admit(data, kind="gateway", name=None, namespace=None, others=[theirs])
        (problem,) = caught.value.problems
        assert problem.path == path
        assert "namespace team-a" in problem.message
    # In one apply too, with the other namespace's gateway in the same batch.
    with pytest.raises(ValidationFailed) as caught:
        admit_batch([team_gateway("team-a", plane="service"), by_address])
    assert [p.path for p in caught.value.problems] == ["documents.1.routes.[127.0.0.1:9100]"]
    # Its own namespace's port, or another address, is fine.
    admit(
        team_gateway("team-a", name="c", port=9200, routes={"[127.0.0.1:9100]": {}}),
        kind="gateway", name=None, namespace=None, others=[theirs],
    )  # fmt: skip
    admit(
        team_gateway("team-b", port=9202, routes={"[10.0.0.12:9100]": {}}),
        kind="gateway", name=None, namespace=None, others=[theirs],
    )  # fmt: skip


def test_the_api_names_an_instances_node_given_or_by_address() -> None:
    def record(name: str, address: str | None) -> Record:
        return Record(node_key(name), {"name": name, "address": address}, 1, 1, None)

    by_address = node_addresses(
        [record("h1", "10.0.0.11"), record("h2", "10.0.0.12"), record("h3", "10.0.0.12"),
         record("h4", None)]
    )  # fmt: skip
    assert by_address == {"10.0.0.11": "h1"}  # an address two nodes give names neither
    assert locate({"address": "10.0.0.11"}, by_address) == "h1"
    assert locate({"address": "10.0.0.11", "node": "h9"}, by_address) == "h9"
    assert locate({"address": "10.0.0.12"}, by_address) is None


PLANE_MANIFEST = """\
kind: service
name: b1
instances: ["10.0.0.11:80", {address: 10.0.0.12, port: 80, node: host-2}]
---
name: b
port: 9100
plane: service
locality: prefer-local
routes: {b1: {}}
---
name: edge
port: 80
nodes: {role: edge}
routes: {b1: {}}
"""


def test_render_shows_what_one_nodes_agent_runs(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from meshgate.cli import main

    manifest = tmp_path / "plane.yaml"
    manifest.write_text(PLANE_MANIFEST)
    runner = CliRunner()
    one = runner.invoke(
        main, ["render", "-f", str(manifest), "--node", "host-1", "--address", "10.0.0.11"]
    )
    assert one.exit_code == 0, one.output
    assert "frontend port_80" not in one.output  # placed on role=edge nodes only
    assert re.search(r"10\.0\.0\.12:80 weight 100 track mg_checks\.\S+ backup", one.output)
    assert "option allbackups" in one.output
    two = runner.invoke(
        main, ["render", "-f", str(manifest), "--node", "host-2", "--label", "role=edge"]
    )
    assert two.exit_code == 0, two.output
    assert "bind 0.0.0.0:80" in two.output
    assert re.search(
        r"server 10\.0\.0\.11:80 10\.0\.0\.11:80 weight 100 track mg_checks\.\S+ backup",
        two.output,
    )
    bad = runner.invoke(main, ["render", "-f", str(manifest), "--node", "Host_1"])
    assert bad.exit_code == 2 and "not a node name" in bad.output
    alone = runner.invoke(main, ["render", "-f", str(manifest), "--address", "10.0.0.11"])
    assert alone.exit_code == 2 and "need --node" in alone.output


def test_the_instance_table_shows_each_instances_node() -> None:
    from meshgate.cli.output import instances_table

    table = instances_table(
        [
            {"id": "a", "address": "10.0.0.12", "port": 80, "weight": 100, "status": "UP",
             "source": "manifest", "node": "h2"},
            {"id": "b", "address": "10.0.0.99", "port": 80, "weight": 100, "status": "UP",
             "source": "api", "node": None, "ttl": 10},
        ]
    )  # fmt: skip
    header, first, second = table.splitlines()
    assert header.split() == ["ID", "ADDRESS", "PORT", "WEIGHT", "STATUS", "SOURCE", "NODE", "TTL"]
    assert first.split() == ["a", "10.0.0.12", "80", "100", "UP", "manifest", "h2", "-"]
    assert second.split() == ["b", "10.0.0.99", "80", "100", "UP", "api", "-", "10s"]
