"""JSON merge patch (RFC 7396): what `PATCH /api/v1/{kind}/{name}` applies. Pure.

A patch that is an object merges into the target member by member: `null` removes a member,
an object merges recursively, anything else replaces. A patch that is not an object replaces
the whole target.
"""

from __future__ import annotations

from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """The target with `patch` applied; neither argument is changed."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = merge_patch(merged.get(name), value)
    return merged
