"""What the agent keeps of each status it wrote: enough to tell whether a new one differs, and
what its events compare (the applied version, the errors), not the status itself.

Keeping every written status as a dict cost about 1 kB a gateway (its routes, their backends):
100 MB at 100,000 gateways, for comparisons a 16-byte digest answers as well.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def digest(status: dict[str, Any]) -> bytes:
    text = json.dumps(status, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class Published:
    """One status as written (or read back at start): its digest, applied version, errors."""

    __slots__ = ("applied_version", "digest", "errors")

    def __init__(self, status: dict[str, Any]) -> None:
        self.applied_version: Any = status.get("applied_version")
        errors = status.get("errors")
        self.errors: tuple[Any, ...] | None = None if errors is None else tuple(errors)
        self.digest = digest(status)

    def get(self, field: str, default: Any = None) -> Any:
        """As the status dict would answer for `applied_version` and `errors`."""
        if field == "applied_version":
            return self.applied_version
        if field == "errors":
            return None if self.errors is None else list(self.errors)
        return default

    def same(self, status: dict[str, Any]) -> bool:
        return self.digest == digest(status)


# Stands for a status whose write failed or a delete still due: equal to no status.
UNKNOWN = Published({"unknown": True})
