"""Reading manifests: documents, kinds, and errors that say FILE:LINE: path: message."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from pydantic import ValidationError

from meshgate.errors import Problem, ValidationFailed
from meshgate.model import (
    Gateway,
    ManifestError,
    Resource,
    Service,
    load_documents,
    parse_text,
    resource_key,
    validate_resource,
)
from meshgate.model.manifest import problems_from_pydantic


def load(text: str, source: str = "sava.yaml", *, allow_raw_acl: bool = False) -> list[Resource]:
    return load_documents(parse_text(textwrap.dedent(text), source), allow_raw_acl=allow_raw_acl)


def error_lines(text: str, source: str = "sava.yaml") -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load(text, source)
    return caught.value.lines()


SAVA = """\
name: sava
port: 9070/http
routes:
  sava:1.0/sava/port:
    weight: 90%
  sava:1.1/sava/port:
    weight: 10%
---
kind: service
name: sava:1.0/sava/port
instances: ["127.0.0.1:8081"]
"""


# --- documents ----------------------------------------------------------------------------------


def test_multi_document_yaml() -> None:
    resources = load(SAVA)
    assert [type(r) for r in resources] == [Gateway, Service]
    assert [resource_key(r) for r in resources] == [
        ("gateways", "default", "sava"),
        ("services", "default", "sava:1.0/sava/port"),
    ]


def test_documents_know_where_they_start() -> None:
    documents = parse_text(SAVA, "sava.yaml")
    assert [(d.source, d.line) for d in documents] == [("sava.yaml", 1), ("sava.yaml", 9)]


def test_empty_documents_are_skipped() -> None:
    assert parse_text("---\n---\n# only a comment\n", "x.yaml") == []
    assert len(parse_text("---\nname: a\nport: 1\n---\n---\n", "x.yaml")) == 1


def test_json_input() -> None:
    text = '{"name": "sava", "port": "9070/http", "routes": {"a": {"weight": "100%"}}}'
    (gateway,) = load(text, "sava.json")
    assert isinstance(gateway, Gateway)
    assert gateway.route_weights() == {"a": 100}


def test_json_errors_carry_lines_too() -> None:
    text = (
        '{\n  "name": "sava",\n  "port": 9070,\n  "routes": {\n    "a": {"weight": 150}\n  }\n}\n'
    )
    assert error_lines(text, "sava.json") == [
        "sava.json:5: routes.a.weight: weight must be between 0% and 100%, got 150"
    ]


def test_kind_is_optional_and_defaults_to_gateway() -> None:
    (resource,) = load("name: sava\nport: 9070\n")
    assert isinstance(resource, Gateway)
    assert resource.kind == "gateway"


@pytest.mark.parametrize("kind", ["service", "Service", "SERVICE"])
def test_kind_is_case_insensitive(kind: str) -> None:
    (resource,) = load(f"kind: {kind}\nname: s\n")
    assert isinstance(resource, Service)


@pytest.mark.parametrize("kind", ["pod", "gateways", "", 3])
def test_unknown_kind_is_rejected(kind: Any) -> None:
    with pytest.raises(ValidationFailed) as caught:
        validate_resource({"kind": kind, "name": "x"})
    (found,) = caught.value.problems
    assert found.path == "kind"
    assert "use gateway, service, certificate or rollout" in found.message


def test_unknown_kind_in_a_file_names_its_line() -> None:
    assert error_lines("name: x\nkind: pod\n") == [
        "sava.yaml:2: kind: 'pod' is not a kind; use gateway, service, certificate or rollout"
    ]


def test_expected_kind() -> None:
    assert isinstance(validate_resource({"name": "s"}, kind="service"), Service)
    with pytest.raises(ValidationFailed) as caught:
        validate_resource({"kind": "gateway", "name": "g", "port": 1}, kind="service")
    assert caught.value.problems == [Problem("kind", "expected service, got gateway")]


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_a_document_must_be_a_mapping(text: str) -> None:
    assert error_lines(text) == ["sava.yaml:1: a manifest document must be a mapping of fields"]


def test_raw_acl_permission_is_passed_through() -> None:
    text = "name: g\nport: 1\nroutes:\n  a:\n    condition: < hdr(x) -m found >\n"
    assert "--allow-raw-acl" in error_lines(text)[0]
    (gateway,) = load(text, allow_raw_acl=True)
    assert isinstance(gateway, Gateway)


# --- errors and their lines ---------------------------------------------------------------------


def test_a_bad_weight_reports_its_own_line() -> None:
    text = SAVA.replace("weight: 10%", "weight: 200%")
    assert error_lines(text) == [
        "sava.yaml:7: routes.sava:1.1/sava/port.weight: weight must be between 0% and 100%, got 200"
    ]


def test_weights_that_do_not_add_up_report_the_routes_line() -> None:
    text = SAVA.replace("weight: 10%", "weight: 20%")
    (line,) = error_lines(text)
    assert line.startswith("sava.yaml:3: routes: route weights add up to 110%")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            """\
            name: sava
            port: 9070
            extra: true
            """,
            "sava.yaml:3: extra: unknown field",
        ),
        (
            """\
            name: sava
            port: 9070
            routes:
              a:
                weight: 50
              b.c:
                condition: user-agent === x
            """,
            "sava.yaml:7: routes.b.c.condition: column 14: expected a value after '==', found '='",
        ),
        (
            """\
            name: sava
            port: 9070/tcp
            routes:
              db:1:
                condition: has cookie x
            """,
            "sava.yaml:5: routes.db:1.condition: "
            "needs an http port; a tcp gateway allows only 'source in' conditions",
        ),
        (
            """\
            name: sava
            port: 9070
            routes:
              a:
                condition_strength: 50%
            """,
            "sava.yaml:5: routes.a.condition_strength: needs a condition",
        ),
        (
            """\
            kind: service
            name: s
            instances:
              - 127.0.0.1:80
              - address: 127.0.0.1
                port: 70000
            """,
            "sava.yaml:6: instances.1.port: port must be between 1 and 65535, got 70000",
        ),
        (
            """\
            kind: service
            name: s
            health_check:
              type: http
              send: PING
            """,
            "sava.yaml:5: health_check.send: send/expect apply to tcp checks only",
        ),
        (
            """\
            name: sava
            port: 9070
            routes:
              a:
                rewrites:
                  - path: /ok
                  - path: /x%[src]
            """,
            "sava.yaml:7: routes.a.rewrites.1.path: '/x%[src]' is not a path: it must start with "
            "'/' (or %[path]) and use URL characters, with %[path] and %[query] as the only "
            "expressions",
        ),
    ],
)
def test_errors_name_the_line_of_the_offending_field(text: str, expected: str) -> None:
    assert error_lines(text) == [expected]


def test_a_missing_field_reports_where_the_document_starts() -> None:
    text = "name: a\nport: 1\n---\n# the second document\nname: b\n"
    assert error_lines(text) == ["sava.yaml:5: port: Field required"]


def test_yaml_syntax_errors_report_a_line() -> None:
    text = "name: sava\nport: 9070\nroutes:\n  a: {weight: 10\n  b: {}\n"
    (line,) = error_lines(text)
    assert line.startswith("sava.yaml:5: not valid YAML or JSON: ")


def test_yaml_syntax_error_is_a_validation_failure() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_text("a: [\n", "bad.yaml")
    assert isinstance(caught.value, ManifestError)
    assert caught.value.problems[0].path == ""


def test_all_problems_of_all_documents_are_reported_together() -> None:
    text = """\
    name: one
    port: 70000
    extra: 1
    ---
    kind: service
    name: ok
    ---
    kind: service
    name: bad name
    mode: udp
    """
    lines = error_lines(text, "all.yaml")
    assert lines == [
        "all.yaml:2: port.number: port must be between 1 and 65535, got 70000",
        "all.yaml:3: extra: unknown field",
        "all.yaml:9: name: 'bad name' is not a valid name: use 1-4 '/'-separated segments of "
        "letters, digits, '.', '_', ':' and '-'",
        "all.yaml:10: mode: Input should be 'http' or 'tcp'",
    ]


def test_manifest_error_keeps_problems_and_locations() -> None:
    with pytest.raises(ManifestError) as caught:
        load("name: a\nport: 0\n", "a.yaml")
    error = caught.value
    assert error.located == [("a.yaml:2", Problem("port.number", error.problems[0].message))]
    assert str(error) == f"port.number: {error.problems[0].message}"


# --- pydantic errors to problems ----------------------------------------------------------------


def test_problems_from_pydantic_flatten_paths() -> None:
    data = {
        "name": "g",
        "port": 1,
        "routes": {"a": {"weight": 500}, "b": {"extra": 1}},
        "virtual_hosts": "not a host!",
    }
    with pytest.raises(ValidationError) as caught:
        Gateway.model_validate(data)
    found = {p.path: p.message for p in problems_from_pydantic(caught.value)}
    assert found == {
        "routes.a.weight": "weight must be between 0% and 100%, got 500",
        "routes.b.extra": "unknown field",
        "virtual_hosts": "'not a host!' is not a valid host name (a wildcard is written "
        "'*.example.com')",
    }


def test_field_errors_raised_above_a_field_name_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        Gateway.model_validate({"name": "g", "port": "1/tcp", "sticky": "route"})
    assert problems_from_pydantic(caught.value) == [
        Problem("sticky", "route needs an http port; use sticky: source")
    ]
