"""Validated resources (gateways, services, certificates) and the manifest reader. Pure: no I/O."""

from meshgate.model.certificate import Certificate
from meshgate.model.gateway import Gateway, Port, Rewrite, Route, Timeouts, Tls
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
from meshgate.model.service import HealthCheck, Instance, PassiveCheck, Service, ServiceTls

__all__ = [
    "PLURAL",
    "SINGULAR",
    "Certificate",
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
    "ServiceTls",
    "Timeouts",
    "Tls",
    "load_documents",
    "parse_text",
    "resource_key",
    "to_document",
    "validate_resource",
]
