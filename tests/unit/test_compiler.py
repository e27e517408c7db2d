"""The compiler: desired resources to the data-plane IR and HAProxy text, a behaviour a test."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from meshgate.compiler import (
    CONFIG_FILE,
    Compiled,
    DesiredState,
    checks,
    compile_state,
    ir,
    naming,
    render_files,
    render_manifests,
)
from meshgate.compiler.rules import INSTANCE_HOST
from meshgate.conditions import MAX_LINE_WORDS, count_words
from meshgate.model import Gateway, Instance, Resource, Service, validate_resource
from tests.haproxy_check import check_files, haproxy_or_skip

RUN_DIR = "/run/mg"
MAPS = f"{RUN_DIR}/maps"
SETTINGS = ir.Settings(run_dir=RUN_DIR)
SAFE_NAME = re.compile(r"[A-Za-z0-9._:-]+")


def gateway(name: str = "sava", port: Any = 9070, routes: Any = None, **fields: Any) -> Gateway:
    data = {
        "name": name,
        "port": port,
        "routes": {"[127.0.0.1:8080]": {}} if routes is None else routes,
    }
    resource = validate_resource({**data, **fields})
    assert isinstance(resource, Gateway)
    return resource


def service(name: str, *instances: Any, **fields: Any) -> Service:
    resource = validate_resource(
        {"kind": "service", "name": name, "instances": list(instances), **fields}
    )
    assert isinstance(resource, Service)
    return resource


def compiled(
    *resources: Resource,
    registered: Mapping[tuple[str, str], Sequence[Instance]] | None = None,
    settings: ir.Settings = SETTINGS,
) -> Compiled:
    state = DesiredState(
        gateways=[r for r in resources if isinstance(r, Gateway)],
        services=[r for r in resources if isinstance(r, Service)],
        registered=registered or {},
    )
    return compile_state(state, settings)


def files(*resources: Resource) -> dict[str, str]:
    return render_files(compiled(*resources).dataplane)


def config(*resources: Resource) -> str:
    return files(*resources)[CONFIG_FILE]


def section(text: str, header: str) -> list[str]:
    """The stripped lines of the section that starts with `header`."""
    lines = text.splitlines()
    start = lines.index(header)
    body = []
    for line in lines[start + 1 :]:
        if not line.startswith("    "):
            break
        body.append(line.strip())
    return body


def backend(
    result: Compiled, gateway_name: str, route: str, namespace: str = "default"
) -> ir.Backend:
    (found,) = [
        b
        for b in result.dataplane.backends
        if (b.route.namespace, b.route.gateway, b.route.route) == (namespace, gateway_name, route)
    ]
    return found


def backend_section(text: str, found: ir.Backend) -> list[str]:
    return section(text, f"backend {found.name}")


def frontend_section(text: str, name: str) -> list[str]:
    return section(text, name if name.startswith("frontend ") else f"frontend {name}")


def map_entries(result: Compiled, name: str) -> tuple[tuple[str, str], ...]:
    found = result.dataplane.map_named(name)
    assert found is not None, name
    return found.entries


SAVA = [
    gateway(
        "sava",
        "9070/http",
        virtual_hosts=["sava.example.com", "*.sava.example.com"],
        sticky="route",
        routes={
            "sava:1.0/sava/port": {"weight": "90%"},
            "sava:1.1/sava/port": {
                "weight": "10%",
                "condition": "user-agent == Firefox and has cookie beta",
                "condition_strength": "50%",
                "balance": "leastconn",
                "rewrites": [{"path": "/v2%[path] if path starts with /api"}],
            },
            "canary": {"targets": ["127.0.0.1:8083", "127.0.0.1:8084"], "weight": "0%"},
        },
    ),
    service(
        "sava:1.0/sava/port", "127.0.0.1:8081", {"address": "127.0.0.1", "port": 8082, "id": "b"}
    ),
    service("sava:1.1/sava/port", "127.0.0.1:8091"),
    gateway("other", 9080, routes={"sava:1.0/sava/port": {}}),
]


# --- determinism and names ----------------------------------------------------------------------


def test_the_same_input_gives_the_same_files() -> None:
    assert files(*SAVA) == files(*SAVA)
    assert compiled(*SAVA) == compiled(*SAVA)


def test_the_order_of_services_does_not_matter() -> None:
    services = [r for r in SAVA if isinstance(r, Service)]
    gateways = [r for r in SAVA if isinstance(r, Gateway)]
    expected = files(*gateways, *services)
    for seed in range(5):
        shuffled = list(services)
        random.Random(seed).shuffle(shuffled)
        assert files(*shuffled, *gateways) == expected


def test_the_order_of_gateways_on_different_ports_does_not_matter() -> None:
    gateways = [r for r in SAVA if isinstance(r, Gateway)]
    services = [r for r in SAVA if isinstance(r, Service)]
    assert files(*gateways, *services) == files(*reversed(gateways), *services)


def test_backend_names_are_stable_and_readable() -> None:
    found = backend(compiled(*SAVA), "sava", "sava:1.0/sava/port")
    assert re.fullmatch(r"default\.sava\.sava:1\.0_sava_port\.[0-9a-f]{6}", found.name)
    assert found.name == backend(compiled(*reversed(SAVA)), "sava", "sava:1.0/sava/port").name


def test_names_that_slug_alike_stay_distinct() -> None:
    result = compiled(
        gateway("a/b", 9001, routes={"x/y": {}, "x_y": {}}),
        gateway("a_b", 9002, routes={"x/y": {}}),
    )
    names = [b.name for b in result.dataplane.backends]
    assert len(names) == len(set(names)) == 3
    assert backend(result, "a/b", "x/y").name != backend(result, "a_b", "x/y").name
    assert backend(result, "a/b", "x/y").name != backend(result, "a/b", "x_y").name


def test_the_same_gateway_in_two_namespaces_gets_two_backends() -> None:
    result = compiled(gateway("g", 9001), gateway("g", 9002, namespace="team-a"))
    names = {b.name for b in result.dataplane.backends}
    assert len(names) == 2
    assert any(name.startswith("team-a.g.") for name in names)


def test_object_names_use_only_safe_characters() -> None:
    result = compiled(*SAVA, gateway("x" * 200, 9100, routes={"y" * 200: {}}))
    for found in result.dataplane.backends:
        assert SAFE_NAME.fullmatch(found.name), found.name
        for server in found.servers:
            assert SAFE_NAME.fullmatch(server.name), server.name
    for frontend in result.dataplane.frontends:
        assert SAFE_NAME.fullmatch(frontend.name), frontend.name


def test_frontend_names_follow_bind_and_port() -> None:
    result = compiled(gateway("a", 9001), gateway("b", 9002, bind="127.0.0.1"))
    assert [f.name for f in result.dataplane.frontends] == ["port_9001", "port_9002_127.0.0.1"]
    text = render_files(result.dataplane)[CONFIG_FILE]
    assert "bind 0.0.0.0:9001" in frontend_section(text, "frontend port_9001")
    assert "bind 127.0.0.1:9002" in frontend_section(text, "frontend port_9002_127.0.0.1")


def test_rendered_files_are_the_config_and_the_maps() -> None:
    rendered = files(*SAVA)
    assert list(rendered) == [
        "haproxy.cfg",
        "maps/dispatch.map",
        "maps/lone.map",
        "maps/port_9070.hosts.map",
        "maps/port_9070.wildcards.map",
        "maps/slots.map",
        "maps/weights.map",
    ]
    assert f"map_str_int({MAPS}/weights.map,0)" in rendered[CONFIG_FILE]
    assert f"map_str({MAPS}/slots.map)" in rendered[CONFIG_FILE]


def test_render_manifests_places_maps_under_the_run_dir() -> None:
    rendered = render_manifests(SAVA, "/srv/meshgate")
    assert "/srv/meshgate/maps/weights.map" in rendered[CONFIG_FILE]
    assert "server-state-file /srv/meshgate/server-state" in rendered[CONFIG_FILE]


def test_no_gateways_still_gives_a_config_with_the_probe() -> None:
    rendered = files()
    assert "frontend meshgate_probe" in rendered[CONFIG_FILE]
    assert rendered["maps/weights.map"] == rendered["maps/slots.map"] == ""


# --- weights ------------------------------------------------------------------------------------


def test_weights_map_holds_the_effective_weight_of_every_backend() -> None:
    three = gateway("three", 9001, routes={"a": {}, "b": {}, "c": {}})
    result = compiled(*SAVA, three)
    entries = dict(map_entries(result, ir.WEIGHTS_MAP))
    assert len(entries) == len(result.dataplane.backends)
    for found in result.dataplane.backends:
        gateway_of = next(
            r for r in [*SAVA, three] if isinstance(r, Gateway) and r.name == found.route.gateway
        )
        assert entries[found.name] == str(gateway_of.route_weights()[found.route.route])
    assert sorted(v for k, v in entries.items() if ".three." in k) == ["33", "33", "34"]


def test_weights_map_text() -> None:
    rendered = files(gateway("g", 9001, routes={"a": {"weight": 90}, "b": {"weight": 10}}))
    lines = rendered["maps/weights.map"].splitlines()
    assert [line.split(" ")[1] for line in lines] == ["90", "10"]
    assert all(re.fullmatch(r"default\.g\.[ab]\.[0-9a-f]{6} \d+", line) for line in lines)


def test_slots_give_each_route_as_many_draws_as_its_weight() -> None:
    result = compiled(
        gateway("g", 9001, routes={"a": {"weight": 70}, "b": {"weight": 0}, "c": {"weight": 30}})
    )
    (rules,) = result.dataplane.frontends[0].gateways
    slots = map_entries(result, ir.DISPATCH_MAP)  # a plain gateway's (compiler.dispatch)
    assert [key for key, _ in slots] == [f"{n}.{rules.gateway_id}" for n in range(100)]
    owners = [backend.split(".")[2] for _, backend in slots]
    assert owners == ["a"] * 70 + ["c"] * 30


def test_gateways_whose_weights_are_all_zero_have_no_slots() -> None:
    result = compiled(gateway("g", 9001, routes={"a": {"weight": 0}, "b": {"weight": 0}}))
    assert map_entries(result, ir.SLOTS_MAP) == ()


def test_the_slot_lookup_runs_only_while_every_route_is_available() -> None:
    result = compiled(gateway("g", 9001, routes={"a": {"weight": 50}, "b": {"weight": 50}}))
    (rules,) = result.dataplane.frontends[0].gateways
    a, b = (choice.backend for choice in rules.choices)
    text = render_files(result.dataplane)[CONFIG_FILE]
    rules_text = frontend_section(text, "frontend port_9001")
    fast = [line for line in rules_text if "dispatch.map" in line]
    # One rule draws, chooses and ends the frontend's rules (the walk's, other gateways'); the
    # draw's term is last, so it runs only while both routes are available.
    assert fast == [
        f"http-request allow if {{ nbsrv({a}) -m bool }} {{ nbsrv({b}) -m bool }}"
        f" {{ rand(100),concat(.{rules.gateway_id}),map_str({MAPS}/dispatch.map),"
        "set-var(txn.mg_be) -m found }"
    ]


def test_a_lone_route_is_chosen_by_its_availability_and_weight_without_a_draw() -> None:
    result = compiled(gateway("g", 9001, routes={"a": {}}))
    assert map_entries(result, ir.SLOTS_MAP) == ()
    (rules,) = result.dataplane.frontends[0].gateways
    backend = rules.choices[0].backend
    text = render_files(result.dataplane)[CONFIG_FILE]
    assert (
        f"http-request allow if {{ nbsrv({backend}) -m bool }}"
        f" {{ str({backend}),map_str_int({MAPS}/weights.map,0) -m int gt 0 }}"
        f" {{ str({backend}),set-var(txn.mg_be) -m found }}"
    ) in frontend_section(text, "frontend port_9001")


def test_a_pin_or_a_condition_ends_the_rules_before_the_weighted_choice() -> None:
    routes = {"a": {"condition": "has header x-beta"}, "b": {}}
    rules_text = frontend_section(config(gateway("g", 9001, routes=routes)), "frontend port_9001")
    allow = "http-request allow if { var(txn.mg_be) -m found }"
    conditional = next(i for i, line in enumerate(rules_text) if "x-beta" in line)
    fast = next(i for i, line in enumerate(rules_text) if "slots.map" in line)
    assert rules_text[conditional + 1] == allow
    assert rules_text[fast].startswith("http-request allow if ")
    assert conditional < fast


def test_a_frontend_of_few_backends_switches_by_static_rules() -> None:
    result = compiled(gateway("g", 9001, routes={"a": {}, "b": {}}))
    (rules,) = result.dataplane.frontends[0].gateways
    text = render_files(result.dataplane)[CONFIG_FILE]
    switching = [r for r in frontend_section(text, "frontend port_9001") if "use_backend" in r]
    assert switching == [
        f"use_backend {choice.backend} if {{ var(txn.mg_be) -m str {choice.backend} }}"
        for choice in rules.choices
    ]


def test_a_frontend_of_many_backends_switches_by_name() -> None:
    routes = {name: {} for name in "abcde"}
    text = config(gateway("g", 9001, routes=routes))
    switching = [r for r in frontend_section(text, "frontend port_9001") if "use_backend" in r]
    assert switching == ["use_backend %[var(txn.mg_be)]"]


def test_every_route_takes_part_in_the_weighted_choice() -> None:
    result = compiled(*SAVA)
    text = render_files(result.dataplane)[CONFIG_FILE]
    rules = frontend_section(text, "frontend port_9070")
    for route in ("sava:1.0/sava/port", "sava:1.1/sava/port", "canary"):
        name = backend(result, "sava", route).name
        assert any(f"set-var(txn.mg_sum) str({name}),map_str_int(" in rule for rule in rules)
        assert any(
            rule.startswith(f"http-request set-var(txn.mg_be) str({name}) ") for rule in rules
        )


def test_a_conditional_route_with_partial_strength_draws() -> None:
    text = config(*SAVA)
    rules = frontend_section(text, "frontend port_9070")
    assert any("set-var(txn.mg_draw) rand(100)" in rule for rule in rules)
    assert any(
        "{ var(txn.mg_draw) -m int lt 50 }" in rule and "-m sub -i 'Firefox'" in rule
        for rule in rules
    )


def test_full_strength_conditions_do_not_draw_and_zero_strength_ones_never_match() -> None:
    full = config(gateway("g", 9001, routes={"a": {"condition": "has cookie beta"}}))
    assert "mg_draw" not in full
    assert "req.cook(beta)" in full
    none = config(
        gateway("g", 9001, routes={"a": {"condition": "has cookie beta", "condition_strength": 0}})
    )
    assert "req.cook(beta)" not in none


# --- virtual hosts ------------------------------------------------------------------------------


def test_virtual_hosts_go_to_the_host_and_wildcard_maps() -> None:
    result = compiled(
        gateway("shop", 8080, virtual_hosts=["shop.example.com", "*.shop.example.com"]),
        gateway("api", 8080, virtual_hosts=["*.api.shop.example.com", "api.example.com"]),
        gateway("short", 8080, virtual_hosts=["*.a.io", "b.example.com"]),
        gateway("fallback", 8080),
    )
    ids = {gid.name: gid.gateway_id for f in result.dataplane.frontends for gid in f.gateways}
    assert map_entries(result, "port_8080.hosts.map") == (
        ("api.example.com", ids["api"]),
        ("b.example.com", ids["short"]),
        ("shop.example.com", ids["shop"]),
    )
    # map_end takes the first match: the longest suffix comes first.
    assert map_entries(result, "port_8080.wildcards.map") == (
        (".api.shop.example.com", ids["api"]),
        (".shop.example.com", ids["shop"]),
        (".a.io", ids["short"]),
    )
    (frontend,) = result.dataplane.frontends
    assert frontend.default_gateway == ids["fallback"]


def test_a_default_gateway_serves_unknown_hosts() -> None:
    result = compiled(gateway("a", 8080, virtual_hosts="a.example.com"), gateway("b", 8080))
    text = render_files(result.dataplane)[CONFIG_FILE]
    rules = frontend_section(text, "frontend port_8080")
    default = result.dataplane.frontends[0].default_gateway
    assert (
        f"http-request set-var(txn.mg_gw) str({default}) if !{{ var(txn.mg_gw) -m found }}" in rules
    )
    assert not any("status 404" in rule for rule in rules)


def test_unknown_hosts_get_404_without_a_default_gateway() -> None:
    text = config(
        gateway("a", 8080, virtual_hosts="a.example.com"),
        gateway("b", 8080, virtual_hosts="b.example.com"),
    )
    rules = frontend_section(text, "frontend port_8080")
    assert (
        "http-request return status 404 content-type text/plain string "
        '"no gateway serves this host" if !{ var(txn.mg_gw) -m found }'
    ) in rules


def test_host_lookup_ignores_the_port_and_case() -> None:
    text = config(gateway("a", 8080, virtual_hosts="a.example.com"))
    rules = [r for r in frontend_section(text, "frontend port_8080") if "set-var(txn.mg_gw)" in r]
    host = "req.hdr(host),field(1,:),lower"
    assert rules[:2] == [
        f"http-request set-var(txn.mg_gw) {host},map_str({MAPS}/port_8080.hosts.map)",
        f"http-request set-var(txn.mg_gw) {host},map_end({MAPS}/port_8080.wildcards.map)"
        " if !{ var(txn.mg_gw) -m found }",
    ]


LONE_FALLBACK = "http-request set-var(txn.mg_be) str(default.l"


def test_plain_gateways_of_a_shared_port_are_chosen_by_one_generic_rule() -> None:
    """On a port of many virtual hosts a plain gateway has no rule of its own before the
    fallbacks: one rule for all of them looks the choice up by gateway id, so a request
    passes the same rules whatever its gateway's position. Only a gateway that needs its own
    rules (here a condition) is walked, and before the generic rule."""
    two_routes = {"[127.0.0.1:8081]": {"weight": "60%"}, "[127.0.0.1:8082]": {"weight": "40%"}}
    one_route = {"[127.0.0.1:8083]": {}}
    conditional = {
        "[127.0.0.1:8081]": {"condition": "has header x-beta"},
        "[127.0.0.1:8082]": {},
    }
    text = config(
        *(
            gateway(f"g{i}", 8080, virtual_hosts=f"g{i}.example.com", routes=two_routes)
            for i in range(6)
        ),
        *(
            gateway(f"l{i}", 8080, virtual_hosts=f"l{i}.example.com", routes=one_route)
            for i in range(3)
        ),
        gateway("c", 8080, virtual_hosts="c.example.com", routes=conditional),
    )
    rules = [r for r in frontend_section(text, "frontend port_8080") if not r.startswith("#")]
    fast = [i for i, rule in enumerate(rules) if rule.startswith("http-request allow if")]
    fallback = [i for i, rule in enumerate(rules) if "set-var(txn.mg_sum) int(0)" in rule]
    # A lone route's fallback is one rule: chosen if it weighs, and is available or the worker
    # is stopping.
    lone = [i for i, rule in enumerate(rules) if rule.startswith(LONE_FALLBACK)]
    assert (len(fallback), len(lone)) == (7, 3)
    assert [rules[i].count("{ stopping }") for i in lone] == [1, 1, 1]
    fallback += lone
    assert max(fast) < min(fallback)
    dispatch_map = f"map_str({MAPS}/dispatch.map)"
    lone_map = f"map_str({MAPS}/lone.map)"
    assert [rules[i] for i in fast[-2:]] == [
        f"http-request allow if {{ var(txn.mg_gw),{lone_map},set-var(txn.mg_be) -m found }}",
        "http-request allow if { rand(100),concat(.,txn.mg_gw),"
        f"{dispatch_map},set-var(txn.mg_be) -m found }}",
    ]
    # The conditional gateway's own rules are the only others: its condition's, then its fast
    # path, guarded by its id.
    assert len(fast) == 4 and "var(txn.mg_gw) -m str g" in rules[fast[1]]
    assert "slots.map" in rules[fast[1]]


def test_the_source_hash_rule_only_when_a_plain_gateway_is_sticky_by_source() -> None:
    two_routes = {"[127.0.0.1:8081]": {}, "[127.0.0.1:8082]": {}}
    text = config(
        gateway("a", 8080, virtual_hosts="a.example.com", routes=two_routes),
        gateway("b", 8080, virtual_hosts="b.example.com", routes=two_routes, sticky="source"),
    )
    rules = frontend_section(text, "frontend port_8080")
    source = [r for r in rules if "src,crc32(1),mod(100),concat(.,txn.mg_gw,.s)" in r]
    assert len(source) == 1
    text = config(gateway("a", 8080, virtual_hosts="a.example.com", routes=two_routes))
    assert "concat(.,txn.mg_gw,.s)" not in text


def test_no_host_maps_when_no_gateway_on_the_port_has_virtual_hosts() -> None:
    result = compiled(gateway("a", 8080), gateway("b", 8081, virtual_hosts="b.example.com"))
    assert [m.name for m in result.dataplane.maps] == [
        "dispatch.map",
        "lone.map",
        "port_8081.hosts.map",
        "port_8081.wildcards.map",
        "slots.map",
        "weights.map",
    ]
    assert result.dataplane.frontends[0].host_map is None


def test_gateway_guards_only_on_a_shared_port() -> None:
    result = compiled(
        gateway("alone", 8080),
        gateway("one", 8081, virtual_hosts="one.example.com"),
        gateway("two", 8081),
    )
    text = render_files(result.dataplane)[CONFIG_FILE]
    assert "txn.mg_gw" not in "\n".join(frontend_section(text, "frontend port_8080"))
    shared = frontend_section(text, "frontend port_8081")
    for rules in result.dataplane.frontends[1].gateways:
        guard = f"{{ var(txn.mg_gw) -m str {rules.gateway_id} }}"
        start = shared.index(f"# gateway default/{rules.name}: routes unavailable")
        block = []
        for line in shared[start + 1 :]:
            if line.startswith("#") or "no route available" in line:
                break
            block.append(line)
        assert block
        # Every rule, the one that chooses and ends the frontend's rules included.
        assert all(f"if {guard} " in line for line in block), block


# --- ports --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "path"),
    [
        ({"port": 8080}, {"port": 8080}, "virtual_hosts"),
        ({"port": "8080/tcp"}, {"port": 8080, "virtual_hosts": "b.example.com"}, "port"),
        ({"port": 8080}, {"port": "8080/tcp"}, "port"),
        (
            {"port": 8080, "virtual_hosts": ["a.example.com", "x.example.com"]},
            {"port": 8080, "virtual_hosts": ["X.example.com"]},
            "virtual_hosts",
        ),
        (
            {"port": 8080},
            {"port": 8080, "bind": "127.0.0.1", "virtual_hosts": "b.example.com"},
            "bind",
        ),
    ],
)
def test_port_conflicts_reject_the_later_gateway(
    first: dict[str, Any], second: dict[str, Any], path: str
) -> None:
    a = validate_resource({"name": "a", "routes": {"[127.0.0.1:1]": {}}, **first})
    b = validate_resource({"name": "b", "routes": {"[127.0.0.1:2]": {}}, **second})
    for earlier, later in ((a, b), (b, a)):
        result = compiled(earlier, later)
        assert result.gateways[("default", earlier.name)].ok
        problems = result.gateways[("default", later.name)].errors
        assert len(problems) == 1
        assert problems[0].startswith(f"{path}: ")
        assert f"default/{earlier.name}" in problems[0]
        served = {rules.name for f in result.dataplane.frontends for rules in f.gateways}
        assert served == {earlier.name}
        assert {b.route.gateway for b in result.dataplane.backends} == {earlier.name}


def test_disjoint_virtual_hosts_share_a_port() -> None:
    result = compiled(
        gateway("a", 8080, virtual_hosts="a.example.com"),
        gateway("b", 8080, virtual_hosts="*.example.com"),
        gateway("c", 8080),
    )
    assert all(r.ok for r in result.gateways.values())
    assert len(result.dataplane.frontends) == 1


def test_a_rejected_gateway_does_not_block_others() -> None:
    result = compiled(
        gateway("a", 8080), gateway("b", 8080), gateway("c", 8080, virtual_hosts="c.example.com")
    )
    assert not result.gateways[("default", "b")].ok
    assert result.gateways[("default", "c")].ok
    assert {rules.name for rules in result.dataplane.frontends[0].gateways} == {"a", "c"}


# --- route targets ------------------------------------------------------------------------------


def test_a_route_to_a_service_gets_its_instances() -> None:
    result = compiled(*SAVA)
    found = backend(result, "sava", "sava:1.0/sava/port")
    assert [(s.name, s.address, s.port, s.weight) for s in found.servers] == [
        ("127.0.0.1:8081", "127.0.0.1", 8081, 100),
        ("b", "127.0.0.1", 8082, 100),
    ]
    status = result.gateways[("default", "sava")].routes["sava:1.0/sava/port"]
    assert (status.kind, status.instances, status.backend) == ("service", 2, found.name)


def test_registered_instances_join_the_manifest_ones() -> None:
    extra = [Instance(address="127.0.0.1", port=8085), Instance(address="10.0.0.9", port=1, id="b")]
    result = compiled(*SAVA, registered={("default", "sava:1.0/sava/port"): extra})
    found = backend(result, "sava", "sava:1.0/sava/port")
    assert [s.name for s in found.servers] == ["127.0.0.1:8081", "b", "127.0.0.1:8085"]
    assert found.servers[1].address == "127.0.0.1"  # the manifest's instance keeps its id


def test_inline_targets_and_host_port_routes() -> None:
    result = compiled(
        gateway(
            "g",
            9001,
            routes={
                "pool": {"targets": ["127.0.0.1:1", "[::1]:2"]},
                "[127.0.0.1:3]": {},
                "[[::1]:4]": {},
                "[::1]:5": {},
            },
        )
    )
    servers = {
        b.route.route: [(s.name, s.address, s.port) for s in b.servers]
        for b in result.dataplane.backends
    }
    assert servers == {
        "pool": [("127.0.0.1:1", "127.0.0.1", 1), ("::1:2", "::1", 2)],
        "[127.0.0.1:3]": [("127.0.0.1:3", "127.0.0.1", 3)],
        "[[::1]:4]": [("::1:4", "::1", 4)],
        "[::1]:5": [("::1:5", "::1", 5)],
    }
    kinds = {name: s.kind for name, s in result.gateways[("default", "g")].routes.items()}
    assert kinds == {
        "pool": "inline",
        "[127.0.0.1:3]": "address",
        "[[::1]:4]": "address",
        "[::1]:5": "address",
    }


def test_an_unresolved_target_is_a_backend_without_servers() -> None:
    result = compiled(
        gateway("g", 9001, routes={"nowhere": {"weight": 50}, "[127.0.0.1:1]": {"weight": 50}})
    )
    found = backend(result, "g", "nowhere")
    assert found.servers == ()
    status = result.gateways[("default", "g")].routes["nowhere"]
    assert (status.kind, status.instances, status.target) == ("unresolved", 0, "nowhere")
    assert result.gateways[("default", "g")].ok
    lines = backend_section(render_files(result.dataplane)[CONFIG_FILE], found)
    assert not any(line.startswith("server ") for line in lines)
    assert dict(map_entries(result, ir.WEIGHTS_MAP))[found.name] == "50"


def test_targets_resolve_only_in_their_own_namespace() -> None:
    elsewhere = validate_resource(
        {"kind": "service", "name": "s", "namespace": "team-a", "instances": ["127.0.0.1:1"]}
    )
    result = compiled(gateway("g", 9001, routes={"s": {}}), elsewhere)
    assert result.gateways[("default", "g")].routes["s"].kind == "unresolved"


def test_a_service_name_wins_over_a_gateway_name() -> None:
    result = compiled(
        gateway("edge", 80, routes={"shared": {}}),
        gateway("shared", 8000),
        service("shared", "127.0.0.1:7000"),
    )
    status = result.gateways[("default", "edge")].routes["shared"]
    assert status.kind == "service"
    assert [(s.address, s.port) for s in backend(result, "edge", "shared").servers] == [
        ("127.0.0.1", 7000)
    ]


@pytest.mark.parametrize(
    ("bind", "address"),
    [("0.0.0.0", "127.0.0.1"), ("::", "::1"), ("127.0.0.2", "127.0.0.2"), ("::1", "::1")],
)
def test_chaining_resolves_to_the_other_gateways_port(bind: str, address: str) -> None:
    result = compiled(gateway("edge", 80, routes={"inner": {}}), gateway("inner", 8000, bind=bind))
    (server,) = backend(result, "edge", "inner").servers
    assert (server.address, server.port) == (address, 8000)
    assert result.gateways[("default", "edge")].routes["inner"].kind == "gateway"


def test_a_route_named_like_its_own_gateway_is_not_a_chain() -> None:
    result = compiled(gateway("loop", 80, routes={"loop": {}}))
    assert result.gateways[("default", "loop")].ok
    assert result.gateways[("default", "loop")].routes["loop"].kind == "unresolved"


def test_a_chaining_loop_is_reported_and_left_out() -> None:
    result = compiled(
        gateway("a", 8001, routes={"b": {}}),
        gateway("b", 8002, routes={"c": {}}),
        gateway("c", 8003, routes={"a": {}}),
        gateway("d", 8004, routes={"a": {}}),
    )
    for name in "abc":
        errors = result.gateways[("default", name)].errors
        assert errors == ("routes: gateways chain back to this gateway (a loop)",)
    assert result.gateways[("default", "d")].ok
    assert [f.name for f in result.dataplane.frontends] == ["port_8004"]


def test_a_route_to_a_gateway_that_is_not_served_gets_no_servers() -> None:
    result = compiled(
        gateway("winner", 8080),
        gateway("loser", 8080),  # same port, no virtual hosts: rejected
        gateway("edge", 80, routes={"loser": {}}),
    )
    assert not result.gateways[("default", "loser")].ok
    # The chained gateway does not run, so its port belongs to "winner": traffic for "loser"
    # must not go there.
    assert backend(result, "edge", "loser").servers == ()


# --- sticky sessions ----------------------------------------------------------------------------


def test_sticky_route_pins_with_a_cookie_per_gateway() -> None:
    result = compiled(*SAVA)
    text = render_files(result.dataplane)[CONFIG_FILE]
    rules = result.dataplane.frontends[0].gateways[0]
    cookie = f"mgr_{rules.gateway_id}"
    assert rules.route_cookie_name == cookie
    frontend = frontend_section(text, "frontend port_9070")
    tokens = set()
    for choice in rules.choices:
        assert choice.cookie_value is not None
        tokens.add(choice.cookie_value)
        pinned = f"{{ req.cook({cookie}) -m str {choice.cookie_value} }}"
        assert any(pinned in rule and f"str({choice.backend})" in rule for rule in frontend)
        lines = backend_section(
            text, next(b for b in result.dataplane.backends if b.name == choice.backend)
        )
        assert (
            "http-response add-header Set-Cookie "
            f'"{cookie}={choice.cookie_value}; Path=/; HttpOnly"' in " ".join(lines)
        )
    assert len(tokens) == 3
    assert "stick on src" not in text
    assert "insert indirect" not in text


def test_sticky_instance_adds_an_instance_cookie() -> None:
    result = compiled(
        gateway("cart", 9001, sticky="instance", routes={"s": {}}),
        service("s", "127.0.0.1:1", {"address": "127.0.0.1", "port": 2, "id": "two"}),
    )
    found = backend(result, "cart", "s")
    gid = result.dataplane.frontends[0].gateways[0].gateway_id
    lines = backend_section(render_files(result.dataplane)[CONFIG_FILE], found)
    assert f"cookie mgi_{gid} insert indirect nocache httponly" in lines
    servers = [line for line in lines if line.startswith("server ")]
    # Opaque tokens: no address or port reaches the client, and the same id gives the same
    # token in every compilation (a pin survives reloads).
    tokens = [line.rsplit(" cookie ", 1)[1] for line in servers]
    assert all(re.fullmatch(r"i[0-9a-f]{12}", token) for token in tokens)
    assert "127.0.0.1" not in tokens[0] and tokens[0] != tokens[1]
    assert tokens == [naming.instance_token("127.0.0.1:1"), naming.instance_token("two")]
    assert found.route_cookie is not None  # the route is pinned as well


def test_forwarded_headers_are_on_by_default_for_http_and_can_be_turned_off() -> None:
    def backend_text(port: str = "9001/http", **extra: Any) -> list[str]:
        result = compiled(gateway("g", port, {"s": {}}, **extra), service("s", "127.0.0.1:1"))
        found = backend(result, "g", "s")
        return backend_section(render_files(result.dataplane)[CONFIG_FILE], found)

    assert "option forwardfor" in backend_text()
    assert "http-request set-header X-Forwarded-Proto http" in backend_text()
    assert "http-request del-header X-Forwarded-Host" in backend_text()
    assert not any("orward" in line for line in backend_text(forwarded_headers=False))
    assert not any("orward" in line for line in backend_text(port="9001/tcp"))


def test_sticky_source_uses_a_stick_table_and_a_source_hash() -> None:
    result = compiled(
        gateway("db", "5432/tcp", sticky="source", routes={"a": {"weight": 50}, "b": {}})
    )
    text = render_files(result.dataplane)[CONFIG_FILE]
    for found in result.dataplane.backends:
        lines = backend_section(text, found)
        assert lines[1:3] == ["mode tcp", "balance leastconn"]
        assert "stick-table type ip size 1m expire 30m" in lines
        assert "stick on src" in lines
    rules = frontend_section(text, "frontend port_5432")
    assert any("set-var(txn.mg_pick) src,crc32(1),mod(txn.mg_sum)" in rule for rule in rules)
    assert "Set-Cookie" not in text


def test_no_stickiness_by_default() -> None:
    text = config(gateway("g", 9001, routes={"a": {}, "b": {}}))
    assert "cookie" not in text.replace("req.cook", "")
    assert "stick" not in text
    assert "set-var(txn.mg_pick) rand,mod(txn.mg_sum)" in text


# --- modes, balance, timeouts -------------------------------------------------------------------


def test_tcp_gateways_use_tcp_content_rules_and_reject() -> None:
    text = config(gateway("db", "5432/tcp"))
    rules = frontend_section(text, "frontend port_5432")
    assert rules[0] == "mode tcp"
    assert all(r.startswith(("tcp-request content ", "#", "use_backend")) for r in rules[2:])
    assert "tcp-request content reject if !{ var(txn.mg_be) -m found }" in rules
    assert "http-request" not in "\n".join(rules)


def test_http_gateways_answer_503_when_no_route_is_available() -> None:
    rules = frontend_section(config(gateway("g", 9001)), "frontend port_9001")
    assert (
        'http-request return status 503 content-type text/plain string "no route available"'
        " if !{ var(txn.mg_be) -m found }"
    ) in rules
    assert rules[-1].startswith("use_backend ")


def test_balance_per_route_and_default() -> None:
    result = compiled(
        gateway(
            "g",
            9001,
            balance="hdr(X-User)",
            routes={"a": {}, "b": {"balance": "leastconn"}, "c": {"balance": "uri"}},
        ),
        gateway("plain", 9002),
        gateway("tcp", "9003/tcp"),
    )
    balances = {(b.route.gateway, b.route.route): b.balance for b in result.dataplane.backends}
    assert balances == {
        ("g", "a"): "hdr(X-User)",
        ("g", "b"): "leastconn",
        ("g", "c"): "uri",
        ("plain", "[127.0.0.1:8080]"): "roundrobin",
        ("tcp", "[127.0.0.1:8080]"): "leastconn",
    }
    text = render_files(result.dataplane)[CONFIG_FILE]
    assert "balance hdr(X-User)" in backend_section(text, backend(result, "g", "a"))


def test_url_param_balance_is_rendered_in_haproxy_syntax() -> None:
    result = compiled(gateway("g", 9001, routes={"a": {"balance": "url_param(session)"}}))
    lines = backend_section(render_files(result.dataplane)[CONFIG_FILE], backend(result, "g", "a"))
    assert "balance url_param session" in lines


def test_timeouts_are_rendered_in_milliseconds() -> None:
    result = compiled(
        gateway("g", 9001, timeouts={"connect": "5s", "client": "1m", "server": "500ms"})
    )
    text = render_files(result.dataplane)[CONFIG_FILE]
    assert "timeout client 60000ms" in frontend_section(text, "frontend port_9001")
    lines = backend_section(text, result.dataplane.backends[0])
    assert "timeout connect 5000ms" in lines
    assert "timeout server 500ms" in lines


def test_without_timeouts_the_defaults_apply() -> None:
    result = compiled(gateway("g", 9001))
    text = render_files(result.dataplane)[CONFIG_FILE]
    assert not any(
        line.startswith("timeout") for line in frontend_section(text, "frontend port_9001")
    )
    assert not any(
        line.startswith("timeout") for line in backend_section(text, result.dataplane.backends[0])
    )


def test_a_shared_port_takes_the_longest_client_timeout() -> None:
    result = compiled(
        gateway("a", 8080, virtual_hosts="a.example.com", timeouts={"client": "10s"}),
        gateway("b", 8080, timeouts={"client": "30s"}),
        gateway("c", 8080, virtual_hosts="c.example.com"),
    )
    assert result.dataplane.frontends[0].timeout_client_ms == 30_000


# --- health checks ------------------------------------------------------------------------------


CHECKERS: dict[str, list[str]] = {}  # checker name -> its section, from `checked`


def checker_of(route_lines: list[str]) -> list[str]:
    """The section of the checker backend that the route's first server tracks."""
    server = next(line for line in route_lines if line.startswith("server "))
    name = server.split(" track ", 1)[1].split("/", 1)[0]
    return CHECKERS[name]


def checked(
    health_check: dict[str, Any] | None = None, mode: str = "http", **fields: Any
) -> list[str]:
    extra: dict[str, Any] = {"health_check": health_check} if health_check else {}
    port = 9001 if mode == "http" else "9001/tcp"
    result = compiled(  # without forwarded headers: only the check's lines are of interest
        gateway("g", port, routes={"s": {}}, forwarded_headers=False),
        service("s", "127.0.0.1:1", **extra, **fields),
    )
    text = render_files(result.dataplane)[CONFIG_FILE]
    for checker in checks.checkers(result.dataplane.backends):
        CHECKERS[checker.name] = section(text, f"backend {checker.name}")
    return backend_section(text, result.dataplane.backends[0])


def test_the_default_check_is_a_tcp_connect_every_2s() -> None:
    lines = checked()
    assert lines[:3] == ["# default/g route s", "mode http", "balance roundrobin"]
    # The route's server follows the node's one check of the instance (compiler.checks).
    (track,) = lines[3:]
    assert re.fullmatch(
        r"server 127\.0\.0\.1:1 127\.0\.0\.1:1 weight 100 track (mg_checks\.[0-9a-f]{10})/"
        r"127\.0\.0\.1_1\.[0-9a-f]{8}",
        track,
    )
    assert checker_of(lines)[:2] == [
        "mode http",
        f"server {track.rsplit('/', 1)[1]} 127.0.0.1:1 check inter 2000 rise 2 fall 3",
    ]


def test_http_check_with_host_status_and_body() -> None:
    lines = checked(
        {
            "type": "http",
            "path": "/healthz?full=1",
            "method": "head",
            "host": "sava.internal",
            "expect_status": 204,
            "expect_body": "status: {up}",
            "interval": "500ms",
            "timeout": "250ms",
            "rise": 1,
            "fall": 5,
            "port": 9000,
        }
    )
    assert lines[3:] == [
        "timeout check 250ms",
        "option httpchk",
        "http-check send meth HEAD uri /healthz?full=1 ver HTTP/1.1 hdr host sava.internal",
        "http-check expect status 204",
        "http-check expect string 'status: {up}'",
        lines[-1],
    ]
    # The backend-level check lines are the checker's too (and stay in the route's backend
    # for a server added at run time that checks itself: agent.driver).
    checker = [line for line in checker_of(lines) if not line.startswith("server spare")]
    assert checker[:-1] == ["mode http", *lines[3:-1]]
    assert checker[-1].endswith(" 127.0.0.1:1 check inter 500 rise 1 fall 5 port 9000")


def test_a_service_without_retry_on_keeps_no_copy_of_requests() -> None:
    # Only a refused connection is retried (the defaults' `retries`): no L7 retry, which
    # would make HAProxy copy every request.
    assert not any("retry" in line for line in checked())


def test_retry_on_retries_failures_after_sending_for_safe_methods_only() -> None:
    lines = checked(retries=3, retry_on=["empty-response", 503, "junk-response", 503])
    assert lines[3:6] == [
        "retries 3",
        "retry-on conn-failure empty-response 503 junk-response",
        "http-request disable-l7-retry if !{ method GET HEAD OPTIONS }",
    ]


def test_retries_alone_sets_the_count_and_nothing_else() -> None:
    lines = checked(retries=0, mode="tcp")
    assert "retries 0" in lines
    assert not any("retry-on" in line for line in lines)


def test_retry_on_of_an_http_service_is_left_out_behind_a_tcp_gateway() -> None:
    # The gateway passes bytes: there is no request to keep a copy of or to retry.
    result = compiled(
        gateway("g", "9001/tcp", routes={"s": {}}),
        service("s", "127.0.0.1:1", retry_on=["empty-response"]),
    )
    lines = backend_section(
        render_files(result.dataplane)[CONFIG_FILE], result.dataplane.backends[0]
    )
    assert not any("retry" in line for line in lines)


def test_http_check_without_host_or_body() -> None:
    # The Host defaults to the address the check connects to.
    lines = checked({"type": "http", "path": "/health"})
    send = "http-check send meth GET uri /health ver HTTP/1.1 hdr host " + INSTANCE_HOST
    assert send in lines
    assert "http-check expect status 200-399" in lines
    assert not any("expect string" in line for line in lines)


def test_tcp_check_sends_and_expects_hex() -> None:
    lines = checked({"type": "tcp", "send": "PING\r\n", "expect": "+PONG"}, mode="tcp")
    assert lines[3:7] == [
        "option tcp-check",
        "tcp-check connect",
        f"tcp-check send-binary {b'PING'.hex()}0d0a",
        f"tcp-check expect binary {b'+PONG'.hex()}",
    ]


def test_tcp_payloads_of_any_text_stay_hex() -> None:
    lines = checked({"type": "tcp", "send": "a'b\"c\n#%[x] é"})
    (send,) = [line for line in lines if line.startswith("tcp-check send-binary ")]
    assert re.fullmatch(r"tcp-check send-binary [0-9a-f]+", send)
    assert bytes.fromhex(send.split()[-1]).decode() == "a'b\"c\n#%[x] é"


def test_agent_check() -> None:
    lines = checked({"type": "agent", "port": 9999, "interval": "5s"})
    assert lines[-1] == (
        "server 127.0.0.1:1 127.0.0.1:1 weight 100 check inter 5000 rise 2 fall 3 "
        "agent-check agent-port 9999 agent-inter 5000"
    )


@pytest.mark.parametrize(("mode", "layer"), [("http", 7), ("tcp", 4)])
def test_passive_checks_observe_traffic(mode: str, layer: int) -> None:
    lines = checked(mode=mode, passive={"error_limit": 10})
    assert lines[-1].endswith(f" observe layer{layer} error-limit 10 on-error mark-down")


def test_inline_and_chained_routes_get_the_default_check() -> None:
    result = compiled(
        gateway("edge", 80, routes={"inner": {}, "pool": {"targets": ["127.0.0.1:1"]}}),
        gateway("inner", 8000),
    )
    for found in result.dataplane.backends:
        assert found.health.type == "tcp"
        assert found.health.interval_ms == 2000


# --- rewrites -----------------------------------------------------------------------------------


def rewrite_lines(result: Compiled, found: ir.Backend) -> list[str]:
    lines = backend_section(render_files(result.dataplane)[CONFIG_FILE], found)
    return [line for line in lines if "mg_rewritten" in line or "set-path" in line]


def test_rewrites_are_set_path_rules() -> None:
    result = compiled(*SAVA)
    lines = rewrite_lines(result, backend(result, "sava", "sava:1.1/sava/port"))
    set_path = 'http-request set-path "/v2%[path]" if { var(txn.mg_rewritten) -m bool }'
    assert lines == [
        "http-request unset-var(txn.mg_rewritten)",
        "http-request set-var(txn.mg_rewritten) bool(true) if { path -m beg '/api' }",
        set_path,
    ]


def test_unconditional_rewrites_always_apply() -> None:
    result = compiled(gateway("g", 9001, routes={"a": {"rewrites": [{"path": "/x%[query]"}]}}))
    lines = rewrite_lines(result, result.dataplane.backends[0])
    assert lines == [
        "http-request unset-var(txn.mg_rewritten)",
        "http-request set-var(txn.mg_rewritten) bool(true)",
        'http-request set-path "/x%[query]" if { var(txn.mg_rewritten) -m bool }',
    ]


def test_a_rewrite_with_alternatives_sets_the_path_once() -> None:
    rewrite = {"path": "/i if path ends with / or has header X-Index"}
    result = compiled(gateway("g", 9001, routes={"a": {"rewrites": [rewrite]}}))
    lines = rewrite_lines(result, result.dataplane.backends[0])
    assert [line for line in lines if "set-path" in line] == [
        'http-request set-path "/i" if { var(txn.mg_rewritten) -m bool }'
    ]
    assert len([line for line in lines if "bool(true) if" in line]) == 2


def test_rewrite_order_is_kept() -> None:
    rewrites = [{"path": f"/{n} if path == /{n}"} for n in ("c", "a", "b")]
    result = compiled(gateway("g", 9001, routes={"a": {"rewrites": rewrites}}))
    lines = backend_section(
        render_files(result.dataplane)[CONFIG_FILE], result.dataplane.backends[0]
    )
    assert [line.split('"')[1] for line in lines if "set-path" in line] == ["/c", "/a", "/b"]


# --- limits -------------------------------------------------------------------------------------


def test_long_conditions_stay_within_haproxy_line_limits() -> None:
    condition = " and ".join(f"has cookie c{i}" for i in range(12))
    result = compiled(
        gateway(
            "a",
            8080,
            virtual_hosts="a.example.com",
            routes={"[127.0.0.1:1]": {"condition": condition, "condition_strength": 50}},
        ),
        gateway("b", 8080),
    )
    text = render_files(result.dataplane)[CONFIG_FILE]
    assert all(count_words(line) <= MAX_LINE_WORDS for line in text.splitlines())


@pytest.mark.integration
def test_haproxy_accepts_edge_cases(tmp_path: Path) -> None:
    """What the golden inputs leave out: http checks on tcp, every balance, all-zero weights,
    IPv6 everywhere, names at their longest, odd but valid route names."""
    haproxy = haproxy_or_skip()
    longest = "x" * 200
    resources: list[Resource] = [
        gateway("tcpgw", "7000/tcp", routes={"websvc": {"balance": "source"}, "[::1]:7001": {}}),
        service(
            "websvc",
            "[::1]:7100",
            health_check={"type": "http", "path": "/h", "host": "::1", "expect_body": "   !x{"},
            passive={"error_limit": 5},
        ),
        gateway(
            "http-source",
            7002,
            sticky="source",
            routes={
                "a": {"balance": "first", "weight": 0},
                "b": {"balance": "static-rr", "weight": 0},
                "c": {"balance": "uri", "weight": 0},
                "d": {"balance": "random", "weight": 0},
                "websvc": {
                    "weight": 0,
                    "condition": 'method == POST or query x == "1"',
                    "condition_strength": 0,
                },
            },
        ),
        gateway(longest, 7003, namespace="n" * 63, bind="::", routes={"-": {}, ":": {}}),
        gateway("chain", 7004, routes={longest: {}}),
        gateway(longest, 7005, routes={"websvc": {}}),
    ]
    result = compiled(*resources, settings=ir.Settings(run_dir=str(tmp_path)))
    assert all(r.ok for r in result.gateways.values())
    ok, output = check_files(haproxy, tmp_path, render_files(result.dataplane))
    assert ok, output


def test_a_port_of_one_gateway_keeps_the_exact_availability_test() -> None:
    """Virtual hosts but no other gateway: nothing to walk past, so no generic rule; its own
    fast path tests every route's `nbsrv` in the request."""
    two_routes = {"[127.0.0.1:8081]": {}, "[127.0.0.1:8082]": {}}
    text = config(gateway("a", 8080, virtual_hosts="a.example.com", routes=two_routes))
    rules = frontend_section(text, "frontend port_8080")
    assert not any("txn.mg_gw),map_str" in r or "concat(.,txn.mg_gw" in r for r in rules)
    (fast,) = [r for r in rules if r.startswith("http-request allow if")]
    assert fast.count("nbsrv(") == 2 and "dispatch.map" in fast


def test_lone_map_holds_only_the_lone_gateways_of_shared_ports() -> None:
    """HAProxy loads only the maps a rule names, and only the generic rules name lone.map: a
    gateway alone on its port has no entry there (a `set map` on it would fail)."""
    one_route = {"[127.0.0.1:8081]": {}}
    result = compiled(
        gateway("alone", 8080, routes=one_route),
        gateway("alone-vhost", 8082, virtual_hosts="v.example.com", routes=one_route),
        gateway("a", 8081, virtual_hosts="a.example.com", routes=one_route),
        gateway("b", 8081, virtual_hosts="b.example.com", routes=one_route),
    )
    shared = {
        g.gateway_id for f in result.dataplane.frontends if f.port == 8081 for g in f.gateways
    }
    assert {key for key, _ in map_entries(result, ir.LONE_MAP)} == shared
    text = render_files(result.dataplane)[CONFIG_FILE]
    assert text.count("lone.map") == 1
