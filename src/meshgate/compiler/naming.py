"""Stable, readable HAProxy object names derived from resource names.

User names may contain '/', which HAProxy forbids in proxy names, and two different names could
slug to the same text ('a/b' and 'a_b'); a short hash of the exact identity keeps names unique
while the slug keeps them readable in `show stat` and in the rendered file.
"""

from __future__ import annotations

import hashlib
import re
import sys

_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")
_SLUG_LENGTH = 48


def short_hash(*parts: str, length: int = 6) -> str:
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
    return digest[:length]


def slug(name: str) -> str:
    return _UNSAFE.sub("_", name.replace("/", "_"))[:_SLUG_LENGTH].strip("_") or "x"


def gateway_id(namespace: str, name: str) -> str:
    """Used in variables, map values and cookie names: letters and digits only."""
    return "g" + short_hash(namespace, name, length=10)


def route_backend_name(namespace: str, gateway: str, route: str) -> str:
    """Interned: the statistics read back from HAProxy name every backend in each poll, and
    interned there too, they keep this one string rather than copies of their own."""
    name = f"{namespace}.{slug(gateway)}.{slug(route)}.{short_hash(namespace, gateway, route)}"
    return sys.intern(name)


def route_token(route: str) -> str:
    """The value a route-pinning cookie carries."""
    return "r" + short_hash(route, length=8)


def instance_token(instance_id: str) -> str:
    """The value an instance-pinning cookie carries: instance ids default to `address:port`,
    which a client has no business seeing. Derived from the id alone, so a pin survives a
    reload and every node agrees on it."""
    return "i" + short_hash(instance_id, length=12)


def frontend_name(bind: str, port: int) -> str:
    if bind in ("0.0.0.0", "::"):
        return f"port_{port}"
    return f"port_{port}_{slug(bind)}"


def host_map_name(frontend: str) -> str:
    return f"{frontend}.hosts.map"


def wildcard_map_name(frontend: str) -> str:
    return f"{frontend}.wildcards.map"


def certificate_file_name(namespace: str, name: str) -> str:
    """The chain-and-key file of a certificate resource."""
    return f"{namespace}.{slug(name)}.{short_hash(namespace, name)}.pem"


def ca_file_name(namespace: str, name: str) -> str:
    """The same certificate resource as a CA bundle (no key)."""
    return f"{namespace}.{slug(name)}.{short_hash(namespace, name)}.ca.pem"


def crt_list_name(frontend: str) -> str:
    return f"{frontend}.crtlist"


def redirect_name(bind: str, port: int) -> str:
    return f"redirect_{frontend_name(bind, port)}"


# Checker backends (compiler.checks) start with this; a namespace has no '_', so no route
# backend (`namespace.gateway.route.hash`) can be named like one.
CHECKER_PREFIX = "mg_checks."


def checker_backend_name(profile_digest: str) -> str:
    """The hidden backend that health-checks every instance sharing one check profile."""
    return f"{CHECKER_PREFIX}{profile_digest}"


def checked_server_name(address: str, port: int, netns: str | None) -> str:
    """A checker backend's server for one instance endpoint: readable address and port, and a
    hash of the exact endpoint (slugs of two addresses may be equal, netns is not shown)."""
    digest = short_hash(address, str(port), netns or "", length=8)
    return f"{slug(address)}_{port}.{digest}"


def spare_server_name(number: int) -> str:
    """A checker's spare server (compiler.checks). An endpoint's name always has `_<port>.`,
    so none is named like a spare."""
    return f"spare{number}"
