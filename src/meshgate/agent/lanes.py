"""Work the reconcile loop hands off, so that a route's weight never waits behind it.

An instance of a service that a thousand gateways route to is a thousand servers to add, which
takes HAProxy most of a second even pipelined; and writing the files of a thousand gateways
takes a few hundred milliseconds. Neither need hold up the next pass: a weight change is a map
entry, which HAProxy takes at once. So the agent runs server changes in a `Lane` (in order,
one batch after another) and the file writing in a `LatestLane` (only the newest data plane
matters), and goes on. What must see their effect waits for them: a reload (HAProxy reads the
files, and must not have commands race it), a status saying "applied", stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from meshgate.errors import MeshgateError

log = structlog.get_logger("meshgate.agent")


class Lane:
    """Jobs run one after another in the background, in the order submitted.

    A job that fails leaves HAProxy's state uncertain: the jobs queued behind it, which may
    depend on it, are dropped, and `failure` says why until `clear_failure` (after the reload
    that makes the state exact again)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.failure: str | None = None

    def submit(self, job: Callable[[], Awaitable[None]]) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run())
        self._pending += 1
        self._idle.clear()
        self._queue.put_nowait(job)

    def busy(self) -> bool:
        return self._pending > 0

    async def drained(self) -> None:
        """Return once every job submitted so far has ended."""
        await self._idle.wait()

    def clear_failure(self) -> None:
        self.failure = None

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self._pending = 0
        self._idle.set()

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                if self.failure is None:
                    await job()
            except MeshgateError as exc:
                self.failure = str(exc)
                log.warning(
                    f"{self.name} failed; a reload will make the state exact", error=str(exc)
                )
            finally:
                self._pending -= 1
                if self._pending == 0:
                    self._idle.set()


class LatestLane:
    """A job of which only the newest submission matters (writing the data plane's files):
    run in the background, a submission made while one runs replacing any still waiting.

    Jobs start at least `gap_s` apart: under instance churn at a thousand gateways each write
    renders a thousand backends, in a thread that takes the interpreter lock from the event
    loop the next weight change needs. Whoever waits for the lane (`drained`: a reload,
    stopping) does not wait for the gap: the newest job then starts at once."""

    def __init__(self, gap_s: float = 0.0) -> None:
        self.gap_s = gap_s
        self._next: Callable[[], Awaitable[None]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._hurry = asyncio.Event()
        self._last_ended = -float("inf")  # event loop time

    def submit(self, job: Callable[[], Awaitable[None]]) -> None:
        self._next = job
        self._idle.clear()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run())

    def busy(self) -> bool:
        return not self._idle.is_set()

    async def drained(self) -> None:
        if self.busy():
            self._hurry.set()
        await self._idle.wait()

    failure: str | None = None  # the last job failed: the caller does it again itself

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._next is not None:
                wait = self._last_ended + self.gap_s - loop.time()
                if wait > 0 and not self._hurry.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._hurry.wait()
                job, self._next = self._next, None
                try:
                    await job()
                    self.failure = None
                except (OSError, MeshgateError) as exc:
                    self.failure = str(exc)
                    log.warning("writing the data plane's files failed", error=str(exc))
                self._last_ended = loop.time()
        finally:
            self._next = None
            self._hurry.clear()
            self._idle.set()
