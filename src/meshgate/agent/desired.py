"""Reading the store into the compiler's input, keeping each resource's version at hand."""

from __future__ import annotations

from dataclasses import dataclass

from meshgate.compiler import DesiredState
from meshgate.errors import ValidationFailed
from meshgate.model import Gateway, Service, validate_resource
from meshgate.store import Record, Store

Key = tuple[str, str]


@dataclass(frozen=True)
class Loaded:
    state: DesiredState
    gateway_versions: dict[Key, int]
    service_versions: dict[Key, int]
    # Stored documents that no longer validate (written by an older version): reported, skipped.
    invalid: dict[tuple[str, str, str], str]


async def load_desired(store: Store) -> Loaded:
    gateways: list[tuple[Record, Gateway]] = []
    services: list[Service] = []
    service_versions: dict[Key, int] = {}
    invalid: dict[tuple[str, str, str], str] = {}
    for record in await store.list("gateways"):
        try:
            gateway = validate_resource(record.value, allow_raw_acl=True, kind="gateway")
        except ValidationFailed as exc:
            invalid[("gateways", record.key.namespace, record.key.name)] = str(exc)
            continue
        assert isinstance(gateway, Gateway)
        gateways.append((record, gateway))
    for record in await store.list("services"):
        try:
            service = validate_resource(record.value, kind="service")
        except ValidationFailed as exc:
            invalid[("services", record.key.namespace, record.key.name)] = str(exc)
            continue
        assert isinstance(service, Service)
        services.append(service)
        service_versions[(service.namespace, service.name)] = record.revision
    # Creation order decides who keeps a contested port: the gateway that was there first.
    gateways.sort(key=lambda pair: pair[0].create_revision)
    return Loaded(
        state=DesiredState(gateways=[g for _, g in gateways], services=services),
        gateway_versions={(g.namespace, g.name): r.revision for r, g in gateways},
        service_versions=service_versions,
        invalid=invalid,
    )
