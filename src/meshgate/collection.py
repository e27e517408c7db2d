"""Python's cyclic garbage collector, paused while large work is under way; the C heap trimmed
after it.

Building thousands of objects that live on (an apply of 100,000 gateways, a reconcile pass
compiling them) triggers full collections again and again, each walking every object alive:
at 100,000 gateways, a third of an apply's 30 s went to collections that found nothing to
free. The collector waits while any such work is under way and runs as usual after.

Pauses nest and overlap (the API and the agent share one event loop): the collector is
enabled again when the last one ends, and only if it was enabled before the first began.

Such work also leaves glibc's malloc holding what it freed (large strings and lists: the
rendered configuration, request bodies), resident until trimmed. When the last pause ends
after work of at least `TRIM_AFTER_S`, the heap is trimmed (`heap.trim`, glibc only): at
100,000 gateways about 100 MB went back to the system; a trim takes milliseconds, nothing
beside such a pass, and short pauses (a single change) never pay it. Large work outside a
pause (the status of every gateway, written after the pass) trims with `trim_after`.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator

from meshgate import heap

# Allocations between two collections of the youngest generation, in a node (Python's
# default is 700). Under instance churn at 1,000 gateways a node ran about 150 collections of
# the middle generation and 18 of the oldest in 30 s, 15-60 ms each, on the event loop that
# applies the next change; the oldest ones come after every tenth of the middle ones.
NODE_YOUNG_THRESHOLD = 10_000
TRIM_AFTER_S = 1.0  # paused this long (large work): trim the C heap when it ends
TRIM_ABOVE = 1000  # `trim_after` this many items or more (a write of many gateways' status)

_paused = 0
_was_enabled = False
_since = 0.0


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    global _paused, _was_enabled, _since
    if _paused == 0:
        _was_enabled = gc.isenabled()
        _since = time.monotonic()
        gc.disable()
    _paused += 1
    try:
        yield
    finally:
        _paused -= 1
        if _paused == 0:
            if _was_enabled:
                gc.enable()
            if time.monotonic() - _since >= TRIM_AFTER_S:
                heap.trim()


def tune_for_a_node() -> None:
    """Collect less often in a long-running node: a tenth as many collections of every
    generation, each of the youngest walking at most a few thousand objects more."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(NODE_YOUNG_THRESHOLD, middle, oldest)


def trim_after(items: int) -> None:
    """After work on `items` things (records written): trim the C heap when they were many."""
    if items >= TRIM_ABOVE:
        heap.trim()
