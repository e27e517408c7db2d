"""`meshgate graph [-n NS] [--window 60s] [-o tree|dot|json]`: the dependency graph."""

from __future__ import annotations

import json

import click

from meshgate.cli.common import client_options, open_client
from meshgate.cli.graph_text import dot, tree
from meshgate.cli.remote import reporting


@click.command()
@click.option("-n", "--namespace", default=None, help="only this namespace (default: all)")
@click.option(
    "--window", default="60s", show_default=True, help="how far back the traffic figures look"
)
@click.option(
    "-o", "--output", "fmt", type=click.Choice(["tree", "dot", "json"]), default="tree",
    show_default=True, help="a readable tree, Graphviz DOT, or the API's JSON",
)  # fmt: skip
@client_options
def graph(
    namespace: str | None, window: str, fmt: str, server: str | None, token: str | None
) -> None:
    """Gateways with their callers (services, nodes or external, found by client address)
    and their routes (targets and weights), with live rates, error ratios and p99."""
    with reporting(), open_client(server, token) as client:
        found = client.graph(namespace=namespace, window=window)
    if fmt == "json":
        click.echo(json.dumps(found, indent=2))
    elif fmt == "dot":
        click.echo(dot(found))
    else:
        click.echo(tree(found))
