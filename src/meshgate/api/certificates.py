"""How the API shows a certificate: its document without the private key, and a status read
from the certificate itself (subject, names, serial, not-after and days left).

Days left are computed when asked, not when the agent last wrote the status, so they never go
stale between changes.
"""

from __future__ import annotations

import datetime
from typing import Any

from meshgate.model.pem import EXPIRY_WARNING_DAYS, describe, parse_certificates
from meshgate.model.values import FieldError

SECRET_FIELDS = frozenset({"key"})


def public_document(document: dict[str, Any]) -> dict[str, Any]:
    """The stored document minus its key: no answer of the API ever carries a private key."""
    public = {k: v for k, v in document.items() if k not in SECRET_FIELDS}
    public["has_key"] = "key" in document
    return public


def certificate_status(document: dict[str, Any], now: datetime.datetime) -> dict[str, Any]:
    """What the certificate says about itself, with a warning when it expires soon."""
    try:
        leaf = parse_certificates(str(document.get("cert", "")))[0]
    except FieldError as exc:
        return {"warnings": [f"cert: {exc.message}"]}
    info = describe(leaf)
    days_left = info.days_left(now)
    status: dict[str, Any] = {
        "subject": info.subject,
        "names": list(info.names),
        "serial": info.serial,
        "not_after": info.not_after.isoformat(),
        "days_left": days_left,
        "expired": info.not_after <= now,
    }
    if info.not_after <= now:
        status["warnings"] = [f"expired on {info.not_after:%Y-%m-%d}; clients will refuse it"]
    elif days_left < EXPIRY_WARNING_DAYS:
        status["warnings"] = [f"expires in {days_left} days ({info.not_after:%Y-%m-%d})"]
    return status
