"""The commands of many nodes: `server` (the API over etcd) and `agent` (one node's HAProxy)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from meshgate import __version__
from meshgate.cli.common import Settings, fail
from meshgate.cli.local import (
    DEFAULT_API,
    _api_address,
    _dns_server,
    _duration_ms,
    allow_raw_acl_option,
    haproxy_version,
)
from meshgate.errors import MeshgateError
from meshgate.store.target import EtcdTarget, parse_etcd_url

F = TypeVar("F", bound=Callable[..., Any])


def store_options(command: F) -> F:
    """`--store` and what goes with it: the key prefix and, for etcds://, the TLS files."""
    file = click.Path(dir_okay=False, path_type=Path)
    options = [
        click.option(
            "--store", "store_url", required=True, metavar="etcd[s]://HOST:PORT[,HOST:PORT...]",
            help="the etcd cluster the servers and agents share",
        ),
        click.option(
            "--store-prefix", default="/meshgate/", show_default=True,
            help="the key prefix meshgate keeps everything under",
        ),
        click.option("--store-ca", type=file, default=None, help="CA of etcd's certificates"),
        click.option("--store-cert", type=file, default=None, help="client certificate for etcd"),
        click.option("--store-key", type=file, default=None, help="its private key"),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def _target(
    url: str, prefix: str, ca: Path | None, cert: Path | None, key: Path | None
) -> EtcdTarget:
    try:
        return parse_etcd_url(url, prefix=prefix, ca=ca, cert=cert, key=key)
    except MeshgateError as exc:
        fail([str(exc)])


def _run(what: str, main: Any) -> None:
    try:
        asyncio.run(main)
    except KeyboardInterrupt:
        raise click.exceptions.Exit(130) from None
    except (MeshgateError, OSError) as exc:
        fail([f"meshgate {what}: {exc}"])


@click.command()
@store_options
@click.option(
    "--api",
    "api",
    default=DEFAULT_API,
    show_default=True,
    callback=_api_address,
    help="address the REST API listens on",
)
@allow_raw_acl_option
@click.option("--token", default=None, help="require this bearer token from API clients")
@click.pass_obj
def server(
    settings: Settings,
    store_url: str,
    store_prefix: str,
    store_ca: Path | None,
    store_cert: Path | None,
    store_key: Path | None,
    api: tuple[str, int],
    allow_raw_acl: bool,
    token: str | None,
) -> None:
    """Run the REST API over an etcd store shared with agents (no HAProxy)."""
    from meshgate.server import ServerOptions, run_server

    options = ServerOptions(
        store=_target(store_url, store_prefix, store_ca, store_cert, store_key),
        api_host=api[0],
        api_port=api[1],
        allow_raw_acl=allow_raw_acl,
        token=token or settings.token,
    )
    _run("server", run_server(options))


def _node_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from meshgate.nodes.keys import check_node_name

    try:
        return check_node_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _address(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an IP address") from None


def _labels(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, str]:
    from meshgate.nodes.keys import parse_label

    labels = {}
    for text in value:
        try:
            key, label = parse_label(text)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        if key == "node":
            raise click.BadParameter("'node' is every node's own name; it cannot be set")
        labels[key] = label
    return labels


def _metrics_address(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, int] | None:
    return None if value is None else _api_address(ctx, param, value)


@click.command()
@store_options
@click.option("--node", required=True, callback=_node_name, help="this node's name")
@click.option(
    "--address",
    default=None,
    callback=_address,
    help="this node's address: where its gateways listen unless they name a bind",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    callback=_labels,
    metavar="KEY=VALUE",
    help="a node label for gateways' nodes: placement; repeatable",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".meshgate-agent"),
    show_default=True,
    help="where the run files live",
)
@click.option(
    "--metrics",
    "metrics",
    default=None,
    callback=_metrics_address,
    metavar="HOST:PORT",
    help="serve /metrics, gateways' stats and /healthz here",
)
@click.option(
    "--latency/--no-latency",
    default=True,
    show_default=True,
    help="have HAProxy log each request to the agent for latency percentiles",
)
@click.option(
    "--flows/--no-flows",
    default=True,
    show_default=True,
    help="record who calls which gateway (the client address of each logged request) for "
    "the graph's traffic edges",
)
@click.option(
    "--hard-stop-after",
    "hard_stop_after",
    default="30s",
    show_default=True,
    callback=_duration_ms,
    help="how long an old HAProxy worker may finish after a reload",
)
@click.option(
    "--dns-server",
    "dns_server",
    default=None,
    callback=_dns_server,
    metavar="IP[:PORT]",
    help="resolver for services' dns: names (default: the system's)",
)
def agent(
    store_url: str,
    store_prefix: str,
    store_ca: Path | None,
    store_cert: Path | None,
    store_key: Path | None,
    node: str,
    address: str | None,
    labels: dict[str, str],
    data_dir: Path,
    metrics: tuple[str, int] | None,
    latency: bool,
    flows: bool,
    hard_stop_after: int,
    dns_server: str | None,
) -> None:
    """Run one node: its own HAProxy, configured from the shared etcd store."""
    from meshgate.agent_node import AgentOptions, run_agent
    from meshgate.wiring import DataPlaneOptions

    run_dir = data_dir.resolve() / "run"
    options = AgentOptions(
        store=_target(store_url, store_prefix, store_ca, store_cert, store_key),
        node=node,
        data_dir=data_dir,
        plane=DataPlaneOptions(
            run_dir=run_dir,
            hard_stop_after_ms=hard_stop_after,
            latency=latency,
            flows=flows,
            dns_server=dns_server,
        ),
        address=address,
        labels=labels,
        versions={"meshgate": __version__, "haproxy": haproxy_version() or "unknown"},
        metrics=metrics,
    )
    _run("agent", run_agent(options))
