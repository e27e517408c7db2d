"""The last value computed for each key, reused while the inputs it came from are unchanged.

Compiling a thousand gateways takes tens of milliseconds, and that is on the path of every
weight change, although a change touches one or two of them. The inputs are compared with `==`
inside a tuple, which checks identity first: resources the store loader kept from the last pass
are the same objects, so an unchanged gateway costs a few identity checks.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    def __init__(self) -> None:
        self._entries: dict[K, tuple[tuple[object, ...], V]] = {}
        self.hits = 0
        self.misses = 0

    def lookup(self, key: K, inputs: tuple[object, ...]) -> V | None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] == inputs:
            self.hits += 1
            return entry[1]
        self.misses += 1
        return None

    def previous(self, key: K) -> V | None:
        """The last value stored for `key`, whatever its inputs were: parts of it that a new
        value would build equal can be taken from it instead."""
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    def store(self, key: K, inputs: tuple[object, ...], value: V) -> V:
        self._entries[key] = (inputs, value)
        return value

    def retain(self, keys: Collection[K]) -> None:
        """Forget every key not in `keys` (resources that were deleted)."""
        for gone in self._entries.keys() - set(keys):
            del self._entries[gone]
