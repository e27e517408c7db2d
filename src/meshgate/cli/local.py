"""The commands that need no server: validate, render, version, and up (which is the server)."""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import subprocess
from pathlib import Path

import click

from meshgate import __version__
from meshgate.cli.common import (
    Settings,
    fail,
    manifest_paths,
    read_token_file,
    token_file_option,
)
from meshgate.cli.manifests import check_documents, read_documents
from meshgate.errors import MeshgateError
from meshgate.logconfig import LogFormat, configure_logging
from meshgate.model import ManifestError, Resource
from meshgate.model.values import parse_duration_ms

CONFIG_FILE = "haproxy.cfg"
DEFAULT_API = "127.0.0.1:7700"

allow_raw_acl_option = click.option(
    "--allow-raw-acl", is_flag=True, help="accept Vamp's raw '< acl >' conditions"
)


def _checked(paths: tuple[Path, ...], allow_raw_acl: bool) -> list[Resource]:
    try:
        return check_documents(read_documents(paths), allow_raw_acl=allow_raw_acl)
    except ManifestError as exc:
        fail(exc.lines())


@click.command()
@manifest_paths
@allow_raw_acl_option
def validate(paths: tuple[Path, ...], allow_raw_acl: bool) -> None:
    """Check manifests offline, each document and the ports they share."""
    count = len(_checked(paths, allow_raw_acl))
    click.echo(f"{count} document{'' if count == 1 else 's'} valid")


def _render_node(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from meshgate.model.names import check_node_name

    try:
        return None if value is None else check_node_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _render_labels(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> dict[str, str]:
    from meshgate.nodes.keys import parse_label

    try:
        return dict(parse_label(text) for text in value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@manifest_paths
@allow_raw_acl_option
@click.option(
    "--node", default=None, callback=_render_node,
    help="render what the agent of this node would run (placement, bind, locality)",
)  # fmt: skip
@click.option("--address", default=None, help="with --node: the node's --address")
@click.option(
    "--label", "labels", multiple=True, callback=_render_labels, metavar="KEY=VALUE",
    help="with --node: a label of the node; repeatable",
)  # fmt: skip
def render(
    paths: tuple[Path, ...],
    allow_raw_acl: bool,
    node: str | None,
    address: str | None,
    labels: dict[str, str],
) -> None:
    """Print the HAProxy configuration the manifests compile to (offline)."""
    resources = _checked(paths, allow_raw_acl)
    if node is None and (address is not None or labels):
        raise click.UsageError("--address and --label need --node")
    if address is not None:
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            raise click.BadParameter(f"{address!r} is not an IP address") from None
    # Imported here: the compiler is only needed by this command.
    from meshgate.agent.desired import Placement
    from meshgate.compiler import render_manifests
    from meshgate.compiler.render import is_secret
    from meshgate.model import Gateway

    placement = None if node is None else Placement({**labels, "node": node}, address)
    if placement is not None:
        resources = [
            placed
            for resource in resources
            if (placed := placement.place(resource) if isinstance(resource, Gateway) else resource)
            is not None
        ]
    try:
        files = render_manifests(resources, node=placement.node if placement else None)
    except MeshgateError as exc:
        fail([f"cannot render: {exc}"])
    names = sorted(files, key=lambda name: name != CONFIG_FILE)  # haproxy.cfg first, stable
    for name in names:
        if name != CONFIG_FILE:
            click.echo(f"# --- {name} ---")
        if is_secret(name):
            # The CLI never prints a private key; the agent writes this file with mode 0600.
            click.echo("# (certificate chain and private key, not shown)")
            continue
        content = files[name]
        click.echo(content, nl=not content.endswith("\n"))


def haproxy_version() -> str | None:
    """The first line of `haproxy -v`, if an haproxy is on PATH and answers."""
    binary = shutil.which("haproxy")
    if binary is None:
        return None
    try:
        result = subprocess.run(
            [binary, "-v"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return lines[0].strip() if lines else None


@click.command()
def version() -> None:
    """Print meshgate's version, and HAProxy's if it is installed."""
    click.echo(f"meshgate {__version__}")
    found = haproxy_version()
    if found:
        click.echo(found)


def parse_host_port(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPv6]:PORT`, `:PORT` or `PORT` (host 127.0.0.1)."""
    host, colon, port_text = value.rpartition(":")
    if not colon:
        host, port_text = "", value
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT with a port from 1 to 65535")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host` (a name other than localhost may be anything)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _api_address(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    try:
        return parse_host_port(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _dns_server(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from meshgate.model.discovery import parse_ip_endpoint

    try:
        address, port = parse_ip_endpoint(value, 53)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _duration_ms(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        return parse_duration_ms(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


_SIZE = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _size_bytes(ctx: click.Context, param: click.Parameter, value: str) -> int:
    text = value.strip().lower().removesuffix("b")
    number, unit = (text[:-1], text[-1]) if text[-1:] in "kmg" else (text, "")
    if not number.isdigit() or not 1024 <= int(number) * _SIZE[unit] <= 4 * 1024**3:
        raise click.BadParameter(f"{value!r} is not a size from 1k to 4g (e.g. 512k, 64m)")
    return int(number) * _SIZE[unit]


@click.command()
@click.option(
    "-f",
    "--filename",
    "paths",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="manifests to apply at start (files or directories); repeatable",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".meshgate"),
    show_default=True,
    help="where the store and run files live",
)
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
@token_file_option("require the bearer token in this file from API clients (not shown by ps)")
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="serve an API reachable from other machines without a token",
)
@click.option(
    "--cert-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="certificates sent over the API may name files (cert_file, key_file) under this "
    "directory; without it, only PEM text",
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
    "--log-budget",
    "log_budget",
    type=click.IntRange(0, 10_000_000),
    default=2_000,
    show_default=True,
    metavar="LINES_PER_S",
    help="request lines per second HAProxy logs for latency percentiles; above it, a random "
    "sample of requests (0: every request; --access-log: every request)",
)
@click.option(
    "--access-log",
    default=None,
    metavar="PATH|-",
    help="write one JSON object per request to PATH, or to stdout with '-'",
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
    "--watch",
    "watch",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="apply the manifest files in DIR as they are added, changed and removed",
)
@click.option(
    "--dns-server",
    "dns_server",
    default=None,
    callback=_dns_server,
    metavar="IP[:PORT]",
    help="resolver for services' dns: names (default: the system's)",
)
@click.option(
    "--max-body",
    "max_body",
    default="32m",
    show_default=True,
    callback=_size_bytes,
    metavar="SIZE",
    help="largest API request body (e.g. 512k, 64m); larger ones get a 413",
)
@click.option(
    "--anomaly-window",
    "anomaly_window",
    default="10s",
    show_default=True,
    callback=_duration_ms,
    help="length of the windows in which route anomalies are judged (1s at least)",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="how log lines (meshgate's and HAProxy's) are written to stderr",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="the least severe lines logged",
)
@click.option(
    "--keep-haproxy",
    is_flag=True,
    help="on SIGTERM leave HAProxy serving; the next `up` on this data dir adopts it "
    "(SIGINT still stops both)",
)
@click.pass_obj
def up(
    settings: Settings,
    paths: tuple[Path, ...],
    data_dir: Path,
    api: tuple[str, int],
    allow_raw_acl: bool,
    token: str | None,
    token_file: Path | None,
    insecure_no_auth: bool,
    cert_dir: Path | None,
    latency: bool,
    flows: bool,
    log_budget: int,
    access_log: str | None,
    hard_stop_after: int,
    watch: Path | None,
    dns_server: str | None,
    max_body: int,
    anomaly_window: int,
    log_format: LogFormat,
    log_level: str,
    keep_haproxy: bool,
) -> None:
    """Run the store, the API, the agent and HAProxy on this machine until interrupted."""
    # Imported here: the node pulls in uvicorn and the agent, which no other command needs.
    from meshgate.memory_debug import stats_if_asked, trace_if_asked
    from meshgate.node import NodeOptions, run_node

    if access_log and not latency:
        raise click.UsageError("--access-log needs the request log that --no-latency turns off")
    if token and token_file:
        raise click.UsageError("give --token or --token-file, not both")
    # One MESHGATE_TOKEN serves both sides: the server requires what clients send.
    token = token or read_token_file(token_file) or settings.token
    if not token and not is_loopback(api[0]):
        if not insecure_no_auth:
            raise click.UsageError(
                f"--api {api[0]} is reachable from other machines: give --token-file (or "
                "--token), or --insecure-no-auth to serve it without authentication"
            )
        click.echo(
            f"warning: the API on {api[0]} accepts changes from anyone who can reach it",
            err=True,
        )
    options = NodeOptions(
        data_dir=data_dir,
        api_host=api[0],
        api_port=api[1],
        manifests=list(paths),
        allow_raw_acl=allow_raw_acl,
        token=token,
        cert_dir=cert_dir,
        latency=latency,
        flows=flows,
        log_budget_per_s=log_budget,
        access_log=access_log,
        hard_stop_after_ms=hard_stop_after,
        watch=watch,
        dns_server=dns_server,
        anomaly_window_s=anomaly_window / 1000,
        max_body_bytes=max_body,
        keep_haproxy=keep_haproxy,
    )
    if anomaly_window < 1000:
        raise click.BadParameter("must be at least 1s", param_hint="--anomaly-window")
    configure_logging(log_format, log_level)
    trace_if_asked()
    stats_if_asked()
    try:
        asyncio.run(run_node(options))
    except KeyboardInterrupt:
        raise click.exceptions.Exit(130) from None
    except (MeshgateError, OSError) as exc:
        fail([f"meshgate up: {exc}"])
