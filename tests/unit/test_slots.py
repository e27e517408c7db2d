"""The weighted choice's slots: draws 0-99 handed out to routes by weight."""

from __future__ import annotations

from collections import Counter

import pytest

from meshgate.compiler.slots import SLOTS, key_expression, slot_key, weight_slots


def owners(weights: list[tuple[str, int]]) -> Counter[str]:
    return Counter(backend for _, backend in weight_slots("g1", weights))


@pytest.mark.parametrize(
    "weights",
    [
        [("a", 90), ("b", 10)],
        [("a", 33), ("b", 33), ("c", 34)],
        [("a", 0), ("b", 100)],
    ],
)
def test_each_route_owns_its_weight_in_slots(weights: list[tuple[str, int]]) -> None:
    assert owners(weights) == Counter({b: w for b, w in weights if w})
    assert [key for key, _ in weight_slots("g1", weights)] == [f"{n}.g1" for n in range(SLOTS)]


def test_slots_follow_weights_that_do_not_total_100_as_closely_as_100_slots_can() -> None:
    assert owners([("a", 1), ("b", 2)]) == Counter({"a": 33, "b": 67})
    assert sum(owners([("a", 7), ("b", 5), ("c", 1)]).values()) == SLOTS


def test_no_weight_or_a_lone_route_no_slots() -> None:
    assert weight_slots("g1", [("a", 0), ("b", 0)]) == ()
    assert weight_slots("g1", []) == ()
    assert weight_slots("g1", [("a", 100)]) == ()


def test_the_key_expression_builds_the_keys_of_the_map() -> None:
    assert slot_key(7, "g1") == "7.g1"
    assert key_expression("rand(100)", "g1") == "rand(100),concat(.g1)"
