"""`dns:` of a service, run-time registrations and their TTLs, network namespaces on instances."""

from __future__ import annotations

from typing import Any

import pytest

from meshgate.errors import ValidationFailed
from meshgate.model import validate_resource
from meshgate.model.discovery import DnsDiscovery, Registration, parse_ip_endpoint, parse_ttl_s


def problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as caught:
        validate_resource(data)
    return [(p.path, p.message) for p in caught.value.problems]


def service(**extra: Any) -> dict[str, Any]:
    return {"kind": "service", "name": "web", **extra}


def test_dns_a_record_needs_a_port_and_srv_refuses_one() -> None:
    resource = validate_resource(service(dns={"name": "Web.Mesh.Test.", "port": 8080}))
    assert resource.kind == "service"
    assert resource.dns == DnsDiscovery(name="web.mesh.test", type="A", port=8080)
    assert problems(service(dns={"name": "web.mesh.test"})) == [
        ("dns.port", "is required for A records")
    ]
    assert problems(service(dns={"name": "_http._tcp.mesh.test", "type": "srv", "port": 1})) == [
        ("dns.port", "SRV records carry their own ports; remove port")
    ]
    srv = validate_resource(service(dns={"name": "_http._tcp.mesh.test", "type": "srv"}))
    assert srv.kind == "service" and srv.dns is not None and srv.dns.type == "SRV"


@pytest.mark.parametrize(
    ("dns", "path"),
    [
        ({"name": "bad name", "port": 80}, "dns.name"),
        ({"name": "a" * 64 + ".test", "port": 80}, "dns.name"),
        ({"name": "web.test", "port": 0}, "dns.port"),
        ({"name": "web.test", "port": 80, "type": "MX"}, "dns.type"),
        ({"name": "web.test", "port": 80, "interval": "10ms"}, "dns.interval"),
        ({"name": "web.test", "port": 80, "interval": "2h"}, "dns.interval"),
        ({"name": "web.test", "port": 80, "server": "resolver.example"}, "dns.server"),
        ({"name": "web.test", "port": 80, "server": "127.0.0.1:99999"}, "dns.server"),
        ({"name": "web.test", "port": 80, "weight": 300}, "dns.weight"),
        ({"name": "web.test", "port": 80, "extra": 1}, "dns.extra"),
    ],
)
def test_bad_dns_settings_name_their_field(dns: dict[str, Any], path: str) -> None:
    assert [p for p, _ in problems(service(dns=dns))] == [path]


def test_resolver_addresses() -> None:
    assert parse_ip_endpoint("127.0.0.1", 53) == ("127.0.0.1", 53)
    assert parse_ip_endpoint("127.0.0.1:5353", 53) == ("127.0.0.1", 5353)
    assert parse_ip_endpoint("[::1]:5353", 53) == ("::1", 5353)
    assert parse_ip_endpoint("::1", 53) == ("::1", 53)
    server = DnsDiscovery(name="x.test", port=1, server="[::1]:5353").server
    assert server == "[::1]:5353"


def test_ttl_is_seconds_or_a_duration_within_bounds() -> None:
    assert parse_ttl_s(10) == 10.0
    assert parse_ttl_s("1.5") == 1.5
    assert parse_ttl_s("2s") == 2.0
    assert parse_ttl_s("1500ms") == 1.5
    for bad in (0, 0.5, "500ms", -1, "2d", True, "soon", None):
        with pytest.raises(ValueError):
            parse_ttl_s(bad)


def test_registration_validates_every_field() -> None:
    good = Registration.model_validate({"address": "[::1]", "port": 80, "ttl": "5s"})
    assert (good.address, good.port, good.ttl, good.weight) == ("::1", 80, 5.0, 100)
    bad = {"address": "web.example", "port": 70000, "ttl": 0, "weight": 999, "id": "a b"}
    with pytest.raises(Exception) as caught:
        Registration.model_validate({**bad, "netns": "../etc", "color": "red"})
    paths = sorted(str(e["loc"][0]) for e in caught.value.errors())  # type: ignore[attr-defined]
    assert paths == ["address", "color", "id", "netns", "port", "ttl", "weight"]


def test_instances_may_live_in_a_network_namespace() -> None:
    resource = validate_resource(
        service(instances=[{"address": "127.0.0.1", "port": 80, "netns": "blue"}])
    )
    assert resource.kind == "service"
    assert resource.instances[0].netns == "blue"
    assert [
        p
        for p, _ in problems(
            service(instances=[{"address": "127.0.0.1", "port": 80, "netns": "a/b"}])
        )
    ] == ["instances.0.netns"]
