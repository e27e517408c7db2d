"""`cert_file` / `key_file` of a certificate document, read into `cert` / `key`.

Whoever admits a document reads the files it names, once: the CLI on the machine it runs on
(relative to the manifest's directory) and `meshgate up -f` on theirs. What is stored is the PEM
text itself, so a node never depends on a file elsewhere, and the store alone reproduces the
configuration.

Over the REST API a client is not the server's user: it may only name files under the directory
the operator gave (`--cert-dir`), and an error never tells whether a file outside it exists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meshgate.errors import Problem, ValidationFailed
from meshgate.model import Document
from meshgate.model.pem import MAX_PEM_BYTES

_FILES = {"cert_file": "cert", "key_file": "key"}


def _is_certificate(data: Mapping[str, Any]) -> bool:
    kind = data.get("kind")
    return isinstance(kind, str) and kind.lower() == "certificate"


class ApiFiles:
    """Where files named in documents sent over the API may be read: under `root`, if any."""

    def __init__(self, root: Path | None) -> None:
        self.root = root.resolve() if root is not None else None

    def path(self, given: str) -> Path | None:
        """The file to read for `given`, or None when it is not under the root (symbolic links
        followed: a link to a file outside does not count as under it)."""
        if self.root is None:
            return None
        path = (self.root / given).resolve()
        return path if path.is_relative_to(self.root) and path != self.root else None


def inline_certificate_files(
    data: Any, base: Path | None = None, *, api: ApiFiles | None = None
) -> Any:
    """The document with its certificate files read in; anything else is returned unchanged.

    Relative paths are taken from `base` (the manifest's directory), else the working directory;
    for a document sent over the API (`api`), from its root, and only files under it are read.
    """
    if not isinstance(data, Mapping) or not _is_certificate(data):
        return data
    if not any(field in data for field in _FILES):
        return data
    inlined = dict(data)
    problems = []
    for field, target in _FILES.items():
        if field not in data:
            continue
        given = inlined.pop(field)
        if target in data:
            problems.append(Problem(field, f"give {target} or {field}, not both"))
            continue
        if not isinstance(given, str) or not given.strip():
            problems.append(Problem(field, "must be a file path"))
            continue
        if api is not None:
            found = api.path(given)
            if found is None:
                problems.append(Problem(field, _outside(api, target)))
                continue
            path = found
        else:
            path = Path(given).expanduser()
            if not path.is_absolute() and base is not None:
                path = base / path
        try:
            with path.open("rb") as file:
                content = file.read(MAX_PEM_BYTES + 1)
        except OSError as exc:
            # Under the API's root the reason is kept general: which files exist there is the
            # operator's business, not a client's.
            reason = "no such readable file" if api else exc.strerror or exc
            problems.append(Problem(field, f"cannot read {given if api else path}: {reason}"))
            continue
        if len(content) > MAX_PEM_BYTES:
            problems.append(Problem(field, f"{path} is larger than {MAX_PEM_BYTES // 1024} kB"))
            continue
        # Decoded leniently: PEM is ASCII, and anything else fails validation with the field's
        # path (on `cert` / `key`), where a decoding error here would say less.
        inlined[target] = content.decode("ascii", errors="replace")
    if problems:
        raise ValidationFailed(problems)
    return inlined


def _outside(api: ApiFiles, target: str) -> str:
    if api.root is None:
        return (
            f"files are not read over the API; send the PEM text in {target}, or start the "
            "server with --cert-dir to allow files under that directory"
        )
    return "must name a file under the server's certificate directory (--cert-dir)"


def inline_document(document: Document) -> Document:
    """A manifest document with its certificate files read, relative to the manifest file."""
    source = Path(document.source)
    base = source.parent if source.is_file() else None
    data = inline_certificate_files(document.data, base)
    return document if data is document.data else dataclasses.replace(document, data=data)
