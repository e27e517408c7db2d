"""What a change in a watched manifest directory means for the store. Pure.

Every file owns the resources it defines. A file that is new or changed and valid replaces what
it owned: its resources are written, and those it no longer defines are deleted. A file that is
removed deletes what it owned. A file that does not parse or validate, or that defines a
resource another file already defines, is reported and changes nothing: what it owned before
stays as it was. A resource that moves from one file to another is never deleted on the way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from meshgate.model import Resource, resource_key

ResourceKey = tuple[str, str, str]  # (plural kind, namespace, name)


@dataclass(frozen=True)
class Owned:
    """What a file last put in the store, and the content it had then."""

    digest: str
    keys: frozenset[ResourceKey]


@dataclass(frozen=True)
class Parsed:
    """A file as read now: its resources, or why it cannot be used."""

    digest: str
    resources: tuple[Resource, ...] = ()
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileChange:
    path: str
    digest: str | None  # None: the file was removed
    resources: tuple[Resource, ...]
    deletes: frozenset[ResourceKey]


@dataclass(frozen=True)
class Rejection:
    path: str
    digest: str
    errors: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    changes: list[FileChange] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def _describe(key: ResourceKey) -> str:
    kind, namespace, name = key
    return f"{kind.removesuffix('s')} {namespace}/{name}"


def plan_changes(
    owned: Mapping[str, Owned],
    present: Sequence[str],
    parsed: Mapping[str, Parsed],
) -> Plan:
    """`owned`: what each file put in the store so far. `present`: the files there now.
    `parsed`: the files to (re)consider, read now; the others are unchanged."""
    plan = Plan()
    present_set = set(present)
    # Who owns what after this plan: start from the files that keep what they had, unchanged
    # or unusable now.
    keeping = [p for p in present if p not in parsed or parsed[p].errors]
    owner: dict[ResourceKey, str] = {
        key: path for path in keeping if path in owned for key in owned[path].keys
    }
    accepted: dict[str, tuple[Parsed, frozenset[ResourceKey]]] = {}
    for path in sorted(parsed):
        current = parsed[path]
        if current.errors:
            plan.rejections.append(Rejection(path, current.digest, current.errors))
            continue
        keys = [resource_key(r) for r in current.resources]
        clashes = [
            f"{_describe(k)} is also defined in {owner[k]}"
            for k in keys
            if k in owner and owner[k] != path
        ]
        repeated = sorted({_describe(k) for k, n in Counter(keys).items() if n > 1})
        clashes += [f"{what} is defined twice in this file" for what in repeated]
        if clashes:
            plan.rejections.append(Rejection(path, current.digest, tuple(clashes)))
            for key in owned.get(path, Owned("", frozenset())).keys:
                owner.setdefault(key, path)
            continue
        owner.update({key: path for key in keys})
        accepted[path] = (current, frozenset(keys))
    for path in sorted(owned.keys() - present_set):
        gone = frozenset(k for k in owned[path].keys if k not in owner)
        plan.changes.append(FileChange(path, None, (), gone))
    for path, (current, defined) in accepted.items():
        previous = owned.get(path, Owned("", frozenset())).keys
        dropped = frozenset(k for k in previous - defined if k not in owner)
        plan.changes.append(FileChange(path, current.digest, current.resources, dropped))
    return plan
