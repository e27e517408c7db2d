"""DNS answers to instances, and run-time sources merged per service."""

from __future__ import annotations

from meshgate.discovery.records import (
    SrvRecord,
    address_instances,
    scaled_weights,
    srv_instances,
)
from meshgate.discovery.sources import merge
from meshgate.model.service import Instance


def endpoints(instances: list[Instance]) -> list[tuple[str, int, int]]:
    return [(i.address, i.port, i.weight) for i in instances]


def test_a_records_are_sorted_and_unique() -> None:
    found = address_instances(["127.0.0.3", "127.0.0.2", "127.0.0.3"], 8080, 50)
    assert endpoints(found) == [("127.0.0.2", 8080, 50), ("127.0.0.3", 8080, 50)]
    assert [i.id for i in found] == ["127.0.0.2:8080", "127.0.0.3:8080"]
    assert address_instances([], 80, 100) == []


def test_srv_uses_the_lowest_priority_and_its_weights() -> None:
    records = [
        SrvRecord(priority=10, weight=30, port=8082, target="b.test"),
        SrvRecord(priority=10, weight=10, port=8081, target="a.test"),
        SrvRecord(priority=20, weight=50, port=9000, target="backup.test"),
    ]
    addresses = {
        "a.test": ["127.0.0.1"],
        "b.test": ["127.0.0.1", "::1"],
        "backup.test": ["1.1.1.1"],
    }
    assert endpoints(srv_instances(records, addresses)) == [
        ("127.0.0.1", 8081, 10),
        ("127.0.0.1", 8082, 30),
        ("::1", 8082, 30),
    ]


def test_srv_falls_back_when_the_best_targets_do_not_resolve() -> None:
    records = [
        SrvRecord(priority=0, weight=1, port=1, target="gone.test"),
        SrvRecord(priority=5, weight=1, port=2, target="here.test"),
        SrvRecord(priority=0, weight=1, port=3, target=""),  # "." : no service
    ]
    assert endpoints(srv_instances(records, {"here.test": ["127.0.0.1"]})) == [("127.0.0.1", 2, 1)]
    assert srv_instances([], {}) == []


def test_srv_weights_scale_into_haproxy_range() -> None:
    assert scaled_weights([0, 10, 256]) == [1, 10, 256]
    assert scaled_weights([65535, 32768, 0]) == [256, 128, 1]


def test_api_registrations_come_before_dns_answers_with_the_same_id() -> None:
    key = ("default", "web")
    api = {key: [Instance(address="127.0.0.1", port=80, id="one")]}
    dns = {
        key: [
            Instance(address="127.0.0.9", port=80, id="one"),
            Instance(address="127.0.0.2", port=80),
        ],
        ("other", "web"): [Instance(address="127.0.0.3", port=80)],
    }
    merged, sources = merge(api, dns)
    assert [i.address for i in merged[key]] == ["127.0.0.1", "127.0.0.2"]
    assert sources[key] == {"one": "api", "127.0.0.2:80": "dns"}
    assert sources[("other", "web")] == {"127.0.0.3:80": "dns"}
