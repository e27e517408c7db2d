"""The Service resource: a named set of instances with a health check (SPEC §1 "Service")."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from meshgate.model.discovery import DnsDiscovery
from meshgate.model.fields import (
    InstanceId,
    NamespaceName,
    NetnsName,
    NodeName,
    PortNumber,
    ResourceName,
)
from meshgate.model.names import (
    DEFAULT_NAMESPACE,
    check_resource_name,
    normalize_hostname,
)
from meshgate.model.values import (
    FieldError,
    check_port,
    format_endpoint,
    normalize_address,
    parse_duration_ms,
    split_endpoint,
)

DurationMs = Annotated[int, BeforeValidator(parse_duration_ms)]

# Values that HAProxy receives inside quotes or as bare words in check directives: printable
# ASCII without quotes, backslashes, '#', '%' or '$' (which HAProxy may expand or treat as syntax).
_CHECK_PATH = re.compile(r"^/[A-Za-z0-9/._~!&()*+,;=:@?-]{0,1023}\Z")
_CHECK_TEXT = re.compile(r"^[A-Za-z0-9 ._~!&()*+,;=:@?/<>\[\]{}|^-]{1,256}\Z")
# [0-9], not \d: \d also matches non-ASCII digits, which would reach the config as written.
_STATUS_RANGE = re.compile(r"^([1-5][0-9][0-9])(?:-([1-5][0-9][0-9]))?\Z")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Instance(Model):
    address: str
    port: PortNumber
    weight: int = Field(default=100, ge=0, le=256)
    id: InstanceId = ""
    netns: NetnsName | None = None  # a Linux network namespace the instance lives in (`ip netns`)
    # The node (`agent --node`) the instance runs on, for locality; when absent, an instance
    # whose address is a node's address is on that node (see compiler.locality).
    node: NodeName | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return normalize_address(value)

    @model_validator(mode="before")
    @classmethod
    def _from_endpoint_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            address, port = split_endpoint(data)
            return {"address": address, "port": port}
        return data

    @model_validator(mode="after")
    def _default_id(self) -> Instance:
        if not self.id:
            object.__setattr__(self, "id", format_endpoint(self.address, self.port).strip("[]"))
            # IPv6 endpoints contain ']:'; keep ids in the instance-id alphabet.
            object.__setattr__(self, "id", self.id.replace("]", ""))
        return self

    @property
    def endpoint(self) -> str:
        return format_endpoint(self.address, self.port)


class HealthCheck(Model):
    type: Literal["http", "tcp", "agent"] = "tcp"
    path: str = "/"
    method: str = "GET"
    host: str | None = None
    expect_status: str = "200-399"
    expect_body: str | None = None
    send: str | None = None
    expect: str | None = None
    port: int | None = None
    interval: DurationMs = 2000
    timeout: DurationMs | None = None
    rise: int = Field(default=2, ge=1, le=100)
    fall: int = Field(default=3, ge=1, le=100)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not _CHECK_PATH.match(value):
            raise ValueError(
                "must start with '/' and use URL characters only (no spaces, quotes, '%', '#')"
            )
        return value

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        # Checked before upper-casing: str.upper() turns some non-ASCII letters into ASCII ones.
        method = value.upper()
        if not value.isascii() or not re.fullmatch(r"[A-Z]{1,20}", method):
            raise ValueError(f"{value!r} is not an HTTP method")
        return method

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        return None if value is None else normalize_address(value)

    @field_validator("expect_status", mode="before")
    @classmethod
    def _status(cls, value: str | int) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError("expected a status code or range such as 200-399")
        text = str(value).strip()
        match = _STATUS_RANGE.match(text)
        if not match or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            raise ValueError(f"{value!r} is not a status code or range such as 200-399")
        return text

    @field_validator("expect_body")
    @classmethod
    def _body(cls, value: str | None) -> str | None:
        if value is not None and not _CHECK_TEXT.match(value):
            raise ValueError(
                "must be 1-256 printable characters without quotes, '\\', '#', '%' or '$'"
            )
        return value

    @field_validator("send", "expect")
    @classmethod
    def _payload(cls, value: str | None) -> str | None:
        # Sent as hex (tcp-check send-binary), so any text is safe; only bound its size.
        if value is not None and not 1 <= len(value.encode()) <= 1024:
            raise ValueError("must be 1-1024 bytes")
        return value

    @field_validator("port")
    @classmethod
    def _check_port(cls, value: int | None) -> int | None:
        return None if value is None else check_port(value)

    @model_validator(mode="after")
    def _consistent(self) -> HealthCheck:
        if self.type != "tcp" and (self.send is not None or self.expect is not None):
            field = "send" if self.send is not None else "expect"
            raise FieldError(field, "send/expect apply to tcp checks only")
        if self.type == "agent" and self.port is None:
            raise FieldError("port", "an agent check needs a port (where the agent listens)")
        return self


class PassiveCheck(Model):
    error_limit: int = Field(ge=1, le=1000)


# What HAProxy's `retry-on` can retry besides a refused connection (which is always retried):
# failures after the request was sent, so a copy of every request is kept while they are on.
RetryCondition = Literal[
    "empty-response", "junk-response", "response-timeout", "0rtt-rejected",
    "401", "403", "404", "408", "425", "500", "501", "502", "503", "504",
]  # fmt: skip


class ServiceTls(Model):
    """`tls:` of a service: its instances speak TLS, and their certificates are checked
    against the certificate resource named by `ca` (or, explicitly, not at all)."""

    verify: Literal["required", "none"] = "required"
    ca: str | None = None
    sni: str | None = None  # the name sent to instances, and checked against their certificate

    @field_validator("ca")
    @classmethod
    def _ca(cls, value: str | None) -> str | None:
        return None if value is None else check_resource_name(value)

    @field_validator("sni")
    @classmethod
    def _sni(cls, value: str | None) -> str | None:
        return None if value is None else normalize_hostname(value, allow_wildcard=False)

    @model_validator(mode="after")
    def _verify_needs_ca(self) -> ServiceTls:
        if self.verify == "required" and self.ca is None:
            raise FieldError("ca", "is required to verify instances; or write verify: none")
        if self.verify == "none" and self.ca is not None:
            raise FieldError("ca", "is not used with verify: none")
        return self


Mode = Literal["http", "tcp"]


class Service(Model):
    kind: Literal["service"] = "service"
    name: ResourceName
    namespace: NamespaceName = DEFAULT_NAMESPACE
    mode: Mode = "http"
    instances: list[Instance] = Field(default_factory=list, max_length=10_000)
    health_check: HealthCheck | None = None
    passive: PassiveCheck | None = None
    dns: DnsDiscovery | None = None  # instances are what this name resolves to, followed
    tls: ServiceTls | None = None
    # How many more attempts a failed request gets (on another instance where there is one),
    # and which failures after the request was sent count, for GET, HEAD and OPTIONS only.
    # Unset: the defaults' count, and only a refused connection is retried.
    retries: int | None = Field(default=None, ge=0, le=10)
    retry_on: list[RetryCondition] = Field(default_factory=list, max_length=20)

    @field_validator("instances")
    @classmethod
    def _unique_instances(cls, instances: list[Instance]) -> list[Instance]:
        return check_unique_instances(instances)

    @field_validator("retry_on", mode="before")
    @classmethod
    def _status_numbers(cls, value: Any) -> Any:
        # YAML reads `retry_on: [503]` as a number; HAProxy's keyword is the same digits.
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value

    @field_validator("retry_on")
    @classmethod
    def _unique_conditions(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _retries_fit_mode(self) -> Service:
        if self.retry_on and self.mode == "tcp":
            raise FieldError(
                "retry_on", "applies to http services only; tcp retries refused connections"
            )
        return self


def check_unique_instances(instances: list[Instance]) -> list[Instance]:
    seen: set[str] = set()
    for index, instance in enumerate(instances):
        if instance.id in seen:
            raise ValueError(f"item {index} repeats instance id {instance.id!r}")
        seen.add(instance.id)
    return instances
