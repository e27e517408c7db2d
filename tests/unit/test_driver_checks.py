"""What the driver sends with `add server` for each kind of check, and how it groups actions."""

from __future__ import annotations

from meshgate.agent.driver import _batches, check_extras
from meshgate.compiler import ir
from meshgate.haproxy.commands import CheckExtras, add_server
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
