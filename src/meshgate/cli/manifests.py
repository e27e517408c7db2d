"""Manifest files for the CLI: finding them, reading their documents, and checking them without a
server, with every problem reported as `FILE:LINE: path: message`."""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from meshgate.api.admission import batch_conflicts
from meshgate.api.roundtrip import OUTPUT_ONLY
from meshgate.certificate_files import inline_document
from meshgate.errors import Problem, ValidationFailed
from meshgate.model import Document, ManifestError, Resource, load_documents, parse_text

MANIFEST_SUFFIXES = frozenset({".yaml", ".yml", ".json"})
STDIN = Path("-")
OUTPUT_FIELDS = frozenset({*OUTPUT_ONLY, "version"})
_BATCH_PATH = re.compile(r"^documents\.(\d+)(?:\.(.*))?$", re.DOTALL)


def manifest_files(paths: Sequence[Path]) -> list[Path]:
    """Files as given; a directory contributes its own *.yaml, *.yml and *.json files (not its
    subdirectories'), sorted by name so that the order of documents is stable."""
    files: list[Path] = []
    for path in paths:
        if path != STDIN and path.is_dir():
            found = (p for p in path.iterdir() if p.suffix.lower() in MANIFEST_SUFFIXES)
            files.extend(sorted(p for p in found if p.is_file()))
        else:
            files.append(path)
    return files


def _read(path: Path) -> tuple[str, str]:
    """(source name, text) of one file, `-` being standard input."""
    if path == STDIN:
        return "<stdin>", sys.stdin.read()
    try:
        return str(path), path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ManifestError([(str(path), Problem("", f"cannot read: {reason}"))]) from None


def read_documents(paths: Sequence[Path]) -> list[Document]:
    """Every document of every manifest under `paths`, with the certificate files they name
    read in; unreadable or unparsable files are all reported together."""
    documents: list[Document] = []
    located: list[tuple[str, Problem]] = []
    files = manifest_files(paths)
    for path in files:
        try:
            source, text = _read(path)
            documents.extend(parse_text(text, source))
        except ManifestError as exc:
            located.extend(exc.located)
    if located:
        raise ManifestError(located)
    if not documents:
        where = ", ".join(str(p) for p in paths)
        raise ManifestError([(where, Problem("", "no manifest documents found"))])
    inlined = []
    for document in documents:
        try:
            inlined.append(inline_document(document))
        except ValidationFailed as exc:
            located += [(_where(document, p.path), p) for p in exc.problems]
    if located:
        raise ManifestError(located)
    return inlined


def check_documents(documents: Sequence[Document], *, allow_raw_acl: bool) -> list[Resource]:
    """Validate each document, then the rules that span them (ports, duplicates), as the server
    would for an apply of these documents onto an empty store."""
    resources = load_documents(documents, allow_raw_acl=allow_raw_acl)
    # In file order, each document's problems together (stable sort), as the server reports.
    conflicts = sorted(batch_conflicts(list(enumerate(resources))), key=lambda item: item[0])
    if conflicts:
        raise ManifestError(
            [(_where(documents[index], problem.path), problem) for index, problem in conflicts]
        )
    return resources


def manifest_only(documents: Sequence[Document]) -> list[Document]:
    """The documents without what `get -o yaml` adds (`version`, `status`, `has_key`), for
    checking them here; the server reads `version` as the version the writer saw."""
    return [
        dataclasses.replace(d, data={k: v for k, v in d.data.items() if k not in OUTPUT_FIELDS})
        if isinstance(d.data, dict)
        else d
        for d in documents
    ]


def _where(document: Document, path: str) -> str:
    return f"{document.source}:{document.line_of(path)}"


def locate(problems: Sequence[Problem], documents: Sequence[Document]) -> list[str]:
    """The server's problems with an apply, placed in the files: `documents.N.path` becomes
    `FILE:LINE: path` for the Nth document sent."""
    lines = []
    for problem in problems:
        match = _BATCH_PATH.match(problem.path)
        index = int(match.group(1)) if match else -1
        if match is None or index >= len(documents):
            lines.append(str(problem))
            continue
        inner = Problem(match.group(2) or "", problem.message)
        lines.append(f"{_where(documents[index], inner.path)}: {inner}")
    return lines
