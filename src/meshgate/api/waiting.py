"""`apply?wait=`: waiting until the data plane runs what was written (SPEC §5).

Each written resource is judged from the status the agent publishes for it: live once its
`applied_version` is the version written, rejected as soon as the agent reports that version
rejected (with HAProxy's reason), pending otherwise. The judgement is pure and reads only the
resource's own status record, so when statuses come per node the same loop waits on all of
them. The loop polls the store; it reads only what is still pending.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from meshgate.store import Key, Store

POLL_S = 0.05
DEFAULT_WAIT_S = 60.0
Verdict = Literal["live", "rejected", "pending"]
STATUS_PREFIX = "status."


@dataclass(frozen=True)
class Written:
    """A resource an apply wrote (or left unchanged), at the version it has now."""

    kind: str  # singular: gateway, service, certificate
    namespace: str
    name: str
    version: int

    def status_key(self) -> Key:
        return Key(f"{STATUS_PREFIX}{self.kind}s", self.namespace, self.name)

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass
class WaitOutcome:
    done: bool = False  # every resource is live
    rejected: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    timed_out: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "timed_out": self.timed_out,
            "rejected": self.rejected,
            "pending": self.pending,
        }


def judge(written: Written, status: dict[str, Any] | None) -> tuple[Verdict, str]:
    """Where one resource stands, and why when it is not live."""
    if status is None:
        return "pending", "the agent has not reported on it yet"
    if status.get("applied_version") == written.version:
        return "live", ""
    errors = status.get("errors") or []
    if status.get("observed_version") == written.version and status.get("state") == "rejected":
        return "rejected", "; ".join(str(e) for e in errors) or "rejected"
    applied = status.get("applied_version")
    running = f"version {applied}" if applied is not None else "no version"
    return "pending", f"the data plane runs {running}, not {written.version}"


def _entry(written: Written, reason: str) -> dict[str, Any]:
    return {
        "kind": written.kind,
        "namespace": written.namespace,
        "name": written.name,
        "version": written.version,
        "reason": reason,
    }


async def wait_until_live(
    store: Store, written: Sequence[Written], timeout_s: float
) -> WaitOutcome:
    """Return once all of `written` is live, at the first rejection, or at the timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pending = list(written)
    reasons: dict[Written, str] = {}
    while True:
        still = []
        for resource in pending:
            record = await store.get(resource.status_key())
            verdict, reason = judge(resource, record.value if record is not None else None)
            if verdict == "rejected":
                return WaitOutcome(rejected=[_entry(resource, reason)])
            if verdict == "pending":
                still.append(resource)
                reasons[resource] = reason
        pending = still
        if not pending:
            return WaitOutcome(done=True)
        if loop.time() >= deadline:
            return WaitOutcome(timed_out=True, pending=[_entry(r, reasons[r]) for r in pending])
        await asyncio.sleep(POLL_S)
