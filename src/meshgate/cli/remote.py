"""The commands that talk to a server: apply, get, delete."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from meshgate.api.waiting import DEFAULT_WAIT_S
from meshgate.cli.common import client_options, fail, manifest_paths, open_client
from meshgate.cli.manifests import check_documents, locate, manifest_only, read_documents
from meshgate.cli.output import render
from meshgate.client import ApiError, ClientError
from meshgate.model import Document, ManifestError, load_documents
from meshgate.model.values import parse_duration_ms

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

# From this many documents an apply says what it is doing: it may take the server seconds.
PROGRESS_FROM = 1000


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


def _timeout(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration_ms(value) / 1000
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def checked_documents(paths: tuple[Path, ...]) -> list[Document]:
    """The manifests' documents, checked here first as far as that can be done offline."""
    try:
        documents = read_documents(paths)
        # Raw ACLs are the server's decision (--allow-raw-acl on `up`), so they pass here.
        check_documents(manifest_only(documents), allow_raw_acl=True)
    except ManifestError as exc:
        fail(exc.lines())
    return documents


def _name(entry: dict[str, Any]) -> str:
    return f"{entry['kind']}/{entry['namespace']}/{entry['name']}"


def report_wait(outcome: dict[str, Any], timeout_s: float) -> None:
    """What `--wait` found; exit status 1 unless everything is live."""
    if outcome.get("done"):
        click.echo("every resource is live")
        return
    lines = [f"{_name(e)} rejected: {e['reason']}" for e in outcome.get("rejected") or []]
    pending = outcome.get("pending") or []
    if pending:
        lines.append(f"not live after {timeout_s:g}s:")
        lines += [f"  {_name(e)}: {e['reason']}" for e in pending]
    fail(lines)


@click.command()
@manifest_paths
@click.option("--dry-run", is_flag=True, help="have the server check everything; write nothing")
@click.option(
    "--wait", is_flag=True, help="return once the data plane runs the change (exit 1 if not)"
)
@click.option(
    "--timeout", callback=_timeout, default=None, metavar="DURATION",
    help=f"how long --wait waits (implies --wait; default {DEFAULT_WAIT_S:g}s)",
)  # fmt: skip
@client_options
def apply(
    paths: tuple[Path, ...],
    dry_run: bool,
    wait: bool,
    timeout: float | None,
    server: str | None,
    token: str | None,
) -> None:
    """Create or update every resource in the manifests, all or nothing. Output of `get -o
    yaml` applies as it is: `status` is ignored and `version` must still be current."""
    documents = checked_documents(paths)
    wait_s = timeout if timeout is not None else DEFAULT_WAIT_S if wait else None
    if dry_run and wait_s is not None:
        raise click.UsageError("--dry-run writes nothing, so there is nothing to --wait for")
    started = time.monotonic()
    if len(documents) >= PROGRESS_FROM:
        click.echo(f"applying {len(documents):,} documents...", err=True)
    with reporting(documents), open_client(server, token) as client:
        answer = client.apply_batch(
            [document.data for document in documents], dry_run=dry_run, wait_s=wait_s
        )
    if len(documents) >= PROGRESS_FROM:
        took = time.monotonic() - started
        click.echo(f"{len(documents):,} documents applied in {took:.1f}s", err=True)
    suffix = " (dry run)" if dry_run else ""
    for entry in answer["applied"]:
        click.echo(f"{_name(entry)} {entry['result']}{suffix}")
        for warning in entry.get("warnings") or []:
            click.echo(f"warning: {_name(entry)}: {warning}", err=True)
    if wait_s is not None:
        report_wait(answer.get("wait") or {}, wait_s)


@click.command()
@click.argument("kind", type=KindType())
@click.argument("name", required=False)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "yaml", "json"]),
    default="table",
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
@click.argument("kind", type=KindType(), required=False)
@click.argument("name", required=False)
@click.option(
    "-f", "--filename", "paths", multiple=True,
    type=click.Path(exists=True, allow_dash=True, path_type=Path),
    help="delete what these manifests define (instead of KIND NAME); repeatable",
)  # fmt: skip
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--force", is_flag=True, help="delete even though gateways route to it")
@client_options
def delete(
    kind: str | None,
    name: str | None,
    paths: tuple[Path, ...],
    namespace: str,
    force: bool,
    server: str | None,
    token: str | None,
) -> None:
    """Delete the resource of KIND called NAME, or every resource of the manifests given with
    -f. A service or gateway other gateways route to is kept unless --force."""
    if paths and (kind or name):
        raise click.UsageError("give either KIND NAME or -f FILE, not both")
    if not paths and not (kind and name):
        raise click.UsageError("give KIND NAME, or -f FILE")
    if paths:
        targets = [
            (f"{r.kind}s", r.namespace, r.name)
            for r in load_documents(manifest_only(checked_documents(paths)), allow_raw_acl=True)
        ]
    else:
        assert kind is not None and name is not None
        targets = [(kind, namespace, name)]
    with reporting(), open_client(server, token) as client:
        # What other resources of the files still use is refused (409) until they are gone:
        # tried again after each round that deleted something, whatever the files' order.
        while targets:
            refused: list[tuple[tuple[str, str, str], ApiError]] = []
            for plural, where, target in targets:
                label = f"{SINGULAR[plural]}/{where}/{target}"
                try:
                    client.delete(plural, target, namespace=where, force=force)
                except ApiError as exc:
                    if exc.status_code == 404 and paths:
                        click.echo(f"{label} not found", err=True)
                    elif exc.status_code == 409 and paths:
                        refused.append(((plural, where, target), exc))
                    else:
                        raise
                    continue
                click.echo(f"{label} deleted")
            if len(refused) == len(targets):
                fail(str(p) for _, exc in refused for p in exc.problems)
            targets = [target for target, _ in refused]
