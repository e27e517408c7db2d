"""`meshgate describe KIND NAME` and `meshgate events`: a resource's state in full, with what
happened to it lately."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from meshgate.cli.common import client_options, open_client
from meshgate.cli.output import as_json, as_yaml, instances_table
from meshgate.cli.remote import SINGULAR, KindType, reporting
from meshgate.client import ApiError, MeshgateClient
from meshgate.events import EVENT_TYPES

DESCRIBED_EVENTS = 20  # the newest events `describe` shows


def aligned(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def events_lines(events: Sequence[dict[str, Any]], *, with_resource: bool) -> list[str]:
    header = ["TIME", "TYPE", *(["RESOURCE"] if with_resource else []), "MESSAGE"]
    rows = [header]
    for event in events:
        resource = (
            [f"{event['kind']}/{event['namespace']}/{event['name']}" if event.get("kind") else "-"]
            if with_resource
            else []
        )
        time = str(event.get("time", ""))[:19].replace("T", " ")
        rows.append([time, str(event.get("type")), *resource, str(event.get("message"))])
    return aligned(rows, indent="")


def _route_rows(
    client: MeshgateClient, gateway: dict[str, Any], routes: dict[str, Any]
) -> list[str]:
    """Each route of a gateway's status: its target, what that is, its weight, and how many
    instances it has and how many of them are up (for a service, from the service's status)."""
    namespace = str(gateway.get("namespace"))
    written = gateway.get("routes") or {}
    rows = [["ROUTE", "TARGET", "KIND", "WEIGHT", "INSTANCES", "UP"]]
    services: dict[str, list[dict[str, Any]]] = {}
    for name, route in routes.items():
        up = "-"
        if route.get("kind") == "service":
            target = str(route.get("target"))
            if target not in services:
                try:
                    found = client.get("services", target, namespace=namespace)
                    services[target] = (found.get("status") or {}).get("instances") or []
                except ApiError:
                    services[target] = []
            up = str(sum(1 for i in services[target] if i.get("status") == "UP"))
        weight = (written.get(name) or {}).get("weight")
        rows.append(
            [name, str(route.get("target")), str(route.get("kind")),
             "-" if weight is None else f"{weight}%", str(route.get("instances")), up]
        )  # fmt: skip
    return aligned(rows)


def describe_text(
    client: MeshgateClient, kind: str, resource: dict[str, Any], events: list[dict[str, Any]]
) -> str:
    status = resource.get("status") or {}
    state = status.get("state") or ("invalid" if status.get("errors") else "-")
    lines = [
        f"Kind:       {SINGULAR[kind]}",
        f"Name:       {resource.get('name')}",
        f"Namespace:  {resource.get('namespace')}",
        f"Version:    {resource.get('version')}",
        f"State:      {state}",
        f"Applied:    {'yes' if status.get('applied') else 'no'}"
        + (f" (running version {status['applied_version']})"
           if not status.get("applied") and status.get("applied_version") else ""),
    ]  # fmt: skip
    if kind == "gateways":
        lines.append(f"Port:       {resource.get('port')}")
    errors = status.get("errors") or []
    if errors:
        lines += ["Errors:", *(f"  {e}" for e in errors)]
    if kind == "gateways" and status.get("routes"):
        lines += ["Routes:", *_route_rows(client, resource, status["routes"])]
    if kind == "services":
        reported = status.get("instances") or []
        lines.append("Instances:")
        lines += (
            ["  " + line for line in instances_table(reported).splitlines()]
            if reported
            else ["  (none)"]
        )
        if status.get("dns_error"):
            lines.append(f"DNS error:  {status['dns_error']}")
    if kind == "certificates":
        lines += [
            f"Names:      {', '.join(status.get('names') or []) or '-'}",
            f"Not after:  {status.get('not_after', '-')}",
            f"Used by:    {', '.join(status.get('used_by') or []) or '-'}",
        ]
    lines.append("Events:")
    lines += (
        ["  " + line for line in events_lines(events, with_resource=False)]
        if events
        else ["  (none recorded)"]
    )
    return "\n".join(lines)


@click.command()
@click.argument("kind", type=KindType())
@click.argument("name")
@click.option("-n", "--namespace", default="default", show_default=True)
@client_options
def describe(kind: str, name: str, namespace: str, server: str | None, token: str | None) -> None:
    """Show a resource in full: its state, each route with its target and the instances up
    behind it (gateways), each instance with its health (services), and its recent events."""
    with reporting(), open_client(server, token) as client:
        resource = client.get(kind, name, namespace=namespace)
        events = client.events(
            kind=SINGULAR[kind], namespace=namespace, name=name, limit=DESCRIBED_EVENTS
        )
        click.echo(describe_text(client, kind, resource, events))


@click.command()
@click.option("--kind", type=KindType(), default=None, help="only events of this kind")
@click.option("--name", default=None, help="only events of the resource of this name")
@click.option("-n", "--namespace", default=None, help="only events of this namespace")
@click.option("--type", "event_type", type=click.Choice(EVENT_TYPES), default=None)
@click.option("--since", default=None, help="a duration back (10m) or a time (ISO 8601)")
@click.option("--limit", type=click.IntRange(1, 10_000), default=None, help="the newest N")
@click.option(
    "-o", "--output", type=click.Choice(["table", "yaml", "json"]), default="table",
    show_default=True,
)  # fmt: skip
@client_options
def events(
    kind: str | None,
    name: str | None,
    namespace: str | None,
    event_type: str | None,
    since: str | None,
    limit: int | None,
    output: str,
    server: str | None,
    token: str | None,
) -> None:
    """Recent events, oldest first: resources applied or rejected, HAProxy reloads, instance
    health changes, registrations and expired TTLs."""
    with reporting(), open_client(server, token) as client:
        found = client.events(
            kind=SINGULAR[kind] if kind else None,
            name=name,
            namespace=namespace,
            type=event_type,
            since=since,
            limit=limit,
        )
    if output == "yaml":
        click.echo(as_yaml(found))
    elif output == "json":
        click.echo(as_json(found))
    elif not found:
        click.echo("no events", err=True)
    else:
        click.echo("\n".join(events_lines(found, with_resource=True)))
