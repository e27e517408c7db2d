"""Python's cyclic garbage collector, paused while large work is under way.

Building thousands of objects that live on (an apply of 100,000 gateways, a reconcile pass
compiling them) triggers full collections again and again, each walking every object alive:
at 100,000 gateways, a third of an apply's 30 s went to collections that found nothing to
free. The collector waits while any such work is under way and runs as usual after.

Pauses nest and overlap (the API and the agent share one event loop): the collector is
enabled again when the last one ends, and only if it was enabled before the first began.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

_paused = 0
_was_enabled = False


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    global _paused, _was_enabled
    if _paused == 0:
        _was_enabled = gc.isenabled()
        gc.disable()
    _paused += 1
    try:
        yield
    finally:
        _paused -= 1
        if _paused == 0 and _was_enabled:
            gc.enable()
