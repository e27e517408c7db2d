"""`meshgate diff -f` (what an apply would change) and `meshgate set weight` (a merge patch)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import click
import yaml

from meshgate.cli.common import client_options, fail, manifest_paths, open_client
from meshgate.cli.manifests import OUTPUT_FIELDS
from meshgate.cli.remote import checked_documents, reporting
from meshgate.client import MeshgateClient
from meshgate.model.values import parse_percentage


def manifest_text(document: dict[str, Any] | None) -> list[str]:
    if document is None:
        return []
    kept = {k: v for k, v in document.items() if k not in OUTPUT_FIELDS}
    # Keys sorted on both sides: the store keeps documents with sorted keys.
    return (yaml.safe_dump(kept, sort_keys=True, allow_unicode=True)).splitlines(keepends=True)


def resource_diff(client: MeshgateClient, entry: dict[str, Any]) -> list[str]:
    """The unified diff of one resource of a dry run, from what is stored to what would be."""
    name = f"{entry['kind']}/{entry['namespace']}/{entry['name']}"
    if entry["result"] == "unchanged":
        return []
    current = None
    if entry["result"] == "configured":
        current = client.get(f"{entry['kind']}s", entry["name"], namespace=entry["namespace"])
    return list(
        difflib.unified_diff(
            manifest_text(current),
            manifest_text(entry["document"]),
            fromfile=f"{name} (live)" if current else "/dev/null",
            tofile=f"{name} (from the manifests)",
        )
    )


@click.command()
@manifest_paths
@client_options
def diff(paths: tuple[Path, ...], server: str | None, token: str | None) -> None:
    """Show what applying the manifests would change, as a unified diff per resource. The
    server checks the manifests as for an apply, and writes nothing."""
    documents = checked_documents(paths)
    with reporting(documents), open_client(server, token) as client:
        answer = client.apply_batch([d.data for d in documents], dry_run=True)
        lines = [line for entry in answer["applied"] for line in resource_diff(client, entry)]
    if not lines:
        click.echo("no changes", err=True)
    click.echo("".join(lines), nl=False)


@click.group(name="set")
def set_group() -> None:
    """Change one setting of a resource in place."""


def _weights(assignments: tuple[str, ...]) -> dict[str, int]:
    weights = {}
    for text in assignments:
        route, equals, value = text.rpartition("=")
        if not equals or not route:
            raise click.BadParameter(f"{text!r} is not ROUTE=N%", param_hint="ROUTE=WEIGHT")
        try:
            weights[route] = parse_percentage(value, field=f"the weight of {route}")
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="ROUTE=WEIGHT") from None
    return weights


@set_group.command()
@click.argument("gateway")
@click.argument("assignments", metavar="ROUTE=WEIGHT...", nargs=-1, required=True)
@click.option("-n", "--namespace", default="default", show_default=True)
@client_options
def weight(
    gateway: str,
    assignments: tuple[str, ...],
    namespace: str,
    server: str | None,
    token: str | None,
) -> None:
    """Set route weights of GATEWAY, e.g. `sava:1.0=80% sava:1.1=20%`. The change is a merge
    patch of the version read, so a change made meanwhile by someone else is not undone."""
    weights = _weights(assignments)
    with reporting(), open_client(server, token) as client:
        current = client.get("gateways", gateway, namespace=namespace)
        routes = current.get("routes") or {}
        unknown = [route for route in weights if route not in routes]
        if unknown:
            fail(
                f"routes.{route}: gateway {namespace}/{gateway} has no such route; "
                f"its routes: {', '.join(routes) or 'none'}"
                for route in unknown
            )
        patch = {"routes": {route: {"weight": value} for route, value in weights.items()}}
        changed = client.patch(
            "gateways", gateway, patch, namespace=namespace, version=current["version"]
        )
    shown = ", ".join(f"{r}={w}%" for r, w in weights.items())
    click.echo(f"gateway/{namespace}/{gateway} weights set: {shown} (version {changed['version']})")
