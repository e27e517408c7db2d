"""Validated stored gateways, shared by whoever reads one store in this process.

The agent's loader and the API's admission both need every stored gateway as a model; each
validating its own copy doubled the memory a gateway costs (about 3.3 kB a model). Both look
here first, by key and version, and leave what they validated for the other. One table per
store object, dropped with it: two stores can hold different values at the same key and version.
"""

from __future__ import annotations

import weakref

from meshgate.model import Resource

# (kind, namespace, name) -> (version, the resource or why it does not validate)
Table = dict[tuple[str, str, str], tuple[int, Resource | str]]

_tables: weakref.WeakKeyDictionary[object, Table] = weakref.WeakKeyDictionary()


def shared_table(store: object) -> Table:
    """The table of `store`'s validated gateways (a new one for a store not seen before)."""
    table = _tables.get(store)
    if table is None:
        table = _tables[store] = {}
    return table
