"""The TLS parts of the IR: crt-lists, certificate files, redirect listeners, TLS to instances.

Pure, like the rest of the compiler. One crt-list per TLS port lists the certificates of every
gateway on it; each line's SNI filters are the names the certificate itself is valid for, so a
client's SNI picks the certificate that matches it, exactly as HAProxy would by default, and
the list reads the same in a file as it acts. Filters do not depend on virtual hosts: adding a
host alias stays a map change at run time. The first line is the default certificate, served
to clients without SNI (or with a name no certificate matches): the first certificate of the
port's default gateway, or of its first gateway when every gateway has virtual hosts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from meshgate.compiler import ir, naming
from meshgate.model.certificate import Certificate
from meshgate.model.gateway import Gateway
from meshgate.model.names import normalize_hostname
from meshgate.model.service import Service
from meshgate.model.snapshot import Target

Key = tuple[str, str]  # (namespace, name)
ALPN_HTTP = "h2,http/1.1"  # HTTP/2 to clients that offer it, HTTP/1.1 to the others


def sni_filters(certificate: Certificate) -> tuple[str, ...]:
    """The certificate's own names, as crt-list filters.

    Names come from inside the certificate, which the user wrote: one that is not a plain
    host name (a space, a bracket, a newline would change the meaning of the crt-list line)
    is left out rather than written.
    """
    filters = []
    for name in certificate.info.names:
        try:
            filters.append(normalize_hostname(name, allow_wildcard=True))
        except ValueError:
            continue
    return tuple(dict.fromkeys(filters))


def default_gateway_first(members: Sequence[Gateway]) -> list[Gateway]:
    """The port's gateways with the one whose first certificate is the default in front."""
    default = next((g for g in members if not g.virtual_hosts), members[0])
    return [default, *(g for g in members if g is not default)]


def frontend_tls(
    frontend: str, members: Sequence[Gateway], certificates: Mapping[Key, Certificate]
) -> ir.FrontendTls | None:
    """The crt-list of one port, or None when its gateways do not terminate TLS.

    A certificate named by several gateways of the port is listed once, with the highest
    minimum TLS version any of them asks for.
    """
    if not members or members[0].tls is None:
        return None
    ordered: list[Key] = []
    versions: dict[Key, str] = {}
    for gateway in default_gateway_first(members):
        assert gateway.tls is not None  # a port's gateways all have tls, or none does
        for name in gateway.tls.certificates:
            key = (gateway.namespace, name)
            if key not in versions:
                ordered.append(key)
            versions[key] = max(versions.get(key, gateway.tls.min_version), gateway.tls.min_version)
    alpn = ALPN_HTTP if members[0].port.mode == "http" else None
    entries = tuple(
        ir.CrtListEntry(
            certificate=naming.certificate_file_name(*key),
            min_version="1.3" if versions[key] == "1.3" else "1.2",
            alpn=alpn,
            filters=sni_filters(certificates[key]),
        )
        for key in ordered
    )
    return ir.FrontendTls(crt_list=naming.crt_list_name(frontend), entries=entries)


def served_certificates(
    gateways: Iterable[Gateway], certificates: Mapping[Key, Certificate]
) -> tuple[ir.PemFile, ...]:
    """The chain-and-key files of every certificate the given gateways serve."""
    files: dict[str, str] = {}
    for gateway in gateways:
        for name in gateway.tls.certificates if gateway.tls else ():
            certificate = certificates[(gateway.namespace, name)]
            files[naming.certificate_file_name(gateway.namespace, name)] = (
                certificate.combined_pem()
            )
    return tuple(ir.PemFile(name, text) for name, text in sorted(files.items()))


def backend_tls(
    gateway: Gateway,
    target: Target,
    services: Mapping[Key, Service],
    gateways: Mapping[Key, Gateway],
) -> ir.ServerTls | None:
    """How HAProxy talks TLS to a route's instances, if it does."""
    if target.kind == "service":
        tls = services[(gateway.namespace, target.name)].tls
        if tls is None:
            return None
        ca_file = naming.ca_file_name(gateway.namespace, tls.ca) if tls.ca else None
        return ir.ServerTls(verify=tls.verify == "required", ca_file=ca_file, sni=tls.sni)
    if target.kind == "gateway" and gateways[(gateway.namespace, target.name)].tls:
        # A hop to another gateway of this node, over loopback: encrypted because that port
        # only speaks TLS, not because the hop needs protecting.
        return ir.ServerTls(verify=False)
    return None


def missing_cas(
    gateway: Gateway,
    targets: Mapping[str, Target],
    services: Mapping[Key, Service],
    certificates: Mapping[Key, Certificate],
) -> list[str]:
    """Routes whose service names a CA certificate that does not exist."""
    problems = []
    for route, target in targets.items():
        if target.kind != "service":
            continue
        tls = services[(gateway.namespace, target.name)].tls
        if tls is None or tls.ca is None:
            continue
        if (gateway.namespace, tls.ca) not in certificates:
            problems.append(
                f"routes.{route}: service {target.name} verifies its instances against "
                f"certificate {tls.ca!r}, which does not exist"
            )
    return problems


def ca_bundles(
    backends: Iterable[ir.Backend], certificates: Mapping[Key, Certificate]
) -> tuple[ir.PemFile, ...]:
    """The CA files the backends verify their instances against."""
    by_file = {naming.ca_file_name(*key): c for key, c in certificates.items()}
    used = sorted({b.tls.ca_file for b in backends if b.tls and b.tls.ca_file})
    return tuple(ir.PemFile(name, by_file[name].bundle_pem()) for name in used)


def redirects(accepted: Iterable[Gateway]) -> tuple[ir.Redirect, ...]:
    """One plain-HTTP listener per redirect port (gateways of one TLS port may share it)."""
    found: dict[tuple[str, int], ir.Redirect] = {}
    for gateway in accepted:
        if gateway.tls is None or gateway.tls.redirect_http is None:
            continue
        port = gateway.tls.redirect_http
        found[(gateway.bind, port)] = ir.Redirect(
            name=naming.redirect_name(gateway.bind, port),
            bind=gateway.bind,
            port=port,
            https_port=gateway.port.number,
        )
    return tuple(found[key] for key in sorted(found, key=lambda k: (k[1], k[0])))
