"""What the driver sends with `add server` for each kind of check, and how it groups actions."""

from __future__ import annotations

import pytest

from meshgate.agent.driver import Driver, _batches, check_extras
from meshgate.compiler import ir
from meshgate.haproxy.commands import CheckExtras, UnsafeRuntimeArgument, add_server
from meshgate.plan import AddServer, RemoveServer, ReplaceMap, SetServerWeight


def health(**changes: object) -> ir.HealthCheck:
    base: dict[str, object] = {"type": "tcp", "interval_ms": 2000, "rise": 2, "fall": 3}
    return ir.HealthCheck(**{**base, **changes})  # type: ignore[arg-type]


def test_plain_checks_need_no_extras() -> None:
    assert check_extras(health(), "http") is None
    assert check_extras(health(type="http"), "http") is None


def test_port_agent_and_passive_checks_match_the_configuration() -> None:
    assert check_extras(health(port=9000), "http") == CheckExtras(port=9000)
    agent = check_extras(health(type="agent", port=9999, interval_ms=500), "http")
    assert agent == CheckExtras(agent_port=9999, agent_inter_ms=500)
    passive = check_extras(health(error_limit=5), "tcp")
    assert passive == CheckExtras(observe_layer=4, error_limit=5)
    command = add_server("be", "s1", "127.0.0.1", 80, check=True, extras=agent)
    assert command == (
        "add server be/s1 127.0.0.1:80 check agent-check agent-port 9999 agent-inter 500"
    )
    observed = add_server("be", "s1", "127.0.0.1", 80, check=True, extras=passive)
    assert observed.endswith("check observe layer4 error-limit 5 on-error mark-down")


def test_consecutive_additions_run_as_one_batch_in_order() -> None:
    server = ir.Server(name="a", address="127.0.0.1", port=1, weight=1)
    add = AddServer("be", server, health())
    actions = [
        RemoveServer("be", "old"),
        add,
        add,
        SetServerWeight("be", "x", 5),
        ReplaceMap("weights.map", ()),
        add,
    ]
    assert [len(b) for b in _batches(actions)] == [1, 2, 1, 1, 1]  # type: ignore[arg-type]


def test_the_same_server_in_many_backends_has_the_line_each_would_have_alone() -> None:
    """One instance at many gateways: its `add server` line is made once and given each
    backend's name; that is the line made for each on its own."""
    driver = Driver(None, None, ir.Settings(run_dir="/run/mg"))  # type: ignore[arg-type]
    tls = ir.ServerTls(verify=True, ca_file="ca.pem", sni="api.example.com")
    servers = [
        ir.Server(name="r1", address="10.0.0.1", port=80, weight=100),
        ir.Server(name="r1", address="::1", port=80, weight=7, backup=True),
    ]
    made: dict[tuple[object, ...], object] = {}
    for server in servers:
        for check in (health(), health(type="agent", port=9999)):
            for backend in ("default.gw0001.svc.1", "default.gw0002.svc.2", "b3"):
                action = AddServer(backend, server, check, tls)
                shared = driver._new_server(action, None, made)  # type: ignore[arg-type]
                alone = driver._made_server(action, "http", None)
                assert shared == alone
    with pytest.raises(UnsafeRuntimeArgument):
        driver._new_server(AddServer("bad name", servers[0], health()), None, made)  # type: ignore[arg-type]
