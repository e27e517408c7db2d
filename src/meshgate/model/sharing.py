"""One object for equal parts of many models: a port, default timeouts, a plain route.

At 100,000 gateways each validated gateway held its own `Port`, `Timeouts` and routes, although
nearly all are equal (`9000/http`, no timeouts, `weight: 100`): about 1.6 kB of the 3.3 kB a
gateway model cost. Models are frozen, so equal parts can be one object. Equal means the same
values and the same fields given (what `model_dump(exclude_unset=True)` would show).

The set of fields given is shared as well (`share_fields_set`): a gateway's own was a set of
216 bytes with a table of 512 more (it names more than five fields), and gateways are given
the same few fields.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

# Bounded: distinct parts beyond this many (all ports different, say) are no longer shared
# once the table is full, rather than kept for good.
MAX_SHARED = 4096
_shared: dict[tuple[Any, ...], BaseModel] = {}
_fields_sets: dict[frozenset[str], set[str]] = {}


def shared(model: M) -> M:
    """An equal model validated earlier, else `model` (kept for the next equal one). Parts
    holding anything unhashable (a list with items, a nested model) are returned as they are."""
    values = []
    for name, value in model.__dict__.items():
        if isinstance(value, list):
            if value:
                return model
            value = ()
        elif isinstance(value, BaseModel | dict | set):
            return model
        values.append((name, value))
    key = (type(model), tuple(values), frozenset(model.__pydantic_fields_set__))
    try:
        found = _shared.get(key)
    except TypeError:
        return model
    if found is not None:
        return found  # type: ignore[return-value]
    if len(_shared) < MAX_SHARED:
        _shared[key] = model
    return model


def share_fields_set(model: BaseModel) -> None:
    """Give a model just validated the set of fields given of an earlier model given the same
    ones. Only for frozen models: pydantic changes the set of a model that is assigned to, and
    `model_copy` changes the copy's, which it copied first."""
    fields = model.__pydantic_fields_set__
    key = frozenset(fields)
    found = _fields_sets.get(key)
    if found is None:
        if len(_fields_sets) >= MAX_SHARED:
            return
        found = _fields_sets[key] = fields
    object.__setattr__(model, "__pydantic_fields_set__", found)
