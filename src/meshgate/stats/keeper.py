"""Sets HAProxy's log keep fraction (see `sampling`) in the current worker, after each poll.

The controller decides from the poll's exact request counts; this sends `set var` when the
value it wants differs from what the current worker has: after a change, and after every reload
or restart, since a new worker starts from the configuration's 1024 (every request). A command
that fails is tried again after the next poll; meanwhile HAProxy logs more (or fewer) lines
than wanted, which the node-side sampler and the reported sample ratio absorb.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

import structlog

from meshgate.haproxy.commands import HaproxyError
from meshgate.stats.sampling import KEEP_SCALE, KEEP_VAR, KeepController
from meshgate.stats.tally import Snapshot

log = structlog.get_logger("meshgate.stats")

# Sets an integer process variable in the current worker: `RuntimeClient.set_proc_var`.
SetVar = Callable[[str, int], Awaitable[None]]


class LogKeeper:
    def __init__(self, controller: KeepController, set_var: SetVar) -> None:
        self.controller = controller
        self.set_var = set_var
        # (current worker pids, keep) as last set; None until the first command succeeded.
        self.applied: tuple[frozenset[int], int] | None = None
        self.commands = 0
        self.failures = 0

    @property
    def fraction(self) -> float:
        """The fraction of requests the current worker logs, as far as the node knows: 1.0
        (the configuration's value) until a command succeeded."""
        return (self.applied[1] if self.applied else KEEP_SCALE) / KEEP_SCALE

    async def update(self, snapshot: Snapshot, workers: Collection[int]) -> None:
        total = sum(stats.counts.requests for stats in snapshot.backends.values())
        keep = self.controller.observe(snapshot.taken_at, total)
        current = frozenset(workers)
        if not current or self.applied == (current, keep):
            return
        self.commands += 1
        try:
            await self.set_var(KEEP_VAR, keep)
        except (HaproxyError, OSError) as exc:
            self.failures += 1
            log.warning("could not set the log keep fraction", keep=keep, error=str(exc))
            return
        if self.applied is None or self.applied[1] != keep:
            log.info(
                "log keep fraction set",
                keep=f"{keep}/{KEEP_SCALE}",
                rate=round(self.controller.rate, 1),
            )
        self.applied = (current, keep)
