"""Which store a command opens: `--store` parsed into the embedded file or an etcd cluster.

`etcd://HOST:PORT[,HOST:PORT...]` speaks plain HTTP to the members, `etcds://` HTTPS, with a
CA to trust and, for clusters that ask for it (mutual TLS), a client certificate and key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meshgate.errors import MeshgateError


class StoreUrlError(MeshgateError):
    """`--store` or its TLS files cannot be used; the message names which and why."""


@dataclass(frozen=True)
class EtcdTarget:
    endpoints: tuple[str, ...]  # base URLs, "http://host:port" or "https://host:port"
    prefix: str = "/meshgate/"
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @property
    def tls(self) -> bool:
        return self.endpoints[0].startswith("https://")


def parse_etcd_url(
    url: str,
    *,
    prefix: str = "/meshgate/",
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
) -> EtcdTarget:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("etcd", "etcds"):
        raise StoreUrlError(
            f"--store: expected etcd://HOST:PORT[,HOST:PORT...] or etcds://..., got {url!r}"
        )
    rest = rest.rstrip("/")
    if not rest:
        raise StoreUrlError(f"--store: no member address in {url!r}")
    endpoints = []
    for member in rest.split(","):
        host, colon, port = member.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise StoreUrlError(f"--store: member {member!r} is not HOST:PORT")
        if any(c in host for c in "/?#@ ") or "%" in host:
            raise StoreUrlError(f"--store: member {member!r} is not HOST:PORT")
        endpoints.append(f"{'https' if scheme == 'etcds' else 'http'}://{host}:{port}")
    if scheme == "etcd" and (ca or cert or key):
        raise StoreUrlError("--store-ca/--store-cert/--store-key need an etcds:// URL")
    if (cert is None) != (key is None):
        raise StoreUrlError("--store-cert and --store-key go together")
    for flag, path in (("--store-ca", ca), ("--store-cert", cert), ("--store-key", key)):
        if path is not None and not path.is_file():
            raise StoreUrlError(f"{flag}: {path} is not a readable file")
    if not prefix.startswith("/") or not prefix.endswith("/") or len(prefix) < 2:
        raise StoreUrlError(f"--store-prefix: must start and end with '/', got {prefix!r}")
    return EtcdTarget(tuple(endpoints), prefix, ca, cert, key)
