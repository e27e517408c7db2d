"""DNS answers to instances. Pure: the resolver hands in records, this decides what they mean.

A/AAAA: one instance per address, all on the service's `port` and `weight`. SRV (RFC 2782):
only the records of the lowest priority are used (the others are fallbacks a client turns to
when all of those fail, which HAProxy's health checks and redispatch already cover within the
set); their weights become server weights, scaled into HAProxy's 1-256 range. Instances are
sorted so that the same answer in another order is no change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from meshgate.model.service import Instance

MAX_WEIGHT = 256


@dataclass(frozen=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str  # a host name, without the trailing dot; "" for "no service here" (".")


def address_instances(addresses: Sequence[str], port: int, weight: int) -> list[Instance]:
    unique = sorted(set(addresses))
    return [Instance(address=address, port=port, weight=weight) for address in unique]


def scaled_weights(weights: Sequence[int]) -> list[int]:
    """SRV weights (0-65535) as server weights (1-256), in proportion where they fit.

    SRV weight 0 means "very rarely", not "never": it becomes 1, the smallest HAProxy weight
    that still receives traffic.
    """
    top = max(weights, default=0)
    if top <= MAX_WEIGHT:
        return [max(1, w) for w in weights]
    return [max(1, round(w * MAX_WEIGHT / top)) for w in weights]


def srv_instances(
    records: Sequence[SrvRecord], addresses: Mapping[str, Sequence[str]]
) -> list[Instance]:
    """Instances of the lowest-priority SRV records; `addresses` resolves each target."""
    usable = [r for r in records if r.target and addresses.get(r.target)]
    if not usable:
        return []
    lowest = min(r.priority for r in usable)
    chosen = [r for r in usable if r.priority == lowest]
    by_endpoint: dict[tuple[str, int], int] = {}
    for record, weight in zip(chosen, scaled_weights([r.weight for r in chosen]), strict=True):
        for address in addresses[record.target]:
            # Two records naming one endpoint are one server; it keeps the larger weight.
            endpoint = (address, record.port)
            by_endpoint[endpoint] = max(weight, by_endpoint.get(endpoint, 0))
    return [
        Instance(address=address, port=port, weight=weight)
        for (address, port), weight in sorted(by_endpoint.items())
    ]
