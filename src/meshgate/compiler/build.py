"""Desired resources to the data-plane IR. Pure and deterministic: the same state gives the same IR.

Each gateway is compiled on its own, so one that cannot be served (a port conflict, a chain that
loops back on itself) is reported and left out while every other gateway is still compiled.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field

from meshgate.compiler import dispatch, incremental, ir, naming, policies
from meshgate.compiler import tls as tls_parts
from meshgate.compiler.locality import NodeIdentity, is_local, netns_here
from meshgate.compiler.memo import Memo
from meshgate.compiler.slots import weight_slots
from meshgate.conditions import parse_condition, to_dnf
from meshgate.model.certificate import Certificate
from meshgate.model.gateway import Gateway, Route, inline_endpoint
from meshgate.model.manifest import Resource
from meshgate.model.ports import PortIndex
from meshgate.model.service import HealthCheck, Instance, Service
from meshgate.model.snapshot import Target, certificate_problems, resolve_target

Key = tuple[str, str]  # (namespace, name)
DEFAULT_CHECK = HealthCheck()


@dataclass(frozen=True)
class DesiredState:
    gateways: Sequence[Gateway]  # in creation order: an earlier gateway keeps a contested port
    services: Sequence[Service] = ()
    registered: Mapping[Key, Sequence[Instance]] = field(default_factory=dict)
    certificates: Sequence[Certificate] = ()
    # The node this data plane is for (an agent of many); None on a single node (`up`).
    node: NodeIdentity | None = None

    @classmethod
    def of(cls, resources: Sequence[Resource]) -> DesiredState:
        """The state of these resources alone (no registered instances), in their order."""
        return cls(
            gateways=[r for r in resources if isinstance(r, Gateway)],
            services=[r for r in resources if isinstance(r, Service)],
            certificates=[r for r in resources if isinstance(r, Certificate)],
        )


@dataclass(frozen=True, slots=True)
class RouteStatus:
    target: str
    kind: str  # service | gateway | address | inline | unresolved
    instances: int
    backend: str


@dataclass(frozen=True, slots=True)
class GatewayResult:
    errors: tuple[str, ...] = ()
    routes: Mapping[str, RouteStatus] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class Compiled:
    dataplane: ir.DataPlane
    gateways: Mapping[Key, GatewayResult]
    # The gateways whose result may differ from the last compile's (a patch's); None: any.
    # Not part of what was compiled: a patch and a full compile of one state are equal.
    changed: frozenset[Key] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class CompiledGateway:
    """One gateway's share of the data plane."""

    rules: ir.GatewayRules
    backends: tuple[ir.Backend, ...]
    statuses: Mapping[str, RouteStatus]
    weights: tuple[tuple[str, str], ...]  # weights.map entries: backend -> route weight
    slots: tuple[tuple[str, str], ...]  # slots.map entries: slot key -> backend
    result: GatewayResult  # what the gateway's status reports; the same object while reused


@dataclass
class CompileMemo:
    """What `compile_state` may reuse from earlier calls: gateways whose inputs are unchanged.

    Reused values are the same objects as before, which also makes comparing the new data plane
    with the running one (`plan`) a matter of identity checks for everything unchanged."""

    gateways: Memo[Key, CompiledGateway] = field(default_factory=Memo)
    frontends: Memo[tuple[str, int], tuple[ir.Frontend, tuple[ir.MapFile, ...]]] = field(
        default_factory=Memo
    )
    last: incremental.LastCompile | None = None  # what `incremental.patch` starts from
    patched: int = 0  # compiles that patched the last one instead of compiling in full
    made: int = 0  # gateway parts compiled, or given new servers, in all: the compile work


def _patched(state: DesiredState, settings: ir.Settings, memo: CompileMemo) -> Compiled | None:
    """The last compile with the changed gateways' parts replaced, when that is all that can
    have changed (see `incremental`)."""
    last = memo.last
    if last is None or last.node != state.node:
        return None

    def compile_part(gateway: Gateway, targets: Mapping[str, Target]) -> CompiledGateway:
        key = (gateway.namespace, gateway.name)
        inputs = (
            state.node,
            *_inputs(gateway, targets, last.services_by_key, last.served, state.registered),
        )
        part = memo.gateways.lookup(key, inputs)
        if part is None:
            part = _compile_gateway(
                gateway, targets, last.services_by_key, last.served, state.registered, state.node,
                previous=memo.gateways.previous(key),
            )  # fmt: skip
            memo.gateways.store(key, inputs, part)
            memo.made += 1
        return part

    # The servers of a route to a service whose registered instances changed, shared by the
    # routes that make the same ones: a registration at 1,000 gateways builds them once.
    made: dict[tuple[Key, str, str], tuple[ir.Server, ...]] = {}

    def reinstance(gateway: Gateway, part: CompiledGateway, changed: Set[Key]) -> CompiledGateway:
        def servers(route: str, key: Key) -> tuple[ir.Server, ...]:
            shared = (key, gateway.sticky_mode, gateway.route_locality(route))
            found = made.get(shared)
            if found is None:
                instances = service_instances(
                    last.services_by_key[key], state.registered.get(key, ())
                )
                found = made[shared] = route_servers(gateway, route, instances, state.node)
            return found

        memo.made += 1
        return with_instances(part, gateway.namespace, changed, servers)

    patched = incremental.patch(
        last,
        settings,
        state.gateways,
        state.services,
        state.certificates,
        state.registered,
        compile_part,
        reinstance,
    )
    if patched is None:
        return None
    memo.patched += 1
    return Compiled(*patched)


def compile_state(
    state: DesiredState, settings: ir.Settings, memo: CompileMemo | None = None
) -> Compiled:
    """The data plane for `state`. With a `memo` kept from earlier calls, unchanged gateways
    are not compiled again, and a change confined to a few gateways patches the last result."""
    if memo is not None:
        patched = _patched(state, settings, memo)
        if patched is not None:
            return patched
    compiled, last = _compile_all(state, settings, memo if memo is not None else CompileMemo())
    if memo is not None:
        last.node = state.node
        memo.last = last
    return compiled


def _compile_all(
    state: DesiredState, settings: ir.Settings, memo: CompileMemo
) -> tuple[Compiled, incremental.LastCompile]:
    services = {(s.namespace, s.name): s for s in state.services}
    gateways = {(g.namespace, g.name): g for g in state.gateways}
    certificates = {(c.namespace, c.name): c for c in state.certificates}
    targets_of = {
        (g.namespace, g.name): {r: resolve_target(g, r, services, gateways) for r in g.routes}
        for g in state.gateways
    }
    results: dict[Key, GatewayResult] = {}
    accepted: list[Gateway] = []
    # What the accepted gateways listen on, indexed: a gateway is checked by a look-up per
    # port and virtual host, where comparing all pairs would grow with the square of their
    # number (10,000 virtual hosts on one port).
    ports: PortIndex[None] = PortIndex()
    looping = _gateways_in_cycles(targets_of)
    for gateway in state.gateways:
        key = (gateway.namespace, gateway.name)
        errors = [str(clash.problem) for clash in ports.clashes(gateway)]
        # A certificate deleted (or a CA renamed) after the gateway was admitted: the gateway
        # cannot be served as written, so it is left out and says why.
        errors += [str(p) for p in certificate_problems(gateway, certificates)]
        errors += tls_parts.missing_cas(gateway, targets_of[key], services, certificates)
        if key in looping:
            errors.append("routes: gateways chain back to this gateway (a loop)")
        if errors:
            results[key] = GatewayResult(errors=tuple(errors))
            continue
        accepted.append(gateway)
        ports.add(gateway, None)

    backends: list[ir.Backend] = []
    weights: list[tuple[str, str]] = []
    slots: dict[Key, tuple[tuple[str, str], ...]] = {}
    rules_by_gateway: dict[Key, ir.GatewayRules] = {}
    # Only gateways that are served can be chained to: a route to a left-out gateway resolves
    # to nothing, rather than to whatever else listens on that port.
    served = {(g.namespace, g.name): g for g in accepted}
    parts: dict[Key, CompiledGateway] = {}
    for gateway in accepted:
        key = (gateway.namespace, gateway.name)
        targets = {
            route: Target("unresolved", t.name)
            if t.kind == "gateway" and (gateway.namespace, t.name) not in served
            else t
            for route, t in targets_of[key].items()
        }
        inputs = (state.node, *_inputs(gateway, targets, services, served, state.registered))
        part = memo.gateways.lookup(key, inputs)
        if part is None:
            part = _compile_gateway(
                gateway, targets, services, served, state.registered, state.node,
                previous=memo.gateways.previous(key),
            )  # fmt: skip
            memo.gateways.store(key, inputs, part)
            memo.made += 1
        parts[key] = part
        rules_by_gateway[key] = part.rules
        backends.extend(part.backends)
        weights.extend(part.weights)
        slots[key] = part.slots
        results[key] = part.result
    memo.gateways.retain(served)

    frontends, host_maps = _frontends(accepted, rules_by_gateway, certificates, memo.frontends)
    maps = (
        *host_maps,
        *policies.policy_maps(policies.dataplane_policies(frontends, backends)),
        ir.MapFile(ir.WEIGHTS_MAP, tuple(sorted(weights))),
        # By gateway, each in slot order: sorting 100 entries a gateway would slow every pass.
        ir.MapFile(
            ir.SLOTS_MAP, tuple(itertools.chain.from_iterable(slots[k] for k in sorted(slots)))
        ),
        *dispatch.dispatch_maps(frontends, weights),
    )
    dataplane = ir.DataPlane(
        settings=settings,
        frontends=tuple(frontends),
        backends=tuple(sorted(backends, key=lambda b: b.name)),
        maps=tuple(sorted(maps, key=lambda m: m.name)),
        certificates=tls_parts.served_certificates(accepted, certificates),
        ca_files=tls_parts.ca_bundles(backends, certificates),
        redirects=tls_parts.redirects(accepted),
    )
    last = incremental.record(
        settings,
        state.gateways,
        state.services,
        state.certificates,
        state.registered,
        parts,
        served,
        dataplane,
        results,
    )
    return Compiled(dataplane, results), last


def _inputs(
    gateway: Gateway,
    targets: Mapping[str, Target],
    services: Mapping[Key, Service],
    served: Mapping[Key, Gateway],
    registered: Mapping[Key, Sequence[Instance]],
) -> tuple[object, ...]:
    """Everything `_compile_gateway` reads, to tell whether its last result still holds."""
    inputs: list[object] = [gateway]
    for target in targets.values():
        key = (gateway.namespace, target.name)
        if target.kind == "service":
            inputs.append((target, services[key], tuple(registered.get(key, ()))))
        elif target.kind == "gateway":
            chained = served[key]
            inputs.append((target, chained.bind, chained.port.number, chained.tls is not None))
        else:
            inputs.append(target)
    return tuple(inputs)


def _compile_gateway(
    gateway: Gateway,
    targets: Mapping[str, Target],
    services: Mapping[Key, Service],
    gateways: Mapping[Key, Gateway],
    registered: Mapping[Key, Sequence[Instance]],
    node: NodeIdentity | None = None,
    *,
    previous: CompiledGateway | None = None,
) -> CompiledGateway:
    """One gateway's share. `previous`, its last share, lends the weights and slots when
    they come out equal: an instance registered or lapsing recompiles every gateway routing
    to its service, and building each one's 100 slot entries afresh every time (20,000
    tuples and strings for 200 gateways) was most of what a registration allocated to keep."""
    gateway_id = naming.gateway_id(gateway.namespace, gateway.name)
    sticky = gateway.sticky_mode
    pins_route = sticky in ("route", "instance")
    route_cookie = f"mgr_{gateway_id}" if pins_route else None
    backend_mode = gateway.port.mode
    gateway_policy = (
        policies.compile_policy(policies.gateway_policy_name(gateway_id), gateway.policies)
        if gateway.policies
        else None
    )
    choices, backends, statuses = [], [], {}
    for route_name, route in gateway.routes.items():
        target = targets[route_name]
        backend_name = naming.route_backend_name(gateway.namespace, gateway.name, route_name)
        token = naming.route_token(route_name) if pins_route else None
        service = services[(gateway.namespace, target.name)] if target.kind == "service" else None
        instances, check = _instances(
            gateway, route_name, route, target, services, gateways, registered
        )
        # Only a node knows which instances are its own; on a single node all of them are.
        prefer_local = gateway.route_locality(route_name) == "prefer-local" and node is not None
        servers = route_servers(gateway, route_name, instances, node)
        backends.append(
            ir.Backend(
                name=backend_name,
                mode=backend_mode,
                route=ir.RouteRef(gateway.namespace, gateway.name, route_name),
                balance=route.balance or gateway.default_balance,
                servers=servers,
                health=check,
                sticky=sticky,
                route_cookie=(route_cookie, token) if route_cookie and token else None,
                instance_cookie=f"mgi_{gateway_id}" if sticky == "instance" else None,
                rewrites=tuple(
                    ir.Rewrite(rw.path, _dnf(rw.condition) if rw.condition else ((),))
                    for rw in route.rewrites
                ),
                timeout_connect_ms=gateway.timeouts.connect,
                timeout_server_ms=gateway.timeouts.server,
                tls=tls_parts.backend_tls(gateway, target, services, gateways),
                retries=service.retries if service else None,
                # An http service behind a tcp gateway: the bytes are not parsed as requests.
                retry_on=tuple(service.retry_on) if service and backend_mode == "http" else (),
                policy=policies.compile_policy(
                    policies.route_policy_name(backend_name), route.policies
                )
                if route.policies
                else None,
                gateway_policy=gateway_policy,
                forwarded_proto=(
                    ("https" if gateway.tls else "http")
                    if gateway.forwarded_headers and backend_mode == "http"
                    else None
                ),
                prefer_local=prefer_local,
            )
        )
        choices.append(
            ir.RouteChoice(
                backend=backend_name,
                condition=_dnf(route.condition) if route.condition else (),
                strength=route.strength,
                cookie_value=token,
            )
        )
        statuses[route_name] = RouteStatus(
            target=target.name, kind=target.kind, instances=len(servers), backend=backend_name
        )
    rules = ir.GatewayRules(
        gateway_id=gateway_id,
        namespace=gateway.namespace,
        name=gateway.name,
        sticky=sticky,
        route_cookie_name=route_cookie,
        choices=tuple(choices),
        hsts_max_age=gateway.tls.hsts if gateway.tls else None,
        policy=gateway_policy,
    )
    weight_of = gateway.route_weights()
    route_weights = [(b.name, weight_of[b.route.route]) for b in backends]
    weights = tuple((name, str(weight)) for name, weight in route_weights)
    if previous is not None and previous.weights == weights:
        weights = previous.weights
    if dispatch.is_plain(rules):
        slots: tuple[tuple[str, str], ...] = ()  # in dispatch.map (compiler.dispatch) instead
    elif previous is not None and previous.weights is weights and previous.slots:
        slots = previous.slots
    else:
        slots = weight_slots(gateway_id, route_weights)
    return CompiledGateway(
        rules, tuple(backends), statuses, weights, slots, GatewayResult(routes=statuses)
    )


def with_instances(
    part: CompiledGateway,
    namespace: str,
    changed: Set[Key],
    servers: Callable[[str, Key], tuple[ir.Server, ...]],
) -> CompiledGateway:
    """A gateway's part with the servers of its routes to the `changed` services replaced by
    `servers(route, service)`: all that a change of registered instances changes in it (the
    backend's servers and the route's instance count), without compiling it again."""
    statuses = dict(part.statuses)
    backends = list(part.backends)
    for index, backend in enumerate(backends):
        route = backend.route.route
        status = statuses[route]
        key = (namespace, status.target)
        if status.kind != "service" or key not in changed:
            continue
        made = servers(route, key)
        backends[index] = ir.with_servers(backend, made)
        statuses[route] = RouteStatus(status.target, status.kind, len(made), status.backend)
    return CompiledGateway(
        part.rules,
        tuple(backends),
        statuses,
        part.weights,
        part.slots,
        GatewayResult(errors=part.result.errors, routes=statuses),
    )


def route_servers(
    gateway: Gateway, route_name: str, instances: Sequence[Instance], node: NodeIdentity | None
) -> tuple[ir.Server, ...]:
    """The servers of a route's backend, one per instance."""
    sticky = gateway.sticky_mode
    # Only a node knows which instances are its own; on a single node all of them are.
    prefer_local = gateway.route_locality(route_name) == "prefer-local" and node is not None
    return tuple(
        ir.Server(
            name=i.id,
            address=i.address,
            port=i.port,
            weight=i.weight,
            cookie=naming.instance_token(i.id) if sticky == "instance" else None,
            netns=netns_here(i, node),
            backup=prefer_local and not is_local(i, node),
            fail_fast=prefer_local and is_local(i, node),
        )
        for i in instances
    )


def service_instances(service: Service, registered: Sequence[Instance]) -> list[Instance]:
    """A service's instances: its own, then those registered that it does not list."""
    known = {i.id for i in service.instances}
    return [*service.instances, *(i for i in registered if i.id not in known)]


@functools.lru_cache(maxsize=8192)
def _dnf(condition: str) -> ir.Dnf:
    # Conditions were validated when the resource was admitted; raw ACLs were allowed then.
    return to_dnf(parse_condition(condition, allow_raw_acl=True))


def _instances(
    gateway: Gateway,
    route_name: str,
    route: Route,
    target: Target,
    services: Mapping[Key, Service],
    gateways: Mapping[Key, Gateway],
    registered: Mapping[Key, Sequence[Instance]],
) -> tuple[list[Instance], ir.HealthCheck]:
    if target.kind == "inline" and route.targets is not None:
        return list(route.targets), _health(DEFAULT_CHECK, None)
    if target.kind == "address":
        endpoint = inline_endpoint(route_name)
        assert endpoint is not None
        return [Instance(address=endpoint[0], port=endpoint[1])], _health(DEFAULT_CHECK, None)
    if target.kind == "service":
        service = services[(gateway.namespace, target.name)]
        instances = service_instances(
            service, registered.get((service.namespace, service.name), ())
        )
        passive = service.passive.error_limit if service.passive else None
        return instances, _health(service.health_check or DEFAULT_CHECK, passive)
    if target.kind == "gateway":
        chained = gateways[(gateway.namespace, target.name)]
        address = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(chained.bind, chained.bind)
        return [Instance(address=address, port=chained.port.number, id="gateway")], _health(
            DEFAULT_CHECK, None
        )
    return [], _health(DEFAULT_CHECK, None)


def _health(check: HealthCheck, error_limit: int | None) -> ir.HealthCheck:
    """One object for equal checks: the routes to a service share it, so that what is looked
    up by a backend's check for a thousand of them (its checker, in the driver) is found by
    identity, not by hashing the check a thousand times."""
    made = _made_health(check, error_limit)
    if len(_HEALTHS) > MAX_HEALTHS:
        _HEALTHS.clear()
    return _HEALTHS.setdefault(made, made)


MAX_HEALTHS = 4096
_HEALTHS: dict[ir.HealthCheck, ir.HealthCheck] = {}


def _made_health(check: HealthCheck, error_limit: int | None) -> ir.HealthCheck:
    return ir.HealthCheck(
        type=check.type,
        interval_ms=check.interval,
        rise=check.rise,
        fall=check.fall,
        timeout_ms=check.timeout,
        port=check.port,
        path=check.path,
        method=check.method,
        host=check.host,
        expect_status=check.expect_status,
        expect_body=check.expect_body,
        send_hex=check.send.encode().hex() if check.send is not None else None,
        expect_hex=check.expect.encode().hex() if check.expect is not None else None,
        error_limit=error_limit,
    )


def _gateways_in_cycles(targets_of: Mapping[Key, Mapping[str, Target]]) -> set[Key]:
    edges = {
        key: [(key[0], t.name) for t in targets.values() if t.kind == "gateway"]
        for key, targets in targets_of.items()
    }
    looping: set[Key] = set()
    for start in edges:
        stack, seen = list(edges[start]), set()
        while stack:
            node = stack.pop()
            if node == start:
                looping.add(start)
                break
            if node not in seen:
                seen.add(node)
                stack.extend(edges.get(node, ()))
    return looping


def _frontends(
    accepted: Sequence[Gateway],
    rules: Mapping[Key, ir.GatewayRules],
    certificates: Mapping[Key, Certificate],
    memo: Memo[tuple[str, int], tuple[ir.Frontend, tuple[ir.MapFile, ...]]],
) -> tuple[list[ir.Frontend], list[ir.MapFile]]:
    by_port: dict[tuple[str, int], list[Gateway]] = {}
    for gateway in accepted:
        by_port.setdefault((gateway.bind, gateway.port.number), []).append(gateway)
    frontends: list[ir.Frontend] = []
    maps: list[ir.MapFile] = []
    for (bind, port), members in sorted(by_port.items(), key=lambda item: (item[0][1], item[0][0])):
        members.sort(key=lambda g: (g.namespace, g.name))
        member_rules = tuple(rules[(g.namespace, g.name)] for g in members)
        served_certificates = tuple(
            certificates.get((g.namespace, name))
            for g in members
            for name in (g.tls.certificates if g.tls else ())
        )
        inputs = (tuple(members), member_rules, served_certificates)
        part = memo.lookup((bind, port), inputs)
        if part is None:
            part = _frontend(bind, port, members, member_rules, certificates)
            memo.store((bind, port), inputs, part)
        frontends.append(part[0])
        maps.extend(part[1])
    memo.retain(by_port)
    return frontends, maps


def _frontend(
    bind: str,
    port: int,
    members: Sequence[Gateway],
    member_rules: tuple[ir.GatewayRules, ...],
    certificates: Mapping[Key, Certificate],
) -> tuple[ir.Frontend, tuple[ir.MapFile, ...]]:
    """One listening port: the gateways on it, in name order, and its virtual-host maps."""
    name = naming.frontend_name(bind, port)
    default = next((g for g in members if not g.virtual_hosts), None)
    host_map = wildcard_map = None
    maps: tuple[ir.MapFile, ...] = ()
    if any(g.virtual_hosts for g in members):
        exact, wild = [], []
        for gateway in members:
            gid = naming.gateway_id(gateway.namespace, gateway.name)
            for host in gateway.virtual_hosts:
                if host.startswith("*."):
                    wild.append((host[1:], gid))
                else:
                    exact.append((host, gid))
        host_map, wildcard_map = naming.host_map_name(name), naming.wildcard_map_name(name)
        # map_end takes the first match in file order: longest suffixes first, so the most
        # specific wildcard wins.
        maps = (
            ir.MapFile(host_map, tuple(sorted(exact))),
            ir.MapFile(wildcard_map, tuple(sorted(wild, key=lambda e: (-len(e[0]), e)))),
        )
    frontend = ir.Frontend(
        name=name,
        bind=bind,
        port=port,
        mode=members[0].port.mode,
        gateways=member_rules,
        host_map=host_map,
        wildcard_map=wildcard_map,
        default_gateway=naming.gateway_id(default.namespace, default.name) if default else None,
        timeout_client_ms=max(
            (g.timeouts.client for g in members if g.timeouts.client), default=None
        ),
        tls=tls_parts.frontend_tls(name, members, certificates),
    )
    return frontend, maps
