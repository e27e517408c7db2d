"""How `meshgate get` prints resources: an aligned table, YAML or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml


def applied_state(resource: dict[str, Any]) -> str:
    status = resource.get("status") or {}
    if status.get("applied"):
        return "yes"
    if status.get("error") or status.get("errors") or status.get("state") == "invalid":
        return "error"
    return "no"


def _instances(resource: dict[str, Any]) -> str:
    reported = (resource.get("status") or {}).get("instances")
    if isinstance(reported, list) and reported:
        up = sum(1 for i in reported if isinstance(i, dict) and i.get("status") == "UP")
        return f"{up}/{len(reported)} up"
    return str(len(resource.get("instances") or []))


def _node_row(node: dict[str, Any]) -> list[str]:
    gateways = node.get("gateways") or {}
    refused = sorted(name for name, g in gateways.items() if g.get("error"))
    labels = ",".join(f"{k}={v}" for k, v in sorted((node.get("labels") or {}).items()))
    age = node.get("heartbeat_age_s")
    # Loud: a stale or refusing node says so next to its status, and what it refuses.
    markers = [
        m for m, on in (("STALE", node.get("stale")), ("REFUSING", node.get("refusing"))) if on
    ]
    refusing = ",".join(refused) if refused else "revision " + str(node.get("attempted_revision"))
    return [
        str(node.get("name", "")),
        " ".join([str(node.get("status", "")), *markers]),
        str(node.get("address") or "-"),
        str(node.get("applied_revision") if node.get("applied_revision") is not None else "-"),
        str(node.get("applied_hash") or "-"),
        "-" if age is None else f"{age:g}s",
        f"{len(gateways) - len(refused)}/{len(gateways)}",
        ("REFUSING " + refusing) if node.get("refusing") else labels or "-",
    ]


def _row(kind: str, resource: dict[str, Any]) -> list[str]:
    if kind == "nodes":
        return _node_row(resource)
    start = [str(resource.get("name", "")), str(resource.get("namespace", ""))]
    end = [str(resource.get("version", "")), applied_state(resource)]
    if kind == "gateways":
        hosts = ",".join(resource.get("virtual_hosts") or []) or "-"
        routes = str(len(resource.get("routes") or {}))
        return [*start, str(resource.get("port", "")), hosts, routes, *end]
    if kind == "services":
        return [*start, str(resource.get("mode", "")), _instances(resource), *end]
    if kind == "certificates":
        return [*start, *_certificate_cells(resource), *end]
    if kind == "rollouts":
        return [*start, *_rollout_cells(resource), *end]
    return [*start, *end]


def _rollout_cells(resource: dict[str, Any]) -> list[str]:
    """GATEWAY, CANARY, PHASE, STEP (n/of) and WEIGHT, from the rollout's status."""
    status = resource.get("status") or {}
    steps = resource.get("steps") or []
    step = status.get("step")
    return [
        str(resource.get("gateway", "")),
        str(resource.get("canary", "")),
        str(status.get("phase", "Pending")),
        "-" if step is None else f"{int(step) + 1}/{len(steps)}",
        "-" if status.get("weight") is None else f"{status['weight']}%",
    ]


def _certificate_cells(resource: dict[str, Any]) -> list[str]:
    """NAMES, NOT-AFTER, DAYS-LEFT and KEY, from the status the server computes."""
    status = resource.get("status") or {}
    names = ",".join(status.get("names") or []) or "-"
    not_after = str(status.get("not_after", "-"))[:10]
    days = status.get("days_left")
    left = "-" if days is None else ("expired" if status.get("expired") else str(days))
    return [names, not_after, left, "yes" if resource.get("has_key") else "no"]


def _header(kind: str) -> list[str]:
    if kind == "nodes":
        return [
            "NAME", "STATUS", "ADDRESS", "APPLIED-REV", "HASH", "HEARTBEAT", "GATEWAYS", "LABELS",
        ]  # fmt: skip
    if kind == "gateways":
        return ["NAME", "NAMESPACE", "PORT", "HOSTS", "ROUTES", "VERSION", "APPLIED"]
    if kind == "services":
        return ["NAME", "NAMESPACE", "MODE", "INSTANCES", "VERSION", "APPLIED"]
    if kind == "certificates":
        return ["NAME", "NAMESPACE", "NAMES", "NOT-AFTER", "DAYS-LEFT", "KEY", "VERSION", "APPLIED"]
    if kind == "rollouts":
        return [
            "NAME", "NAMESPACE", "GATEWAY", "CANARY", "PHASE", "STEP", "WEIGHT", "VERSION",
            "APPLIED",
        ]  # fmt: skip
    return ["NAME", "NAMESPACE", "VERSION", "APPLIED"]


def table(kind: str, resources: Sequence[dict[str, Any]]) -> str:
    rows = [_header(kind)] + [_row(kind, r) for r in resources]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


INSTANCE_HEADER = ["ID", "ADDRESS", "PORT", "WEIGHT", "STATUS", "SOURCE", "NODE", "TTL"]


def instances_table(items: Sequence[dict[str, Any]]) -> str:
    """A service's instances, one row each, with health and where each came from."""
    rows = [INSTANCE_HEADER] + [
        [
            str(item.get("id", "")),
            str(item.get("address", "")),
            str(item.get("port", "")),
            str(item.get("weight", "-")),
            str(item.get("status", "")),
            str(item.get("source", "")),
            str(item.get("node") or "-"),
            f"{item['ttl']:g}s" if isinstance(item.get("ttl"), int | float) else "-",
        ]
        for item in items
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(INSTANCE_HEADER))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def as_yaml(data: dict[str, Any] | Sequence[dict[str, Any]]) -> str:
    """One resource as a YAML document; several as a multi-document stream."""
    if isinstance(data, dict):
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n")
    return yaml.safe_dump_all(list(data), sort_keys=False, allow_unicode=True).rstrip("\n")


def as_json(data: dict[str, Any] | Sequence[dict[str, Any]]) -> str:
    return json.dumps(data if isinstance(data, dict) else list(data), indent=2)


def render(kind: str, data: dict[str, Any] | Sequence[dict[str, Any]], fmt: str) -> str:
    if fmt == "yaml":
        return as_yaml(data)
    if fmt == "json":
        return as_json(data)
    if kind == "services" and isinstance(data, dict):
        # One service: its instances too, as its status reports them.
        reported = (data.get("status") or {}).get("instances") or []
        below = f"\n\n{instances_table(reported)}" if reported else ""
        return table(kind, [data]) + below
    return table(kind, [data] if isinstance(data, dict) else data)
