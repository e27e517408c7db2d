"""`policies:` of a gateway or a route: rate limits, client networks, basic auth, header
rules, redirects and a body size limit. Every value is checked here against strict patterns,
so the compiler only ever writes validated, typed values into HAProxy's configuration."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, field_validator, model_serializer, model_validator

from meshgate.model.names import HEADER_NAME, normalize_hostname
from meshgate.model.service import Model
from meshgate.model.values import FieldError, parse_duration_ms

MAX_REQUESTS = 1_000_000
MAX_BODY_BYTES = 1 << 40  # 1 TiB: anything larger is a typo
_SIZE = re.compile(r"^(\d{1,13})\s*([kmg]?)b?\Z", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_BY_HEADER = re.compile(r"^header\(([^()]*)\)\Z")
# Printable ASCII without the characters HAProxy reads specially inside a quoted argument
# (quote, backslash, environment variables) or as a log-format expression (%).
_HEADER_VALUE = re.compile(r"^[\x20-\x7e]{0,1024}\Z")
_HEADER_VALUE_FORBIDDEN = set('"\\$%')
_REALM = re.compile(r"^[A-Za-z0-9 ._-]{1,64}\Z")
_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")
_SALT = r"[./A-Za-z0-9]"
# The crypt(3) formats Debian's libcrypt verifies: MD5, SHA-256, SHA-512, bcrypt, yescrypt.
_CRYPT_HASH = re.compile(
    rf"^(?:\$1\${_SALT}{{1,8}}\${_SALT}{{22}}"
    rf"|\$5\$(?:rounds=\d{{1,9}}\$)?{_SALT}{{1,16}}\${_SALT}{{43}}"
    rf"|\$6\$(?:rounds=\d{{1,9}}\$)?{_SALT}{{1,16}}\${_SALT}{{86}}"
    rf"|\$2[aby]\$\d\d\${_SALT}{{53}}"
    rf"|\$y\${_SALT}+\${_SALT}{{1,86}}\${_SALT}{{43}})\Z"
)
# The whole URL, checked before urlsplit, which silently drops whitespace and control characters.
_URL = re.compile(r"^https?://[A-Za-z0-9.:\[\]-]+(?:[/?#][A-Za-z0-9/._~!&'()*+,;=:@?#-]*)?\Z")
REDACTED = "(hidden)"


def parse_size(value: Any) -> int:
    """`10m`, `512k`, `1g` or a number of bytes (binary units), at least 1 byte."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("expected a size such as 10m, 512k or a number of bytes")
    match = _SIZE.match(str(value).strip())
    if not match:
        raise ValueError(f"{value!r} is not a size: write a number with k, m or g")
    size = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if not 1 <= size <= MAX_BODY_BYTES:
        raise ValueError(f"{value!r} must be between 1 byte and 1 TiB")
    return size


def check_network(value: Any) -> str:
    """An address or CIDR network, in canonical form (`10.0.0.0/8`, `::1/128`)."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an address or network")
    try:
        network = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or CIDR network") from None
    if "%" in str(network):
        raise ValueError(f"{value!r}: IPv6 scope ids are not supported")
    return str(network)


def check_header_name(value: str) -> str:
    if not HEADER_NAME.match(value):
        raise ValueError(f"{value!r} is not a header name (letters, digits, '.', '_', '-')")
    return value


def check_header_value(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _HEADER_VALUE.match(value):
        raise ValueError(f"{value!r} is not a header value: printable ASCII, no CR or LF")
    bad = sorted(_HEADER_VALUE_FORBIDDEN & set(value))
    if bad:
        raise ValueError(f"{value!r}: header values may not contain {' '.join(bad)}")
    return value


Network = Annotated[str, BeforeValidator(check_network)]
HeaderName = Annotated[str, BeforeValidator(check_header_name)]
HeaderValue = Annotated[str, BeforeValidator(check_header_value)]


class RateLimit(Model):
    requests: int = Field(ge=1, le=MAX_REQUESTS)
    per: Annotated[int, BeforeValidator(parse_duration_ms)] = 1000  # milliseconds
    by: str = "source"  # source | all | header(NAME)

    @field_validator("per")
    @classmethod
    def _whole_seconds(cls, value: int) -> int:
        if value % 1000:
            raise ValueError("must be whole seconds (1s to 24h)")
        return value

    @field_validator("by")
    @classmethod
    def _by(cls, value: str) -> str:
        if value in ("source", "all"):
            return value
        match = _BY_HEADER.match(value)
        if match and HEADER_NAME.match(match.group(1)):
            return value
        raise ValueError(f"{value!r}: use source, all or header(NAME)")

    @property
    def header(self) -> str | None:
        match = _BY_HEADER.match(self.by)
        return match.group(1) if match else None

    @model_serializer
    def _as_written(self) -> dict[str, Any]:
        return {"requests": self.requests, "per": f"{self.per // 1000}s", "by": self.by}


def _check_hash(user: str, value: Any) -> str:
    if not isinstance(value, str) or not _CRYPT_HASH.match(value):
        raise FieldError(
            user,
            "is not a crypt(3) hash ($1$, $5$, $6$, $2b$ or $y$); plain-text passwords are "
            "refused: hash it, e.g. with `openssl passwd -6`",
        )
    return value


class BasicAuth(Model):
    realm: str
    users: dict[str, str] = Field(min_length=1, max_length=1000)

    @field_validator("realm")
    @classmethod
    def _realm(cls, value: str) -> str:
        if not _REALM.match(value):
            raise ValueError(f"{value!r} is not a realm: letters, digits, spaces, '.', '_', '-'")
        return value

    @field_validator("users")
    @classmethod
    def _users(cls, value: dict[str, str]) -> dict[str, str]:
        for user, password in value.items():
            if not _USER.match(user):
                raise FieldError(user, "is not a user name")
            _check_hash(user, password)
        return value


class HeaderRules(Model):
    set: dict[HeaderName, HeaderValue] = Field(default_factory=dict, max_length=64)
    remove: list[HeaderName] = Field(default_factory=list, max_length=64)


class Headers(Model):
    request: HeaderRules = Field(default_factory=HeaderRules)
    response: HeaderRules = Field(default_factory=HeaderRules)


class Redirect(Model):
    scheme: Literal["http", "https"] | None = None
    location: str | None = None
    code: Literal[301, 302, 303, 307, 308] | None = None

    @field_validator("location")
    @classmethod
    def _location(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _URL.match(value):
            raise ValueError(
                f"{value!r} is not an http(s) URL of plain URL characters (no %, quotes, spaces)"
            )
        parts = urlsplit(value)
        if not parts.hostname:
            raise ValueError(f"{value!r} has no host")
        try:
            normalize_hostname(parts.hostname, allow_wildcard=False)
        except ValueError:
            try:
                ipaddress.ip_address(parts.hostname)
            except ValueError:
                raise ValueError(f"{value!r} has no valid host") from None
        return value

    @model_validator(mode="after")
    def _one_target(self) -> Redirect:
        if (self.scheme is None) == (self.location is None):
            raise ValueError("give either scheme or location")
        return self

    @property
    def status(self) -> int:
        return self.code or (301 if self.scheme else 302)


class Policies(Model):
    rate_limit: RateLimit | None = None
    allow: list[Network] = Field(default_factory=list, max_length=10_000)
    deny: list[Network] = Field(default_factory=list, max_length=10_000)
    basic_auth: BasicAuth | None = None
    headers: Headers = Field(default_factory=Headers)
    redirect: Redirect | None = None
    max_body: Annotated[int, BeforeValidator(parse_size)] | None = None

    @property
    def http_only(self) -> list[str]:
        """The fields set that need an http port."""
        fields = ["rate_limit", "basic_auth", "redirect", "max_body"]
        named = [name for name in fields if getattr(self, name) is not None]
        if self.headers != Headers():
            named.append("headers")
        return named


def _hidden(policies: Any) -> Any:
    if not isinstance(policies, dict) or not isinstance(policies.get("basic_auth"), dict):
        return policies
    auth = policies["basic_auth"]
    users = auth.get("users")
    if isinstance(users, dict):
        auth = {**auth, "users": dict.fromkeys(users, REDACTED)}
    return {**policies, "basic_auth": auth}


def hide_passwords(document: dict[str, Any]) -> dict[str, Any]:
    """A stored gateway document as the API shows it: basic auth users without their hashes,
    on the gateway and on every route (as certificates are shown without their key)."""
    shown = dict(document)
    if "policies" in shown:
        shown["policies"] = _hidden(shown["policies"])
    routes = shown.get("routes")
    if isinstance(routes, dict):
        shown["routes"] = {
            name: {**route, "policies": _hidden(route["policies"])}
            if isinstance(route, dict) and "policies" in route
            else route
            for name, route in routes.items()
        }
    return shown
