"""What the CLI's commands share: the global settings, the `-f` option, and failing cleanly."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from meshgate.client import MeshgateClient

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Settings:
    """The global options: where the server is and how to authenticate to it."""

    server: str
    token: str | None


def fail(lines: Iterable[str]) -> NoReturn:
    """Report problems on stderr and exit with status 1 (SPEC §2: failures, not usage errors)."""
    for line in lines:
        click.echo(line, err=True)
    raise click.exceptions.Exit(1)


def manifest_paths(command: F) -> F:
    """The `-f PATH` option, repeatable, of the commands that read manifests."""
    option = click.option(
        "-f",
        "--filename",
        "paths",
        multiple=True,
        required=True,
        type=click.Path(exists=True, allow_dash=True, path_type=Path),
        help="manifest file or directory (its *.yaml, *.yml, *.json); '-' for stdin; repeatable",
    )
    return option(command)


def client_options(command: F) -> F:
    """`--server` and `--token` after the command name too, overriding the global ones."""
    server = click.option("--server", default=None, help="meshgate server URL")
    token = click.option("--token", default=None, help="bearer token for the server")
    return server(token(command))


def open_client(server: str | None, token: str | None) -> MeshgateClient:
    settings = click.get_current_context().find_object(Settings)
    assert settings is not None  # the group always sets it
    return MeshgateClient(server or settings.server, token=token or settings.token)
