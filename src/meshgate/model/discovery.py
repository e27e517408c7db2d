"""Where a service's instances come from besides its manifest: DNS records a service names
(`dns:`), and instances registered at run time through the API (SPEC §3). Pure."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from meshgate.model.fields import InstanceId, NetnsName, NodeName, PortNumber
from meshgate.model.values import FieldError, check_port, parse_duration_ms

# DNS names as they are queried: SRV owners carry '_service._proto.' labels, which host names
# may not, so this is wider than a host name but as strict about length and characters.
_DNS_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\Z")
# `ip netns` names are file names under /var/run/netns: no '/', and no leading '.'.
MIN_TTL_S = 1.0
MAX_TTL_S = 86_400.0


def _interval(value: Any) -> int:
    millis = parse_duration_ms(value)
    if not 1000 <= millis <= 3_600_000:
        raise ValueError("must be between 1s and 1h")
    return millis


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def check_dns_name(value: str) -> str:
    name = value.strip().lower().rstrip(".")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        raise ValueError(f"{value!r} is not a DNS name")
    return name


def parse_ip_endpoint(value: str, default_port: int) -> tuple[str, int]:
    """`1.2.3.4`, `1.2.3.4:53`, `::1` or `[::1]:53` (an address, not a host name)."""
    text = value.strip()
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address with an optional :port") from None
    if "%" in address:
        raise ValueError(f"{value!r}: IPv6 scope ids are not supported")
    if port_text and not port_text.isdigit():
        raise ValueError(f"{value!r} has no valid port")
    return address, check_port(int(port_text)) if port_text else default_port


DurationMs = Annotated[int, BeforeValidator(_interval)]


class DnsDiscovery(_Model):
    """`dns:` of a service: its instances are what this name resolves to, followed as it
    changes. A and AAAA records need a `port`; SRV records carry their own."""

    name: str
    type: Literal["A", "AAAA", "SRV"] = "A"
    port: int | None = None
    interval: DurationMs = 5000
    weight: int = Field(default=100, ge=0, le=256)  # for A/AAAA; SRV records carry weights
    server: str | None = None  # a resolver "IP[:PORT]"; default: the node's (--dns-server)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_dns_name(value)

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("port")
    @classmethod
    def _port(cls, value: int | None) -> int | None:
        return None if value is None else check_port(value)

    @field_validator("server")
    @classmethod
    def _server(cls, value: str | None) -> str | None:
        if value is None:
            return None
        address, port = parse_ip_endpoint(value, 53)
        return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"

    @model_validator(mode="after")
    def _port_by_type(self) -> DnsDiscovery:
        if self.type == "SRV" and self.port is not None:
            raise FieldError("port", "SRV records carry their own ports; remove port")
        if self.type != "SRV" and self.port is None:
            raise FieldError("port", f"is required for {self.type} records")
        return self


def parse_ttl_s(value: Any) -> float:
    """A registration's TTL: seconds as a number (`10`, `1.5`), or a duration (`10s`, `500ms`)."""
    if isinstance(value, bool):
        raise ValueError("expected seconds (a number) or a duration such as 10s")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            seconds = parse_duration_ms(text) / 1000
    else:
        raise ValueError("expected seconds (a number) or a duration such as 10s")
    if not MIN_TTL_S <= seconds <= MAX_TTL_S:
        raise ValueError(f"must be between {MIN_TTL_S:g}s and 24h, got {value!r}")
    return seconds


class Registration(_Model):
    """The body of `POST /api/v1/services/{name}/instances` (and of a `PUT` that updates).

    The address must be an IP address: a dynamic server named by host name is never resolved
    by HAProxy 2.6, so registering one would cost a reload; DNS names belong in `dns:`.
    """

    address: str
    port: PortNumber
    weight: int = Field(default=100, ge=0, le=256)
    id: InstanceId = ""
    ttl: Annotated[float, BeforeValidator(parse_ttl_s)] | None = None
    netns: NetnsName | None = None
    node: NodeName | None = None  # the node it runs on (`agent --node`), for locality

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        text = value.strip().removeprefix("[").removesuffix("]")
        try:
            address = str(ipaddress.ip_address(text))
        except ValueError:
            raise ValueError(
                f"{value!r} is not an IP address (host names go in the service's dns:)"
            ) from None
        if "%" in address:
            raise ValueError(f"{value!r}: IPv6 scope ids are not supported")
        return address
