"""No user string can add a directive or an ACL to the HAProxy configuration (SPEC §1).

Arbitrary text goes into every user-controlled string field of a gateway and its service. Either
validation rejects it, or every line of the rendered configuration has one of the shapes the
compiler produces (checked against an allow-list below), the text is plain ASCII without control
characters, and the sections are exactly those of the IR.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshgate.compiler import CONFIG_FILE, DesiredState, checks, compile_state, ir, render_files
from meshgate.compiler.policies import sections as policy_sections
from meshgate.compiler.rules import INSTANCE_HOST, forwarded_lines
from meshgate.conditions import MAX_LINE_WORDS, count_words
from meshgate.errors import ValidationFailed
from meshgate.model import Certificate, Gateway, Resource, Service, validate_resource
from meshgate.stats.logline import TCP_DETAILED_LOG_FORMAT, TCP_LOG_FORMAT
from tests.tlscerts import Authority

RUN_DIR = "/run/mg"
MAPS = re.escape(f"{RUN_DIR}/maps")
CERTS = re.escape(f"{RUN_DIR}/certs")
SETTINGS = ir.Settings(
    run_dir=RUN_DIR,
    log_socket=f"{RUN_DIR}/log.sock",
    log_details=True,
    state_socket=f"{RUN_DIR}/states.sock",
)

# --- the allow-list -----------------------------------------------------------------------------

NAME = r"[A-Za-z0-9._:-]+"  # proxy, server, map and cookie names
GID = r"g[0-9a-f]{10}"
RESOURCE = r"[A-Za-z0-9._:-]+(?:/[A-Za-z0-9._:-]+){0,3}"
ROUTE = rf"(?:{RESOURCE}|\[[A-Za-z0-9.:\[\]-]+\](?::[0-9]+)?)"
# ACL terms: bare words from a small alphabet, or single-quoted values (literal in HAProxy)
# that are not a lone brace. No '#', '$', '%', quotes or braces outside the quotes.
WORD = r"[A-Za-z0-9_.,():/-]+"
TOKEN = rf"(?:{WORD}|'(?![{{}}]')[^'\x00-\x1f\x7f]*')"
TERM = rf"!?\{{ {TOKEN}(?: {TOKEN})* \}}"
CONJUNCTION = rf"{TERM}(?: {TERM})*"
CONDITION = rf"{CONJUNCTION}(?: \|\| {CONJUNCTION})*"
REWRITE_PATH = r'"(?:%\[path\]|%\[query\]|[A-Za-z0-9/._~!&()*+,;=:@-])+"'
WEIGHTS = rf"{MAPS}/weights\.map"
HOST_FETCH = r"req\.hdr\(host\),field\(1,:\),lower"
HEADER_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
POLICY = r"policy_(?:g|r)[0-9a-f]{10}"
HEADERS_LOOKUP = rf"map_str\({MAPS}/{POLICY}\.headers\.map\)"
NETWORK_TERM = rf"!?\{{ src,map_ip\({MAPS}/{POLICY}\.(?:allow|deny)\.map\) -m found \}}"
POLICY_TERMS = [
    NETWORK_TERM,
    rf"!?\{{ req\.hdr\({HEADER_NAME}\) -m found \}}",
    rf"\{{ sc_http_req_rate\([01],{POLICY}_rate\) gt [0-9]+ \}}",
    rf"!\{{ http_auth\({POLICY}_users\) \}}",
    r"\{ req\.hdr_val\(content-length\) gt [0-9]+ \}",
    r"!?\{ ssl_fc \}",
]
POLICY_TERM = "(?:" + "|".join([TERM, *POLICY_TERMS]) + ")"
POLICY_CONDITION = rf"{POLICY_TERM}(?: {POLICY_TERM})*"

ACTIONS = [
    rf"set-var\(txn\.mg_gw\) {HOST_FETCH},map_(?:str|end)\({MAPS}/{NAME}\)",
    rf"set-var\(txn\.mg_gw\) str\({GID}\)",
    rf"set-var\(txn\.mg_be\) str\({NAME}\)",
    rf"set-var\(txn\.mg_be\) (?:rand\(100\)|src,crc32\(1\),mod\(100\)),concat\(\.{GID}\),"
    rf"map_str\({MAPS}/slots\.map\)",
    r"set-var\(txn\.mg_draw\) rand\(100\)",
    r"set-var\(txn\.mg_sum\) int\(0\)",
    rf"set-var\(txn\.mg_sum\) str\({NAME}\),map_str_int\({WEIGHTS},0\),add\(txn\.mg_sum\)",
    r"set-var\(txn\.mg_pick\) (?:rand|src,crc32\(1\)),mod\(txn\.mg_sum\)",
    r"set-var\(txn\.mg_c[0-9]+\) var\(txn\.mg_sum\)",
    r"set-var\(txn\.mg_chain\) int\([0-9]+\)",
    rf"set-var\(txn\.mg_pinned\) req\.cook\(mgr_{GID}\)",
    r"unset-var\(txn\.mg_rewritten\)",
    r"set-var\(txn\.mg_rewritten\) bool\(true\)",
    rf"set-path {REWRITE_PATH}",
    'return status 404 content-type text/plain string "no gateway serves this host"',
    # policies (compiler.policies): networks and header values are looked up in map files.
    "deny deny_status 403",
    "deny deny_status 413",
    rf"track-sc[01] (?:src|int\(0\)|str\(-\)|req\.hdr\({HEADER_NAME}\)) table {POLICY}_rate",
    'return status 429 content-type text/plain string "too many requests" hdr Retry-After [0-9]+',
    r'auth realm "[A-Za-z0-9 ._-]{1,64}"',
    r"redirect scheme https? code 30[12378]",
    r'redirect location "https?://[A-Za-z0-9.:\[\]-]+[A-Za-z0-9/._~!&\'()*+,;=:@?#-]*"'
    r" code 30[12378]",
    rf"del-header {HEADER_NAME}",
    rf'set-header {HEADER_NAME} "%\[str\(req\.{HEADER_NAME}\),{HEADERS_LOOKUP}\]"',
    'return status 503 content-type text/plain string "no route available"',
    "reject",
    "allow",
    "accept",
]
CHECK_PATH = r"/[A-Za-z0-9/._~!&()*+,;=:@?-]*"
CHECKER = r"mg_checks\.[0-9a-f]{10}"  # compiler.checks: derived names only
CHECKED_SERVER = r"[A-Za-z0-9._:-]+_[0-9]+\.[0-9a-f]{8}"
SERVER_OPTIONS = (
    rf"(?:weight [0-9]+ track {CHECKER}/{CHECKED_SERVER}"
    r"|(?:weight [0-9]+ )?check inter [0-9]+ rise [0-9]+ fall [0-9]+(?: port [0-9]+)?)"
    r"(?: agent-check agent-port [0-9]+ agent-inter [0-9]+)?"
    r"(?: observe layer[47] error-limit [0-9]+ on-error mark-down)?"
    r"(?: cookie i[0-9a-f]{12})?"
    r"(?: namespace [A-Za-z0-9][A-Za-z0-9._-]{0,62})?"
)
SERVER_TLS = (
    rf"(?: ssl verify (?:none|required)(?: ca-file {CERTS}/{NAME}\.ca\.pem)?"
    r"(?: sni str\([a-z0-9.-]+\) check-sni [a-z0-9.-]+)?)?"
)
BALANCE = (
    r"(?:roundrobin|static-rr|leastconn|first|source|random|uri"
    r"|url_param [A-Za-z0-9._-]+|hdr\([A-Za-z0-9._-]+\))"
)
SECTION_LINES = [
    rf"(?:http-request|tcp-request content) (?:{'|'.join(ACTIONS)})(?: if {CONDITION})?",
    rf"(?:http-request|tcp-request content) (?:{'|'.join(ACTIONS)}) if {POLICY_CONDITION}",
    rf"http-response del-header {HEADER_NAME}",
    rf'http-response set-header {HEADER_NAME} "%\[str\(res\.{HEADER_NAME}\),{HEADERS_LOOKUP}\]"',
    # The sections of policies: a stick table, a userlist of crypt(3) hashes.
    r"stick-table type (?:ipv6|integer|string len 128) size 1m expire [0-9]+s"
    r" store http_req_rate\([0-9]+s\)",
    r"user [A-Za-z0-9][A-Za-z0-9._@-]{0,63} password \$[0-9a-z]{1,2}\$[./A-Za-z0-9$=]+",
    rf'http-response add-header Set-Cookie "mgr_{GID}=r[0-9a-f]{{8}}; Path=/; HttpOnly"'
    r" if !\{ var\(txn\.mg_pinned\) -m str r[0-9a-f]{8} \}",
    r"use_backend %\[var\(txn\.mg_be\)\]",
    rf"use_backend (?P<backend>{NAME}) if \{{ var\(txn\.mg_be\) -m str (?P=backend) \}}",
    rf"# gateway [a-z0-9-]+/{RESOURCE}(: routes unavailable)?",
    rf"# [a-z0-9-]+/{RESOURCE} route {ROUTE}",
    r"mode (?:http|tcp)",
    r"bind [0-9a-fA-F.:]+:[0-9]+",
    rf"balance {BALANCE}",
    r"timeout (?:connect|client|server|check) [0-9]+ms",
    r"option (?:httpchk|tcp-check|idle-close-on-response)",
    r"http-after-response set-header connection close if \{ stopping \}",
    rf"http-check send meth [A-Z]{{1,20}} uri {CHECK_PATH} ver HTTP/1\.1"
    rf" hdr host (?:[a-z0-9.:-]+|{re.escape(INSTANCE_HOST)})",
    r"http-check expect status [1-5][0-9]{2}(?:-[1-5][0-9]{2})?",
    r"http-check expect string '[A-Za-z0-9 ._~!&()*+,;=:@?/<>\[\]{}|^-]+'",
    r"tcp-check connect",
    r"tcp-check (?:send-binary|expect binary) [0-9a-f]+",
    r"retries [0-9]{1,2}",
    r"retry-on conn-failure(?: (?:empty-response|junk-response|response-timeout|0rtt-rejected"
    r"|40[1348]|425|50[0-4]))+",
    r"http-request disable-l7-retry if !\{ method GET HEAD OPTIONS \}",
    *(re.escape(line) for proto in ("http", "https") for line in forwarded_lines(proto)),
    r"stick-table type ip size 1m expire 30m",
    r"stick on src",
    rf"cookie mgi_{GID} insert indirect nocache httponly",
    rf"server {NAME} [A-Za-z0-9.:-]+:[0-9]+ {SERVER_OPTIONS}{SERVER_TLS}",
    # A checker's spare servers (compiler.checks): lent at run time, disabled until then.
    r"server spare[0-9] 0\.0\.0\.0:0 check inter [0-9]+ rise [0-9]+ fall [0-9]+"
    rf"(?: port [0-9]+)?{SERVER_TLS} disabled",
    rf"bind [0-9a-fA-F.:]+:[0-9]+ ssl crt-list {CERTS}/{NAME}\.crtlist",
    rf"default-server ca-file {CERTS}/{NAME}\.ca\.pem",
    r'http-response set-header Strict-Transport-Security "max-age=[0-9]+"'
    rf"(?: if \{{ var\(txn\.mg_gw\) -m str {GID} \}})?",
    r"http-request set-log-level silent",
    # Sampling of the request log: a fixed line; the fraction is a process variable.
    r"(?:http-request|tcp-request content) set-log-level silent"
    r" if \{ rand\(1024\),sub\(proc\.mg_log_keep\) ge 0 \}",
    r"http-request redirect location https://%\[req\.hdr\(host\),regsub\(:\[0-9\]\+\$,\)\]"
    r"(?::[0-9]+)?%\[pathq\] code 308",
    # Server state changes of route and checker backends, for the agent (agent.state_log).
    r"log ring@mg_states format raw daemon (notice|alert)",
    # tcp frontends log their own line shape; http ones inherit theirs from the defaults.
    re.escape(f'log-format "{TCP_LOG_FORMAT}"'),
    re.escape(f'log-format "{TCP_DETAILED_LOG_FORMAT}"'),
]
SECTION_LINE = re.compile("|".join(f"(?:{shape})" for shape in SECTION_LINES))
HOST = r"(?:\*\.)?[a-z0-9-]+(?:\.[a-z0-9-]+)*"
CRT_LIST_LINE = re.compile(
    rf"{CERTS}/{NAME}\.pem \[(?:alpn h2,http/1\.1 )?ssl-min-ver TLSv1\.[23]\](?: {HOST})*"
)
PEM_LINE = re.compile(r"[A-Za-z0-9+/=]{1,76}|-----(?:BEGIN|END) (?:CERTIFICATE|PRIVATE KEY)-----")
HEADER = re.compile(rf"(?:frontend|backend|userlist) ({NAME})")
FORBIDDEN = re.compile(r"[^\x20-\x7e\n]")
MAP_LINE = re.compile(rf"{NAME} {NAME}")
NETWORK_MAP_LINE = re.compile(r"[0-9a-f.:]+/[0-9]{1,3} 1")
HEADERS_MAP_LINE = re.compile(rf'(?:req|res)\.{HEADER_NAME} [^"\\$%\x00-\x1f\x7f]*')


def fixed_lines() -> set[str]:
    """The lines of a configuration with no gateways: no user text can be in them."""
    empty = render_files(compile_state(DesiredState(gateways=[]), SETTINGS).dataplane)
    return set(empty[CONFIG_FILE].splitlines())


FIXED = fixed_lines()


def problems(files: dict[str, str], dataplane: ir.DataPlane) -> list[str]:
    """Everything in the rendered files that the compiler would not have written."""
    found = []
    for name, content in files.items():
        if FORBIDDEN.search(content):
            found.append(f"{name}: a control or non-ASCII character")
        if name != CONFIG_FILE:
            shape = (
                CRT_LIST_LINE if name.endswith(".crtlist")
                else PEM_LINE if name.endswith(".pem")
                else NETWORK_MAP_LINE if name.endswith((".allow.map", ".deny.map"))
                else HEADERS_MAP_LINE if name.endswith(".headers.map")
                else MAP_LINE
            )  # fmt: skip
            found += [
                f"{name}: {line!r}" for line in content.splitlines() if not shape.fullmatch(line)
            ]
    sections: list[str] = []
    servers = 0
    checkers = checks.checkers(dataplane.backends)
    for line in files[CONFIG_FILE].splitlines():
        if count_words(line) > MAX_LINE_WORDS:
            found.append(f"more than {MAX_LINE_WORDS} words: {line!r}")
        if line in FIXED:
            continue
        if HEADER.fullmatch(line):
            sections.append(line)
        elif not line.startswith("    ") or not SECTION_LINE.fullmatch(line[4:]):
            found.append(f"unexpected line: {line!r}")
        else:
            servers += line.startswith("    server ")
    expected = [
        *(f"frontend {f.name}" for f in dataplane.frontends),
        *(f"frontend {r.name}" for r in dataplane.redirects),
        *(f"backend {b.name}" for b in dataplane.backends),
        *(f"backend {c.name}" for c in checkers),
        *(header for header, _ in policy_sections(dataplane)),
    ]
    if sections != expected:
        found.append(f"sections {sections} instead of {expected}")
    checked = sum(len(c.servers) + len(c.spares) for c in checkers)
    if servers != sum(len(b.servers) for b in dataplane.backends) + checked:
        found.append(f"{servers} server lines for the IR's servers")
    return found


def assert_safe(dataplane: ir.DataPlane) -> None:
    assert problems(render_files(dataplane), dataplane) == []


# --- documents and the fields users control -----------------------------------------------------

SHA512_HASH = (
    "$6$rt5S9o/QOgqc5NOi$W1.x1jAXXuANX1ze6PcQ27uBoqpFTMyYfnExaoF2fxdi34EdsSqLd6pNRIA6cI9Vi/"
    "YPk2dWobCsKH72Ot9ea/"
)
GATEWAY: dict[str, Any] = {
    "name": "sava",
    "namespace": "default",
    "port": "9070/http",
    "bind": "0.0.0.0",
    "virtual_hosts": ["sava.example.com", "*.sava.example.com"],
    "sticky": "instance",
    "balance": "roundrobin",
    "timeouts": {"connect": "5s", "client": "50s", "server": "50s"},
    "tls": {
        "certificates": ["sava-cert"],
        "min_version": "1.2",
        "redirect_http": 9080,
        "hsts": 600,
    },
    "policies": {
        "rate_limit": {"requests": 100, "per": "10s", "by": "header(X-Key)"},
        "allow": ["10.0.0.0/8", "::1"],
        "deny": ["192.0.2.0/24"],
        "basic_auth": {"realm": "admin area", "users": {"alice": SHA512_HASH}},
        "headers": {
            "request": {"set": {"X-Env": "prod"}, "remove": ["X-Debug"]},
            "response": {"set": {"X-Frame-Options": "DENY; a=b"}, "remove": ["Server"]},
        },
        "redirect": {"scheme": "https", "code": 301},
        "max_body": "10m",
    },
    "routes": {
        "svc": {
            "policies": {
                "rate_limit": {"requests": 5, "by": "source"},
                "redirect": {"location": "https://example.com/a?b=c#d", "code": 302},
                "headers": {"request": {"set": {"X-Route": "svc"}}},
            },
            "weight": "50%",
            "condition": "user-agent == Firefox and has cookie beta",
            "condition_strength": "50%",
            "balance": "leastconn",
            "rewrites": [
                {"path": "/v2%[path] if path starts with /api"},
                {"path": "/x", "condition": "has header X-Y"},
            ],
        },
        "canary": {"weight": "50%", "targets": ["127.0.0.1:8083", {"address": "::1", "port": 1}]},
        "[127.0.0.1:8090]": {},
    },
}
# A default gateway on the same port, so the shared-port rules are rendered too.
NEIGHBOUR: dict[str, Any] = {
    "name": "default-site",
    "port": 9070,
    "tls": {"certificates": ["other"]},
    "routes": {"svc": {}},
}
SERVICE: dict[str, Any] = {
    "kind": "service",
    "name": "svc",
    "namespace": "default",
    "instances": ["127.0.0.1:8081", {"address": "127.0.0.1", "port": 8082, "id": "b"}],
    "health_check": {
        "type": "http",
        "path": "/health",
        "method": "GET",
        "host": "sava.internal",
        "expect_status": "200-399",
        "expect_body": "ok",
        "port": 9000,
        "interval": "2s",
        "timeout": "1s",
    },
    "passive": {"error_limit": 10},
    "tls": {"ca": "internal-ca", "sni": "svc.internal"},
}
TCP_CHECK = {"type": "tcp", "send": "PING\r\n", "expect": "+PONG", "interval": "2s"}

Documents = tuple[dict[str, Any], dict[str, Any]]


def put(gateway: dict[str, Any], service: dict[str, Any], where: str, text: str) -> None:
    """Place `text` at `where` (a field of the gateway `g.` or the service `s.`)."""
    target, _, path = where.partition(".")
    document = gateway if target == "g" else service
    *parents, last = path.split(".")
    for part in parents:
        document = document[int(part)] if isinstance(document, list) else document[part]
    if isinstance(document, list):
        document[int(last)] = text
    else:
        document[last] = text


def rename_route(gateway: dict[str, Any], old: str, new: str) -> None:
    gateway["routes"] = {new if k == old else k: v for k, v in gateway["routes"].items()}


def set_field(where: str) -> Callable[[Documents, str], None]:
    def apply(documents: Documents, text: str) -> None:
        put(documents[0], documents[1], where, text)

    return apply


def with_tcp_check(where: str) -> Callable[[Documents, str], None]:
    def apply(documents: Documents, text: str) -> None:
        documents[1]["health_check"] = {**TCP_CHECK, where: text}

    return apply


def route_name(documents: Documents, text: str) -> None:
    rename_route(documents[0], "[127.0.0.1:8090]", text)


def inline_route_name(documents: Documents, text: str) -> None:
    rename_route(documents[0], "canary", text)


def service_name(documents: Documents, text: str) -> None:
    rename_route(documents[0], "svc", text)
    documents[1]["name"] = text


def namespace(documents: Documents, text: str) -> None:
    documents[0]["namespace"] = documents[1]["namespace"] = text


def virtual_hosts_as_string(documents: Documents, text: str) -> None:
    documents[0]["virtual_hosts"] = text


def rewrite_in_vamp_form(documents: Documents, text: str) -> None:
    documents[0]["routes"]["svc"]["rewrites"][0] = {"path": text}


def in_condition(template: str) -> Callable[[Documents, str], None]:
    """Text inside a condition (a value, a name, a pattern), on a route and on a rewrite."""

    def apply(documents: Documents, text: str) -> None:
        condition = template.replace("TEXT", text)
        documents[0]["routes"]["svc"]["condition"] = condition
        documents[0]["routes"]["svc"]["rewrites"][1]["condition"] = condition

    return apply


FIELDS: dict[str, tuple[Callable[[Documents, str], None], str]] = {
    "gateway name": (set_field("g.name"), "sava"),
    "namespace": (namespace, "default"),
    "port": (set_field("g.port"), "9070/http"),
    "bind": (set_field("g.bind"), "::1"),
    "virtual host": (set_field("g.virtual_hosts.0"), "sava.example.com"),
    "wildcard virtual host": (set_field("g.virtual_hosts.1"), "*.sava.example.com"),
    "virtual hosts as a string": (virtual_hosts_as_string, "sava.example.com"),
    "sticky": (set_field("g.sticky"), "source"),
    "gateway balance": (set_field("g.balance"), "hdr(X-User)"),
    "timeout connect": (set_field("g.timeouts.connect"), "5s"),
    "timeout client": (set_field("g.timeouts.client"), "500ms"),
    "timeout server": (set_field("g.timeouts.server"), "1m"),
    "route name": (route_name, "[::1]:8090"),
    "bracketed route name": (route_name, "[[::1]:8090]"),
    "inline route name": (inline_route_name, "canary"),
    "service and route name": (service_name, "sava:1.0/sava/port"),
    "weight": (set_field("g.routes.svc.weight"), "50%"),
    "condition": (set_field("g.routes.svc.condition"), "user-agent == Firefox"),
    "condition strength": (set_field("g.routes.svc.condition_strength"), "50%"),
    "route balance": (set_field("g.routes.svc.balance"), "url_param(x)"),
    "condition quoted value": (in_condition('header X-A == "TEXT"'), "a b"),
    "condition bare value": (in_condition("user-agent == TEXT"), "Firefox"),
    "condition regex": (in_condition('path matches "TEXT"'), "^/api/[0-9]+$"),
    "condition cookie value": (in_condition("cookie beta has TEXT"), "yes"),
    "condition query": (in_condition("query TEXT == x"), "q"),
    "condition name": (in_condition("has cookie TEXT"), "beta"),
    "condition host": (in_condition("host == TEXT"), "sava.example.com"),
    "condition method": (in_condition("method == TEXT"), "GET"),
    "condition networks": (in_condition("source in TEXT"), "10.0.0.0/8, ::1"),
    "condition raw acl": (in_condition("< TEXT >"), "hdr(x) -m found"),
    "rewrite": (rewrite_in_vamp_form, "/v2%[path] if path starts with /api"),
    "rewrite path": (set_field("g.routes.svc.rewrites.1.path"), "/x%[query]"),
    "rewrite condition": (set_field("g.routes.svc.rewrites.1.condition"), "has header X-Y"),
    "inline target": (set_field("g.routes.canary.targets.0"), "127.0.0.1:8083"),
    "inline target address": (set_field("g.routes.canary.targets.1.address"), "::1"),
    "service name alone": (set_field("s.name"), "svc"),
    "instance": (set_field("s.instances.0"), "[fe80::1]:8081"),
    "instance address": (set_field("s.instances.1.address"), "fe80::1"),
    "instance id": (set_field("s.instances.1.id"), "b"),
    "service mode": (set_field("s.mode"), "tcp"),
    "check type": (set_field("s.health_check.type"), "http"),
    "check path": (set_field("s.health_check.path"), "/health"),
    "check method": (set_field("s.health_check.method"), "GET"),
    "check host": (set_field("s.health_check.host"), "sava.internal"),
    "check host address": (set_field("s.health_check.host"), "fe80::2"),
    "check status": (set_field("s.health_check.expect_status"), "200-399"),
    "check body": (set_field("s.health_check.expect_body"), "ok"),
    "check interval": (set_field("s.health_check.interval"), "2s"),
    "check timeout": (set_field("s.health_check.timeout"), "1s"),
    "check send": (with_tcp_check("send"), "PING\r\n"),
    "check expect": (with_tcp_check("expect"), "+PONG"),
    "tls certificate name": (set_field("g.tls.certificates.0"), "sava-cert"),
    "tls min version": (set_field("g.tls.min_version"), "1.3"),
    "tls redirect port": (set_field("g.tls.redirect_http"), "9080"),
    "tls hsts": (set_field("g.tls.hsts"), "600"),
    "service tls ca": (set_field("s.tls.ca"), "internal-ca"),
    "service tls sni": (set_field("s.tls.sni"), "svc.internal"),
    "rate limit by": (set_field("g.policies.rate_limit.by"), "header(X-Key)"),
    "rate limit per": (set_field("g.policies.rate_limit.per"), "10s"),
    "allowed network": (set_field("g.policies.allow.0"), "10.0.0.0/8"),
    "denied network": (set_field("g.policies.deny.0"), "192.0.2.0/24"),
    "realm": (set_field("g.policies.basic_auth.realm"), "admin area"),
    "password hash": (set_field("g.policies.basic_auth.users.alice"), SHA512_HASH),
    "request header value": (set_field("g.policies.headers.request.set.X-Env"), "prod"),
    "response header value": (
        set_field("g.policies.headers.response.set.X-Frame-Options"),
        "DENY; a=b",
    ),
    "removed header": (set_field("g.policies.headers.response.remove.0"), "Server"),
    "redirect location": (set_field("g.routes.svc.policies.redirect.location"), "https://a.b/c"),
    "max body": (set_field("g.policies.max_body"), "10m"),
}

NEEDS_RAW_ACL = {"condition raw acl"}

# Fragments that mean something to HAProxy, YAML or a line-based protocol.
DANGEROUS = [
    "\n", "\r", "\r\n", "\t", "\x00", "\x0b", "\x85", "\u2028", "#", "%[", "%[path]", "%[src]",
    "]", "[", "'", '"', "{", "}", " { ", " } ", " ", "||", "|", "$", "${HOME}", "$HOME", "\\",
    ";", "!", " if ", " unless ", "--", " -m ", "%", ":", "/", ".", "-", "é", "\U0001f600",
    "%eth0", "%\nfrontend evil", "\nhttp-request deny", "\nserver evil 6.6.6.6:80",
    "\nfrontend evil\n    bind :80",
    "' } || { always_true } #", '" if TRUE #',
]  # fmt: skip


def texts(valid: str) -> st.SearchStrategy[str]:
    fragment = st.sampled_from(["", *DANGEROUS])
    return st.one_of(
        st.text(max_size=30),
        st.text(st.sampled_from(sorted(set(valid + "'\"#%[]{}()$\\|! \n\r\t-"))), max_size=30),
        st.lists(st.sampled_from([*DANGEROUS, valid]), max_size=5).map("".join),
        st.builds(lambda a, b: a + valid + b, fragment, fragment),
        st.builds(lambda a: valid[: len(valid) // 2] + a + valid[len(valid) // 2 :], fragment),
    )


def documents() -> Documents:
    return copy.deepcopy(GATEWAY), copy.deepcopy(SERVICE)


def compile_or_reject(
    gateway: dict[str, Any], service: dict[str, Any], *, allow_raw_acl: bool = False
) -> ir.DataPlane | None:
    try:
        resources: list[Resource] = [
            validate_resource(gateway, allow_raw_acl=allow_raw_acl),
            validate_resource(NEIGHBOUR),
            validate_resource(service),
        ]
    except ValidationFailed as rejected:
        assert rejected.problems
        return None
    # The certificates the documents name, whatever the names: they reach file names.
    names = {("default", "other", True)}
    for found in resources:
        if isinstance(found, Gateway) and found.tls:
            names |= {(found.namespace, name, True) for name in found.tls.certificates}
        if isinstance(found, Service) and found.tls and found.tls.ca:
            names.add((found.namespace, found.tls.ca, False))
    state = DesiredState(
        gateways=[r for r in resources if isinstance(r, Gateway)],
        services=[r for r in resources if isinstance(r, Service)],
        certificates=[certificate(*name) for name in sorted(names)],
    )
    return compile_state(state, SETTINGS).dataplane


CA = Authority()
LEAF = CA.issue("sava.example.com", "*.sava.example.com")


@functools.cache
def certificate(namespace: str, name: str, with_key: bool) -> Certificate:
    document = LEAF.document(name) if with_key else {"kind": "certificate", "name": name}
    resource = validate_resource(
        {**document, "namespace": namespace, **({} if with_key else {"cert": CA.cert})}
    )
    assert isinstance(resource, Certificate)
    return resource


# --- the checker itself -------------------------------------------------------------------------


def test_the_base_documents_render_and_pass_the_allow_list() -> None:
    dataplane = compile_or_reject(*documents())
    assert dataplane is not None
    assert len(dataplane.frontends) == 1
    assert len(dataplane.backends) == 4
    assert_safe(dataplane)


@pytest.mark.parametrize("field", list(FIELDS))
def test_each_fields_valid_value_renders(field: str) -> None:
    apply, valid = FIELDS[field]
    gateway, service = documents()
    apply((gateway, service), valid)
    raw = field in NEEDS_RAW_ACL
    if raw:
        # Raw ACLs need the operator's permission; without it they never reach the config.
        assert compile_or_reject(gateway, service) is None
    dataplane = compile_or_reject(gateway, service, allow_raw_acl=raw)
    assert dataplane is not None, field
    assert_safe(dataplane)


@pytest.mark.parametrize(
    "extra",
    [
        "    http-request deny",
        "    server evil 6.6.6.6:80 weight 1 check inter 1 rise 1 fall 1",
        "    http-request set-var(txn.mg_be) str(x) if { always_true } # comment",
        "    http-request set-var(txn.mg_be) str(x) if { path -m str '}' }",
        "    http-request set-var(txn.mg_be) str(x) if { path -m str $HOME }",
        "    http-request set-var(txn.mg_be) str(x) if { path -m str 'a' } { src %[src] }",
        '    http-request set-path "/%[src]" if { always_true }',
        "    balance roundrobin; foo",
        "    # default/sava route x y",
        "    # gateway default/sava\r",
        "    mode http\x85",
        "frontend evil",
        "backend evil",
        "http-request deny",
    ],
)
def test_the_checker_catches_lines_the_compiler_does_not_write(extra: str) -> None:
    dataplane = compile_or_reject(*documents())
    assert dataplane is not None
    files = render_files(dataplane)
    assert problems(files, dataplane) == []
    lines = files[CONFIG_FILE].splitlines()
    tampered = {**files, CONFIG_FILE: "\n".join([*lines, extra]) + "\n"}
    assert problems(tampered, dataplane)


def test_the_checker_catches_stray_map_lines() -> None:
    dataplane = compile_or_reject(*documents())
    assert dataplane is not None
    files = render_files(dataplane)
    tampered = {**files, "maps/weights.map": files["maps/weights.map"] + "a b c\n"}
    assert problems(tampered, dataplane)


# --- the property -------------------------------------------------------------------------------


def variants(valid: str) -> list[str]:
    """Every dangerous fragment before, after and inside a valid value."""
    middle = len(valid) // 2
    found = {}
    for fragment in DANGEROUS:
        for text in (
            fragment + valid,
            valid + fragment,
            valid[:middle] + fragment + valid[middle:],
        ):
            found[text] = None
    return list(found)


@pytest.mark.parametrize("field", list(FIELDS))
def test_dangerous_fragments_around_valid_values_cannot_inject(field: str) -> None:
    apply, valid = FIELDS[field]
    for text in variants(valid):
        gateway, service = documents()
        apply((gateway, service), text)
        dataplane = compile_or_reject(gateway, service)
        if dataplane is not None:
            assert problems(render_files(dataplane), dataplane) == [], repr(text)


@pytest.mark.parametrize("field", list(FIELDS))
@settings(
    max_examples=100,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_text_in_any_field_can_inject_configuration(field: str, data: st.DataObject) -> None:
    apply, valid = FIELDS[field]
    text = data.draw(texts(valid), label=field)
    gateway, service = documents()
    apply((gateway, service), text)
    dataplane = compile_or_reject(gateway, service)
    if dataplane is not None:
        assert_safe(dataplane)
