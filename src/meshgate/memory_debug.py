"""Finding what holds memory: Python allocation snapshots on demand, for soak runs.

With MESHGATE_TRACEMALLOC set to a directory, a node's first SIGUSR2 starts tracing its
allocations (tracemalloc, 10 frames deep) and each later one writes a snapshot there
(`<pid>-<n>.tracemalloc`, written under a `.tmp` name and renamed when complete).
`bench/soak.py --tracemalloc` and `tests/integration/test_memory.py` compare two of them: what
grew between them was allocated, and kept, in between. Tracing starts on a signal, not at
start, because tracing the imports and the first configuration makes a start several times
slower. It costs CPU and memory of its own: it is for finding a leak, never for production,
so only the environment turns it on.
"""

from __future__ import annotations

import itertools
import os
import signal
import tracemalloc
from pathlib import Path
from types import FrameType

import structlog

log = structlog.get_logger("meshgate.memory")

ENVIRONMENT = "MESHGATE_TRACEMALLOC"
FRAMES = 10


def trace_if_asked() -> Path | None:
    """Install the SIGUSR2 handler when MESHGATE_TRACEMALLOC names a directory; returns it
    (None: nothing done)."""
    value = os.environ.get(ENVIRONMENT)
    if not value:
        return None
    directory = Path(value)
    directory.mkdir(parents=True, exist_ok=True)
    numbers = itertools.count(1)

    def dump(signum: int, frame: FrameType | None) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(FRAMES)
            log.info("tracing allocations", directory=str(directory))
            return
        path = directory / f"{os.getpid()}-{next(numbers)}.tracemalloc"
        partial = path.with_suffix(".tmp")
        tracemalloc.take_snapshot().dump(str(partial))
        partial.rename(path)
        log.info("tracemalloc snapshot written", path=str(path))

    signal.signal(signal.SIGUSR2, dump)
    return directory
