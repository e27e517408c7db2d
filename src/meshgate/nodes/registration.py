"""An agent's presence in the store: its node record, and a heartbeat key on a lease.

The heartbeat key lives as long as the lease: when the agent dies, etcd deletes it within the
lease's TTL and the node reads as NotReady; when the agent comes back it writes it again.
A name another live agent holds is refused, unless that agent is this one's previous life
(same data directory, so the same `instance` id): its lease is then revoked and taken over.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from meshgate.errors import MeshgateError
from meshgate.nodes.keys import heartbeat_key, node_key
from meshgate.store import ConflictError, NotFoundError, Put, Store, StoreError

log = structlog.get_logger("meshgate.nodes")

LEASE_TTL_S = 10.0  # a dead agent's node is NotReady this long after its last heartbeat
HEARTBEAT_S = 3.0
# How soon a new report (applied revision, hash, error) goes out, between heartbeats (and at
# most this often).
REPORT_S = 0.5


class NodeNameTakenError(MeshgateError):
    """Another live agent registered this node name."""


def instance_id(data_dir: Path) -> str:
    """This data directory's identity, made on first use: an agent restarted on the same
    data directory is the same node coming back, not a second one."""
    path = data_dir / "node-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        data_dir.mkdir(parents=True, exist_ok=True)
        made = secrets.token_hex(8)
        path.write_text(made + "\n")
        return made


@dataclass
class Registration:
    store: Store
    name: str
    address: str | None
    labels: dict[str, str]
    versions: dict[str, str]
    instance: str
    # What the node runs and what it refused (`Agent.acknowledgement`): applied_revision,
    # applied_hash, current_at, attempted_revision, error. Goes into every heartbeat.
    report: Callable[[], dict[str, Any]] = dict
    metrics: str | None = None  # the agent's --metrics base URL, where servers read its stats
    lease: int | None = field(default=None, init=False)
    _started: float = field(default_factory=time.time, init=False)

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "labels": {**self.labels, "node": self.name},
            "versions": self.versions,
            "metrics": self.metrics,
        }

    def heartbeat(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "heartbeat": round(time.time(), 3),
            "started": round(self._started, 3),
            **self.report(),
        }

    async def register(self) -> None:
        """Write the node record and the first heartbeat, or raise NodeNameTakenError."""
        live = await self.store.get(heartbeat_key(self.name))
        expect = 0
        if live is not None:
            if live.value.get("instance") != self.instance:
                seen = live.value.get("heartbeat")
                ago = f"{time.time() - seen:.0f} s ago" if isinstance(seen, int | float) else ""
                raise NodeNameTakenError(
                    f"--node {self.name}: another agent is live under this name (heartbeat "
                    f"{ago}); stop it, or give this agent another name"
                )
            expect = live.revision  # our previous life: take its place
        self.lease = await self.store.grant_lease(LEASE_TTL_S)
        try:
            await self.store.commit(
                [
                    Put(node_key(self.name), self.record()),
                    Put(heartbeat_key(self.name), self.heartbeat(), expect, self.lease),
                ]
            )
        except ConflictError:
            await self.store.revoke(self.lease)
            raise NodeNameTakenError(
                f"--node {self.name}: another agent registered this name just now"
            ) from None
        if live is not None and live.lease is not None:
            with contextlib.suppress(NotFoundError):
                await self.store.revoke(live.lease)
        log.info("node registered", node=self.name, lease=self.lease)

    async def run(self) -> None:
        """Heartbeat until cancelled; through store outages, registering again if the lease
        lapsed meanwhile. Revokes the lease when cancelled, so the node is NotReady at once."""
        loop = asyncio.get_running_loop()
        last_beat = loop.time()
        reported = self.report()
        try:
            while True:
                await asyncio.sleep(REPORT_S)
                due = loop.time() - last_beat >= HEARTBEAT_S
                if not due and self.report() == reported:
                    continue
                try:
                    if due:
                        await self._beat()
                        last_beat = loop.time()
                    else:
                        await self._report()
                    reported = self.report()
                except StoreError as exc:
                    log.warning("heartbeat failed; will retry", node=self.name, error=str(exc))
                    last_beat = loop.time()
        finally:
            if self.lease is not None:
                with contextlib.suppress(StoreError, TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self.store.revoke(self.lease)), 2)

    async def _beat(self) -> None:
        assert self.lease is not None
        try:
            await self.store.keepalive(self.lease)
        except NotFoundError:
            log.warning("node lease lapsed; registering again", node=self.name)
            self.lease = None
            await self.register()
            return
        await self._report()

    async def _report(self) -> None:
        await self.store.put(heartbeat_key(self.name), self.heartbeat(), lease=self.lease)
