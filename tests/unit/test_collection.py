"""The garbage collector's pauses: nested and overlapping, enabled again by the last to end."""

from __future__ import annotations

import gc

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
