"""The Gateway resource: Vamp's gateway DSL, accepted as written (SPEC §1 "Gateway")."""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from meshgate.conditions import ConditionError, parse_condition, requires_http
from meshgate.model.fields import NamespaceName, PortNumber, ResourceName
from meshgate.model.names import (
    DEFAULT_NAMESPACE,
    HEADER_NAME,
    check_label,
    check_resource_name,
    normalize_hostname,
)
from meshgate.model.policies import Policies
from meshgate.model.service import DurationMs, Instance, Mode, Model, check_unique_instances
from meshgate.model.sharing import share_fields_set, shared
from meshgate.model.values import FieldError, check_port, parse_percentage, split_endpoint

MAX_ROUTES = 64
_BALANCE_PLAIN = {"roundrobin", "static-rr", "leastconn", "first", "source", "random", "uri"}
_BALANCE_ARG = re.compile(r"^(url_param|hdr)\(([^()]*)\)\Z")
_REWRITE = re.compile(r"^(?P<path>\S+)(?:\s+if\s+(?P<condition>.+))?\Z", re.DOTALL)
# A rewritten path is a literal URL path that may splice in %[path] and %[query], nothing else.
_REWRITE_PATH = re.compile(r"^(?:%\[path\]|%\[query\]|[A-Za-z0-9/._~!&()*+,;=:@-])+\Z")
# `[host:port]` (IPv6 as `[[::1]:80]`, or plainly `[::1]:80`); route names reach the config as
# written, so only endpoint characters are allowed.
_INLINE_TARGET = re.compile(r"^\[([A-Za-z0-9.:\[\]-]+)\]\Z")
_IPV6_TARGET = re.compile(r"^\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}\Z")


@functools.lru_cache(maxsize=1024)
def is_loopback(address: str) -> bool:
    # Cached: gateways share a few bind addresses, and parsing one for each of 100,000
    # gateways (`on_service_plane`) cost more than the rest of a write's admission.
    try:
        return ipaddress.ip_address(address.strip()).is_loopback
    except ValueError:
        return False


def check_balance(value: str) -> str:
    text = value.strip()
    if text in _BALANCE_PLAIN:
        return text
    match = _BALANCE_ARG.match(text)
    if match:
        if not HEADER_NAME.match(match.group(2)):
            raise ValueError(
                f"{match.group(1)}(NAME) needs a name of letters, digits, '.', '_', '-'"
            )
        return text
    allowed = ", ".join(sorted(_BALANCE_PLAIN)) + ", url_param(NAME), hdr(NAME)"
    raise ValueError(f"{value!r} is not a balance method; use one of {allowed}")


def _check_condition(text: str, info: ValidationInfo) -> str:
    allow_raw = bool(info.context and info.context.get("allow_raw_acl"))
    try:
        parse_condition(text, allow_raw_acl=allow_raw)
    except ConditionError as exc:
        raise ValueError(str(exc)) from None
    return text


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class Port(Model):
    number: PortNumber
    mode: Mode = "http"

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if isinstance(data, bool):
            raise ValueError("port must be a number or NUMBER/http or NUMBER/tcp")
        if isinstance(data, int):
            return {"number": data}
        if isinstance(data, str):
            match = re.fullmatch(r"\s*(\d{1,5})\s*(?:/\s*(http|tcp)\s*)?", data, re.IGNORECASE)
            if not match:
                raise ValueError(f"{data!r} is not a port: write 9070, 9070/http or 9070/tcp")
            return {"number": int(match.group(1)), "mode": (match.group(2) or "http").lower()}
        return data

    @model_serializer
    def _as_text(self) -> str:
        return str(self)

    def __str__(self) -> str:
        return f"{self.number}/{self.mode}"


class Rewrite(Model):
    path: str
    condition: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        if isinstance(data, dict) and set(data) == {"path"} and isinstance(data["path"], str):
            match = _REWRITE.match(data["path"].strip())
            if not match:
                raise ValueError("write a rewrite as 'path: NEW_PATH if CONDITION'")
            return {"path": match.group("path"), "condition": match.group("condition")}
        return data

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not _REWRITE_PATH.match(value) or not (value.startswith(("/", "%[path]"))):
            raise ValueError(
                f"{value!r} is not a path: it must start with '/' (or %[path]) and use URL "
                "characters, with %[path] and %[query] as the only expressions"
            )
        return value

    @field_validator("condition")
    @classmethod
    def _condition(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _check_condition(value, info)

    @model_serializer
    def _as_vamp(self) -> dict[str, str]:
        return {"path": self.path + (f" if {self.condition}" if self.condition else "")}


# Which of a route's instances take its traffic: `any` balances over all of them;
# `prefer-local` over those on the node whose agent serves the request, the others taking
# over only while none of those is available.
Locality = Literal["any", "prefer-local"]
# `service`: a gateway on every node's loopback, which local callers reach at localhost:PORT.
Plane = Literal["ingress", "service"]
SERVICE_PLANE_BIND = "127.0.0.1"


class Route(Model):
    weight: int | None = None
    condition: str | None = None
    condition_strength: int | None = None
    balance: str | None = None
    rewrites: list[Rewrite] = Field(default_factory=list, max_length=32)
    targets: list[Instance] | None = Field(default=None, max_length=1000)
    policies: Policies | None = None  # applied after the gateway's
    locality: Locality | None = None  # default: the gateway's

    @field_validator("weight", mode="before")
    @classmethod
    def _weight(cls, value: Any) -> int | None:
        return None if value is None else parse_percentage(value, field="weight")

    @field_validator("condition_strength", mode="before")
    @classmethod
    def _strength(cls, value: Any) -> int | None:
        return None if value is None else parse_percentage(value, field="condition_strength")

    @field_validator("condition")
    @classmethod
    def _condition(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _check_condition(value, info)

    @field_validator("balance")
    @classmethod
    def _balance(cls, value: str | None) -> str | None:
        return None if value is None else check_balance(value)

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: list[Instance] | None) -> list[Instance] | None:
        return None if value is None else check_unique_instances(value)

    @model_validator(mode="after")
    def _strength_needs_condition(self) -> Route:
        if self.condition_strength is not None and self.condition is None:
            raise FieldError("condition_strength", "needs a condition")
        return self

    @property
    def strength(self) -> int:
        return 100 if self.condition_strength is None else self.condition_strength


@functools.lru_cache(maxsize=65_536)
def inline_endpoint(route_name: str) -> tuple[str, int] | None:
    """The (address, port) of a `[host:port]` route name, or None for a named target.
    Cached: every compile asks it of every route, and parsing the address is most of it."""
    if _IPV6_TARGET.match(route_name):
        return split_endpoint(route_name)
    match = _INLINE_TARGET.match(route_name)
    return split_endpoint(match.group(1)) if match else None


class Timeouts(Model):
    connect: DurationMs | None = None
    client: DurationMs | None = None
    server: DurationMs | None = None


# HSTS max-age beyond ten years is a typo more often than a policy.
MAX_HSTS_SECONDS = 10 * 365 * 86_400
_TLS_VERSIONS = {"1.2": "1.2", "1.3": "1.3", "tlsv1.2": "1.2", "tlsv1.3": "1.3"}


def _tls_version(value: Any) -> Any:
    # YAML reads `min_version: 1.2` as a float.
    if isinstance(value, float | str) and not isinstance(value, bool):
        text = str(value).strip().lower()
        if text in _TLS_VERSIONS:
            return _TLS_VERSIONS[text]
    raise ValueError(f"{value!r} is not a TLS version; use 1.2 or 1.3")


class Tls(Model):
    """`tls:` of a gateway: terminate TLS on its port with these certificates (SNI picks)."""

    certificates: list[str] = Field(min_length=1, max_length=100)
    min_version: Annotated[Literal["1.2", "1.3"], BeforeValidator(_tls_version)] = "1.2"
    redirect_http: int | None = None  # a plain-HTTP port that redirects clients to this one
    hsts: int | None = Field(default=None, ge=0, le=MAX_HSTS_SECONDS)  # max-age, seconds

    @field_validator("certificates")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            check_resource_name(name)
        duplicates = sorted({n for n in value if value.count(n) > 1})
        if duplicates:
            raise ValueError(f"{duplicates[0]!r} is listed twice")
        return value

    @field_validator("redirect_http")
    @classmethod
    def _redirect_port(cls, value: int | None) -> int | None:
        return None if value is None else check_port(value)


Sticky = Literal["none", "route", "instance", "source"]
HostList = Annotated[list[str], BeforeValidator(_as_list)]


class Gateway(Model):
    kind: Literal["gateway"] = "gateway"
    name: ResourceName
    namespace: NamespaceName = DEFAULT_NAMESPACE
    port: Port
    bind: str = "0.0.0.0"
    virtual_hosts: HostList = Field(default_factory=list, max_length=1000)
    sticky: Sticky | None = None
    balance: str | None = None
    tls: Tls | None = None
    timeouts: Timeouts = Field(default_factory=Timeouts)
    routes: dict[str, Route] = Field(default_factory=dict)
    policies: Policies | None = None
    # X-Forwarded-For and -Proto to the instances, X-Forwarded-Host from clients removed
    # (http ports only).
    forwarded_headers: bool = True
    # Placement on many nodes: the node labels a node must all have to serve this gateway.
    nodes: dict[str, str] | None = Field(default=None, max_length=32)
    # `service` puts the gateway on every node's loopback (SPEC §6): it implies
    # `bind: 127.0.0.1` and no `nodes:`.
    plane: Plane | None = None
    locality: Locality | None = None  # the routes' default

    @model_validator(mode="before")
    @classmethod
    def _service_plane(cls, data: Any) -> Any:
        # Decided before the fields: `bind` defaults to every address, and only here can a
        # bind the manifest leaves out be told from one it gives.
        if not isinstance(data, dict) or data.get("plane") != "service":
            return data
        if data.get("nodes") is not None:
            raise FieldError(
                "nodes",
                "a service-plane gateway runs on every node; remove nodes: (or use plane: "
                "ingress to place it)",
            )
        bind = data.get("bind")
        if bind is None:
            return {**data, "bind": SERVICE_PLANE_BIND}
        if not isinstance(bind, str) or not is_loopback(bind):
            raise FieldError(
                "bind",
                f"{bind!r}: a service-plane gateway listens on the node's loopback; "
                f"remove bind: (it is {SERVICE_PLANE_BIND}) or give a loopback address",
            )
        return data

    @field_validator("bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        try:
            address = str(ipaddress.ip_address(value.strip()))
        except ValueError:
            address = ""
        # Python accepts an IPv6 scope id ("fe80::1%eth0") of any text, newlines included.
        if not address or "%" in address:
            raise ValueError(f"{value!r} is not an IP address to listen on")
        return address

    @field_validator("virtual_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        hosts = [normalize_hostname(host, allow_wildcard=True) for host in value]
        duplicates = sorted({h for h in hosts if hosts.count(h) > 1})
        if duplicates:
            raise ValueError(f"{duplicates[0]!r} is listed twice")
        return hosts

    @field_validator("nodes")
    @classmethod
    def _nodes(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            for key, label in value.items():
                check_label(key, label)
        return value

    def placed_on(self, labels: dict[str, str]) -> bool:
        """Whether a node with these labels serves the gateway."""
        return all(labels.get(key) == value for key, value in (self.nodes or {}).items())

    @field_validator("balance")
    @classmethod
    def _balance(cls, value: str | None) -> str | None:
        return None if value is None else check_balance(value)

    @field_validator("routes", mode="before")
    @classmethod
    def _route_values(cls, value: Any) -> Any:
        # Vamp allows a bare route name with no settings (`routes: {sava: }`).
        if isinstance(value, dict):
            return {key: ({} if route is None else route) for key, route in value.items()}
        return value

    @field_validator("routes")
    @classmethod
    def _route_names(cls, value: dict[str, Route]) -> dict[str, Route]:
        if len(value) > MAX_ROUTES:
            raise ValueError(f"at most {MAX_ROUTES} routes")
        for name, route in value.items():
            if route.targets is None:
                if inline_endpoint(name) is None:
                    check_resource_name(name)
            else:
                check_resource_name(name)
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> Gateway:
        if self.port.mode == "tcp":
            if self.virtual_hosts:
                raise FieldError("virtual_hosts", "needs an http port (tcp has no Host header)")
            if self.sticky in ("route", "instance"):
                raise FieldError("sticky", f"{self.sticky} needs an http port; use sticky: source")
            for name, route in self.routes.items():
                condition = route.condition
                if condition and requires_http(parse_condition(condition, allow_raw_acl=True)):
                    raise FieldError(
                        f"routes.{name}.condition",
                        "needs an http port; a tcp gateway allows only 'source in' conditions",
                    )
                if route.rewrites:
                    raise FieldError(f"routes.{name}.rewrites", "needs an http port")
                if route.policies and route.policies.http_only:
                    field = f"routes.{name}.policies.{route.policies.http_only[0]}"
                    raise FieldError(field, "needs an http port")
                if route.balance and route.balance.startswith(("hdr(", "url_param(", "uri")):
                    raise FieldError(f"routes.{name}.balance", "needs an http port")
        if self.policies and self.policies.http_only and self.port.mode == "tcp":
            raise FieldError(f"policies.{self.policies.http_only[0]}", "needs an http port")
        if self.tls and self.port.mode == "tcp":
            if self.tls.redirect_http is not None:
                raise FieldError("tls.redirect_http", "needs an http port")
            if self.tls.hsts is not None:
                raise FieldError("tls.hsts", "needs an http port")
        if self.tls and self.tls.redirect_http == self.port.number:
            raise FieldError("tls.redirect_http", "must differ from the gateway's own port")
        if (
            self.balance
            and self.port.mode == "tcp"
            and self.balance.startswith(("hdr(", "url_param(", "uri"))
        ):
            raise FieldError("balance", "needs an http port")
        try:
            self.route_weights()
        except ValueError as exc:
            raise FieldError("routes", str(exc)) from None
        return self

    @model_validator(mode="after")
    def _share_parts(self) -> Gateway:
        # Equal ports, timeouts and plain routes of many gateways become one object each
        # (`sharing`): the model is frozen, and it was just made, so nothing else holds it.
        fields = self.__dict__
        fields["port"] = shared(self.port)
        fields["timeouts"] = shared(self.timeouts)
        for name, route in self.routes.items():
            self.routes[name] = kept = shared(route)
            if kept is route:
                share_fields_set(route)
        share_fields_set(self)
        return self

    def route_weights(self) -> dict[str, int]:
        """Effective weights: unweighted routes share what is left evenly, the last route
        taking the remainder."""
        given = {n: r.weight for n, r in self.routes.items() if r.weight is not None}
        total = sum(given.values())
        unweighted = [n for n in self.routes if n not in given]
        if not unweighted:
            if given and total not in (0, 100):
                raise ValueError(
                    f"route weights add up to {total}%; they must total 100% (or all be 0)"
                )
            return dict(given)
        if total > 100:
            raise ValueError(f"route weights add up to {total}%, more than 100%")
        share, remainder = divmod(100 - total, len(unweighted))
        weights = dict(given)
        for index, name in enumerate(unweighted):
            weights[name] = share + (remainder if index == len(unweighted) - 1 else 0)
        return {name: weights[name] for name in self.routes}

    @property
    def on_service_plane(self) -> bool:
        """Listening on loopback, which callers on the same node reach at localhost:PORT:
        `plane: service`, or a loopback bind given by hand."""
        return self.plane == "service" or is_loopback(self.bind)

    def route_locality(self, route: str) -> Locality:
        return self.routes[route].locality or self.locality or "any"

    @property
    def sticky_mode(self) -> Sticky:
        return self.sticky or "none"

    @property
    def default_balance(self) -> str:
        return self.balance or ("roundrobin" if self.port.mode == "http" else "leastconn")
