"""Finding what holds the event loop: stalls and garbage collections, on demand.

With MESHGATE_STALLS set to a file, a node appends a JSON line to it for every moment its
event loop did not run for MESHGATE_STALLS_MS milliseconds (50 by default) and for every
garbage collection that took more than a tenth of that. A stall's line holds when it began,
how long it lasted and the stacks the main thread was seen in meanwhile (sampled every few
milliseconds by a thread, the most frequent first): what a slow change waited for. A
collection's line holds its generation and duration; a collection holds the interpreter
lock throughout, so no stack is sampled during one and its line is what names it.

For investigating latency outliers only: the sampling thread costs a little CPU, so only the
environment turns it on.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ENVIRONMENT = "MESHGATE_STALLS"
BEAT_S = 0.005  # how often the loop says it is alive
SAMPLE_S = 0.005  # how often the thread looks
STACK_DEPTH = 12
KEPT_STACKS = 3


class StallWatch:
    """Writes a line per event-loop stall and per slow garbage collection to `path`."""

    def __init__(self, path: Path, threshold_s: float) -> None:
        self.path = path
        self.threshold_s = threshold_s
        self._beat = time.monotonic()
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self._gc_started = 0.0
        self._lock = threading.Lock()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._main = threading.get_ident()

        def beat() -> None:
            self._beat = time.monotonic()
            if not self._stop.is_set():
                loop.call_later(BEAT_S, beat)

        loop.call_soon(beat)
        gc.callbacks.append(self._collected)
        threading.Thread(target=self._watch, name="stalls", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._collected in gc.callbacks:
            gc.callbacks.remove(self._collected)

    def _write(self, line: dict[str, Any]) -> None:
        with self._lock, self.path.open("a") as out:
            out.write(json.dumps(line) + "\n")

    def _collected(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_started = now
            return
        took = now - self._gc_started
        if took >= self.threshold_s / 10:
            self._write(
                {"time": round(time.time(), 3), "gc": info.get("generation"),
                 "ms": round(1000 * took, 1), "collected": info.get("collected")}
            )  # fmt: skip

    def _watch(self) -> None:
        stacks: collections.Counter[tuple[str, ...]] = collections.Counter()
        began: float | None = None
        while not self._stop.wait(SAMPLE_S):
            now = time.monotonic()
            lag = now - self._beat
            if lag >= self.threshold_s:
                if began is None:
                    began = self._beat
                frame = sys._current_frames().get(self._main or 0)
                if frame is not None:
                    summary = traceback.extract_stack(frame)[-STACK_DEPTH:]
                    stacks[tuple(f"{f.filename}:{f.lineno} {f.name}" for f in summary)] += 1
            elif began is not None:
                self._write(
                    {"time": round(time.time() - (now - began), 3),
                     "stall_ms": round(1000 * (self._beat - began), 1),
                     "samples": sum(stacks.values()),
                     "stacks": [{"count": count, "stack": list(stack)}
                                for stack, count in stacks.most_common(KEPT_STACKS)]}
                )  # fmt: skip
                began = None
                stacks.clear()


def watch_if_asked(loop: asyncio.AbstractEventLoop) -> StallWatch | None:
    """Start watching when MESHGATE_STALLS names a file (None: nothing done)."""
    value = os.environ.get(ENVIRONMENT)
    if not value:
        return None
    threshold_s = float(os.environ.get(f"{ENVIRONMENT}_MS", "50")) / 1000
    watch = StallWatch(Path(value), threshold_s)
    watch.start(loop)
    return watch
