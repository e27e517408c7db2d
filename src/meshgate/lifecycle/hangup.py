"""SIGHUP: apply the `-f` manifests again, as `systemctl reload` expects of a daemon."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from meshgate.errors import MeshgateError

log = structlog.get_logger("meshgate.lifecycle")


class Rereader:
    """Runs `reapply` once per SIGHUP, one at a time; a hangup that arrives while one runs
    leads to one more run, so the last edit of a file is never missed. A bad manifest is
    logged and changes nothing: the process keeps running what it had."""

    def __init__(self, reapply: Callable[[], Awaitable[int]]) -> None:
        self._reapply = reapply
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def hangup(self) -> None:
        self._wanted.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="sighup-reread")

    async def _run(self) -> None:
        while self._wanted.is_set():
            self._wanted.clear()
            try:
                changed = await self._reapply()
            except (MeshgateError, OSError, ValueError) as error:
                log.error("manifests not applied on SIGHUP; keeping what runs", error=str(error))
                continue
            log.info("manifests applied on SIGHUP", changed=changed)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
