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


def read_token_file(path: Path | None) -> str | None:
    """The token in a file (`--token-file`), so that it stays out of `ps` and the shell history;
    surrounding whitespace (a final newline) is not part of it."""
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--token-file") from None
    if not token:
        raise click.BadParameter(f"{path} holds no token", param_hint="--token-file")
    return token


def token_file_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--token-file",
        envvar="MESHGATE_TOKEN_FILE",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=help_text,
    )


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
