"""What `meshgate get -o yaml` adds to a manifest, taken off again so its output applies. Pure.

A resource is returned with `version` and `status` (and a certificate with `has_key`). On the
way back in, `status` is the server's to say and is ignored; `version` says which version the
writer saw, and acts as `If-Match`: a write over a newer version is refused with 412 rather
than silently undoing someone else's change. A certificate comes back without its key, so
`has_key: true` without a key means "keep the stored key" (`with_stored_key`), never "drop it".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshgate.errors import Problem, ValidationFailed

OUTPUT_ONLY = ("status", "has_key")


def split_version(document: Any) -> tuple[Any, int | None]:
    """(the document without the fields only output carries, the `version` it gave or None)."""
    if not isinstance(document, Mapping):
        return document, None
    manifest = {k: v for k, v in document.items() if k not in OUTPUT_ONLY and k != "version"}
    version = document.get("version")
    if version is None:
        return manifest, None
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        message = "must be the resource's version as `get` shows it (a positive integer)"
        raise ValidationFailed([Problem("version", message)])
    return manifest, version


def split_versions(documents: list[Any]) -> tuple[list[Any], dict[int, int]]:
    """Every document of an apply without output fields, and the versions given, by index;
    problems are reported with the document's index, as admission does."""
    manifests, versions, problems = [], {}, []
    for index, document in enumerate(documents):
        try:
            manifest, version = split_version(document)
        except ValidationFailed as exc:
            problems += exc.prefixed(f"documents.{index}").problems
            continue
        manifests.append(manifest)
        if version is not None:
            versions[index] = version
    if problems:
        raise ValidationFailed(problems)
    return manifests, versions


def keeps_stored_key(document: Any) -> bool:
    """A certificate as `get` shows it: it says it has a key, and gives none."""
    return (
        isinstance(document, Mapping)
        and document.get("kind") == "certificate"
        and document.get("has_key") is True
        and "key" not in document
        and "key_file" not in document
    )


def with_stored_key(document: Any, stored: Mapping[str, Any] | None) -> Any:
    """The document with the stored certificate's key, when it asks to keep it; without a
    stored key there is nothing to keep, and that is an error on `has_key`."""
    if not keeps_stored_key(document):
        return document
    if stored is None or "key" not in stored:
        message = "says the certificate has a key, but none is given and none is stored"
        raise ValidationFailed([Problem("has_key", message)])
    return {**document, "key": stored["key"]}
