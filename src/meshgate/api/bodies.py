"""Request bodies as manifest data: JSON or YAML, told apart by Content-Type.

Bodies are parsed here rather than by FastAPI so that YAML works and so that a malformed body
gets the same `{"errors": [...]}` answer as any other validation failure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from meshgate.errors import MeshgateError, Problem, ValidationFailed
from meshgate.model import ManifestError, parse_text
from meshgate.model.manifest import TOO_DEEP, check_depth

JSON_TYPES = frozenset({"application/json"})
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
# A cap keeps one request from holding the server's memory hostage; the default takes an apply
# of about 250,000 small gateways (`meshgate up --max-body` sets it: `app.state.max_body_bytes`).
MAX_BODY_BYTES = 32 * 1024 * 1024


class BodyTooLargeError(MeshgateError):
    """The request body is over the server's limit."""


def media_type(content_type: str | None) -> str:
    """`application/json; charset=utf-8` -> `application/json`."""
    return (content_type or "").split(";", 1)[0].strip().lower()


async def _read_text(request: Request) -> str:
    limit: int = getattr(request.app.state, "max_body_bytes", MAX_BODY_BYTES)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(_too_large(limit))  # said before reading any of it
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(_too_large(limit))
        chunks.append(chunk)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationFailed([Problem("", f"the body is not UTF-8 text: {exc.reason}")]) from None


def _load_json(text: str) -> Any:
    """json.loads, except that nesting too deep for a manifest is a validation failure."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise ValidationFailed([Problem("", TOO_DEEP)]) from None
    check_depth(data)
    return data


def _too_large(limit: int) -> str:
    return (
        f"the body is larger than the server's limit of {limit:,} bytes; split the apply, "
        "or start meshgate with a larger --max-body"
    )


def _parse_json(text: str) -> Any:
    try:
        return _load_json(text)
    except json.JSONDecodeError as exc:
        reason = f"{exc.msg} (line {exc.lineno}, column {exc.colno})"
        raise ValidationFailed([Problem("", f"the body is not valid JSON: {reason}")]) from None


def _parse_yaml(text: str) -> list[Any]:
    try:
        return [document.data for document in parse_text(text, "body")]
    except ManifestError as exc:
        raise ValidationFailed([Problem("", line) for line in exc.lines()]) from None


def parse_documents(text: str, content_type: str | None) -> list[Any]:
    """Every document of a body. JSON is one document; YAML may hold several (`---`).
    Without a known type, JSON is tried first and YAML second (JSON is YAML, but the JSON
    parser's error messages are the better ones for JSON input)."""
    kind = media_type(content_type)
    if kind in JSON_TYPES or kind.endswith("+json"):
        return [_parse_json(text)]
    if kind in YAML_TYPES or kind.endswith("+yaml"):
        return _parse_yaml(text)
    try:
        return [_load_json(text)]
    except json.JSONDecodeError:
        return _parse_yaml(text)


async def read_document(request: Request) -> Any:
    """The one manifest document a create or replace carries."""
    documents = parse_documents(await _read_text(request), request.headers.get("content-type"))
    if len(documents) != 1:
        found = "no document" if not documents else f"{len(documents)} documents"
        raise ValidationFailed([Problem("", f"expected one manifest document, found {found}")])
    return documents[0]


def batch_documents(documents: list[Any]) -> list[Any]:
    """The documents of an apply body, which may be written as a list, as several YAML
    documents, as `{"documents": [...]}`, or as one plain manifest document."""
    if len(documents) != 1:
        return documents
    only = documents[0]
    if isinstance(only, list):
        return only
    if isinstance(only, Mapping) and "documents" in only:
        # No manifest has a `documents` field, so its presence marks the wrapper form.
        listed = only["documents"]
        extra = sorted(str(key) for key in only if key != "documents")
        if not isinstance(listed, list):
            raise ValidationFailed([Problem("documents", "must be a list of manifest documents")])
        if extra:
            raise ValidationFailed([Problem(extra[0], "unknown field")])
        return listed
    return documents


async def read_batch(request: Request) -> list[Any]:
    """The documents of an apply request."""
    text = await _read_text(request)
    return batch_documents(parse_documents(text, request.headers.get("content-type")))
