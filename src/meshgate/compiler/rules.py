"""The frontend rules that pick a gateway by Host and a route by condition, stickiness and weight.

Everything happens inside the one frontend the client connected to, with variables and map
lookups, so choosing a route costs no extra proxy hop. Weights live in a map file keyed by
backend name, so a weight change is a map update at run time, not a reload. Availability is
read live with nbsrv(), so a route whose instances are all down is skipped in the same request
and its share goes to the others in proportion to their weights (SPEC §1, rule 2) — except on
a port of several virtual hosts, where plain gateways are chosen by generic rules from maps
the agent keeps over the usable routes (compiler.dispatch).

Weighted choice, in HAProxy terms: sum the weights of the available routes, noting where each
route's share ends, draw pick = random mod sum, and choose the first route whose share ends
above pick. Sticky source draws from a hash of the client address instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshgate.compiler import dispatch, ir, policies
from meshgate.compiler.slots import SLOTS, key_expression
from meshgate.conditions import MAX_LINE_WORDS, count_words

NOT_CHOSEN = "!{ var(txn.mg_be) -m found }"
CHOSEN = "{ var(txn.mg_be) -m found }"
NO_GATEWAY = "!{ var(txn.mg_gw) -m found }"
STOPPING = "{ stopping }"


def available(backend: str) -> str:
    # `-m bool` matches the count itself, with no pattern to compare it to (60 instructions a
    # request fewer than `gt 0` for two routes).
    return f"{{ nbsrv({backend}) -m bool }}"


def chosen_by(expression: str) -> str:
    """A term that stores `expression` in txn.mg_be and holds when it has a value. Last in a
    rule's condition, it runs only once every other term has held, so a single `allow` both
    chooses and ends the rules (a `set-var` rule and an `allow` rule cost about 200 more)."""
    return f"{{ {expression},set-var(txn.mg_be) -m found }}"


def conditional_rules(keyword: str, action: str, terms: Sequence[str]) -> list[str]:
    """`KEYWORD ACTION if TERMS...`, split over several rules when one line would be too long.

    HAProxy reads at most 64 words a line. A longer AND is evaluated in steps that count how
    many chunks have matched in txn.mg_chain; the action runs when all of them have.
    """
    line = f"{keyword} {action} if {' '.join(terms)}" if terms else f"{keyword} {action}"
    if count_words(line) <= MAX_LINE_WORDS:
        return [line]
    lines = [f"{keyword} set-var(txn.mg_chain) int(0)"]
    chunk: list[str] = []
    step = 0

    def flush() -> None:
        nonlocal step
        previous = f"{{ var(txn.mg_chain) -m int eq {step} }} " if step else ""
        step += 1
        lines.append(f"{keyword} set-var(txn.mg_chain) int({step}) if {previous}{' '.join(chunk)}")
        chunk.clear()

    for term in terms:
        candidate = (
            f"{keyword} set-var(txn.mg_chain) int(99) if {{ var(txn.mg_chain) -m int eq 99 }}"
        )
        if chunk and count_words(" ".join([candidate, *chunk, term])) > MAX_LINE_WORDS:
            flush()
        chunk.append(term)
    flush()
    lines.append(f"{keyword} {action} if {{ var(txn.mg_chain) -m int eq {step} }}")
    return lines


def alternatives_rules(keyword: str, action: str, dnf: ir.Dnf, guards: Sequence[str]) -> list[str]:
    """One rule set per conjunction of `dnf`; the caller's guards make the first match win."""
    if any(not conjunction for conjunction in dnf):
        dnf = ((),)  # one conjunction that always holds makes the others irrelevant
    rules: list[str] = []
    for conjunction in dnf:
        rules += conditional_rules(keyword, action, list(dict.fromkeys([*guards, *conjunction])))
    return rules


def frontend_rules(frontend: ir.Frontend, maps_dir: str) -> list[str]:
    """The rule lines of one frontend, in evaluation order (without indentation)."""
    keyword = "http-request" if frontend.mode == "http" else "tcp-request content"
    lines: list[str] = []
    shared = frontend.host_map is not None or len(frontend.gateways) > 1
    if frontend.host_map and frontend.wildcard_map:
        host = "req.hdr(host),field(1,:),lower"
        lines += [
            f"{keyword} set-var(txn.mg_gw) {host},map_str({maps_dir}/{frontend.host_map})",
            f"{keyword} set-var(txn.mg_gw) {host},map_end({maps_dir}/{frontend.wildcard_map})"
            f" if {NO_GATEWAY}",
        ]
        if frontend.default_gateway:
            lines.append(
                f"{keyword} set-var(txn.mg_gw) str({frontend.default_gateway}) if {NO_GATEWAY}"
            )
        else:
            lines.append(
                f'{keyword} return status 404 content-type text/plain string "no gateway serves'
                f' this host" if {NO_GATEWAY}'
            )
    # Each gateway's rules up to its fast path come first, one gateway after another, and the
    # fallbacks (a route with no server up) of all of them after: a request to a gateway
    # passes the other gateways' rules by their guards, so on a port of many virtual hosts it
    # passes one rule per plain gateway before it rather than all of their fallback rules.
    # Every rule is guarded by its gateway, so a gateway's own rules keep their order.
    # On a port of virtual hosts, a plain gateway (compiler.dispatch) has no rules of its own
    # before its fallback: the generic rules after the other gateways' choose for all of them
    # with one lookup, so only the gateways that need their own rules are walked in sequence.
    generic = dispatch.is_generic(frontend)
    fallbacks: list[str] = []
    for gateway in frontend.gateways:
        guard = (f"{{ var(txn.mg_gw) -m str {gateway.gateway_id} }}",) if shared else ()
        plain = generic and dispatch.is_plain(gateway)
        if not plain:
            lines.append(f"# gateway {gateway.namespace}/{gateway.name}")
        if gateway.policy is not None:
            lines += policies.request_rules(gateway.policy, keyword, guard, maps_dir, 0)
        choosing, fallback = gateway_rules(gateway, keyword, guard, maps_dir)
        if not plain:
            lines += choosing
        fallbacks.append(f"# gateway {gateway.namespace}/{gateway.name}: routes unavailable")
        fallbacks += fallback
    if generic:
        lines += generic_rules(frontend.gateways, keyword, maps_dir)
    lines += fallbacks
    if frontend.mode == "http":
        lines.append(
            f'{keyword} return status 503 content-type text/plain string "no route available"'
            f" if {NOT_CHOSEN}"
        )
    else:
        lines.append(f"{keyword} reject if {NOT_CHOSEN}")
    return lines


def generic_rules(gateways: Sequence[ir.GatewayRules], keyword: str, maps_dir: str) -> list[str]:
    """The rules that choose for every plain gateway of a port in one map lookup each: by the
    gateway id for lone routes, by a random slot, by a slot of the client's address hash.
    Each only when the port has such gateways; a gateway whose routes are all unusable has no
    entries (the agent removed them) and falls through to its fallback."""
    plain = [g for g in gateways if dispatch.is_plain(g)]
    lone = any(len(g.choices) == 1 for g in plain)
    random = any(len(g.choices) > 1 and g.sticky != "source" for g in plain)
    source = any(len(g.choices) > 1 and g.sticky == "source" for g in plain)
    lookups = [
        f"{key},map_str({maps_dir}/{table})"
        for key, table, present in (
            (dispatch.LONE_KEY, ir.LONE_MAP, lone),
            (dispatch.RANDOM_KEY, ir.DISPATCH_MAP, random),
            (dispatch.SOURCE_KEY, ir.DISPATCH_MAP, source),
        )
        if present
    ]
    return [f"{keyword} {done(keyword)} if {chosen_by(lookup)}" for lookup in lookups]


def gateway_rules(
    gateway: ir.GatewayRules, keyword: str, guard: tuple[str, ...], maps_dir: str
) -> tuple[list[str], list[str]]:
    """A gateway's rules in two parts: those that choose while every route is available
    (pins, conditions, the fast path), and the fallback that weighs the routes still usable."""
    set_backend = f"{keyword} set-var(txn.mg_be)"
    lines: list[str] = []

    def when(*terms: str) -> str:
        return " ".join((*guard, *terms))

    if gateway.route_cookie_name:
        for choice in gateway.choices:
            pinned = f"{{ req.cook({gateway.route_cookie_name}) -m str {choice.cookie_value} }}"
            up = available(choice.backend)
            lines.append(f"{set_backend} str({choice.backend}) if {when(NOT_CHOSEN, pinned, up)}")

    for choice in gateway.choices:
        if not choice.condition or choice.strength == 0:
            continue
        terms = [NOT_CHOSEN, available(choice.backend)]
        if choice.strength < 100:
            # A fresh draw per route: each conditional route takes its share of what is left.
            lines.append(f"{keyword} set-var(txn.mg_draw) rand(100) if {when(NOT_CHOSEN)}")
            terms.append(f"{{ var(txn.mg_draw) -m int lt {choice.strength} }}")
        lines += alternatives_rules(
            keyword, f"set-var(txn.mg_be) str({choice.backend})", choice.condition, [*guard, *terms]
        )

    if lines:  # a pin or a condition chose: the weighted choice below must not run
        lines.append(f"{keyword} {done(keyword)} if {CHOSEN}")
    fast, fallback = weighted_rules(gateway, keyword, guard, maps_dir)
    return [*lines, *fast], fallback


def done(keyword: str) -> str:
    """The action that ends a frontend's request rules once a route is chosen: the rules left
    (the walk's, later gateways') would each still test their guards on every request."""
    return "allow" if keyword == "http-request" else "accept"


def weighted_rules(
    gateway: ir.GatewayRules, keyword: str, guard: tuple[str, ...], maps_dir: str
) -> tuple[list[str], list[str]]:
    """Pick a route by weight among the usable routes.

    While all routes are available, the slots map picks at once. Otherwise a lone route is
    chosen by one rule when it weighs and is usable, and of several routes the first pass keeps
    a running sum of the usable routes' weights and notes where each route's share ends
    (txn.mg_cN); the draw is then below the end of exactly one share, and the first route
    whose share ends above it is chosen. A route left out has no end noted, so it is never
    chosen. One map lookup per route and one rule per route per pass. Returned apart: the
    fast path, and the fallback for when a route is unavailable.
    """
    weights = f"{maps_dir}/{ir.WEIGHTS_MAP}"
    draw = "src,crc32(1)" if gateway.sticky == "source" else "rand"

    def when(*terms: str) -> str:
        return " ".join((*guard, NOT_CHOSEN, *terms))

    def usable(choice: ir.RouteChoice, *terms: str) -> str:
        # A worker that is shutting down after a reload reports no usable server anywhere (its
        # backends are stopped) while it finishes its last requests. Those requests are then
        # split by weight alone, and a route that really has no instance answers 503 itself.
        return f"{when(available(choice.backend), *terms)} || {when(STOPPING, *terms)}"

    # The fast path (compiler.slots): with every route available, one lookup of a draw of 0-99
    # among the gateway's slots. A lone route needs no draw, only a weight above 0. Nothing
    # can have chosen before it: a pin or a condition ends the rules (see `gateway_rules`), and
    # another gateway's choice fails this one's guard.
    if len(gateway.choices) == 1:
        (only,) = gateway.choices
        weighs = f"{{ str({only.backend}),map_str_int({weights},0) -m int gt 0 }}"
        terms = [*guard, available(only.backend), weighs, chosen_by(f"str({only.backend})")]
        # Nothing to share out either: what the running sum below comes to is one rule (five
        # were 1 kB of text a gateway, 100 MB at 100,000 gateways).
        lone_fallback: list[str] | None = [
            f"{keyword} set-var(txn.mg_be) str({only.backend}) if {usable(only, weighs)}"
        ]
    else:
        lone_fallback = None
        slot_draw = "rand(100)" if draw == "rand" else f"{draw},mod({SLOTS})"
        if dispatch.is_plain(gateway):
            # Its slots are in dispatch.map, kept over the usable routes; the exact test of
            # every route's availability still decides whether this path is taken.
            slot = dispatch.key_expression(slot_draw, gateway.gateway_id, gateway.sticky)
            table = ir.DISPATCH_MAP
        else:
            slot, table = key_expression(slot_draw, gateway.gateway_id), ir.SLOTS_MAP
        terms = [
            *guard,
            *(available(choice.backend) for choice in gateway.choices),
            chosen_by(f"{slot},map_str({maps_dir}/{table})"),
        ]
    # The choosing term stays last when the rule is split (`conditional_rules` keeps the order
    # and puts it in the last step), so nothing is chosen unless the route is ending the rules.
    fast = conditional_rules(keyword, done(keyword), terms)

    if lone_fallback is not None:
        return fast, lone_fallback

    lines = [f"{keyword} set-var(txn.mg_sum) int(0) if {when()}"]
    for number, choice in enumerate(gateway.choices):
        lines += [
            f"{keyword} set-var(txn.mg_sum) str({choice.backend}),map_str_int({weights},0),"
            f"add(txn.mg_sum) if {usable(choice)}",
            f"{keyword} set-var(txn.mg_c{number}) var(txn.mg_sum) if {usable(choice)}",
        ]
    lines.append(
        f"{keyword} set-var(txn.mg_pick) {draw},mod(txn.mg_sum)"
        f" if {when('{ var(txn.mg_sum) -m int gt 0 }')}"
    )
    lines += [
        f"{keyword} set-var(txn.mg_be) str({choice.backend})"
        f" if {when(f'{{ var(txn.mg_pick),sub(txn.mg_c{number}) -m int lt 0 }}')}"
        for number, choice in enumerate(gateway.choices)
    ]
    return fast, lines


def balance_directive(balance: str) -> str:
    """The model spells `url_param(NAME)` like `hdr(NAME)`; HAProxy wants `url_param NAME`."""
    if balance.startswith("url_param("):
        return f"url_param {balance.removeprefix('url_param(').removesuffix(')')}"
    return balance


def backend_lines(backend: ir.Backend) -> list[str]:
    """Directives of one route backend after its mode and balance lines (without servers)."""
    lines: list[str] = []
    if backend.timeout_connect_ms:
        lines.append(f"timeout connect {backend.timeout_connect_ms}ms")
    if backend.timeout_server_ms:
        lines.append(f"timeout server {backend.timeout_server_ms}ms")
    lines += check_lines(backend.health)
    if backend.retries is not None:
        lines.append(f"retries {backend.retries}")
    if backend.retry_on:
        # A connection refused is always retried on another instance (retries + redispatch in
        # the defaults). Retrying after the request was sent makes HAProxy keep a copy of every
        # request, so it is the service's choice, and only for methods safe to send twice.
        lines += [
            f"retry-on conn-failure {' '.join(backend.retry_on)}",
            "http-request disable-l7-retry if !{ method GET HEAD OPTIONS }",
        ]
    if backend.prefer_local:
        # Remote instances are backups: all of them share the load, by weight, when no
        # local one is left (by default only the first backup would take it all).
        lines.append("option allbackups")
    if backend.forwarded_proto:
        lines += forwarded_lines(backend.forwarded_proto)
    if backend.sticky == "source":
        lines += ["stick-table type ip size 1m expire 30m", "stick on src"]
    if backend.instance_cookie:
        lines.append(f"cookie {backend.instance_cookie} insert indirect nocache httponly")
    if backend.route_cookie:
        name, value = backend.route_cookie
        lines += [
            f"http-request set-var(txn.mg_pinned) req.cook({name})",
            f'http-response add-header Set-Cookie "{name}={value}; Path=/; HttpOnly"'
            f" if !{{ var(txn.mg_pinned) -m str {value} }}",
        ]
    for rewrite in backend.rewrites:
        # A rewrite may match through several alternatives; set-path once is enough, so the
        # alternatives after the first match are guarded by txn.mg_rewritten.
        lines.append("http-request unset-var(txn.mg_rewritten)")
        lines += alternatives_rules(
            "http-request", "set-var(txn.mg_rewritten) bool(true)", rewrite.condition, ()
        )
        lines.append(
            f'http-request set-path "{rewrite.path}" if {{ var(txn.mg_rewritten) -m bool }}'
        )
    return lines


# The address a check connects to as a Host value: an IPv6 address (it has a colon) in brackets.
INSTANCE_HOST = r'''"%[bc_dst,regsub('^(.*:.*)\$','[\1]')]"'''


def forwarded_lines(proto: str) -> list[str]:
    """What instances behind a proxy expect to learn about the client. The client's own
    X-Forwarded-For is kept (HAProxy adds its entry after it); Proto is set here, so a client
    cannot claim https on a plain connection. Proto is a constant: a gateway's port is either
    TLS or not, and a condition on `ssl_fc` cost every request about 500 instructions. Host
    reaches the instances unchanged, so an X-Forwarded-Host would only repeat it (for about
    2,500 instructions a request); one a client sends is removed, never trusted."""
    return [
        "option forwardfor",
        f"http-request set-header X-Forwarded-Proto {proto}",
        "http-request del-header X-Forwarded-Host",
    ]


def check_lines(check: ir.HealthCheck) -> list[str]:
    """The backend-level lines of a health check (a route's, or a checker's: compiler.checks)."""
    lines = []
    if check.timeout_ms:
        lines.append(f"timeout check {check.timeout_ms}ms")
    if check.type == "http":
        lines.append("option httpchk")
        send = f"http-check send meth {check.method} uri {check.path} ver HTTP/1.1"
        # HTTP/1.1 requires a Host header, and strict servers (nginx) answer 400 without one.
        # Without a `host:` it is the address the check connects to, which HAProxy knows per
        # server, also for instances added at run time.
        send += f" hdr host {check.host or INSTANCE_HOST}"
        lines += [send, f"http-check expect status {check.expect_status}"]
        if check.expect_body:
            lines.append(f"http-check expect string '{check.expect_body}'")
    elif check.type == "tcp" and (check.send_hex or check.expect_hex):
        lines += ["option tcp-check", "tcp-check connect"]
        if check.send_hex:
            lines.append(f"tcp-check send-binary {check.send_hex}")
        if check.expect_hex:
            lines.append(f"tcp-check expect binary {check.expect_hex}")
    return lines


# A preferred local instance that refuses a connection is marked down at once: while it still
# counts as up, a retry's redispatch would pick it again (backups are only used when no
# active server is), and the request would fail. Health checks bring it back.
FAIL_FAST_ERRORS = 1


def server_options(
    backend: ir.Backend, server: ir.Server, track: tuple[str, str] | None = None
) -> str:
    """The options after `server NAME ADDR:PORT`, shared by the config file and `add server`.
    With `track` (a checker server, see compiler.checks), the server follows that server's
    health instead of being checked itself."""
    check = backend.health
    parts = [f"weight {server.weight}"]
    if track is not None:
        parts.append(f"track {track[0]}/{track[1]}")
    else:
        parts += [f"check inter {check.interval_ms}", f"rise {check.rise}", f"fall {check.fall}"]
    if track is None and check.port and check.type != "agent":
        parts.append(f"port {check.port}")
    if track is None and check.type == "agent" and check.port:
        parts.append(f"agent-check agent-port {check.port} agent-inter {check.interval_ms}")
    # A tracking server never has a passive check (compiler.checks keeps those on their own).
    if track is None and check.error_limit:
        layer = 4 if backend.mode == "tcp" else 7
        parts.append(f"observe layer{layer} error-limit {check.error_limit} on-error mark-down")
    elif track is None and server.fail_fast:
        parts.append(f"observe layer4 error-limit {FAIL_FAST_ERRORS} on-error mark-down")
    if server.cookie:
        parts.append(f"cookie {server.cookie}")
    if server.netns:
        parts.append(f"namespace {server.netns}")
    if server.backup:
        parts.append("backup")
    return " ".join(parts)


def checker_server_options(check: ir.HealthCheck, netns: str | None) -> str:
    """The options after `server NAME ADDR:PORT` in a checker backend (compiler.checks): the
    check only, for the route servers that track it. It takes no traffic."""
    parts = [f"check inter {check.interval_ms}", f"rise {check.rise}", f"fall {check.fall}"]
    if check.port:
        parts.append(f"port {check.port}")
    if netns:
        parts.append(f"namespace {netns}")
    return " ".join(parts)


# Up to this many backends, a frontend switches with one rule per backend naming it, which
# HAProxy resolves when it loads the configuration. Beyond, one rule finds the backend by the
# name in txn.mg_be, a lookup that costs as much as testing about four static rules.
STATIC_SWITCHING_MAX = 4


def switching_rules(frontend: ir.Frontend) -> list[str]:
    """The frontend's use_backend rules, to the backend its request rules chose (txn.mg_be).
    Without a choice they are never reached: the request rules answered 503 or rejected."""
    backends = list(
        dict.fromkeys(choice.backend for gateway in frontend.gateways for choice in gateway.choices)
    )
    if len(backends) <= STATIC_SWITCHING_MAX:
        return [f"use_backend {name} if {{ var(txn.mg_be) -m str {name} }}" for name in backends]
    return ["use_backend %[var(txn.mg_be)]"]
