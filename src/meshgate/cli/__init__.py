"""The `meshgate` command line (SPEC §2)."""

from __future__ import annotations

from pathlib import Path

import click

from meshgate import __version__
from meshgate.cli.changes import diff, set_group
from meshgate.cli.cluster import agent, server
from meshgate.cli.common import Settings, read_token_file, token_file_option
from meshgate.cli.demo import demo
from meshgate.cli.describe import describe, events
from meshgate.cli.graph import graph
from meshgate.cli.instances import instances
from meshgate.cli.local import render, up, validate, version
from meshgate.cli.remote import apply, delete, get
from meshgate.cli.rollout import rollout
from meshgate.cli.stats import stats
from meshgate.client import DEFAULT_SERVER


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "--version", prog_name="meshgate", message="%(prog)s %(version)s"
)
@click.option(
    "--server",
    envvar="MESHGATE_SERVER",
    default=DEFAULT_SERVER,
    show_default=True,
    help="meshgate server URL (env MESHGATE_SERVER)",
)
@click.option(
    "--token", envvar="MESHGATE_TOKEN", default=None, help="bearer token (env MESHGATE_TOKEN)"
)
@token_file_option("file holding the bearer token (env MESHGATE_TOKEN_FILE)")
@click.pass_context
def main(ctx: click.Context, server: str, token: str | None, token_file: Path | None) -> None:
    """meshgate: gateways for HAProxy, configured from manifests."""
    ctx.obj = Settings(server=server, token=token or read_token_file(token_file))


for command in (
    up, server, agent, demo, apply, diff, get, describe, events, delete, set_group, instances,
    stats, graph, rollout, validate, render, version,
):  # fmt: skip
    main.add_command(command)

__all__ = ["main"]
