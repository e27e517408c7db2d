"""Reading manifests: YAML or JSON text to validated resources, with errors that name the field
and, where the text came from a file, the line it is on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from meshgate.errors import Problem, ValidationFailed
from meshgate.model.certificate import Certificate
from meshgate.model.gateway import Gateway
from meshgate.model.rollout import Rollout
from meshgate.model.service import Service
from meshgate.model.values import FieldError

Resource = Gateway | Service | Certificate | Rollout
KINDS: dict[str, type[Resource]] = {
    "gateway": Gateway,
    "service": Service,
    "certificate": Certificate,
    "rollout": Rollout,
}
# The API and the store speak of kinds in the plural, as in /api/v1/gateways.
PLURAL = {
    "gateway": "gateways",
    "service": "services",
    "certificate": "certificates",
    "rollout": "rollouts",
}
SINGULAR = {plural: singular for singular, plural in PLURAL.items()}
_KIND_LIST = ", ".join(list(KINDS)[:-1]) + f" or {list(KINDS)[-1]}"


@dataclass(frozen=True)
class Document:
    """One YAML/JSON document of a manifest, and where it came from."""

    data: Any
    source: str
    line: int  # 1-based line where the document starts
    node: yaml.Node | None = None

    def line_of(self, path: str) -> int:
        """Best-known line of a dotted field path (the document's line if it cannot be found)."""
        node = self.node
        line = self.line
        parts = _split_path(path)
        while parts:
            if isinstance(node, yaml.MappingNode):
                # Keys may contain '.' themselves (route names such as `sava:1.0/sava/port`):
                # take the longest run of parts that names a key.
                entry = None
                for size in range(len(parts), 0, -1):
                    key = ".".join(parts[:size])
                    entry = next(((k, v) for k, v in node.value if str(k.value) == key), None)
                    if entry is not None:
                        break
                if entry is None:
                    break
                key_node, node = entry
                line, parts = key_node.start_mark.line + 1, parts[size:]
            elif (
                isinstance(node, yaml.SequenceNode)
                and parts[0].isdigit()
                and int(parts[0]) < len(node.value)
            ):
                node = node.value[int(parts[0])]
                line, parts = node.start_mark.line + 1, parts[1:]
            else:
                break
        return line


class ManifestError(ValidationFailed):
    """Problems found in a manifest; each problem's path is prefixed by `source[:line]`."""

    def __init__(self, located: list[tuple[str, Problem]]) -> None:
        self.located = located
        super().__init__([problem for _, problem in located])

    def lines(self) -> list[str]:
        return [f"{where}: {problem}" for where, problem in self.located]


def _split_path(path: str) -> list[str]:
    # Route names contain '.', so a dotted path is ambiguous; `Document.line_of` resolves that
    # against the keys actually present.
    return [p for p in path.split(".") if p]


# No manifest nests more than a few levels; a deeper document is an attack on the parsers,
# which recurse (and would otherwise fail with a RecursionError, or worse, later on).
MAX_DEPTH = 32
TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"


def nesting_depth(data: Any) -> int:
    """How deep lists and mappings nest in `data` (a scalar is 0), without recursing."""
    deepest, pending = 0, [(data, 1)]
    while pending and deepest <= MAX_DEPTH:
        item, depth = pending.pop()
        if isinstance(item, Mapping):
            item = list(item.values())
        if isinstance(item, list | tuple):
            deepest = max(deepest, depth)
            pending.extend((child, depth + 1) for child in item)
    return deepest


def check_depth(data: Any) -> None:
    if nesting_depth(data) > MAX_DEPTH:
        raise ValidationFailed([Problem("", TOO_DEEP)])


# libyaml's parser when PyYAML was built with it (Debian's and the wheels are): ten times the
# pure-Python reader's speed on a file of thousands of documents.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_text(text: str, source: str = "<input>") -> list[Document]:
    """Split YAML (JSON is YAML) text into documents, keeping their position. One loader reads
    the text once: a loader per document would rescan the whole text for each of them."""
    documents = []
    loader = _LOADER(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            data = loader.construct_document(node)
            if data is None:
                # An empty document, as between `---` separators or after a trailing `---`.
                continue
            line = node.start_mark.line + 1
            if nesting_depth(data) > MAX_DEPTH:
                raise ManifestError([(f"{source}:{line}", Problem("", TOO_DEEP))])
            documents.append(Document(data, source, line, node))
    except RecursionError:
        raise ManifestError([(source, Problem("", TOO_DEEP))]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        reason = getattr(exc, "problem", None) or str(exc)
        raise ManifestError([(where, Problem("", f"not valid YAML or JSON: {reason}"))]) from None
    finally:
        loader.dispose()
    return documents


def problems_from_pydantic(error: ValidationError) -> list[Problem]:
    problems = []
    for item in error.errors(include_url=False):
        loc = [str(part) for part in item["loc"]]
        message = item["msg"].removeprefix("Value error, ")
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            loc.append(cause.path)
            message = cause.message
        # Drop pydantic's internal tags for union members and "function-before" wrappers.
        loc = [p for p in loc if not p.startswith(("function-", "list[", "dict["))]
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append(Problem(".".join(loc), message))
    return problems


def validate_resource(
    data: Any, *, allow_raw_acl: bool = False, kind: str | None = None, allow_expired: bool = False
) -> Resource:
    """One document's data to a resource; `kind` (singular) is what the caller expects, if any.

    `allow_expired` accepts certificates past their end date: new ones are refused, but one
    stored while valid that has since expired must still load (and be reported), not vanish.
    """
    if not isinstance(data, Mapping):
        raise ValidationFailed([Problem("", "a manifest document must be a mapping of fields")])
    declared = data.get("kind", kind or "gateway")
    if not isinstance(declared, str) or declared.lower() not in KINDS:
        raise ValidationFailed([Problem("kind", f"{declared!r} is not a kind; use {_KIND_LIST}")])
    declared = declared.lower()
    if kind is not None and declared != kind:
        raise ValidationFailed([Problem("kind", f"expected {kind}, got {declared}")])
    model = KINDS[declared]
    try:
        return model.model_validate(
            {**data, "kind": declared},
            context={"allow_raw_acl": allow_raw_acl, "allow_expired": allow_expired},
        )
    except ValidationError as exc:
        raise ValidationFailed(problems_from_pydantic(exc)) from None


def load_documents(documents: Iterable[Document], *, allow_raw_acl: bool = False) -> list[Resource]:
    """Validate every document; all problems of all documents are reported together."""
    resources: list[Resource] = []
    located: list[tuple[str, Problem]] = []
    for document in documents:
        try:
            resources.append(validate_resource(document.data, allow_raw_acl=allow_raw_acl))
        except ValidationFailed as exc:
            for problem in exc.problems:
                located.append((f"{document.source}:{document.line_of(problem.path)}", problem))
    if located:
        raise ManifestError(located)
    return resources


def resource_key(resource: Resource) -> tuple[str, str, str]:
    """(plural kind, namespace, name): how the store and the API address a resource."""
    return PLURAL[resource.kind], resource.namespace, resource.name


def to_document(resource: Resource) -> dict[str, Any]:
    """The resource as a manifest document (what the store keeps and the API returns)."""
    return resource.model_dump(mode="json", exclude_none=True)
