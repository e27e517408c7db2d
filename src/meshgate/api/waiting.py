"""`apply?wait=`: waiting until the data plane runs what was written (SPEC §5).

Each written resource is judged from the status the agent publishes for it: live once its
`applied_version` is the version written, rejected as soon as the agent reports that version
rejected (with HAProxy's reason), pending otherwise. The judgement is pure and reads only the
resource's own status record, so when statuses come per node the same loop waits on all of
them. The status records are followed through the store's watch, as an etcd client would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from meshgate.store import Key, Store

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
    """Return once all of `written` is live, at the first rejection, or at the timeout. The
    status records are read once, then followed through the store's watch: the answer comes
    as soon as the agent publishes, without polling."""
    pending: dict[Key, Written] = {w.status_key(): w for w in written}
    reasons: dict[Key, str] = {}

    def judged(key: Key, status: dict[str, Any] | None) -> WaitOutcome | None:
        verdict, reason = judge(pending[key], status)
        if verdict == "rejected":
            return WaitOutcome(rejected=[_entry(pending[key], reason)])
        if verdict == "live":
            del pending[key]
        else:
            reasons[key] = reason
        return None if pending else WaitOutcome(done=True)

    try:
        async with asyncio.timeout(timeout_s):
            # Taken before reading, so a status published in between is seen in the watch.
            revision = await store.revision()
            for key in list(pending):
                record = await store.get(key)
                outcome = judged(key, record.value if record is not None else None)
                if outcome is not None:
                    return outcome
            kinds = {key.kind for key in pending}
            async for event in store.watch(revision, kinds=kinds):
                if event.key in pending:
                    outcome = judged(event.key, event.value)
                    if outcome is not None:
                        return outcome
    except TimeoutError:
        pass
    entries = [_entry(w, reasons.get(key, "")) for key, w in pending.items()]
    return WaitOutcome(timed_out=True, pending=entries)
