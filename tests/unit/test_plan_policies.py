"""Plan transcripts for policies: networks and header values change at run time (map swaps);
everything else about a policy reloads."""

from __future__ import annotations

from typing import Any

from meshgate.compiler import DesiredState, compile_state, ir
from meshgate.model import Gateway, validate_resource
from meshgate.plan import Action, Reload, ReplaceMap, SetMapEntries, plan

SETTINGS = ir.Settings(run_dir="/run/mg")


def dataplane(
    gateway_policies: dict[str, Any], route_policies: dict[str, Any] | None
) -> ir.DataPlane:
    route: dict[str, Any] = {"targets": ["127.0.0.1:8081"]}
    if route_policies is not None:
        route["policies"] = route_policies
    gateway = validate_resource(
        {
            "name": "web",
            "port": 9070,
            "policies": gateway_policies,
            "routes": {"a": route},
        }
    )
    assert isinstance(gateway, Gateway)
    return compile_state(DesiredState(gateways=[gateway]), SETTINGS).dataplane


BASE = {
    "allow": ["10.0.0.0/8"],
    "deny": ["192.0.2.0/24"],
    "headers": {"request": {"set": {"X-Env": "prod"}}, "response": {"set": {"X-A": "1"}}},
    "rate_limit": {"requests": 10},
}
RUNNING = dataplane(BASE, {"allow": ["127.0.0.1"]})


def swapped(actions: list[Action]) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    assert all(isinstance(a, ReplaceMap | SetMapEntries) for a in actions), actions
    return [(a.name.split(".", 1)[1], a.entries) for a in actions if isinstance(a, ReplaceMap)]


def test_unchanged_policies_need_nothing() -> None:
    assert plan(RUNNING, dataplane(BASE, {"allow": ["127.0.0.1"]})) == []


def test_networks_change_at_run_time() -> None:
    assert swapped(plan(RUNNING, dataplane(BASE, {}))) == [
        ("allow.map", (("0.0.0.0/0", "1"), ("::/0", "1")))
    ]
    desired = dataplane({**BASE, "allow": [], "deny": ["::1", "127.0.0.2"]}, {"allow": ["::1"]})
    assert sorted(swapped(plan(RUNNING, desired))) == [
        ("allow.map", (("0.0.0.0/0", "1"), ("::/0", "1"))),  # an empty list admits everyone
        ("allow.map", (("::1/128", "1"),)),
        ("deny.map", (("::1/128", "1"), ("127.0.0.2/32", "1"))),
    ]


def test_header_values_change_at_run_time() -> None:
    headers = {"request": {"set": {"X-Env": "staging"}}, "response": {"set": {"X-A": "2; b"}}}
    desired = dataplane({**BASE, "headers": headers}, {"allow": ["127.0.0.1"]})
    actions = plan(RUNNING, desired)
    assert all(isinstance(a, ReplaceMap | SetMapEntries) for a in actions), actions
    assert [a.entries for a in actions] == [(("req.X-Env", "staging"), ("res.X-A", "2; b"))]


def test_a_new_header_a_limit_or_a_new_policy_reloads() -> None:
    for gateway, route in [
        ({**BASE, "headers": {"request": {"set": {"X-Other": "1"}}}}, {"allow": ["127.0.0.1"]}),
        ({**BASE, "rate_limit": {"requests": 11}}, {"allow": ["127.0.0.1"]}),
        (BASE, {"allow": ["127.0.0.1"], "max_body": "1m"}),
        (BASE, None),
    ]:
        (action,) = plan(RUNNING, dataplane(gateway, route))
        assert isinstance(action, Reload)
