"""The Service resource: instances, health checks and the value parsers they share."""

from __future__ import annotations

from typing import Any

import pytest

from meshgate.errors import Problem, ValidationFailed
from meshgate.model import HealthCheck, Instance, Service, to_document, validate_resource
from meshgate.model.values import (
    format_endpoint,
    normalize_address,
    parse_duration_ms,
    parse_percentage,
    split_endpoint,
)


def service_data(**fields: Any) -> dict[str, Any]:
    return {"kind": "service", "name": "sava:1.0/sava/port", **fields}


def service(**fields: Any) -> Service:
    resource = validate_resource(service_data(**fields))
    assert isinstance(resource, Service)
    return resource


def problem(**fields: Any) -> Problem:
    with pytest.raises(ValidationFailed) as caught:
        validate_resource(service_data(**fields))
    assert len(caught.value.problems) == 1, caught.value.problems
    return caught.value.problems[0]


def check(**fields: Any) -> HealthCheck:
    health = service(health_check=fields).health_check
    assert health is not None
    return health


def check_problem(**fields: Any) -> Problem:
    return problem(health_check=fields)


# --- the service itself -------------------------------------------------------------------------


def test_defaults() -> None:
    plain = service()
    assert plain.namespace == "default"
    assert plain.mode == "http"
    assert plain.instances == []
    assert plain.health_check is None
    assert plain.passive is None


def test_mode_is_http_or_tcp() -> None:
    assert service(mode="tcp").mode == "tcp"
    assert problem(mode="udp").path == "mode"


@pytest.mark.parametrize("name", ["a/b/c/d/e", "a b", "", "a\n"])
def test_names_follow_the_gateway_rules(name: str) -> None:
    assert problem(name=name).path == "name"


def test_namespace_is_checked() -> None:
    assert service(namespace="team-a").namespace == "team-a"
    assert problem(namespace="Team A").path == "namespace"


def test_unknown_fields_are_rejected() -> None:
    assert problem(replicas=3) == Problem("replicas", "unknown field")
    assert problem(health_check={"type": "tcp", "retries": 3}) == Problem(
        "health_check.retries", "unknown field"
    )


def test_a_service_survives_its_own_document() -> None:
    original = service(
        instances=[
            "127.0.0.1:8081",
            {"address": "127.0.0.1", "port": 8082, "weight": 50, "id": "b"},
        ],
        health_check={
            "type": "http",
            "path": "/health",
            "expect_status": "200-399",
            "interval": "2s",
        },
        passive={"error_limit": 10},
    )
    assert validate_resource(to_document(original)) == original


# --- instances ----------------------------------------------------------------------------------


def test_instances_as_strings_and_mappings() -> None:
    instances = service(
        instances=[
            "127.0.0.1:8081",
            {"address": "127.0.0.1", "port": 8082, "weight": 50, "id": "b"},
            "[::1]:8083",
            "Backend.Local:8084",
        ]
    ).instances
    assert [(i.id, i.address, i.port, i.weight) for i in instances] == [
        ("127.0.0.1:8081", "127.0.0.1", 8081, 100),
        ("b", "127.0.0.1", 8082, 50),
        ("::1:8083", "::1", 8083, 100),
        ("backend.local:8084", "backend.local", 8084, 100),
    ]


def test_instance_ids_default_to_the_endpoint() -> None:
    assert Instance(address="10.0.0.1", port=80).id == "10.0.0.1:80"
    assert Instance(address="[0:0::1]", port=80).id == "::1:80"
    assert Instance(address="::1", port=80).endpoint == "[::1]:80"


def test_duplicate_instance_ids_are_rejected() -> None:
    found = problem(instances=["127.0.0.1:8081", {"address": "127.0.0.1", "port": 8081}])
    assert found.path == "instances"
    assert "'127.0.0.1:8081'" in found.message


def test_duplicate_explicit_ids_are_rejected() -> None:
    found = problem(
        instances=[
            {"address": "127.0.0.1", "port": 1, "id": "a"},
            {"address": "127.0.0.1", "port": 2, "id": "a"},
        ]
    )
    assert found == Problem("instances", "item 1 repeats instance id 'a'")


def test_the_same_endpoint_under_two_ids_is_allowed() -> None:
    instances = service(
        instances=[
            {"address": "127.0.0.1", "port": 1, "id": "a"},
            {"address": "127.0.0.1", "port": 1, "id": "b"},
        ]
    ).instances
    assert [i.id for i in instances] == ["a", "b"]


@pytest.mark.parametrize(
    ("instance", "path"),
    [
        ("127.0.0.1", "instances.0"),
        ("127.0.0.1:0", "instances.0"),
        ("127.0.0.1:70000", "instances.0"),
        ("127.0.0.1:http", "instances.0"),
        ("::1:80", "instances.0"),
        ("a b:80", "instances.0"),
        ("[fe80::1%eth0]:80", "instances.0"),
        ({"address": "fe80::1%eth0", "port": 80}, "instances.0.address"),
        ({"address": "a_b", "port": 80}, "instances.0.address"),
        ({"address": "1.2.3.4", "port": 65536}, "instances.0.port"),
        ({"address": "1.2.3.4", "port": 80, "weight": 257}, "instances.0.weight"),
        ({"address": "1.2.3.4", "port": 80, "weight": -1}, "instances.0.weight"),
        ({"address": "1.2.3.4", "port": 80, "id": "a b"}, "instances.0.id"),
        ({"address": "1.2.3.4", "port": 80, "id": "-a"}, "instances.0.id"),
        ({"address": "1.2.3.4", "port": 80, "id": "a\n"}, "instances.0.id"),
        ({"address": "1.2.3.4", "port": 80, "id": "a" * 64}, "instances.0.id"),
        ({"address": "1.2.3.4"}, "instances.0.port"),
        ({"address": "1.2.3.4", "port": 80, "zone": "a"}, "instances.0.zone"),
    ],
)
def test_bad_instances_are_rejected(instance: Any, path: str) -> None:
    assert problem(instances=[instance]).path == path


@pytest.mark.parametrize("weight", [0, 1, 256])
def test_instance_weights_0_to_256(weight: int) -> None:
    assert (
        service(instances=[{"address": "1.2.3.4", "port": 80, "weight": weight}])
        .instances[0]
        .weight
        == weight
    )


# --- health checks ------------------------------------------------------------------------------


def test_health_check_defaults_to_a_tcp_connect_every_2s() -> None:
    health = check()
    assert (health.type, health.interval, health.timeout) == ("tcp", 2000, None)
    assert (health.rise, health.fall, health.port) == (2, 3, None)
    assert (health.send, health.expect) == (None, None)


def test_full_http_check() -> None:
    health = check(
        type="http",
        path="/health",
        method="get",
        host="Sava.Internal",
        expect_status="200-399",
        expect_body="ok",
        port=9000,
        interval="2s",
        timeout="1s",
        rise=2,
        fall=3,
    )
    assert (health.path, health.method, health.host) == ("/health", "GET", "sava.internal")
    assert (health.expect_status, health.expect_body, health.port) == ("200-399", "ok", 9000)
    assert (health.interval, health.timeout) == (2000, 1000)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("200", "200"),
        (200, "200"),
        ("200-399", "200-399"),
        ("100-599", "100-599"),
        ("204-204", "204-204"),
        (" 301 ", "301"),
        ("200\n", "200"),
    ],
)
def test_expect_status_codes_and_ranges(written: Any, expected: str) -> None:
    assert check(type="http", expect_status=written).expect_status == expected


@pytest.mark.parametrize(
    "written",
    ["600", "099", "399-200", "2xx", "200-", "-200", "200-600", "20", 2000, True, "2\u0660\u0660"],
)
def test_bad_expect_status_is_rejected(written: Any) -> None:
    assert check_problem(type="http", expect_status=written).path == "health_check.expect_status"


@pytest.mark.parametrize(
    ("written", "expected"), [("GET", "GET"), ("head", "HEAD"), ("Options", "OPTIONS")]
)
def test_methods_are_upper_cased(written: str, expected: str) -> None:
    assert check(type="http", method=written).method == expected


@pytest.mark.parametrize("written", ["GE T", "", "G3T", "GET\n", "A" * 21, "ﬆ", "GET /x HTTP/1.0"])
def test_bad_methods_are_rejected(written: str) -> None:
    found = check_problem(type="http", method=written)
    assert found.path == "health_check.method"


@pytest.mark.parametrize("written", ["/", "/health", "/a/b.c", "/healthz?full=1&x=y", "/~u/(x)"])
def test_check_paths(written: str) -> None:
    assert check(type="http", path=written).path == written


@pytest.mark.parametrize(
    "written",
    ["health", "", "/a b", "/a#b", "/a%20", "/a'b", '/a"b', "/a\n", "/a\r\nHost: x", "/é"],
)
def test_check_paths_need_a_leading_slash_and_url_characters(written: str) -> None:
    found = check_problem(type="http", path=written)
    assert found.path == "health_check.path"
    assert "'/'" in found.message


@pytest.mark.parametrize("written", ["a b", "fe80::1%eth0", "x_y", "%[src]", "a\n.b"])
def test_bad_check_hosts_are_rejected(written: str) -> None:
    assert check_problem(type="http", host=written).path == "health_check.host"


@pytest.mark.parametrize("written", ["ok", "status: {up}", "<ok/>", "a|b^c", "x" * 256])
def test_expect_body(written: str) -> None:
    assert check(type="http", expect_body=written).expect_body == written


@pytest.mark.parametrize(
    "written",
    ["", "'", '"', "a\\b", "#", "%[src]", "$HOME", "ok\n", "ok\r", "tab\there", "é", "x" * 257],
)
def test_bad_expect_body_is_rejected(written: str) -> None:
    assert check_problem(type="http", expect_body=written).path == "health_check.expect_body"


def test_tcp_send_and_expect_take_any_text() -> None:
    health = check(type="tcp", send="PING\r\n", expect="+PONG 'é' # %[x]")
    assert (health.send, health.expect) == ("PING\r\n", "+PONG 'é' # %[x]")


@pytest.mark.parametrize("field", ["send", "expect"])
def test_tcp_payloads_are_bounded(field: str) -> None:
    assert check(type="tcp", **{field: "x" * 1024}) is not None
    assert check_problem(type="tcp", **{field: ""}).path == f"health_check.{field}"
    assert check_problem(type="tcp", **{field: "é" * 513}).path == f"health_check.{field}"


@pytest.mark.parametrize(
    ("kind", "field"), [("http", "send"), ("http", "expect"), ("agent", "send")]
)
def test_send_and_expect_are_for_tcp_checks_only(kind: str, field: str) -> None:
    found = check_problem(type=kind, port=9000, **{field: "x"})
    assert found == Problem(f"health_check.{field}", "send/expect apply to tcp checks only")


def test_an_agent_check_needs_a_port() -> None:
    assert check_problem(type="agent") == Problem(
        "health_check.port", "an agent check needs a port (where the agent listens)"
    )
    assert check(type="agent", port=9999).port == 9999


def test_unknown_check_type_is_rejected() -> None:
    assert check_problem(type="icmp").path == "health_check.type"


@pytest.mark.parametrize(
    ("field", "value"), [("port", 0), ("port", 65536), ("rise", 0), ("fall", 101)]
)
def test_check_numbers_are_bounded(field: str, value: int) -> None:
    assert check_problem(**{field: value}).path == f"health_check.{field}"


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2s", 2000),
        ("500ms", 500),
        ("1m", 60_000),
        (250, 250),
        ("250", 250),
        ("1500us", 1),
        ("1h", 3_600_000),
        ("24h", 86_400_000),
    ],
)
def test_durations(written: Any, expected: int) -> None:
    assert check(interval=written).interval == expected
    assert check(timeout=written).timeout == expected


@pytest.mark.parametrize(
    "written", ["0s", "0", "abc", "-1s", "1.5s", "2 seconds", "25h", "100us", True, 1.5]
)
def test_bad_durations_are_rejected(written: Any) -> None:
    assert check_problem(interval=written).path == "health_check.interval"


def test_passive_error_limit() -> None:
    passive = service(passive={"error_limit": 10}).passive
    assert passive is not None
    assert passive.error_limit == 10
    assert problem(passive={"error_limit": 0}).path == "passive.error_limit"
    assert problem(passive={}).path == "passive.error_limit"


def test_retries_default_to_the_count_of_the_defaults_and_no_retry_after_sending() -> None:
    plain = service()
    assert (plain.retries, plain.retry_on) == (None, [])


def test_retry_on_takes_status_numbers_and_drops_repeats() -> None:
    chosen = service(retries=0, retry_on=["empty-response", 503, "503", "junk-response"])
    assert (chosen.retries, chosen.retry_on) == (0, ["empty-response", "503", "junk-response"])


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"retries": 11}, "retries"),
        ({"retries": -1}, "retries"),
        ({"retries": "2; option x"}, "retries"),
        ({"retry_on": ["all-retryable-errors"]}, "retry_on.0"),
        ({"retry_on": ["empty-response", "503 junk-response"]}, "retry_on.1"),
        ({"retry_on": [200]}, "retry_on.0"),
        ({"retry_on": [True]}, "retry_on.0"),
        ({"retry_on": "empty-response"}, "retry_on"),
    ],
)
def test_bad_retries_are_rejected(fields: dict[str, Any], path: str) -> None:
    assert problem(**fields).path == path


def test_retry_on_is_for_http_services_only() -> None:
    assert problem(mode="tcp", retry_on=["empty-response"]) == Problem(
        "retry_on", "applies to http services only; tcp retries refused connections"
    )
    assert service(mode="tcp", retries=1).retries == 1


# --- value parsers ------------------------------------------------------------------------------


def test_parse_duration_messages() -> None:
    with pytest.raises(ValueError, match="shorter than one millisecond"):
        parse_duration_ms("0s")
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_ms("abc")
    with pytest.raises(ValueError, match="longer than 24h"):
        parse_duration_ms("2d")


def test_parse_percentage_names_the_field() -> None:
    assert parse_percentage("90%", field="weight") == 90
    with pytest.raises(ValueError, match=r"^weight must be between 0% and 100%, got 101$"):
        parse_percentage(101, field="weight")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4:80", ("1.2.3.4", 80)),
        ("[::1]:80", ("::1", 80)),
        ("Host.Example:8080", ("host.example", 8080)),
        (" 1.2.3.4:80 ", ("1.2.3.4", 80)),
    ],
)
def test_split_endpoint(text: str, expected: tuple[str, int]) -> None:
    assert split_endpoint(text) == expected


@pytest.mark.parametrize(
    "text", ["1.2.3.4", "::1:80", "[::1]", "1.2.3.4:", "1.2.3.4:x", "[fe80::1%lo]:80"]
)
def test_split_endpoint_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        split_endpoint(text)


def test_normalize_address() -> None:
    assert normalize_address("0:0::1") == "::1"
    assert normalize_address("[::1]") == "::1"
    assert normalize_address("LOCALHOST") == "localhost"
    with pytest.raises(ValueError, match="scope"):
        normalize_address("fe80::1%eth0")


def test_format_endpoint() -> None:
    assert format_endpoint("::1", 80) == "[::1]:80"
    assert format_endpoint("1.2.3.4", 80) == "1.2.3.4:80"
