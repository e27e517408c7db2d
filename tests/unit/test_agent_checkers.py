"""Which checker server a route server added at run time tracks (agent.checkers): the loaded
configuration's, a spare lent to a new endpoint, or none (it checks itself)."""

from __future__ import annotations

from dataclasses import replace

from meshgate.agent.checkers import CheckerServers
from meshgate.compiler import DesiredState, checks, compile_state, ir
from meshgate.compiler.render import render_config
from meshgate.model import Gateway, Service, validate_resource

SETTINGS = ir.Settings(run_dir="/run/mg")


def plane(*instances: str, gateways: int = 2, **fields: object) -> ir.DataPlane:
    service = validate_resource(
        {"kind": "service", "name": "a", "instances": list(instances), **fields}
    )
    found = [
        validate_resource({"kind": "gateway", "name": f"g{i}", "port": 8000 + i,
                           "routes": {"a": {}}})
        for i in range(gateways)
    ]  # fmt: skip
    assert isinstance(service, Service)
    state = DesiredState(gateways=[g for g in found if isinstance(g, Gateway)], services=[service])
    return compile_state(state, SETTINGS).dataplane


def servers(dataplane: ir.DataPlane, address: str) -> list[tuple[ir.Backend, ir.Server]]:
    return [(b, s) for b in dataplane.backends for s in b.servers if s.address == address]


def test_an_endpoint_of_the_loaded_configuration_is_tracked_without_a_spare() -> None:
    loaded = plane("10.0.0.1:80")
    state = CheckerServers()
    state.loaded(loaded.backends)
    for backend, server in servers(loaded, "10.0.0.1"):
        assert state.lend(backend, server) is None
        assert state.target(backend, server) == checks.tracked(backend, server)


def test_a_new_endpoint_borrows_one_spare_for_all_its_route_servers_and_gives_it_back() -> None:
    state = CheckerServers()
    state.loaded(plane("10.0.0.1:80").backends)
    now = plane("10.0.0.1:80", "10.0.0.2:80")
    new = servers(now, "10.0.0.2")
    assert len(new) == 2
    assert state.target(*new[0]) is None  # nothing lent yet
    spare = state.lend(*new[0])
    assert spare is not None and spare[1] == "spare0"
    assert state.lend(*new[1]) is None  # the same endpoint: already lent
    for backend, server in new:
        assert state.target(backend, server) == spare
        state.tracking((backend.name, server.name), spare)
    first, second = ((b.name, s.name) for b, s in new)
    assert state.untracked([first]) == []  # still tracked by the other route's server
    assert state.untracked([second]) == [spare]
    assert state.target(*new[0]) is None
    assert state.lend(*new[0]) is not None  # free again


def test_without_a_free_spare_a_new_endpoint_checks_itself() -> None:
    state = CheckerServers()
    state.loaded(plane("10.0.0.1:80").backends)  # a checker with MIN_SPARES spares
    now = plane("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80")
    lent = [state.lend(*servers(now, f"10.0.0.{i}")[0]) for i in (2, 3, 4)]
    assert lent[:2] != [None, None] and lent[2] is None
    assert state.target(*servers(now, "10.0.0.4")[0]) is None


def test_an_adopted_haproxy_lends_no_spare_and_a_reload_frees_them_all() -> None:
    state = CheckerServers()
    state.loaded(plane("10.0.0.1:80").backends, spares=False)
    now = plane("10.0.0.1:80", "10.0.0.2:80")
    new = servers(now, "10.0.0.2")[0]
    assert state.lend(*new) is None  # an earlier agent may have lent them
    state.loaded(plane("10.0.0.1:80").backends)
    assert state.lend(*new) is not None
    state.loaded(now.backends)  # the reload gave the endpoint its own server
    assert state.lend(*new) is None
    assert state.target(*new) == checks.tracked(*new)


def test_agent_checks_never_borrow() -> None:
    state = CheckerServers()
    check = {"type": "agent", "port": 9999}
    state.loaded(plane("10.0.0.1:80", health_check=check).backends)
    now = plane("10.0.0.1:80", "10.0.0.2:80", health_check=check)
    new = servers(now, "10.0.0.2")[0]
    assert state.lend(*new) is None and state.target(*new) is None


def test_the_route_servers_tracking_a_changed_checker_server_follow_it() -> None:
    state = CheckerServers()
    loaded = plane("10.0.0.1:80", "10.0.0.2:80", gateways=3)
    state.loaded(loaded.backends)
    first = checks.tracked(*servers(loaded, "10.0.0.1")[0])
    assert first is not None
    followers = dict(state.followers(loaded.backends, {first: "DOWN"}))
    assert followers == {(b.name, s.name): "DOWN" for b, s in servers(loaded, "10.0.0.1")}
    assert len(followers) == 3
    # A spare lent to an endpoint registered at run time: its route servers follow it.
    now = plane("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", gateways=3)
    new = servers(now, "10.0.0.3")
    spare = state.lend(*new[0])
    assert spare is not None
    for backend, server in new:  # as the driver does when it adds them
        state.tracking((backend.name, server.name), spare)
    assert dict(state.followers(now.backends, {spare: "UP"})) == {
        (b.name, s.name): "UP" for b, s in new
    }
    assert list(state.followers(now.backends, {("mg_checks.other", "x"): "UP"})) == []


def test_route_servers_that_check_themselves_follow_no_checker() -> None:
    state = CheckerServers()
    passive = plane("10.0.0.1:80", passive={"error_limit": 3})
    state.loaded(passive.backends)
    assert [checks.tracked(b, s) for b, s in servers(passive, "10.0.0.1")] == [None, None]
    assert all(checks.decides_own_states(b) for b in passive.backends)
    tracking = plane("10.0.0.1:80")
    assert not any(checks.decides_own_states(b) for b in tracking.backends)


def test_route_backends_that_track_checkers_stream_only_alerts() -> None:
    """A registration's commands (ready, drain, maintenance after a drain) are notices in
    HAProxy's log: a route backend whose servers track a checker streams only alerts (a DOWN
    of a server checking itself for want of a spare); a checker and a backend whose servers
    check themselves stream every change."""
    settings = ir.Settings(run_dir="/run/mg", state_socket="/run/mg/states.sock")
    tracking = replace(plane("10.0.0.1:80", gateways=1), settings=settings)
    passive = plane("10.0.0.1:80", gateways=1, passive={"error_limit": 3})
    passive = replace(passive, settings=settings)
    logs = {
        name: [line.strip() for line in render_config(dp).splitlines() if "ring@mg_states" in line]
        for name, dp in (("tracking", tracking), ("passive", passive))
    }
    assert logs["tracking"] == [
        "log ring@mg_states format raw daemon alert",  # the route backend
        "log ring@mg_states format raw daemon notice",  # its checker
    ]
    assert logs["passive"] == ["log ring@mg_states format raw daemon notice"]
