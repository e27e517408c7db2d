"""Validated resources (gateways, services) and the manifest reader. Pure: no I/O."""

from meshgate.model.gateway import Gateway, Port, Rewrite, Route, Timeouts
from meshgate.model.manifest import (
    PLURAL,
    SINGULAR,
    Document,
    ManifestError,
    Resource,
    load_documents,
    parse_text,
    resource_key,
    to_document,
    validate_resource,
)
from meshgate.model.service import HealthCheck, Instance, PassiveCheck, Service

__all__ = [
    "PLURAL",
    "SINGULAR",
    "Document",
    "Gateway",
    "HealthCheck",
    "Instance",
    "ManifestError",
    "PassiveCheck",
    "Port",
    "Resource",
    "Rewrite",
    "Route",
    "Service",
    "Timeouts",
    "load_documents",
    "parse_text",
    "resource_key",
    "to_document",
    "validate_resource",
]
