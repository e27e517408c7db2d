"""The data plane as frozen, typed values: what HAProxy should run, independent of its syntax.

The compiler builds this from the desired resources; the renderer turns it into haproxy.cfg and
map files; the planner compares two of them to decide between runtime commands and a reload.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, fields
from typing import Literal

from meshgate.model.policies import Policies

Mode = Literal["http", "tcp"]
Sticky = Literal["none", "route", "instance", "source"]
Dnf = tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class RouteRef:
    """Which user-visible route a backend serves: how stats map HAProxy objects back."""

    namespace: str
    gateway: str
    route: str


@dataclass(frozen=True, slots=True)
class Server:
    name: str  # the instance id, unique within its backend
    address: str
    port: int
    weight: int
    cookie: str | None = None  # set when the gateway pins clients to instances
    netns: str | None = None  # the Linux network namespace it lives in (`ip netns`)
    backup: bool = False  # used only while no other server is (see compiler.locality)
    # Marked down by the first connection it fails in traffic (unless the service sets its
    # own passive check): a local instance preferred over backups (see compiler.locality).
    fail_fast: bool = False


@dataclass(frozen=True, slots=True)
class HealthCheck:
    type: Literal["tcp", "http", "agent"]
    interval_ms: int
    rise: int
    fall: int
    timeout_ms: int | None = None
    port: int | None = None
    path: str = "/"
    method: str = "GET"
    host: str | None = None
    expect_status: str = "200-399"
    expect_body: str | None = None
    send_hex: str | None = None
    expect_hex: str | None = None
    error_limit: int | None = None  # passive: mark down after N consecutive errors in traffic


@dataclass(frozen=True, slots=True)
class Rewrite:
    path: str  # a validated literal path with at most %[path] and %[query] spliced in
    condition: Dnf  # ((),) means always


@dataclass(frozen=True, slots=True)
class Policy:
    """A gateway's or a route's validated `policies`, and the name its HAProxy objects (maps,
    stick table, userlist) derive from (see compiler.policies). `spec` is what the configuration
    holds, without networks or header values: those are in `maps`, which the planner compares
    as maps, so changing them swaps a map instead of reloading."""

    name: str
    spec: Policies
    maps: tuple[MapFile, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class Backend:
    """One route of one gateway: its own servers, so stats and weights are per route."""

    name: str
    mode: Mode
    route: RouteRef
    balance: str
    servers: tuple[Server, ...]
    health: HealthCheck
    sticky: Sticky = "none"
    route_cookie: tuple[str, str] | None = None  # (cookie name, value) that pins a client here
    instance_cookie: str | None = None
    rewrites: tuple[Rewrite, ...] = ()
    timeout_connect_ms: int | None = None
    timeout_server_ms: int | None = None
    tls: ServerTls | None = None  # the instances speak TLS
    retries: int | None = None  # None: the defaults' count
    retry_on: tuple[str, ...] = ()  # failures after sending that are retried (http only)
    policy: Policy | None = None  # the route's own policies
    gateway_policy: Policy | None = None  # its gateway's, for the response header rules
    # X-Forwarded-For and -Proto (this value: the gateway's scheme) to the instances; None: off.
    forwarded_proto: Literal["http", "https"] | None = None
    prefer_local: bool = False  # locality: prefer-local; remote servers are backups


_BACKEND_FIELDS = tuple(f.name for f in fields(Backend))
_SERVERS_AT = _BACKEND_FIELDS.index("servers")
_backend_values = operator.attrgetter(*_BACKEND_FIELDS)


def with_servers(backend: Backend, servers: tuple[Server, ...]) -> Backend:
    """`backend` with other servers: what `dataclasses.replace` makes, in half the time (a
    registration at 1,000 gateways makes 1,000 of them on the way to HAProxy)."""
    values = list(_backend_values(backend))
    values[_SERVERS_AT] = servers
    return Backend(*values)


@dataclass(frozen=True, slots=True)
class ServerTls:
    """TLS from HAProxy to the instances of a backend (re-encryption)."""

    verify: bool
    ca_file: str | None = None  # file name under the certs directory
    sni: str | None = None  # sent to the instances, and checked against their certificate


@dataclass(frozen=True, slots=True)
class RouteChoice:
    """How a gateway's frontend rules pick one backend."""

    backend: str
    condition: Dnf  # () when the route has no condition
    strength: int  # percent of matching requests that take the route
    cookie_value: str | None = None  # route pin token when sticky is route or instance


@dataclass(frozen=True, slots=True)
class GatewayRules:
    gateway_id: str  # stable short id, used in variables and cookie names
    namespace: str
    name: str
    sticky: Sticky
    route_cookie_name: str | None
    choices: tuple[RouteChoice, ...]
    hsts_max_age: int | None = None  # Strict-Transport-Security on this gateway's responses
    policy: Policy | None = None


@dataclass(frozen=True, slots=True)
class Frontend:
    name: str
    bind: str
    port: int
    mode: Mode
    gateways: tuple[GatewayRules, ...]
    host_map: str | None = None  # file name of exact host -> gateway id entries
    wildcard_map: str | None = None  # file name of ".suffix" -> gateway id entries
    default_gateway: str | None = None  # gateway id serving hosts no virtual host matches
    timeout_client_ms: int | None = None
    tls: FrontendTls | None = None  # set when the port terminates TLS


@dataclass(frozen=True, slots=True)
class CrtListEntry:
    """One line of a crt-list: a certificate file, its TLS settings and the SNI names that
    select it. The first line of a list is what clients without (matching) SNI get."""

    certificate: str  # file name under the certs directory
    min_version: Literal["1.2", "1.3"]
    alpn: str | None  # protocols offered to clients, e.g. "h2,http/1.1"
    filters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FrontendTls:
    crt_list: str  # file name under the certs directory
    entries: tuple[CrtListEntry, ...]


@dataclass(frozen=True, slots=True)
class Redirect:
    """A plain-HTTP listener that sends every request to the same URL over HTTPS."""

    name: str
    bind: str
    port: int
    https_port: int


@dataclass(frozen=True, slots=True)
class PemFile:
    """A certificate file HAProxy loads: a chain with its key, or a bundle of CA certificates."""

    name: str  # file name under the certs directory
    text: str = field(repr=False)  # a chain file holds the private key: never in logs


@dataclass(frozen=True, slots=True)
class MapFile:
    name: str
    entries: tuple[tuple[str, str], ...]

    def text(self) -> str:
        return "".join(f"{key} {value}\n" for key, value in self.entries)


@dataclass(frozen=True, slots=True)
class Settings:
    """Where the data plane's files and sockets live, and process-wide limits."""

    run_dir: str
    hard_stop_after_ms: int = 30_000
    # Where HAProxy streams one access-log line per request for the agent's latency
    # histograms (a unix socket); None renders no logging at all. Which requests are logged
    # is decided at run time (`stats.sampling`), outside the configuration.
    log_socket: str | None = None
    log_details: bool = False  # the detailed line (client, method, path) for the access log
    flows: bool = False  # the client's address in the compact line: who calls which gateway
    # Where HAProxy streams its server state changes (a unix socket), so that dispatch.map
    # follows a route's last server going down or up at once (agent.state_log); None: only the
    # stats poll tells.
    state_socket: str | None = None


WEIGHTS_MAP = "weights.map"
SLOTS_MAP = "slots.map"  # see compiler.slots
DISPATCH_MAP = "dispatch.map"  # see compiler.dispatch: slots of plain gateways
LONE_MAP = "lone.map"  # see compiler.dispatch: the route of each plain gateway of one route
DISPATCH_MAPS = (DISPATCH_MAP, LONE_MAP)
STATE_RING = "mg_states"  # server state changes on their way to the agent (agent.state_log)


@dataclass(frozen=True, slots=True)
class DataPlane:
    settings: Settings
    frontends: tuple[Frontend, ...] = ()
    backends: tuple[Backend, ...] = ()
    maps: tuple[MapFile, ...] = field(default=())
    certificates: tuple[PemFile, ...] = ()  # chains with keys, for TLS listeners
    ca_files: tuple[PemFile, ...] = ()  # CA bundles, for TLS towards instances
    redirects: tuple[Redirect, ...] = ()

    def map_named(self, name: str) -> MapFile | None:
        return next((m for m in self.maps if m.name == name), None)
