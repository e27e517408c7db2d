"""Plan transcripts for certificates: rotation and additions at run time, reloads otherwise."""

from __future__ import annotations

from typing import Any

from meshgate.compiler import DesiredState, compile_state, ir, naming
from meshgate.model import Certificate, Gateway, Resource, Service, validate_resource
from meshgate.plan import (
    AddCertificate,
    AddCrtListEntry,
    AddServer,
    Reload,
    ReplaceMap,
    UpdateCaFile,
    UpdateCertificate,
    plan,
)
from tests.tlscerts import Authority

SETTINGS = ir.Settings(run_dir="/run/mg")
CA = Authority()
A, A2 = CA.issue("a.example.com"), CA.issue("a.example.com")
B = CA.issue("b.example.com")
A_FILE = naming.certificate_file_name("default", "a")
B_FILE = naming.certificate_file_name("default", "b")


def resource(**data: Any) -> Resource:
    return validate_resource(data)


def cert(name: str, issued: Any) -> Resource:
    return resource(**issued.document(name))


def site(
    certs: tuple[str, ...] = ("a",), hosts: tuple[str, ...] = ("a.example.com",), **tls: Any
) -> Resource:
    return resource(
        name="site",
        port=8443,
        virtual_hosts=list(hosts),
        tls={"certificates": list(certs), **tls},
        routes={"[127.0.0.1:8080]": {}},
    )


def dataplane(*resources: Resource) -> ir.DataPlane:
    state = DesiredState(
        gateways=[r for r in resources if isinstance(r, Gateway)],
        services=[r for r in resources if isinstance(r, Service)],
        certificates=[r for r in resources if isinstance(r, Certificate)],
    )
    result = compile_state(state, SETTINGS)
    assert all(r.ok for r in result.gateways.values()), result.gateways
    return result.dataplane


RUNNING = dataplane(cert("a", A), cert("b", B), site())


def test_new_content_under_the_same_name_is_a_runtime_update_and_nothing_else() -> None:
    desired = dataplane(cert("a", A2), cert("b", B), site())
    assert plan(RUNNING, desired) == [UpdateCertificate(A_FILE, A2.cert + A2.key_text)]


def test_the_same_content_applied_again_changes_nothing() -> None:
    assert plan(RUNNING, dataplane(cert("a", A), cert("b", B), site())) == []


def test_a_certificate_nobody_serves_changes_nothing_in_haproxy() -> None:
    other = CA.issue("b.example.com")
    assert plan(RUNNING, dataplane(cert("a", A), cert("b", other), site())) == []


def test_a_certificate_added_to_a_port_is_loaded_then_listed() -> None:
    desired = dataplane(
        cert("a", A), cert("b", B), site(("a", "b"), ("a.example.com", "b.example.com"))
    )
    (frontend,) = desired.frontends
    assert frontend.tls is not None
    hosts = desired.map_named(naming.host_map_name(frontend.name))
    assert hosts is not None
    assert plan(RUNNING, desired) == [
        AddCertificate(B_FILE, B.cert + B.key_text),
        AddCrtListEntry(frontend.tls.crt_list, frontend.tls.entries[1]),
        ReplaceMap(hosts.name, hosts.entries),
    ]


def test_a_certificate_already_loaded_for_another_port_is_only_listed() -> None:
    other = resource(
        name="other", port=9443, tls={"certificates": ["b"]}, routes={"[127.0.0.1:8080]": {}}
    )
    running = dataplane(cert("a", A), cert("b", B), site(), other)
    desired = dataplane(cert("a", A), cert("b", B), site(("a", "b")), other)
    frontend = desired.frontends[0]
    assert frontend.tls is not None
    assert plan(running, desired) == [
        AddCrtListEntry(frontend.tls.crt_list, frontend.tls.entries[1])
    ]


def test_removing_a_certificate_from_a_port_reloads() -> None:
    running = dataplane(cert("a", A), cert("b", B), site(("a", "b")))
    (action,) = plan(running, RUNNING)
    assert isinstance(action, Reload)


def test_a_new_default_certificate_reloads() -> None:
    running = dataplane(cert("a", A), cert("b", B), site(("a", "b")))
    desired = dataplane(cert("a", A), cert("b", B), site(("b", "a")))
    assert plan(running, desired) == [Reload("the default certificate of port 8443 changed")]


def test_new_content_with_other_names_reloads_since_sni_filters_change() -> None:
    renamed = CA.issue("a.example.com", "www.a.example.com")
    (action,) = plan(RUNNING, dataplane(cert("a", renamed), cert("b", B), site()))
    assert isinstance(action, Reload)


def test_tls_settings_and_redirects_reload() -> None:
    for changed in (site(min_version="1.3"), site(hsts=60), site(redirect_http=8080)):
        (action,) = plan(RUNNING, dataplane(cert("a", A), cert("b", B), changed))
        assert isinstance(action, Reload)


SERVICE = {"kind": "service", "name": "api", "tls": {"ca": "ca", "sni": "api.internal"}}
ROUTE = resource(name="g", port=8080, routes={"api": {}})


def test_new_ca_content_is_a_runtime_update() -> None:
    other = Authority("other CA")
    running = dataplane(
        resource(kind="certificate", name="ca", cert=CA.cert),
        resource(**SERVICE, instances=["127.0.0.1:1"]),
        ROUTE,
    )
    desired = dataplane(
        resource(kind="certificate", name="ca", cert=other.cert),
        resource(**SERVICE, instances=["127.0.0.1:1"]),
        ROUTE,
    )
    assert plan(running, desired) == [
        UpdateCaFile(naming.ca_file_name("default", "ca"), other.cert)
    ]


def test_an_instance_of_a_tls_service_is_added_at_run_time_with_its_tls() -> None:
    ca = resource(kind="certificate", name="ca", cert=CA.cert)
    running = dataplane(ca, resource(**SERVICE, instances=["127.0.0.1:1"]), ROUTE)
    desired = dataplane(ca, resource(**SERVICE, instances=["127.0.0.1:1", "127.0.0.1:2"]), ROUTE)
    (action,) = plan(running, desired)
    assert isinstance(action, AddServer)
    assert action.tls == ir.ServerTls(
        verify=True, ca_file=naming.ca_file_name("default", "ca"), sni="api.internal"
    )
