"""Small value parsers shared by the resource models: durations, weights, percentages, endpoints."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from meshgate.model.names import normalize_hostname

_DURATION = re.compile(r"^(\d{1,9})(us|ms|s|m|h|d)?$")
_UNIT_MS = {"us": 0.001, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
MAX_DURATION_MS = 24 * 3_600_000


def parse_duration_ms(value: Any) -> int:
    """`5s`, `500ms`, `2m` or a bare number of milliseconds, as whole milliseconds (>= 1)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s or 500ms")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise ValueError("expected a duration such as 5s or 500ms")
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{value!r} is not a duration: write a number with us, ms, s, m, h or d")
    number, unit = int(match.group(1)), match.group(2) or "ms"
    millis = int(number * _UNIT_MS[unit])
    if millis < 1:
        raise ValueError(f"{value!r} is shorter than one millisecond")
    if millis > MAX_DURATION_MS:
        raise ValueError(f"{value!r} is longer than 24h")
    return millis


def parse_percentage(value: Any, *, field: str = "value") -> int:
    """`90%`, `"90"` or `90`, an integer from 0 to 100."""
    if isinstance(value, bool):
        raise ValueError(f"{field} must be N% or an integer from 0 to 100")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*\d{1,3}\s*%?\s*", value):
        number = int(value.strip().rstrip("%"))
    else:
        raise ValueError(f"{field} must be N% or an integer from 0 to 100, got {value!r}")
    if not 0 <= number <= 100:
        raise ValueError(f"{field} must be between 0% and 100%, got {number}")
    return number


def normalize_address(value: str) -> str:
    """An IPv4/IPv6 address in canonical form, or a valid host name (resolved by HAProxy)."""
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = str(ipaddress.ip_address(text))
    except ValueError:
        pass
    else:
        # Python accepts an IPv6 scope id ("fe80::1%eth0") of any text, newlines included.
        if "%" in address:
            raise ValueError(f"{value!r}: IPv6 scope ids are not supported")
        return address
    try:
        return normalize_hostname(text, allow_wildcard=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or host name") from None


def check_port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"port must be between 1 and 65535, got {value}")
    return value


def split_endpoint(text: str) -> tuple[str, int]:
    """`host:port`, `1.2.3.4:80` or `[::1]:80` into (address, port)."""
    raw = text.strip()
    if raw.startswith("[") and "]:" in raw:
        host, _, port_text = raw[1:].partition("]:")
    else:
        host, sep, port_text = raw.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"{text!r} is not host:port (write IPv6 as [addr]:port)")
    if not port_text.isdigit():
        raise ValueError(f"{text!r} has no valid port")
    return normalize_address(host), check_port(int(port_text))


def format_endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class FieldError(ValueError):
    """A validation error raised above the field it concerns, with that field's relative path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message
