"""The compiler's TLS parts: crt-lists and SNI filters, certificate files, HSTS, redirects,
TLS towards instances, and the port rules that come with them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshgate.compiler import CONFIG_FILE, DesiredState, compile_state, ir, render_files
from meshgate.compiler.render import is_secret
from meshgate.compiler.tls import ALPN_HTTP
from meshgate.compiler.tls_text import crt_list_line
from meshgate.haproxy import commands
from meshgate.model import Certificate, Gateway, Resource, Service, validate_resource
from tests.haproxy_check import check_files, complaints, haproxy_or_skip
from tests.tlscerts import Authority

RUN_DIR = "/run/mg"
CERTS = f"{RUN_DIR}/certs"
SETTINGS = ir.Settings(run_dir=RUN_DIR)
CA = Authority()
A = CA.issue("a.example.com")
B = CA.issue("b.example.com")
WILD = CA.issue("*.wild.example.com")


def resource(**data: Any) -> Resource:
    return validate_resource(data)


def cert(name: str, issued: Any = A) -> Resource:
    return resource(**issued.document(name))


def tls_gateway(
    name: str, port: Any = 8443, certs: tuple[str, ...] = ("a",), **fields: Any
) -> Resource:
    tls = {"certificates": list(certs), **fields.pop("tls", {})}
    return resource(name=name, port=port, tls=tls, routes={"[127.0.0.1:8080]": {}}, **fields)


def compiled(*resources: Resource, settings: ir.Settings = SETTINGS) -> Any:
    state = DesiredState(
        gateways=[r for r in resources if isinstance(r, Gateway)],
        services=[r for r in resources if isinstance(r, Service)],
        certificates=[r for r in resources if isinstance(r, Certificate)],
    )
    return compile_state(state, settings)


def files(*resources: Resource) -> dict[str, str]:
    return render_files(compiled(*resources).dataplane)


def test_a_tls_gateway_binds_with_its_ports_crt_list() -> None:
    rendered = files(cert("a"), tls_gateway("site", virtual_hosts=["a.example.com"]))
    assert (
        f"    bind 0.0.0.0:8443 ssl crt-list {CERTS}/port_8443.crtlist\n" in rendered[CONFIG_FILE]
    )
    (pem,) = [name for name in rendered if name.endswith(".pem")]
    options = "[alpn h2,http/1.1 ssl-min-ver TLSv1.2]"
    assert rendered["certs/port_8443.crtlist"] == f"{RUN_DIR}/{pem} {options} a.example.com\n"
    assert rendered[pem] == A.cert + A.key_text
    assert is_secret(pem)


def test_gateways_sharing_a_port_share_one_crt_list_default_first() -> None:
    result = compiled(
        cert("a"),
        cert("b", B),
        cert("w", WILD),
        tls_gateway("b-site", certs=("b",), virtual_hosts=["b.example.com"]),
        tls_gateway("default-site", certs=("w", "a")),
    )
    (frontend,) = result.dataplane.frontends
    assert frontend.tls is not None
    # The gateway without virtual hosts is the port's default: its first certificate leads.
    assert [e.filters for e in frontend.tls.entries] == [
        ("*.wild.example.com",),
        ("a.example.com",),
        ("b.example.com",),
    ]
    assert all(e.alpn == ALPN_HTTP for e in frontend.tls.entries)
    assert len(result.dataplane.certificates) == 3


def test_without_a_default_gateway_the_first_gateway_leads() -> None:
    result = compiled(
        cert("a"),
        cert("b", B),
        tls_gateway("z", certs=("a",), virtual_hosts=["a.example.com"]),
        tls_gateway("y", certs=("b",), virtual_hosts=["b.example.com"]),
    )
    (frontend,) = result.dataplane.frontends
    assert frontend.tls is not None
    assert frontend.tls.entries[0].filters == ("b.example.com",)  # gateways sort by name


def test_a_certificate_shared_by_two_gateways_is_listed_once_with_the_higher_version() -> None:
    result = compiled(
        cert("a"),
        tls_gateway("x", certs=("a",), virtual_hosts=["a.example.com"]),
        tls_gateway("y", certs=("a",), virtual_hosts=["x.example.com"], tls={"min_version": "1.3"}),
    )
    (frontend,) = result.dataplane.frontends
    assert frontend.tls is not None
    (entry,) = frontend.tls.entries
    assert entry.min_version == "1.3"


def test_names_that_are_not_host_names_never_reach_the_crt_list() -> None:
    odd = CA.issue("ok.example.com", "bad name.example.com", "x.example.com [verify none]")
    result = compiled(cert("odd", odd), tls_gateway("g", certs=("odd",)))
    (frontend,) = result.dataplane.frontends
    assert frontend.tls is not None
    assert frontend.tls.entries[0].filters == ("ok.example.com",)


def test_tcp_gateways_terminate_tls_without_alpn() -> None:
    rendered = files(cert("a"), tls_gateway("db", port="7000/tcp"))
    assert "[ssl-min-ver TLSv1.2]" in rendered["certs/port_7000.crtlist"]
    assert "alpn" not in rendered["certs/port_7000.crtlist"]


def test_hsts_is_set_per_gateway_on_a_shared_port() -> None:
    result = compiled(
        cert("a"),
        cert("b", B),
        tls_gateway("a", certs=("a",), virtual_hosts=["a.example.com"], tls={"hsts": 31536000}),
        tls_gateway("b", certs=("b",), virtual_hosts=["b.example.com"]),
    )
    text = render_files(result.dataplane)[CONFIG_FILE]
    gid = next(g.gateway_id for g in result.dataplane.frontends[0].gateways if g.name == "a")
    assert (
        '    http-response set-header Strict-Transport-Security "max-age=31536000"'
        f" if {{ var(txn.mg_gw) -m str {gid} }}\n"
    ) in text
    assert text.count("Strict-Transport-Security") == 1


def test_hsts_on_a_gateway_alone_on_its_port_is_unconditional() -> None:
    text = files(cert("a"), tls_gateway("a", tls={"hsts": 60}))[CONFIG_FILE]
    assert '    http-response set-header Strict-Transport-Security "max-age=60"\n' in text


def test_redirect_http_adds_a_plain_listener_sending_clients_to_https() -> None:
    text = files(cert("a"), tls_gateway("a", port=443, tls={"redirect_http": 80}))[CONFIG_FILE]
    assert (
        "frontend redirect_port_80\n    mode http\n    bind 0.0.0.0:80\n"
        "    http-request set-log-level silent\n"
        "    http-request redirect location https://%[req.hdr(host),regsub(:[0-9]+$,)]"
        "%[pathq] code 308\n"
    ) in text
    other = files(cert("a"), tls_gateway("a", port=8443, tls={"redirect_http": 8080}))
    assert "]:8443%[pathq] code 308" in other[CONFIG_FILE]


def test_two_gateways_of_one_port_share_their_redirect_listener() -> None:
    result = compiled(
        cert("a"),
        cert("b", B),
        tls_gateway("a", certs=("a",), virtual_hosts=["a.example.com"], tls={"redirect_http": 80}),
        tls_gateway("b", certs=("b",), virtual_hosts=["b.example.com"], tls={"redirect_http": 80}),
    )
    assert all(r.ok for r in result.gateways.values())
    assert [r.port for r in result.dataplane.redirects] == [80]


@pytest.mark.parametrize(
    ("first", "second", "reason"),
    [
        (tls_gateway("a"), resource(name="b", port=8443, routes={}), "tls"),
        (
            tls_gateway("a", tls={"redirect_http": 80}),
            resource(name="b", port=80, routes={}),
            "port",
        ),
        (
            resource(name="b", port=80, routes={}),
            tls_gateway("a", tls={"redirect_http": 80}),
            "tls.redirect_http",
        ),
        (
            tls_gateway("a", tls={"redirect_http": 80}),
            tls_gateway("b", port=9443, tls={"redirect_http": 80}),
            "tls.redirect_http",
        ),
    ],
)
def test_port_rules_for_tls_and_redirects(first: Resource, second: Resource, reason: str) -> None:
    result = compiled(cert("a"), first, second)
    key = (second.namespace, second.name)
    assert result.gateways[(first.namespace, first.name)].ok
    assert any(error.startswith(f"{reason}:") for error in result.gateways[key].errors), (
        result.gateways[key]
    )


def test_a_gateway_naming_a_missing_certificate_is_left_out_and_says_why() -> None:
    result = compiled(tls_gateway("a", certs=("nope",)), resource(name="b", port=9000, routes={}))
    assert result.gateways[("default", "a")].errors == (
        "tls.certificates.0: certificate 'nope' does not exist in namespace default",
    )
    assert result.gateways[("default", "b")].ok
    assert [f.port for f in result.dataplane.frontends] == [9000]
    assert result.dataplane.certificates == ()


def test_a_certificate_without_key_cannot_be_served() -> None:
    ca_only = resource(kind="certificate", name="ca", cert=CA.cert)
    result = compiled(ca_only, tls_gateway("a", certs=("ca",)))
    (error,) = result.gateways[("default", "a")].errors
    assert "has no private key" in error


def test_tls_to_instances_verifies_against_the_ca_with_sni() -> None:
    result = compiled(
        resource(kind="certificate", name="internal-ca", cert=CA.cert),
        resource(
            kind="service",
            name="api",
            instances=["127.0.0.1:9443"],
            tls={"ca": "internal-ca", "sni": "api.internal"},
        ),
        resource(name="g", port=8080, routes={"api": {}}),
    )
    (backend,) = result.dataplane.backends
    assert backend.tls is not None
    (ca_file,) = result.dataplane.ca_files
    assert ca_file.text == CA.cert and not is_secret(f"certs/{ca_file.name}")
    text = render_files(result.dataplane)[CONFIG_FILE]
    assert f"    default-server ca-file {CERTS}/{ca_file.name}\n" in text
    assert (
        f" ssl verify required ca-file {CERTS}/{ca_file.name} sni str(api.internal)"
        " check-sni api.internal\n"
    ) in text


def test_verify_none_is_explicit() -> None:
    result = compiled(
        resource(kind="service", name="api", instances=["127.0.0.1:9443"], tls={"verify": "none"}),
        resource(name="g", port=8080, routes={"api": {}}),
    )
    text = render_files(result.dataplane)[CONFIG_FILE]
    # The route's server, and the checker server it tracks (checks go over TLS too).
    assert text.count(" ssl verify none\n") == 2
    assert result.dataplane.ca_files == ()


def test_a_route_to_a_service_whose_ca_is_gone_leaves_the_gateway_out() -> None:
    result = compiled(
        resource(kind="service", name="api", instances=["127.0.0.1:1"], tls={"ca": "gone"}),
        resource(name="g", port=8080, routes={"api": {}}),
    )
    (error,) = result.gateways[("default", "g")].errors
    assert error.startswith("routes.api: service api verifies its instances against")


def test_chaining_to_a_tls_gateway_speaks_tls_to_it() -> None:
    result = compiled(
        cert("a"), tls_gateway("inner"), resource(name="outer", port=80, routes={"inner": {}})
    )
    (backend,) = [b for b in result.dataplane.backends if b.route.gateway == "outer"]
    assert backend.tls == ir.ServerTls(verify=False)


def test_the_runtime_crt_list_line_is_the_files_line() -> None:
    entry = ir.CrtListEntry("x.pem", "1.3", ALPN_HTTP, ("a.example.com", "*.w.example.com"))
    _, payload = commands.add_ssl_crt_list(
        f"{CERTS}/p.crtlist",
        f"{CERTS}/x.pem",
        min_version="TLSv1.3",
        alpn=True,
        filters=entry.filters,
    )
    assert payload == crt_list_line(entry, CERTS)
    assert commands.ALPN_PROTOCOLS == ALPN_HTTP


@pytest.mark.integration
def test_haproxy_accepts_tls_configurations(tmp_path: Path) -> None:
    haproxy = haproxy_or_skip()
    rsa = CA.issue("rsa.example.com", key_kind="rsa")
    chained = Authority("chained", intermediate=True).issue("c.example.com")
    result = compiled(
        cert("a"),
        cert("b", B),
        cert("w", WILD),
        cert("rsa", rsa),
        cert("c", chained),
        resource(kind="certificate", name="ca", cert=CA.cert),
        resource(
            kind="service",
            name="api",
            instances=["127.0.0.1:9443"],
            tls={"ca": "ca", "sni": "api.internal"},
        ),
        resource(
            kind="service", name="plain", instances=["127.0.0.1:9444"], tls={"verify": "none"}
        ),
        tls_gateway("default", certs=("w", "rsa"), tls={"redirect_http": 8080, "hsts": 300}),
        tls_gateway(
            "b", certs=("b", "c"), virtual_hosts=["b.example.com"], tls={"min_version": "1.3"}
        ),
        tls_gateway("tcp", port="7443/tcp", certs=("a",)),
        resource(name="api", port=8081, routes={"api": {}, "plain": {}, "default": {}}),
        settings=ir.Settings(run_dir=str(tmp_path)),
    )
    assert all(r.ok for r in result.gateways.values()), result.gateways
    ok, output = check_files(haproxy, tmp_path, render_files(result.dataplane))
    assert ok, output
    assert complaints(output) == [], output
