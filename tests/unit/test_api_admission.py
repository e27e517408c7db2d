"""Admission rules, without HTTP: what is rejected, and under which field path."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from meshgate.api.admission import admit, admit_batch, batch_conflicts, stored_gateways
from meshgate.errors import ValidationFailed
from meshgate.model import Gateway, validate_resource
from meshgate.store import Key, Record

CANARY = "sava:1.1/sava/port"
STABLE = "sava:1.0/sava/port"


def sava(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": "sava",
        "port": "9070/http",
        "routes": {STABLE: {"weight": "90%"}, CANARY: {"weight": "10%"}},
    }
    document.update(changes)
    return document


def gateway(name: str, port: str, hosts: list[str] | None = None) -> Gateway:
    data = {"name": name, "port": port, "virtual_hosts": hosts or []}
    resource = validate_resource(data)
    assert isinstance(resource, Gateway)
    return resource


def paths(exc: pytest.ExceptionInfo[ValidationFailed]) -> list[str]:
    return [problem.path for problem in exc.value.problems]


def with_route(route: str, **settings: Any) -> dict[str, Any]:
    document = sava()
    document["routes"] = copy.deepcopy(document["routes"])
    document["routes"][route].update(settings)
    return document


BAD_DOCUMENTS = [
    pytest.param(with_route(STABLE, weight="heavy"), f"routes.{STABLE}.weight", "", id="weight"),
    pytest.param(with_route(STABLE, weight="80%"), "routes", "total 100", id="weights-total"),
    pytest.param(sava(balance="fastest"), "balance", "not a balance method", id="balance"),
    pytest.param(
        with_route(CANARY, condition="user-agent = = Firefox"),
        f"routes.{CANARY}.condition",
        "column ",
        id="condition-column",
    ),
    pytest.param(
        with_route(CANARY, condition="< hdr(host) -i example.com >"),
        f"routes.{CANARY}.condition",
        "--allow-raw-acl",
        id="raw-acl",
    ),
    pytest.param(sava(colour="red"), "colour", "unknown field", id="unknown-field"),
    pytest.param(sava(port=70000), "port.number", "65535", id="port-range"),
    pytest.param(sava(port="http"), "port", "not a port", id="port-text"),
    pytest.param(
        sava(port="9070/tcp", virtual_hosts=["sava.example.com"]),
        "virtual_hosts",
        "http port",
        id="tcp-virtual-hosts",
    ),
]


@pytest.mark.parametrize(("document", "path", "words"), BAD_DOCUMENTS)
def test_bad_document_is_rejected_with_its_path(
    document: dict[str, Any], path: str, words: str
) -> None:
    with pytest.raises(ValidationFailed) as exc:
        admit(document, kind="gateway", name=None, namespace=None)
    assert paths(exc) == [path]
    assert words in exc.value.problems[0].message


def test_raw_acl_is_admitted_when_allowed() -> None:
    document = with_route(CANARY, condition="< hdr(host) -i example.com >")
    resource = admit(document, kind="gateway", name=None, namespace=None, allow_raw_acl=True)
    assert resource.name == "sava"


def test_name_and_namespace_come_from_the_url_when_the_body_has_none() -> None:
    document = sava()
    del document["name"]
    resource = admit(document, kind="gateway", name="a/b:c", namespace="prod")
    assert (resource.namespace, resource.name) == ("prod", "a/b:c")


def test_body_identity_must_match_the_url() -> None:
    with pytest.raises(ValidationFailed) as exc:
        admit(sava(namespace="prod"), kind="gateway", name="other", namespace="default")
    assert paths(exc) == ["name", "namespace"]


def test_body_namespace_is_kept_when_the_query_has_none() -> None:
    resource = admit(sava(namespace="prod"), kind="gateway", name="sava", namespace=None)
    assert resource.namespace == "prod"


def test_kind_must_match_the_endpoint() -> None:
    with pytest.raises(ValidationFailed) as exc:
        admit(sava(kind="gateway"), kind="service", name=None, namespace=None)
    assert paths(exc) == ["kind"]


def test_body_must_be_a_mapping() -> None:
    with pytest.raises(ValidationFailed) as exc:
        admit(["sava"], kind="gateway", name=None, namespace=None)
    assert paths(exc) == [""]


def test_port_taken_by_a_tcp_gateway_is_a_port_error() -> None:
    others = [gateway("db", "9070/tcp")]
    with pytest.raises(ValidationFailed) as exc:
        admit(sava(), kind="gateway", name=None, namespace=None, others=others)
    assert paths(exc) == ["port"]
    assert "gateway default/db" in exc.value.problems[0].message


def test_shared_port_needs_disjoint_virtual_hosts() -> None:
    others = [gateway("other", "9070", ["sava.example.com"])]
    document = sava(virtual_hosts=["SAVA.example.com"])
    with pytest.raises(ValidationFailed) as exc:
        admit(document, kind="gateway", name=None, namespace=None, others=others)
    assert paths(exc) == ["virtual_hosts"]
    admitted = admit(
        sava(virtual_hosts=["b.example.com"]),
        kind="gateway",
        name=None,
        namespace=None,
        others=others,
    )
    assert isinstance(admitted, Gateway)
    assert admitted.virtual_hosts == ["b.example.com"]


def test_own_stored_version_is_not_a_conflict() -> None:
    others = [gateway("sava", "9070")]
    assert admit(sava(), kind="gateway", name=None, namespace=None, others=others).name == "sava"


def test_batch_reports_every_document_under_its_index() -> None:
    bad_weight = with_route(STABLE, weight="heavy")
    with pytest.raises(ValidationFailed) as exc:
        admit_batch([sava(name="ok"), bad_weight, {"kind": "service"}])
    assert paths(exc) == [f"documents.1.routes.{STABLE}.weight", "documents.2.name"]


def test_batch_port_conflict_names_both_documents() -> None:
    documents = [sava(name="a"), sava(name="b")]
    with pytest.raises(ValidationFailed) as exc:
        admit_batch(documents)
    assert [(p.path, p.message) for p in exc.value.problems] == [
        (
            "documents.0.virtual_hosts",
            "the default of port 9070 is also claimed by document 1 (gateway default/b)",
        ),
        (
            "documents.1.virtual_hosts",
            "port 9070 already has a default gateway (gateway default/a); give one of them "
            "virtual_hosts",
        ),
    ]


def test_batch_replacing_a_stored_gateway_ignores_its_old_port() -> None:
    stored = [gateway("a", "9070/tcp")]
    # "a" moves away from 9070 in the same batch that puts "b" there.
    resources = admit_batch([sava(name="a", port=9080), sava(name="b")], stored=stored)
    assert [r.name for r in resources] == ["a", "b"]


def test_batch_rejects_one_resource_twice() -> None:
    resources = [validate_resource(sava()), validate_resource(sava(port=9080))]
    problems = batch_conflicts(list(enumerate(resources)))
    assert [(i, p.path) for i, p in problems] == [(1, "name")]
    assert "document 0" in problems[0][1].message


def test_empty_batch_is_rejected() -> None:
    with pytest.raises(ValidationFailed) as exc:
        admit_batch([])
    assert paths(exc) == ["documents"]


def test_stored_gateways_skips_values_that_no_longer_validate() -> None:
    good = Record(Key("gateways", "default", "a"), {"name": "a", "port": "80/http"}, 1, 1, None)
    stale = Record(Key("gateways", "default", "b"), {"name": "b", "port": "nope"}, 2, 2, None)
    assert [g.name for g in stored_gateways([good, stale])] == ["a"]


def test_stored_gateway_models_are_kept_only_for_gateways_still_stored() -> None:
    """The models are cached per gateway; a deleted gateway's must not stay for good."""
    from meshgate.api.admission import StoredGateways

    def record(namespace: str, name: str, revision: int) -> Record:
        value = {"name": name, "namespace": namespace, "port": "80/http"}
        return Record(Key("gateways", namespace, name), value, revision, revision, None)

    models = StoredGateways()
    a, b, c = record("default", "a", 1), record("default", "b", 2), record("other", "c", 3)
    assert [g.name for g in models([a, b, c])] == ["a", "b", "c"]
    assert [g.name for g in models([a, c])] == ["a", "c"]
    assert set(models._models) == {("default", "a"), ("other", "c")}
    # A namespace's list replaces that namespace's models only.
    assert [g.name for g in models([], "default")] == []
    assert set(models._models) == {("other", "c")}
