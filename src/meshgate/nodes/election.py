"""Work that must run once however many servers run: one server at a time holds a key on its
lease and runs it; when that server dies its lease lapses, the key goes, and another takes
over within the lease's TTL (plus one poll)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from meshgate.nodes.keys import SCOPE
from meshgate.store import ConflictError, Key, NotFoundError, Store, StoreError

log = structlog.get_logger("meshgate.election")

LEADER_KEY = Key("status.leader", SCOPE, "control")
TTL_S = 5.0
POLL_S = 0.5


class Election:
    def __init__(self, store: Store, identity: str, *, ttl_s: float = TTL_S) -> None:
        self.store = store
        self.identity = identity
        self.ttl_s = ttl_s
        self.leading = False

    async def run(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Campaign until cancelled; run `work` while leading, and stop it as soon as the
        lease cannot be renewed (another server may hold it by then)."""
        while True:
            lease = await self._campaign()
            if lease is None:
                await asyncio.sleep(POLL_S)
                continue
            self.leading = True
            log.info("elected for the control work", server=self.identity)
            task = asyncio.create_task(work())
            try:
                await self._hold(lease, task)
            finally:
                self.leading = False
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                with contextlib.suppress(StoreError):
                    await self.store.revoke(lease)
            log.warning("no longer elected", server=self.identity)

    async def _campaign(self) -> int | None:
        """A lease holding the leader key, or None (someone holds it, or the store failed)."""
        try:
            if await self.store.get(LEADER_KEY) is not None:
                return None
            lease = await self.store.grant_lease(self.ttl_s)
            value = {"server": self.identity, "since": round(time.time(), 3)}
            try:
                await self.store.put(LEADER_KEY, value, expect_revision=0, lease=lease)
            except ConflictError:
                await self.store.revoke(lease)
                return None
            return lease
        except StoreError as exc:
            log.warning("election: the store failed", error=str(exc))
            return None

    async def _hold(self, lease: int, task: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while not task.done():
            await asyncio.sleep(self.ttl_s / 4)
            try:
                await self.store.keepalive(lease)
                renewed = loop.time()
            except NotFoundError:
                return
            except StoreError as exc:
                log.warning("election: lease not renewed", error=str(exc))
                if loop.time() - renewed >= self.ttl_s:
                    return
        if not task.cancelled() and task.exception() is not None:
            log.error("elected work failed", error=str(task.exception()))
