"""Policies (model.policies) in HAProxy terms: request rules, response rules, map files, stick
tables and userlists. Pure.

A gateway's request rules run in its frontend before a route is chosen; a route's run in its
backend, so after its gateway's. Response header rules all run in the route's backend, the
gateway's first, so a route's header wins over its gateway's.

What HAProxy can change at run time lives in map files, which the planner swaps without a
reload: the allowed and denied networks (keys of `map_ip` maps; an empty allow list is written
as 0.0.0.0/0 and ::/0, so the rule stays the same whether a list is empty or not) and the
values of headers set (looked up by name in a map). Every other value written into the
configuration is a validated, typed value (numbers, names, networks, crypt hashes, URLs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from meshgate.compiler import ir, naming
from meshgate.model.policies import HeaderRules, Headers, Policies

EVERY_ADDRESS = (("0.0.0.0/0", "1"), ("::/0", "1"))


def gateway_policy_name(gateway_id: str) -> str:
    return f"policy_{gateway_id}"


def route_policy_name(backend: str) -> str:
    return f"policy_r{naming.short_hash(backend, length=10)}"


def allow_map(policy: ir.Policy) -> str:
    return f"{policy.name}.allow.map"


def deny_map(policy: ir.Policy) -> str:
    return f"{policy.name}.deny.map"


def headers_map(policy: ir.Policy) -> str:
    return f"{policy.name}.headers.map"


def table_name(policy: ir.Policy) -> str:
    return f"{policy.name}_rate"


def userlist_name(policy: ir.Policy) -> str:
    return f"{policy.name}_users"


def request_rules(
    policy: ir.Policy, keyword: str, guard: Sequence[str], maps_dir: str, counter: int
) -> list[str]:
    """The request rules of one policy, in order: networks (403), rate limit (429), basic auth
    (401), body size (413), redirect, request headers. `counter`: the sticky counter its rate
    limit tracks with (0 for gateways, 1 for routes, so both can limit one request)."""
    spec = policy.spec

    def when(*terms: str) -> str:
        return " if " + " ".join((*guard, *terms)) if (*guard, *terms) else ""

    refuse = "reject" if keyword != "http-request" else "deny deny_status 403"
    lines = [
        f"{keyword} {refuse}{when(f'{{ src,map_ip({maps_dir}/{deny_map(policy)}) -m found }}')}",
        f"{keyword} {refuse}{when(f'!{{ src,map_ip({maps_dir}/{allow_map(policy)}) -m found }}')}",
    ]
    if keyword != "http-request":
        return lines
    if spec.rate_limit is not None:
        limit, table = spec.rate_limit, table_name(policy)
        track = f"http-request track-sc{counter}"
        if limit.by == "source":
            lines.append(f"{track} src table {table}{when()}")
        elif limit.by == "all":
            lines.append(f"{track} int(0) table {table}{when()}")
        else:
            found = f"{{ req.hdr({limit.header}) -m found }}"
            lines += [
                f"{track} req.hdr({limit.header}) table {table}{when(found)}",
                f"{track} str(-) table {table}{when('!' + found)}",
            ]
        over = f"{{ sc_http_req_rate({counter},{table}) gt {limit.requests} }}"
        lines.append(
            'http-request return status 429 content-type text/plain string "too many requests"'
            f" hdr Retry-After {limit.per // 1000}{when(over)}"
        )
    if spec.basic_auth is not None:
        authorized = f"!{{ http_auth({userlist_name(policy)}) }}"
        lines.append(f'http-request auth realm "{spec.basic_auth.realm}"{when(authorized)}')
    if spec.max_body is not None:
        too_large = f"{{ req.hdr_val(content-length) gt {spec.max_body} }}"
        lines.append(f"http-request deny deny_status 413{when(too_large)}")
    if spec.redirect is not None:
        redirect = spec.redirect
        if redirect.scheme is not None:
            other = "!{ ssl_fc }" if redirect.scheme == "https" else "{ ssl_fc }"
            lines.append(
                f"http-request redirect scheme {redirect.scheme} code {redirect.status}"
                f"{when(other)}"
            )
        else:
            lines.append(
                f'http-request redirect location "{redirect.location}" code {redirect.status}'
                f"{when()}"
            )
    lines += _header_rules("http-request", "req", spec.headers.request, policy, maps_dir, guard)
    return lines


def response_rules(policy: ir.Policy, maps_dir: str) -> list[str]:
    return _header_rules("http-response", "res", policy.spec.headers.response, policy, maps_dir, ())


def _header_rules(
    keyword: str,
    side: str,
    rules: HeaderRules,
    policy: ir.Policy,
    maps_dir: str,
    guard: Sequence[str],
) -> list[str]:
    condition = f" if {' '.join(guard)}" if guard else ""
    lines = [f"{keyword} del-header {name}{condition}" for name in rules.remove]
    lookup = f"map_str({maps_dir}/{headers_map(policy)})"
    lines += [
        f'{keyword} set-header {name} "%[str({side}.{name}),{lookup}]"{condition}'
        for name in rules.set
    ]
    return lines


def compile_policy(name: str, spec: Policies) -> ir.Policy:
    """The policy with its run-time data (networks, header values) moved into its three map
    files: every policy has all three, so changing that data is a map swap, never a reload."""
    headers = [
        *((f"req.{header}", value) for header, value in spec.headers.request.set.items()),
        *((f"res.{header}", value) for header, value in spec.headers.response.set.items()),
    ]
    shape = spec.model_copy(
        update={
            "allow": [],
            "deny": [],
            "headers": Headers(
                request=_without_values(spec.headers.request),
                response=_without_values(spec.headers.response),
            ),
        }
    )
    policy = ir.Policy(name, shape)
    allowed = tuple((network, "1") for network in spec.allow) or EVERY_ADDRESS
    maps = (
        ir.MapFile(allow_map(policy), allowed),
        ir.MapFile(deny_map(policy), tuple((network, "1") for network in spec.deny)),
        ir.MapFile(headers_map(policy), tuple(headers)),
    )
    return ir.Policy(name, shape, maps)


def _without_values(rules: HeaderRules) -> HeaderRules:
    return HeaderRules(set=dict.fromkeys(rules.set, ""), remove=rules.remove)


def policy_maps(policies: Iterable[ir.Policy]) -> list[ir.MapFile]:
    return [map_file for policy in policies for map_file in policy.maps]


def dataplane_policies(
    frontends: Iterable[ir.Frontend], backends: Iterable[ir.Backend]
) -> list[ir.Policy]:
    """Every policy in use, each once, in a stable order."""
    found = [g.policy for f in frontends for g in f.gateways if g.policy is not None]
    found += [b.policy for b in backends if b.policy is not None]
    return sorted({p.name: p for p in found}.values(), key=lambda p: p.name)


def sections(dataplane: ir.DataPlane) -> list[tuple[str, list[str]]]:
    """The stick tables (as backends holding only a table) and userlists of the policies."""
    result: list[tuple[str, list[str]]] = []
    for policy in dataplane_policies(dataplane.frontends, dataplane.backends):
        spec = policy.spec
        if spec.rate_limit is not None:
            limit = spec.rate_limit
            kind = {"source": "ipv6", "all": "integer"}.get(limit.by, "string len 128")
            period = f"{limit.per // 1000}s"
            table = f"stick-table type {kind} size 1m expire {period}"
            result.append(
                (f"backend {table_name(policy)}", [f"{table} store http_req_rate({period})"])
            )
        if spec.basic_auth is not None:
            users = spec.basic_auth.users
            result.append(
                (
                    f"userlist {userlist_name(policy)}",
                    [f"user {user} password {users[user]}" for user in sorted(users)],
                )
            )
    return result


def backend_rules(backend: ir.Backend, maps_dir: str) -> list[str]:
    """A route backend's policy rules: its own request rules, then the response header rules
    of its gateway and its own."""
    lines: list[str] = []
    if backend.policy is not None:
        keyword = "http-request" if backend.mode == "http" else "tcp-request content"
        lines += request_rules(backend.policy, keyword, (), maps_dir, 1)
    if backend.mode == "http":
        for policy in (backend.gateway_policy, backend.policy):
            if policy is not None:
                lines += response_rules(policy, maps_dir)
    return lines
