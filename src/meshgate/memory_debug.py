"""Finding what holds memory: Python allocation snapshots on demand, for soak runs.

With MESHGATE_TRACEMALLOC set to a directory, a node's first SIGUSR2 starts tracing its
allocations (tracemalloc, 10 frames deep) and each later one writes a snapshot there
(`<pid>-<n>.tracemalloc`, written under a `.tmp` name and renamed when complete).
`bench/soak.py --tracemalloc` and `tests/integration/test_memory.py` compare two of them: what
grew between them was allocated, and kept, in between. A snapshot is taken at a quiet moment:
after a garbage collection, on the event loop, and holding what `snapshot_between` named (the
stats poller's lock), so that no poll's rows caught half-way count as growth. Tracing starts
on a signal, not at start, because tracing the imports and the first configuration makes a
start several times slower. It costs CPU and memory of its own: it is for finding a leak,
never for production, so only the environment turns it on.

With MESHGATE_MEMSTATS set to a file, a thread appends a JSON line to it every
MESHGATE_MEMSTATS_INTERVAL seconds (10 by default): resident memory, what glibc's malloc holds
in use and free, and Python's small-object arenas (`meshgate.heap`). Resident memory that grows
while the memory in use does not is the allocator's, not a leak of objects; these lines tell the
two apart without tracemalloc's cost. They do not count objects by type: `gc.get_objects()`
from another thread can catch a tuple still being built (`tuple(generator)`) and make its
builder fail with a SystemError. MESHGATE_MEMSTATS_TRIM=1 also trims the heap after each
line, to measure what trimming gives back.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import os
import signal
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from meshgate import heap

log = structlog.get_logger("meshgate.memory")

ENVIRONMENT = "MESHGATE_TRACEMALLOC"
STATS_ENVIRONMENT = "MESHGATE_MEMSTATS"
FRAMES = 10


class _Quiet:
    """What a snapshot waits for: the event loop it is taken on and the locks held while work
    that allocates for a moment is in flight (a stats poll's parsed rows sit beside the last
    poll's until it ends). A snapshot taken in the middle of such work counts its temporary
    objects as growth; taken between, it holds only what stays."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.holds: list[Callable[[], AbstractAsyncContextManager[object]]] = []
        self.tasks: set[asyncio.Task[None]] = set()  # kept until done (the loop's are weak)


_quiet = _Quiet()


def snapshot_between(hold: Callable[[], AbstractAsyncContextManager[object]]) -> None:
    """Take later snapshots on the running loop while holding `hold()`, e.g. the stats
    poller's lock: never in the middle of a poll. Call it on the loop."""
    _quiet.loop = asyncio.get_running_loop()
    _quiet.holds.append(hold)


def _write_snapshot(path: Path) -> None:
    # Garbage not yet collected is not growth: cycles wait for the collector's next pass.
    gc.collect()
    partial = path.with_suffix(".tmp")
    tracemalloc.take_snapshot().dump(str(partial))
    partial.rename(path)
    log.info("tracemalloc snapshot written", path=str(path))


async def _write_when_quiet(path: Path) -> None:
    async with contextlib.AsyncExitStack() as held:
        for hold in _quiet.holds:
            await held.enter_async_context(hold())
        _write_snapshot(path)


def _request_snapshot(path: Path) -> None:
    """From the signal handler: on the loop between polls when one was named, else now."""
    loop = _quiet.loop
    if loop is None or loop.is_closed() or not loop.is_running():
        _write_snapshot(path)
        return

    def start() -> None:
        task = loop.create_task(_write_when_quiet(path))
        _quiet.tasks.add(task)
        task.add_done_callback(_quiet.tasks.discard)

    loop.call_soon_threadsafe(start)


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
        _request_snapshot(directory / f"{os.getpid()}-{next(numbers)}.tracemalloc")

    signal.signal(signal.SIGUSR2, dump)
    return directory


def memory_line() -> dict[str, Any]:
    """One line of MESHGATE_MEMSTATS: what holds this process's memory now."""
    line: dict[str, Any] = {
        "time": round(time.time(), 1),
        "rss": heap.resident_bytes(),
        "python_blocks": sys.getallocatedblocks(),
        "threads": threading.active_count(),
    }
    info = heap.mallinfo()
    if info is not None:
        line |= {"malloc_in_use": info.in_use, "malloc_free": info.free,
                 "malloc_mmapped": info.mmapped, "malloc_arenas": info.arenas,
                 "malloc_free_chunks": info.free_chunks}  # fmt: skip
    small = heap.pymalloc()
    if small is not None:
        line |= {"pymalloc_arenas": small.arenas, "pymalloc_in_use": small.in_use,
                 "pymalloc_free": small.free}  # fmt: skip
    if tracemalloc.is_tracing():
        line["traced"] = tracemalloc.get_traced_memory()[0]
        line["tracemalloc_own"] = tracemalloc.get_tracemalloc_memory()
    return line


def stats_if_asked(stop: threading.Event | None = None) -> Path | None:
    """Start the MESHGATE_MEMSTATS writer when the variable names a file; returns it. It runs
    until `stop` is set (never, for a node: it ends with the process)."""
    value = os.environ.get(STATS_ENVIRONMENT)
    if not value:
        return None
    path = Path(value)
    interval = float(os.environ.get(f"{STATS_ENVIRONMENT}_INTERVAL", "10"))
    trimming = os.environ.get(f"{STATS_ENVIRONMENT}_TRIM") == "1"
    stopped = stop or threading.Event()

    def write() -> None:
        while True:
            line = memory_line()
            if trimming:
                line["trimmed"] = heap.trim()
            with path.open("a") as out:
                out.write(json.dumps(line) + "\n")
            if stopped.wait(interval):
                return

    threading.Thread(target=write, name="memstats", daemon=True).start()
    return path
