"""The garbage collector's pauses: nested and overlapping, enabled again by the last to end."""

from __future__ import annotations

import gc
import time

import pytest

from meshgate import collection, heap
from meshgate.collection import collector_paused


def test_overlapping_pauses_enable_the_collector_when_the_last_ends() -> None:
    assert gc.isenabled()
    first, second = collector_paused(), collector_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # not in the order they began: the API and the agent
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_collector_disabled_before_stays_disabled() -> None:
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_heap_is_trimmed_after_long_work_only(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[bool] = []
    monkeypatch.setattr(collection.heap, "trim", lambda: trims.append(True) or True)
    monkeypatch.setattr(collection, "TRIM_AFTER_S", 0.05)
    with collector_paused():
        pass
    assert trims == []  # a short pause (a single change) does not pay for a trim
    outer = collector_paused()
    outer.__enter__()
    with collector_paused():
        time.sleep(0.06)
    assert trims == []  # only when the last pause ends
    outer.__exit__(None, None, None)
    assert trims == [True]


def test_trimming_the_heap_works_here_or_does_nothing() -> None:
    assert heap.trim() in (True, False)  # glibc: pages given back or not; elsewhere False


def test_many_items_written_trim_the_heap(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[bool] = []
    monkeypatch.setattr(collection.heap, "trim", lambda: trims.append(True) or True)
    collection.trim_after(collection.TRIM_ABOVE - 1)
    assert trims == []
    collection.trim_after(collection.TRIM_ABOVE)
    assert trims == [True]


def test_a_node_collects_its_youngest_generation_less_often() -> None:
    before = gc.get_threshold()
    try:
        collection.tune_for_a_node()
        assert gc.get_threshold() == (collection.NODE_YOUNG_THRESHOLD, *before[1:])
    finally:
        gc.set_threshold(*before)
