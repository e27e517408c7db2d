"""Patterns every user-chosen name must match before it can reach HAProxy configuration.

Names end up in proxy names, map keys, cookie values and comments, so the alphabet is kept to
characters that are inert in all of those places: no spaces, quotes, `#`, `%`, `$` or newlines.
Patterns end in `\\Z`, not `$`: `$` also matches before a trailing newline, which would let a
name ending in a newline through.
"""

from __future__ import annotations

import re

SEGMENT = r"[A-Za-z0-9._:-]+"
RESOURCE_NAME = re.compile(rf"^{SEGMENT}(/{SEGMENT}){{0,3}}\Z")
NAMESPACE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
INSTANCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,62}\Z")
HOSTNAME_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
MAX_NAME_LENGTH = 200
_NETNS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")

DEFAULT_NAMESPACE = "default"


def check_resource_name(value: str) -> str:
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"must be at most {MAX_NAME_LENGTH} characters")
    if not RESOURCE_NAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use 1-4 '/'-separated segments of letters, "
            "digits, '.', '_', ':' and '-'"
        )
    return value


def check_namespace(value: str) -> str:
    if not NAMESPACE.match(value):
        raise ValueError(
            f"{value!r} is not a valid namespace: lowercase letters, digits and '-', "
            "at most 63 characters, starting and ending with a letter or digit"
        )
    return value


def check_instance_id(value: str) -> str:
    if not INSTANCE_ID.match(value):
        raise ValueError(
            f"{value!r} is not a valid instance id: letters, digits, '.', '_', ':' and '-', "
            "at most 63 characters"
        )
    return value


def normalize_hostname(value: str, *, allow_wildcard: bool) -> str:
    """Lower-cased host name; `*.example.com` allowed when `allow_wildcard`."""
    host = value.strip().lower().rstrip(".")
    labels = host.split(".")
    if allow_wildcard and labels and labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:
            raise ValueError(f"{value!r}: a wildcard needs at least two labels after '*.'")
    if not labels or len(host) > 253 or not all(HOSTNAME_LABEL.match(lb) for lb in labels):
        raise ValueError(
            f"{value!r} is not a valid host name"
            + (" (a wildcard is written '*.example.com')" if allow_wildcard else "")
        )
    return host


def check_netns(value: str) -> str:
    if not _NETNS.match(value):
        raise ValueError(
            f"{value!r} is not a network namespace name: letters, digits, '.', '_' and '-', "
            "at most 63 characters, starting with a letter or digit"
        )
    return value


NODE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")


def check_node_name(name: str) -> str:
    """A node's name (`agent --node`), also as an instance's `node`."""
    if not NODE_NAME.match(name):
        raise ValueError(
            f"{name!r} is not a node name: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63"
        )
    return name


NODE_LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,62}[A-Za-z0-9])?\Z")
NODE_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?)?\Z")


def check_label(key: str, value: str) -> tuple[str, str]:
    """A node label (`agent --label KEY=VALUE`, a gateway's `nodes:`)."""
    if not NODE_LABEL_KEY.match(key):
        raise ValueError(f"label key {key!r}: letters, digits and '._/-', at most 64")
    if not NODE_LABEL_VALUE.match(value):
        raise ValueError(f"label {key}: value {value!r}: letters, digits and '._-', at most 64")
    return key, value
