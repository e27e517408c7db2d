"""The commands that talk to a server: apply, get, delete."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import click

from meshgate.cli.common import client_options, fail, manifest_paths, open_client
from meshgate.cli.manifests import check_documents, locate, read_documents
from meshgate.cli.output import render
from meshgate.client import ApiError, ClientError
from meshgate.model import Document, ManifestError

KIND_ALIASES = {
    "gateway": "gateways",
    "gateways": "gateways",
    "gw": "gateways",
    "service": "services",
    "services": "services",
    "svc": "services",
    "certificate": "certificates",
    "certificates": "certificates",
    "cert": "certificates",
    "node": "nodes",
    "nodes": "nodes",
    "rollout": "rollouts",
    "rollouts": "rollouts",
}
SINGULAR = {
    "gateways": "gateway",
    "services": "service",
    "certificates": "certificate",
    "rollouts": "rollout",
}


class KindType(click.ParamType[str]):
    """A resource kind, singular or plural, converted to the API's plural."""

    name = "kind"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        text = str(value).lower()
        if text not in KIND_ALIASES:
            kinds = "gateways, services, certificates, rollouts or nodes"
            self.fail(f"{value!r} is not a kind; use {kinds}", param)
        return KIND_ALIASES[text]


@contextmanager
def reporting(documents: Sequence[Document] = ()) -> Iterator[None]:
    """Server and connection failures as `path: message` lines on stderr, exit status 1.
    Problems with an apply are placed in the files the documents came from."""
    try:
        yield
    except ApiError as exc:
        fail(locate(exc.problems, documents) if documents else [str(p) for p in exc.problems])
    except ClientError as exc:
        fail(str(p) for p in exc.problems)


@click.command()
@manifest_paths
@client_options
def apply(paths: tuple[Path, ...], server: str | None, token: str | None) -> None:
    """Create or update every resource in the manifests, all or nothing."""
    try:
        documents = read_documents(paths)
        # Raw ACLs are the server's decision (--allow-raw-acl on `up`), so they pass here.
        check_documents(documents, allow_raw_acl=True)
    except ManifestError as exc:
        fail(exc.lines())
    with reporting(documents), open_client(server, token) as client:
        applied = client.apply([document.data for document in documents])
    for entry in applied:
        click.echo(f"{entry['kind']}/{entry['namespace']}/{entry['name']} {entry['result']}")


@click.command()
@click.argument("kind", type=KindType())
@click.argument("name", required=False)
@click.option(
    "-o", "--output", type=click.Choice(["table", "yaml", "json"]), default="table",
    show_default=True,
)
@click.option("-n", "--namespace", default="default", show_default=True)
@client_options
def get(
    kind: str,
    name: str | None,
    output: str,
    namespace: str,
    server: str | None,
    token: str | None,
) -> None:
    """Show resources of a KIND (gateways, services, certificates), or the one called NAME.
    Certificates are shown without their private key."""
    with reporting(), open_client(server, token) as client:
        if name is None:
            items = client.list(kind, namespace=namespace)
            if not items and output == "table":
                where = "" if kind == "nodes" else f" in namespace {namespace}"
                click.echo(f"no {kind}{where}", err=True)
                return
            click.echo(render(kind, items, output))
        else:
            click.echo(render(kind, client.get(kind, name, namespace=namespace), output))


@click.command()
@click.argument("kind", type=KindType())
@click.argument("name")
@click.option("-n", "--namespace", default="default", show_default=True)
@client_options
def delete(kind: str, name: str, namespace: str, server: str | None, token: str | None) -> None:
    """Delete the resource of KIND called NAME."""
    with reporting(), open_client(server, token) as client:
        client.delete(kind, name, namespace=namespace)
    click.echo(f"{SINGULAR[kind]}/{namespace}/{name} deleted")
