"""The HAProxy text of the TLS parts of the IR: bind options, crt-list lines, server options,
HSTS and redirect rules. Pure: returns strings.

Every value placed here was validated before it reached the IR: file names are built by
`naming` from validated resource names, SNI filters and server names are plain host names,
HSTS ages and ports are integers.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from meshgate.compiler import ir

CERTS_DIR = "certs"
_VERSIONS = {"1.2": "TLSv1.2", "1.3": "TLSv1.3"}


def certs_dir(settings: ir.Settings) -> str:
    return str(PurePosixPath(settings.run_dir) / CERTS_DIR)


def bind_options(frontend: ir.Frontend, directory: str) -> str:
    """What follows `bind ADDRESS:PORT`: nothing for plain ports."""
    if frontend.tls is None:
        return ""
    return f" ssl crt-list {directory}/{frontend.tls.crt_list}"


def crt_list_line(entry: ir.CrtListEntry, directory: str) -> str:
    """`<file> [<ssl options>] <sni filters>`, as in a crt-list file and `add ssl crt-list`."""
    options = [f"ssl-min-ver {_VERSIONS[entry.min_version]}"]
    if entry.alpn:
        options.insert(0, f"alpn {entry.alpn}")
    words = [f"{directory}/{entry.certificate}", f"[{' '.join(options)}]", *entry.filters]
    return " ".join(words)


def crt_list_text(tls: ir.FrontendTls, directory: str) -> str:
    return "".join(crt_list_line(entry, directory) + "\n" for entry in tls.entries)


def server_tls_words(tls: ir.ServerTls, directory: str) -> list[str]:
    """Server options for TLS to an instance, shared by server lines and `add server`.

    With `sni`, HAProxy also checks the instance's certificate against that name. Health
    checks go over TLS too (HAProxy does so for `ssl` servers checked on their own port), and
    `check-sni` sends them the same name.
    """
    words = ["ssl", f"verify {'required' if tls.verify else 'none'}"]
    if tls.ca_file:
        words.append(f"ca-file {directory}/{tls.ca_file}")
    if tls.sni:
        words += [f"sni str({tls.sni})", f"check-sni {tls.sni}"]
    return words


def hsts_lines(frontend: ir.Frontend) -> list[str]:
    """Strict-Transport-Security on the responses of the gateways that ask for it."""
    shared = frontend.host_map is not None or len(frontend.gateways) > 1
    lines = []
    for gateway in frontend.gateways:
        if gateway.hsts_max_age is None:
            continue
        line = (
            f'http-response set-header Strict-Transport-Security "max-age={gateway.hsts_max_age}"'
        )
        if shared:
            line += f" if {{ var(txn.mg_gw) -m str {gateway.gateway_id} }}"
        lines.append(line)
    return lines


def redirect_location(redirect: ir.Redirect) -> str:
    """The same host (its port replaced) and path with query, over HTTPS.

    308 keeps the method and body, so a POST sent to the plain port is not turned into a GET.
    """
    port = "" if redirect.https_port == 443 else f":{redirect.https_port}"
    host = "%[req.hdr(host),regsub(:[0-9]+$,)]"
    return f"http-request redirect location https://{host}{port}%[pathq] code 308"
