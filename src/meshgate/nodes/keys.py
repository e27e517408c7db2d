"""Where nodes keep their records in the store, and what a node name and label may be. Pure.

Every kind here starts with "status", which sorts after every resource kind, so an agent's
watch of the resources (one key range) never carries other nodes' heartbeats and reports.
"""

from __future__ import annotations

# Node names are checked where instances name their node too (model.names).
from meshgate.model.names import NODE_NAME as NODE_NAME
from meshgate.model.names import check_label
from meshgate.model.names import check_node_name as check_node_name
from meshgate.store import Key

NODES = "status.nodes"  # one record per node that ever joined: address, labels, versions
HEARTBEATS = "status.heartbeats"  # one per live node, on the node's lease
SCOPE = "cluster"  # the namespace part of node keys: nodes belong to no namespace


def parse_label(text: str) -> tuple[str, str]:
    """`KEY=VALUE` from the command line."""
    key, equals, value = text.partition("=")
    if not equals:
        raise ValueError(f"{text!r} is not KEY=VALUE")
    return check_label(key, value)


def node_key(name: str) -> Key:
    return Key(NODES, SCOPE, name)


def heartbeat_key(name: str) -> Key:
    return Key(HEARTBEATS, SCOPE, name)


def status_prefix(name: str) -> str:
    """The prefix of a node's own status kinds: `status.node.NAME.gateways`, ..."""
    return f"status.node.{name}"


def node_status_key(name: str, key: Key) -> Key:
    """Where node `name` reports on the resource at `key`."""
    return Key(f"{status_prefix(name)}.{key.kind}", key.namespace, key.name)
