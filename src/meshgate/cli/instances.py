"""`meshgate instances add|list|remove|heartbeat`: instances registered at run time."""

from __future__ import annotations

import time
from typing import Any

import click

from meshgate.cli.common import client_options, open_client
from meshgate.cli.output import as_json, as_yaml, instances_table
from meshgate.cli.remote import reporting
from meshgate.client import ClientError
from meshgate.model.values import split_endpoint

namespace_option = click.option("-n", "--namespace", default="default", show_default=True)


@click.group()
def instances() -> None:
    """Register, list and remove a service's instances at run time."""


@instances.command()
@click.argument("service")
@click.argument("endpoint", metavar="ADDRESS:PORT")
@click.option("--weight", type=click.IntRange(0, 256), default=None, help="0-256 (default 100)")
@click.option("--id", "instance_id", default=None, help="instance id (default ADDRESS:PORT)")
@click.option("--ttl", default=None, help="seconds or a duration (10s); lapses unless renewed")
@click.option("--netns", default=None, help="Linux network namespace the instance lives in")
@click.option("--node", default=None, help="the node it runs on (agent --node), for locality")
@click.option(
    "--keep-alive", is_flag=True,
    help="stay in the foreground renewing the TTL; deregister on Ctrl-C",
)  # fmt: skip
@namespace_option
@client_options
def add(
    service: str,
    endpoint: str,
    weight: int | None,
    instance_id: str | None,
    ttl: str | None,
    netns: str | None,
    node: str | None,
    keep_alive: bool,
    namespace: str,
    server: str | None,
    token: str | None,
) -> None:
    """Register ADDRESS:PORT as an instance of SERVICE."""
    try:
        address, port = split_endpoint(endpoint)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="ADDRESS:PORT") from None
    body: dict[str, Any] = {"address": address, "port": port}
    given = {"weight": weight, "id": instance_id, "ttl": ttl, "netns": netns, "node": node}
    for field, value in given.items():
        if value is not None:
            body[field] = value
    if keep_alive and ttl is None:
        raise click.UsageError("--keep-alive needs --ttl")
    with reporting(), open_client(server, token) as client:
        registered = client.register_instance(service, body, namespace=namespace)
        click.echo(f"instance {registered['id']} registered for {namespace}/{service}")
        if keep_alive:
            _keep_alive(client, service, str(registered["id"]), namespace, float(registered["ttl"]))


def _keep_alive(client: Any, service: str, instance_id: str, namespace: str, ttl: float) -> None:
    """Renew three times per TTL, so one lost heartbeat does not let the instance lapse."""
    try:
        while True:
            time.sleep(max(0.2, ttl / 3))
            try:
                client.heartbeat_instance(service, instance_id, namespace=namespace)
            except ClientError as exc:
                click.echo(f"heartbeat failed: {exc}", err=True)
    except KeyboardInterrupt:
        client.deregister_instance(service, instance_id, namespace=namespace)
        click.echo(f"instance {instance_id} deregistered")


@instances.command(name="list")
@click.argument("service")
@click.option(
    "-o", "--output", type=click.Choice(["table", "yaml", "json"]), default="table",
    show_default=True,
)  # fmt: skip
@namespace_option
@client_options
def list_command(
    service: str, output: str, namespace: str, server: str | None, token: str | None
) -> None:
    """Show every instance of SERVICE (manifest, api and dns) with its health."""
    with reporting(), open_client(server, token) as client:
        items = client.list_instances(service, namespace=namespace)
    if output == "yaml":
        click.echo(as_yaml(items))
    elif output == "json":
        click.echo(as_json(items))
    elif not items:
        click.echo(f"service {namespace}/{service} has no instances", err=True)
    else:
        click.echo(instances_table(items))


@instances.command()
@click.argument("service")
@click.argument("instance_id", metavar="ID")
@namespace_option
@client_options
def remove(
    service: str, instance_id: str, namespace: str, server: str | None, token: str | None
) -> None:
    """Deregister instance ID of SERVICE: it is drained, then removed."""
    with reporting(), open_client(server, token) as client:
        client.deregister_instance(service, instance_id, namespace=namespace)
    click.echo(f"instance {instance_id} of {namespace}/{service} deregistered")


@instances.command()
@click.argument("service")
@click.argument("instance_id", metavar="ID")
@namespace_option
@client_options
def heartbeat(
    service: str, instance_id: str, namespace: str, server: str | None, token: str | None
) -> None:
    """Renew the TTL of instance ID of SERVICE."""
    with reporting(), open_client(server, token) as client:
        client.heartbeat_instance(service, instance_id, namespace=namespace)
    click.echo(f"instance {instance_id} of {namespace}/{service} renewed")
