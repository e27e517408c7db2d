"""The weighted choice's fast path: a gateway's weights laid out as 100 slots of one map.

Route weights are whole percentages that total 100 (or are all 0), so a draw of 0-99 names a
slot, and the slot names its route. While every route of a gateway has an available instance,
one map lookup picks the route by weight; otherwise the frontend falls back to the walk over
the available routes (`rules.weighted_rules`), which also keeps SPEC §1 rule 2.

The slots of all gateways share one map, `slots.map`, keyed `<draw>.<gateway id>`. A weight
change moves only the slots that change owner, each a `set map` at run time.
"""

from __future__ import annotations

from collections.abc import Sequence

SLOTS = 100


def slot_key(draw: int, gateway_id: str) -> str:
    return f"{draw}.{gateway_id}"


def key_expression(draw: str, gateway_id: str) -> str:
    """The HAProxy sample expression of a slot key, from a draw expression of 0-99."""
    return f"{draw},concat(.{gateway_id})"


def weight_slots(
    gateway_id: str, weights: Sequence[tuple[str, int]]
) -> tuple[tuple[str, str], ...]:
    """slots.map entries of one gateway: slot key -> backend, from (backend, weight) in route
    order. Each route owns as many consecutive slots as its weight; no weight, no slots (the
    walk then finds nothing to choose, as it would). A gateway of one route has none: its
    fast path tests that route's weight instead."""
    total = sum(weight for _, weight in weights)
    if total <= 0 or len(weights) == 1:  # a lone route is chosen without a draw
        return ()
    owners: list[str] = []
    end = 0
    for backend, weight in weights:
        end += weight
        # Weights total 100, so this is each route's weight in slots; were it otherwise, the
        # slots would still follow the weights as closely as 100 slots can.
        owners += [backend] * (round(end * SLOTS / total) - len(owners))
    return tuple((slot_key(draw, gateway_id), owner) for draw, owner in enumerate(owners))
