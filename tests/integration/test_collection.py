"""The garbage collector around a reconcile pass: paused through it, and what a pass that
reloaded many gateways leaves alive frozen out of later collections. A real HAProxy."""

from __future__ import annotations

import gc

import pytest

from tests.integration.conftest import Backends, free_port
from tests.integration.test_single_check import (  # noqa: F401  (the fixture)
    Plane,
    _status_is,
    eventually,
    gateway,
    plane,
    served,
)

pytestmark = pytest.mark.integration


async def test_a_reload_of_many_gateways_freezes_what_it_leaves_alive(
    plane: Plane,  # noqa: F811
    backends: Backends,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import meshgate.agent.loop as loop

    monkeypatch.setattr(loop, "FREEZE_ABOVE", 2)  # "many": two here
    one = backends.start("one")
    port = free_port()
    gc.unfreeze()
    try:
        await plane.put(gateway("a", port, one, host="a.test"))
        await eventually(lambda: _status_is(plane, "a", "serving"))
        assert gc.get_freeze_count() == 0  # one gateway: below the bound
        await plane.put(gateway("b", port, one, host="b.test"), gateway("c", port, one))
        await eventually(lambda: served(port, "one", "b.test"))
        await eventually(lambda: _status_is(plane, "c", "serving"))
        await eventually(lambda: _frozen())
        assert gc.isenabled()  # the pause ended with the pass
    finally:
        gc.unfreeze()


async def _frozen() -> bool:
    return gc.get_freeze_count() > 0
