"""The Gateway resource: every rule of SPEC §1 "Gateway", each violation with its field path."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from meshgate.errors import Problem, ValidationFailed
from meshgate.model import Gateway, Port, Rewrite, to_document, validate_resource
from meshgate.model.gateway import check_balance, inline_endpoint


def gateway_data(**fields: Any) -> dict[str, Any]:
    return {"name": "sava", "port": 9070, "routes": {"a": {}}, **fields}


def gateway(allow_raw_acl: bool = False, **fields: Any) -> Gateway:
    resource = validate_resource(gateway_data(**fields), allow_raw_acl=allow_raw_acl)
    assert isinstance(resource, Gateway)
    return resource


def problems(allow_raw_acl: bool = False, **fields: Any) -> list[Problem]:
    with pytest.raises(ValidationFailed) as caught:
        validate_resource(gateway_data(**fields), allow_raw_acl=allow_raw_acl)
    return caught.value.problems


def problem(allow_raw_acl: bool = False, **fields: Any) -> Problem:
    found = problems(allow_raw_acl=allow_raw_acl, **fields)
    assert len(found) == 1, found
    return found[0]


def weights(*route_weights: Any) -> dict[str, int]:
    routes = {
        f"r{index}": ({} if weight is None else {"weight": weight})
        for index, weight in enumerate(route_weights)
    }
    return gateway(routes=routes).route_weights()


# --- weights ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "expected"),
    [("90%", 90), ("0%", 0), ("100%", 100), (" 50 % ", 50), ("7", 7), (90, 90), (0, 0), (100, 100)],
)
def test_weight_forms(written: Any, expected: int) -> None:
    routes = {"a": {"weight": written}, "b": {}}
    assert gateway(routes=routes).routes["a"].weight == expected


@pytest.mark.parametrize(
    "written", [101, "150%", -1, "-5%", "abc", 50.5, "50.5%", True, "5 0", "", [50]]
)
def test_bad_weights_are_rejected_with_the_route_path(written: Any) -> None:
    found = problem(routes={"sava:1.0/sava/port": {"weight": written}, "b": {}})
    assert found.path == "routes.sava:1.0/sava/port.weight"
    assert "weight" in found.message


def test_weight_above_100_says_the_range() -> None:
    found = problem(routes={"a": {"weight": 150}})
    assert found == Problem("routes.a.weight", "weight must be between 0% and 100%, got 150")


def test_weights_that_do_not_total_100_are_rejected_on_routes() -> None:
    found = problem(routes={"a": {"weight": "50%"}, "b": {"weight": "40%"}})
    assert found.path == "routes"
    assert "90%" in found.message
    assert "100%" in found.message


def test_weights_above_100_with_unweighted_routes_are_rejected() -> None:
    found = problem(routes={"a": {"weight": 80}, "b": {"weight": 30}, "c": {}})
    assert found.path == "routes"
    assert "110%" in found.message


def test_all_zero_weights_are_allowed() -> None:
    assert weights(0, "0%", 0) == {"r0": 0, "r1": 0, "r2": 0}


def test_weights_totalling_100_are_kept() -> None:
    assert weights("90%", "10%") == {"r0": 90, "r1": 10}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ((None,), [100]),
        ((None, None), [50, 50]),
        ((None, None, None), [33, 33, 34]),
        ((50, None, None), [50, 25, 25]),
        ((None, 50, None), [25, 50, 25]),
        ((10, None, None, None), [10, 30, 30, 30]),
        ((None, 1, None, 2), [48, 1, 49, 2]),
        ((99, None, None), [99, 0, 1]),
        ((100, None), [100, 0]),
        ((None,) * 7, [14, 14, 14, 14, 14, 14, 16]),
    ],
)
def test_unweighted_routes_share_the_rest_and_the_last_takes_the_remainder(
    given: tuple[Any, ...], expected: list[int]
) -> None:
    result = weights(*given)
    assert list(result) == [f"r{i}" for i in range(len(given))]  # the written order
    assert list(result.values()) == expected
    assert sum(result.values()) == 100


def test_a_gateway_without_routes_has_no_weights() -> None:
    assert gateway(routes={}).route_weights() == {}


def test_a_bare_route_name_is_a_route_with_defaults() -> None:
    # Vamp allows `routes: {sava: }`.
    route = gateway(routes={"sava": None}).routes["sava"]
    assert route.weight is None
    assert route.condition is None
    assert route.rewrites == []


def test_at_most_64_routes() -> None:
    assert len(gateway(routes={f"r{i}": {} for i in range(64)}).routes) == 64
    found = problem(routes={f"r{i}": {} for i in range(65)})
    assert found.path == "routes"
    assert "64" in found.message


# --- conditions and their strength --------------------------------------------------------------


def test_condition_strength_defaults_to_100_when_a_condition_is_given() -> None:
    route = gateway(routes={"a": {"condition": "has cookie beta"}}).routes["a"]
    assert route.condition_strength is None
    assert route.strength == 100


@pytest.mark.parametrize(("written", "expected"), [("50%", 50), ("0%", 0), (100, 100), ("25", 25)])
def test_condition_strength_forms(written: Any, expected: int) -> None:
    route = gateway(routes={"a": {"condition": "has cookie b", "condition_strength": written}})
    assert route.routes["a"].strength == expected


@pytest.mark.parametrize("written", ["101%", -1, "abc", 1000])
def test_condition_strength_outside_0_to_100_is_rejected(written: Any) -> None:
    found = problem(routes={"a": {"condition": "has cookie b", "condition_strength": written}})
    assert found.path == "routes.a.condition_strength"
    assert "condition_strength" in found.message


def test_condition_strength_needs_a_condition() -> None:
    found = problem(routes={"a": {"condition_strength": "50%"}})
    assert found == Problem("routes.a.condition_strength", "needs a condition")


def test_a_condition_that_does_not_parse_is_rejected_with_its_column() -> None:
    found = problem(routes={"sava:1.1": {"condition": "user-agent === Firefox"}})
    assert found.path == "routes.sava:1.1.condition"
    assert "column 14" in found.message


def test_an_unknown_condition_is_rejected_not_passed_through() -> None:
    found = problem(routes={"a": {"condition": "hdr(x) -m found"}})
    assert found.path == "routes.a.condition"
    assert "column" in found.message


def test_raw_acl_is_rejected_unless_allowed() -> None:
    raw = "< hdr(x-beta) -m found >"
    found = problem(routes={"a": {"condition": raw}})
    assert found.path == "routes.a.condition"
    assert "--allow-raw-acl" in found.message
    assert (
        gateway(allow_raw_acl=True, routes={"a": {"condition": raw}}).routes["a"].condition == raw
    )


def test_raw_acl_on_a_model_needs_the_context_too() -> None:
    data = gateway_data(routes={"a": {"condition": "< hdr(x) -m found >"}})
    with pytest.raises(ValidationError):
        Gateway.model_validate(data)
    assert Gateway.model_validate(data, context={"allow_raw_acl": True}).routes["a"].condition


def test_conditions_are_kept_as_written() -> None:
    text = "user-agent == Firefox and has cookie beta"
    assert gateway(routes={"a": {"condition": text}}).routes["a"].condition == text


def test_a_tcp_gateway_rejects_http_conditions_on_the_route() -> None:
    found = problem(port="9070/tcp", routes={"db:1": {"condition": "has cookie beta"}})
    assert found.path == "routes.db:1.condition"
    assert "tcp" in found.message


def test_a_tcp_gateway_accepts_source_conditions() -> None:
    tcp = gateway(port="5432/tcp", routes={"a": {"condition": "source in 10.0.0.0/8"}})
    assert tcp.routes["a"].condition == "source in 10.0.0.0/8"


# --- balance ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method",
    [
        "roundrobin",
        "static-rr",
        "leastconn",
        "first",
        "source",
        "random",
        "uri",
        "url_param(x)",
        "url_param(session_id)",
        "hdr(X-User)",
        "hdr(host)",
    ],
)
def test_every_balance_method_is_accepted(method: str) -> None:
    assert gateway(balance=method).balance == method
    assert gateway(routes={"a": {"balance": method}}).routes["a"].balance == method


def test_balance_is_trimmed() -> None:
    assert check_balance("  leastconn ") == "leastconn"


@pytest.mark.parametrize(
    "method",
    [
        "roundrobin; foo",
        "roundrobin\nserver x 1.2.3.4:80",
        "hdr(a b)",
        "hdr()",
        "hdr(X-User)x",
        "hdr(X-User\n)",
        "url_param(x\n)",
        "url_param(a,b)",
        "hdr(%[src])",
        "rdp-cookie(x)",
        "leastconn roundrobin",
        "foo",
        "",
    ],
)
def test_other_balance_methods_are_rejected(method: str) -> None:
    assert problem(balance=method).path == "balance"
    assert problem(routes={"a": {"balance": method}}).path == "routes.a.balance"


def test_default_balance_depends_on_the_mode() -> None:
    assert gateway().default_balance == "roundrobin"
    assert gateway(port="9070/tcp").default_balance == "leastconn"
    assert gateway(balance="first").default_balance == "first"


@pytest.mark.parametrize("method", ["uri", "hdr(X-User)", "url_param(x)"])
def test_http_balance_methods_need_an_http_port(method: str) -> None:
    assert problem(port="9070/tcp", balance=method).path == "balance"
    found = problem(port="9070/tcp", routes={"a": {"balance": method}})
    assert found.path == "routes.a.balance"
    assert "http" in found.message


# --- sticky -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sticky", ["none", "route", "instance", "source"])
def test_every_sticky_mode_works_on_http(sticky: str) -> None:
    assert gateway(sticky=sticky).sticky_mode == sticky


def test_sticky_defaults_to_none() -> None:
    assert gateway().sticky_mode == "none"


@pytest.mark.parametrize("sticky", ["route", "instance"])
def test_sticky_route_and_instance_need_http(sticky: str) -> None:
    found = problem(port="9070/tcp", sticky=sticky)
    assert found.path == "sticky"
    assert "http" in found.message


def test_sticky_source_works_on_tcp() -> None:
    assert gateway(port="9070/tcp", sticky="source").sticky_mode == "source"


def test_unknown_sticky_mode_is_rejected() -> None:
    assert problem(sticky="cookie").path == "sticky"


# --- port and bind ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "number", "mode"),
    [
        (9070, 9070, "http"),
        ("9070", 9070, "http"),
        ("9070/http", 9070, "http"),
        ("9070/tcp", 9070, "tcp"),
        ("9070/TCP", 9070, "tcp"),
        (1, 1, "http"),
        (65535, 65535, "http"),
    ],
)
def test_port_forms(written: Any, number: int, mode: str) -> None:
    port = gateway(port=written).port
    assert (port.number, port.mode) == (number, mode)
    assert str(port) == f"{number}/{mode}"


@pytest.mark.parametrize(
    "written", [70000, 0, -1, "70000/http", "abc", "9070/udp", "9070/", "/http", "", True, 90.7]
)
def test_bad_ports_are_rejected(written: Any) -> None:
    assert problem(port=written).path.startswith("port")


def test_port_out_of_range_says_the_range() -> None:
    found = problem(port=70000)
    assert found.path == "port.number"
    assert "65535" in found.message


def test_port_text_says_the_forms() -> None:
    assert "9070/http" in problem(port="abc").message


def test_port_is_required() -> None:
    with pytest.raises(ValidationFailed) as caught:
        validate_resource({"name": "sava", "routes": {}})
    assert [p.path for p in caught.value.problems] == ["port"]


def test_port_serializes_as_text() -> None:
    assert Port.model_validate(9070).model_dump() == "9070/http"


@pytest.mark.parametrize(
    ("written", "expected"),
    [("0.0.0.0", "0.0.0.0"), ("127.0.0.1", "127.0.0.1"), ("::", "::"), ("0:0::1", "::1")],
)
def test_bind_is_an_ip_address_in_canonical_form(written: str, expected: str) -> None:
    assert gateway(bind=written).bind == expected


def test_bind_defaults_to_all_addresses() -> None:
    assert gateway().bind == "0.0.0.0"


@pytest.mark.parametrize(
    "written", ["localhost", "1.2.3", "fe80::1%eth0", "fe80::1%x\nfrontend y", ""]
)
def test_bad_bind_addresses_are_rejected(written: str) -> None:
    assert problem(bind=written).path == "bind"


# --- names and namespaces -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["sava", "a/b", "a/b/c/d", "sava:1.0/sava/port", "A.b_c-d:e", "x" * 200]
)
def test_names_of_one_to_four_segments(name: str) -> None:
    assert gateway(name=name).name == name


@pytest.mark.parametrize(
    "name",
    [
        "a/b/c/d/e",
        "a b",
        "a#b",
        "a%b",
        "a$b",
        "a'b",
        "",
        "/a",
        "a/",
        "a//b",
        "sava\n",
        "sava\nfrontend x",
        "säva",
        "x" * 201,
    ],
)
def test_bad_names_are_rejected(name: str) -> None:
    assert problem(name=name).path == "name"


def test_namespace_defaults_to_default() -> None:
    assert gateway().namespace == "default"


@pytest.mark.parametrize("namespace", ["team-a", "a", "0", "a" * 63])
def test_good_namespaces(namespace: str) -> None:
    assert gateway(namespace=namespace).namespace == namespace


@pytest.mark.parametrize(
    "namespace", ["Team", "a_b", "-a", "a-", "a.b", "a/b", "a" * 64, "", "default\n"]
)
def test_bad_namespaces_are_rejected(namespace: str) -> None:
    assert problem(namespace=namespace).path == "namespace"


@pytest.mark.parametrize("route", ["sava:1.0/sava/port", "a/b/c/d", "x.y"])
def test_route_names_are_resource_names(route: str) -> None:
    assert list(gateway(routes={route: {}}).routes) == [route]


@pytest.mark.parametrize("route", ["a b", "a\n", "a/b/c/d/e", "a#b", "[not an endpoint]", "{x}"])
def test_bad_route_names_are_rejected(route: str) -> None:
    assert problem(routes={route: {}}).path == "routes"


# --- virtual hosts ------------------------------------------------------------------------------


def test_virtual_hosts_may_be_one_string() -> None:
    assert gateway(virtual_hosts="sava.example.com").virtual_hosts == ["sava.example.com"]


def test_virtual_hosts_list_is_normalized() -> None:
    hosts = ["Sava.Example.COM", "*.sava.example.com", "api.example.com.", "localhost"]
    assert gateway(virtual_hosts=hosts).virtual_hosts == [
        "sava.example.com",
        "*.sava.example.com",
        "api.example.com",
        "localhost",
    ]


def test_virtual_hosts_default_to_none() -> None:
    assert gateway().virtual_hosts == []


@pytest.mark.parametrize(
    "host",
    [
        "*.com",
        "*",
        "a.*.com",
        "**.example.com",
        "*example.com",
        "exa mple.com",
        "a..b",
        "-a.example.com",
        "a_b.example.com",
        "bücher.de",
        "host.example.com:80",
        "a\n.example.com",
        "%[req.hdr(host)]",
        "",
        "a" * 64 + ".com",
    ],
)
def test_bad_virtual_hosts_are_rejected(host: str) -> None:
    found = problem(virtual_hosts=[host])
    assert found.path == "virtual_hosts"
    assert "host" in found.message or "wildcard" in found.message


def test_duplicate_virtual_hosts_are_rejected_after_normalizing() -> None:
    found = problem(virtual_hosts=["sava.example.com", "SAVA.example.com."])
    assert found == Problem("virtual_hosts", "'sava.example.com' is listed twice")


def test_virtual_hosts_need_an_http_port() -> None:
    found = problem(port="9070/tcp", virtual_hosts=["sava.example.com"])
    assert found.path == "virtual_hosts"
    assert "http" in found.message


# --- unknown fields -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"extra": 1}, "extra"),
        ({"routes": {"a": {"extra": 1}}}, "routes.a.extra"),
        ({"timeouts": {"idle": "5s"}}, "timeouts.idle"),
        (
            {"routes": {"a": {"rewrites": [{"path": "/x", "when": "y"}]}}},
            "routes.a.rewrites.0.when",
        ),
        (
            {"routes": {"a": {"targets": [{"address": "1.2.3.4", "port": 80, "x": 1}]}}},
            "routes.a.targets.0.x",
        ),
    ],
)
def test_unknown_fields_are_rejected(fields: dict[str, Any], path: str) -> None:
    assert problem(**fields) == Problem(path, "unknown field")


def test_tls_as_the_spec_writes_it_takes_defaults() -> None:
    tls = gateway(tls={"certificates": ["sava-cert"]}).tls
    assert tls is not None
    assert (tls.certificates, tls.min_version, tls.redirect_http, tls.hsts) == (
        ["sava-cert"], "1.2", None, None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"tls": {"certificates": []}}, "tls.certificates"),
        ({"tls": {"certificates": ["a", "a"]}}, "tls.certificates"),
        ({"tls": {"certificates": ["a b"]}}, "tls.certificates"),
        ({"tls": {"certificates": ["a"], "min_version": "1.1"}}, "tls.min_version"),
        ({"tls": {"certificates": ["a"], "hsts": -1}}, "tls.hsts"),
        ({"tls": {"certificates": ["a"], "redirect_http": 70000}}, "tls.redirect_http"),
        ({"tls": {"certificates": ["a"], "redirect_http": 9070}}, "tls.redirect_http"),
        ({"port": "9070/tcp", "tls": {"certificates": ["a"], "hsts": 60}}, "tls.hsts"),
        ({"tls": {"certificates": ["a"], "alpn": "h2"}}, "tls.alpn"),
    ],
)
def test_bad_tls_settings_are_rejected_with_their_path(fields: dict[str, Any], path: str) -> None:
    assert problem(**fields).path == path


# --- [host:port] routes and inline targets ------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "endpoint"),
    [
        ("[127.0.0.1:8080]", ("127.0.0.1", 8080)),
        ("[[::1]:8080]", ("::1", 8080)),
        ("[::1]:8080", ("::1", 8080)),
        ("[Backend.Local:80]", ("backend.local", 80)),
    ],
)
def test_host_port_route_names(route: str, endpoint: tuple[str, int]) -> None:
    assert list(gateway(routes={route: {}}).routes) == [route]
    assert inline_endpoint(route) == endpoint


def test_named_routes_are_not_endpoints() -> None:
    assert inline_endpoint("sava:1.0/sava/port") is None
    assert inline_endpoint("127.0.0.1:80") is None


@pytest.mark.parametrize(
    "route",
    [
        "[127.0.0.1]",
        "[127.0.0.1:70000]",
        "[127.0.0.1:http]",
        "[::1:8080]",
        "[1.2.3.4:80 ]",
        "[1.2.3.4:80\r]",
        "[1.2.3.4:80]\n",
        "[::1]:8080\n",
        "[fe80::1%eth0]:80",
        "[[fe80::1%eth0]:80]",
        "[a b:80]",
        "[]",
    ],
)
def test_bad_host_port_route_names_are_rejected(route: str) -> None:
    assert problem(routes={route: {}}).path == "routes"


def test_inline_targets() -> None:
    targets = ["127.0.0.1:8083", "[::1]:8084", {"address": "127.0.0.1", "port": 8085, "id": "c"}]
    route = gateway(routes={"canary": {"targets": targets, "weight": "0%"}, "b": {}}).routes[
        "canary"
    ]
    assert route.targets is not None
    assert [(t.id, t.address, t.port) for t in route.targets] == [
        ("127.0.0.1:8083", "127.0.0.1", 8083),
        ("::1:8084", "::1", 8084),
        ("c", "127.0.0.1", 8085),
    ]


def test_inline_targets_need_a_resource_name_for_the_route() -> None:
    assert problem(routes={"[1.2.3.4:80]": {"targets": ["1.2.3.4:81"]}}).path == "routes"


def test_duplicate_inline_targets_are_rejected() -> None:
    found = problem(routes={"a": {"targets": ["1.2.3.4:80", "1.2.3.4:80"]}})
    assert found.path == "routes.a.targets"
    assert "repeats" in found.message


@pytest.mark.parametrize("target", ["1.2.3.4", "1.2.3.4:0", "a b:80", "::1:80", "1.2.3.4:80\nx"])
def test_bad_inline_targets_are_rejected(target: str) -> None:
    assert problem(routes={"a": {"targets": [target]}}).path == "routes.a.targets.0"


# --- rewrites -----------------------------------------------------------------------------------


def test_rewrite_with_a_condition() -> None:
    route = gateway(routes={"a": {"rewrites": [{"path": "/v2%[path] if path starts with /api"}]}})
    rewrite = route.routes["a"].rewrites[0]
    assert (rewrite.path, rewrite.condition) == ("/v2%[path]", "path starts with /api")


@pytest.mark.parametrize("path", ["/", "/v2%[path]", "%[path]/x", "/search/%[query]", "/a-b_c.d~e"])
def test_rewrite_paths_without_a_condition(path: str) -> None:
    rewrite = gateway(routes={"a": {"rewrites": [{"path": path}]}}).routes["a"].rewrites[0]
    assert (rewrite.path, rewrite.condition) == (path, None)


def test_rewrite_in_split_form() -> None:
    written = {"path": "/x", "condition": "has cookie a"}
    rewrite = gateway(routes={"a": {"rewrites": [written]}}).routes["a"].rewrites[0]
    assert rewrite == Rewrite(path="/x", condition="has cookie a")


def test_rewrite_serializes_in_vamp_form() -> None:
    written = "/v2%[path] if path starts with /api"
    assert Rewrite.model_validate({"path": written}).model_dump() == {"path": written}


@pytest.mark.parametrize(
    "written",
    [
        "/x%[req.hdr(x)]",
        "/x%[src]",
        "/x%[path",
        "/a%20b",
        '/a"b',
        "/a'b",
        "/a$b",
        "/a#b",
        "/a\\b",
        "/a{b}",
        "/a?b",
        "relative/path",
        "/é",
    ],
)
def test_rewrite_paths_outside_the_allowed_alphabet_are_rejected(written: str) -> None:
    found = problem(routes={"a": {"rewrites": [{"path": written}]}})
    assert found.path == "routes.a.rewrites.0.path"
    assert "%[path]" in found.message


@pytest.mark.parametrize("written", ["/a b", "/a\nb", "/x if", "", "/x\nhttp-request deny"])
def test_rewrites_that_are_not_path_if_condition_are_rejected(written: str) -> None:
    assert problem(routes={"a": {"rewrites": [{"path": written}]}}).path.startswith(
        "routes.a.rewrites.0"
    )


@pytest.mark.parametrize("written", ["/x\n", "/x\r", "/x "])
def test_split_form_rewrite_paths_may_not_end_in_whitespace(written: str) -> None:
    found = problem(routes={"a": {"rewrites": [{"path": written, "condition": None}]}})
    assert found.path == "routes.a.rewrites.0.path"


def test_rewrite_conditions_are_checked() -> None:
    found = problem(routes={"a": {"rewrites": [{"path": "/x if path === /y"}]}})
    assert found.path == "routes.a.rewrites.0.condition"
    assert "column" in found.message


def test_rewrites_need_an_http_port() -> None:
    found = problem(port="9070/tcp", routes={"a": {"rewrites": [{"path": "/x"}]}})
    assert found.path == "routes.a.rewrites"


# --- timeouts -----------------------------------------------------------------------------------


def test_timeouts_in_milliseconds() -> None:
    timeouts = gateway(timeouts={"connect": "5s", "client": "500ms", "server": 250}).timeouts
    assert (timeouts.connect, timeouts.client, timeouts.server) == (5000, 500, 250)


def test_timeouts_default_to_unset() -> None:
    timeouts = gateway().timeouts
    assert (timeouts.connect, timeouts.client, timeouts.server) == (None, None, None)


@pytest.mark.parametrize("written", ["0s", "abc", "5 s x", "-1s", "25h", "1.5s", True])
def test_bad_timeouts_are_rejected(written: Any) -> None:
    assert problem(timeouts={"client": written}).path == "timeouts.client"


# --- round trip ---------------------------------------------------------------------------------


def test_a_gateway_survives_its_own_document() -> None:
    original = gateway(
        name="sava",
        port="9070/http",
        virtual_hosts=["sava.example.com", "*.sava.example.com"],
        sticky="route",
        balance="roundrobin",
        timeouts={"connect": "5s"},
        routes={
            "sava:1.0/sava/port": {"weight": "90%"},
            "sava:1.1/sava/port": {
                "weight": "10%",
                "condition": "user-agent == Firefox and has cookie beta",
                "condition_strength": "50%",
                "balance": "leastconn",
                "rewrites": [{"path": "/v2%[path] if path starts with /api"}],
            },
            "canary": {"targets": ["127.0.0.1:8083"], "weight": 0},
        },
    )
    document = to_document(original)
    assert document["port"] == "9070/http"
    assert validate_resource(document) == original


def test_gateways_are_immutable() -> None:
    with pytest.raises(ValidationError):
        gateway().name = "other"  # type: ignore[misc]
