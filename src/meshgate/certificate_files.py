"""`cert_file` / `key_file` of a certificate document, read into `cert` / `key`.

Whoever admits a document reads the files it names, once: the CLI on the machine it runs on
(relative to the manifest's directory), the API server and `meshgate up -f` on theirs. What is
stored is the PEM text itself, so a node never depends on a file elsewhere, and the store
alone reproduces the configuration.
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


def inline_certificate_files(data: Any, base: Path | None = None) -> Any:
    """The document with its certificate files read in; anything else is returned unchanged.

    Relative paths are taken from `base` (the manifest's directory), else the working directory.
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
        path = Path(given).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        try:
            with path.open("rb") as file:
                content = file.read(MAX_PEM_BYTES + 1)
        except OSError as exc:
            problems.append(Problem(field, f"cannot read {path}: {exc.strerror or exc}"))
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


def inline_document(document: Document) -> Document:
    """A manifest document with its certificate files read, relative to the manifest file."""
    source = Path(document.source)
    base = source.parent if source.is_file() else None
    data = inline_certificate_files(document.data, base)
    return document if data is document.data else dataclasses.replace(document, data=data)
