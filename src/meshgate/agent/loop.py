"""The reconcile loop: watch the store, debounce, compile, check, apply, publish status.

A write after a quiet spell is compiled at once, and applied at once when HAProxy can take it
at run time: that is the path of a weight change or an instance coming or going, and it waits
for nothing. A change that needs a reload, and every write of a burst after the first, waits
for the writes to pause (the debounce), so a burst costs at most one reload. A pass that
compiles to the running data plane does nothing, and a gateway that cannot be served is reported
in its status and left out while every other gateway is applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import time
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from meshgate.agent.culprits import last_alert, rejected_by_haproxy
from meshgate.agent.desired import DesiredLoader, Key, Loaded
from meshgate.agent.driver import Driver, Outcome
from meshgate.agent.health import InstanceHealth
from meshgate.agent.ports import ports_in_use
from meshgate.agent.published import UNKNOWN, Published
from meshgate.agent.watched import kept
from meshgate.collection import collector_paused, trim_after
from meshgate.compiler import Compiled, DesiredState, GatewayResult, compile_state, ir
from meshgate.compiler.build import CompileMemo
from meshgate.errors import MeshgateError
from meshgate.events import EventLog
from meshgate.haproxy.supervisor import ConfigRejected
from meshgate.metrics import ControlPlaneMetrics
from meshgate.model.references import unresolved_message
from meshgate.plan import Action, Reload, plan
from meshgate.store import (
    CompactedError,
    Delete,
    Put,
    Store,
    StoreClosedError,
    StoreError,
    WatchEvent,
)
from meshgate.store import Key as StoreKey
from meshgate.store.snapshot import ProgressWatchStore, SnapshotStore

log = structlog.get_logger("meshgate.agent")
WATCHED_KINDS = ("gateways", "services", "instances", "certificates")
RESYNC_CHECK_S = 1.0  # how often to look for a HAProxy restarted by the supervisor
# How soon a gateway left out because another process held its port is tried again, without
# any change: the port may have been freed.
PORT_RETRY_S = 5.0
MAKE_WAY_POLL_S = 0.005  # how often background work waiting for a pass looks again
MAX_BATCH_S = 0.5  # a steady stream of writes still reaches HAProxy this often
# Status is built and written this many gateways at a time, the event loop free in between
# for a pass to go first (see `_make_way_for_passes`), at most this long each time.
STATUS_CHUNK = 100
STATUS_YIELD_S = 1.0
# A publication of status that follows another waits STATUS_REST times as long as the last
# one took, at most STATUS_REST_MAX_S: under steady instance churn at a thousand gateways,
# each change rewrote a thousand statuses back to back, a fifth of the node's CPU, which
# the changes themselves waited for. A lone change after a quiet spell is published at once.
STATUS_REST = 2.0
STATUS_REST_MAX_S = 1.0
# After a reload with at least this many gateways, what is alive is frozen (see
# `_freeze_survivors`).
FREEZE_ABOVE = 1000
# How long a watch broken by a compaction waits for the re-list it resumes after; past that
# it resumes from the current revision (the pass that lists may be failing).
RELIST_WAIT_S = 10.0


class Agent:
    def __init__(
        self,
        store: Store,
        driver: Driver,
        metrics: ControlPlaneMetrics,
        *,
        debounce_s: float = 0.03,
        health: InstanceHealth | None = None,
        status_prefix: str = "status",
        relist_s: float | None = None,
        status_batch: int | None = None,
        events: EventLog | None = None,
    ) -> None:
        self.store = store
        # Where status goes: `{status_prefix}.gateways` etc.; one prefix per node when many
        # nodes share a store.
        self.status_prefix = status_prefix
        # A pass at least this often without any event: etcd 3.4 can lose watch events
        # around a compaction; a pass that finds nothing changed does nothing.
        self.relist_s = relist_s
        # Status writes in transactions of at most this many keys (etcd refuses more than its
        # --max-txn-ops); None: one transaction. Status needs no atomicity across resources.
        self.status_batch = status_batch
        self.loader = DesiredLoader(store)
        self.driver = driver
        self.metrics = metrics
        self.debounce_s = debounce_s
        self._dirty = asyncio.Event()
        # What was written under each status key (`Published`: a digest, not the status).
        self._published: dict[StoreKey, Published] = {}
        # What each gateway's published status was made from, and the resources the published
        # keys were last swept against (see `_status_ops`, `_stale_ops`).
        self._gateway_written: dict[Key, _Written] = {}
        # The gateways whose status may differ from what was written (their version, result
        # or rejection changed since); None: any may. A pass among 10,000 gateways then looks
        # at the status of the few it changed, not of all of them.
        self._unpublished: set[Key] | None = None
        # The same, gathered by passes that have not ended yet. They join `_unpublished` when
        # their pass becomes `_last`: a publication under way meanwhile writes the status of
        # the pass before, and must not use up the gateways this one changed.
        self._pass_changes: set[Key] | None = set()
        self._next_publish_at = 0.0  # event loop time: see STATUS_REST
        # The watch's events since the last pass's load, the newest per key; None when some may
        # have been missed (history compacted, the watch broken, a re-list due): then the next
        # load lists everything.
        self._changed: dict[StoreKey, WatchEvent] | None = None
        self._swept: tuple[frozenset[Any], ...] | None = None
        self.last_error: str | None = None
        self.passes = 0
        # The store revision the watch had reached, and the one the last applied pass had
        # read at least up to (what a node reports as applied).
        self.seen_revision = 0
        self.applied_revision = 0
        # What a node reports, like Envoy's ACK/NACK: the hash of what HAProxy was given
        # (when `hash_config`), when the node last knew it ran the store's state as of
        # `applied_revision` (`current_at`), and the last pass: the revision it read and its
        # error (None when it was applied). Wall-clock times, for other hosts to read.
        self.hash_config = False
        self.applied_hash: str | None = None
        self.current_at: float | None = None
        self.attempted_revision = 0
        self.attempted_at: float | None = None
        self._event_revision = 0  # of the newest event the watch delivered
        self._relisted: asyncio.Future[int] | None = None
        self.healthy = False
        # "namespace/name" of each gateway the last pass left out, with why; and how many there
        # are in all: what readiness reports.
        self.not_serving: dict[str, str] = {}
        self.gateway_count = 0
        self.health = health
        self.events = events if events is not None else EventLog()
        self._failure_recorded: str | None = None
        self._last: tuple[Loaded, Compiled, Mapping[Key, str]] | None = None
        self._memo = CompileMemo()
        self._last_pass_end = -float("inf")
        self._waiting_for_ports = False  # the last pass left a gateway out for a busy port
        self._passing = False  # a pass (or the quiet period before it) is under way
        # Status is published after a pass and when instance health changes; one at a time,
        # so an older view can never be written over a newer one.
        self._publishing = asyncio.Lock()
        self._publish_due = False  # the last status write failed
        # A pass is under way and has not yet reached its status: status writes wait for it.
        self._ahead = False
        # Publishing the last pass's status in the background (see `_publish_soon`).
        self._publisher: asyncio.Task[None] | None = None
        self._publish_wanted = False
        # Publishing status once the background server changes are done (see `reconcile`).
        self._settler: asyncio.Task[None] | None = None
        self._settling_revision = 0

    async def run(self) -> None:
        """Reconcile now and on every change, until cancelled."""
        for kind in ("gateways", "services", "certificates"):
            for record in await self.store.list(self._status_kind(kind)):
                self._published[record.key] = Published(record.value)
        watcher = asyncio.create_task(self._watch())
        try:
            self._dirty.set()
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._dirty.wait(), RESYNC_CHECK_S)
                if self._relist_due():
                    self._dirty.set()
                if self._publish_due and not self._dirty.is_set():
                    self._publish_due = False
                    self._publish_soon()
                if not (
                    self._dirty.is_set() or self.driver.resync_needed() or self._port_retry_due()
                ):
                    continue
                self._passing = self._ahead = True
                try:
                    # One pause of the garbage collector for the whole pass, from a first try
                    # at run time to the end: with 100,000 gateways, each time it was enabled
                    # in between, a collection walked the millions of objects the pass had
                    # made (2-3 s each, five of them after the first apply). The one
                    # collection of a pass runs after it (`_freeze_survivors` after a reload).
                    with collector_paused():
                        # At once, in the middle of a burst too: a pass takes whatever was
                        # written while the last one ran, and a weight change written during
                        # instance churn must not wait out the debounce behind it. Only what
                        # needs a reload waits for the burst to end.
                        if self._dirty.is_set():
                            self._dirty.clear()
                            if await self.reconcile(runtime_only=True):
                                continue
                        await self._quiet_period()
                        await self.reconcile()
                finally:
                    self._passing = self._ahead = False
        finally:
            for task in (watcher, self._settler, self._publisher):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    def acknowledgement(self) -> dict[str, Any]:
        """What this node runs and what it refused, as its heartbeat reports it."""
        return {
            "applied_revision": self.applied_revision,
            "applied_hash": self.applied_hash,
            "current_at": None if self.current_at is None else round(self.current_at, 3),
            "attempted_revision": self.attempted_revision,
            "error": self.last_error,
        }

    def busy(self) -> bool:
        """A change is on its way to HAProxy, or about to be."""
        return self._passing or self._dirty.is_set() or self.driver.churning()

    async def make_way(self, limit_s: float = 0.5) -> None:
        """Return once no change is on its way, or after `limit_s`: background work that holds
        the event loop for a while (a stats poll of a thousand gateways takes tens of
        milliseconds) waits here, so that it does not hold up a change. The limit keeps a
        steady stream of writes from starving it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while self.busy() and loop.time() < deadline:
            await asyncio.sleep(MAKE_WAY_POLL_S)

    def request_pass(self) -> None:
        """Reconcile soon, although the store did not change (a DNS answer did)."""
        self._dirty.set()

    async def republish(self) -> None:
        """Publish status again without reconciling: an instance's health changed. While
        server changes are on their way, the status waits for them (`_publish_when_settled`):
        a publication put off this way is never dropped, whatever started the changes."""
        if self._last is None:
            return
        if self.driver.churning():
            self._publish_when_settled(self._settling_revision)
            return
        async with self._publishing:
            await self._publish(*self._last)

    def _relist_due(self) -> bool:
        return (
            self.relist_s is not None
            and asyncio.get_running_loop().time() - self._last_pass_end >= self.relist_s
        )

    def _port_retry_due(self) -> bool:
        return (
            self._waiting_for_ports
            and asyncio.get_running_loop().time() - self._last_pass_end >= PORT_RETRY_S
        )

    async def _quiet_period(self) -> None:
        """Wait until writes pause for `debounce_s` (at most MAX_BATCH_S), so that a burst of
        changes is applied in one pass and costs at most one reload."""
        deadline = asyncio.get_running_loop().time() + MAX_BATCH_S
        while True:
            self._dirty.clear()
            await asyncio.sleep(self.debounce_s)
            if not self._dirty.is_set() or asyncio.get_running_loop().time() > deadline:
                self._dirty.clear()
                return

    async def _watch(self) -> None:
        revision: int | None = None
        lost = False
        while True:
            try:
                if revision is None and lost and isinstance(self.store, SnapshotStore):
                    # History was compacted away: the next pass lists everything at one
                    # revision (and changes nothing if that compiles to what runs); the watch
                    # goes on from the revision after it.
                    revision, lost = await self._after_relist(), False
                elif revision is None:
                    revision = self.seen_revision = await self.store.revision()
                    # What was written before this revision is seen by listing: the next
                    # load lists everything, and the loads after it follow the watch.
                    self._changed = None
                if lost:
                    lost = False
                    self._dirty.set()
                async for event in self._events(revision):
                    revision = self.seen_revision = self._event_revision = event.revision
                    if self._changed is not None:
                        self._changed[event.key] = kept(event)
                    self._dirty.set()
            except StoreClosedError:
                return
            except CompactedError as exc:
                log.warning("store history compacted; listing afresh", error=str(exc))
                revision, lost, self._changed = None, True, None
            except StoreError as exc:
                log.warning("store watch failed; watching again", error=str(exc))
                self._changed = None
                await asyncio.sleep(1.0)

    def _events(self, revision: int) -> AsyncIterator[WatchEvent]:
        if isinstance(self.store, ProgressWatchStore):
            return self.store.watch_with_progress(revision, WATCHED_KINDS, self._progressed)
        return self.store.watch(revision, kinds=WATCHED_KINDS)

    def _progressed(self, revision: int) -> None:
        """The store says the watch has sent every change up to `revision`. With nothing
        on its way and the last pass applied, what runs is the store's state as of then:
        a quiet node's applied revision keeps up with the store's."""
        self.seen_revision = max(self.seen_revision, revision)
        if (
            not self.busy()
            and self.healthy
            and self.attempted_revision >= self._event_revision
            and self.applied_revision >= self._event_revision
        ):
            self.applied_revision = max(self.applied_revision, revision)
            self.current_at = time.time()

    async def _after_relist(self) -> int:
        """The revision the next pass lists at, once it has listed."""
        self._relisted = asyncio.get_running_loop().create_future()
        self._dirty.set()
        try:
            return await asyncio.wait_for(asyncio.shield(self._relisted), RELIST_WAIT_S)
        except TimeoutError:
            log.warning("no listing after the compaction yet; watching from now")
            self._relisted = None
            return await self.store.revision()

    async def reconcile(self, *, runtime_only: bool = False) -> bool:
        """One pass; with `runtime_only`, only if it needs no reload. Returns False when it
        left the pass for later for that reason. Never raises for a bad resource; logs and
        reports instead."""
        seen = self.seen_revision
        started_at = time.time()
        try:
            with self.metrics.reconcile_seconds.time(), collector_paused():
                started = time.monotonic()
                loaded = await self._load()
                self._may_have_changed(loaded.changed_gateways)
                read = time.monotonic()
                if loaded.revision is not None:
                    seen = loaded.revision  # the one revision everything was read at
                    if self._relisted is not None and not self._relisted.done():
                        self._relisted.set_result(seen)
                candidate = await self._compile(loaded.state, runtime_only=runtime_only)
                if candidate is None:
                    return False
                planned = time.monotonic()
                outcome, candidate = await self._apply(candidate)
                compiled, rejected = candidate.compiled, candidate.rejected
        except MeshgateError as exc:
            self.attempted_revision, self.attempted_at = seen, started_at
            self.last_error = str(exc)
            self.healthy = False
            self.metrics.reconciles.labels("failed").inc()
            log.error("reconcile failed", error=str(exc))
            if self.last_error != self._failure_recorded:
                # A failure repeated pass after pass is one event, not one a second.
                self._failure_recorded = self.last_error
                self.events.record("reconcile_failed", str(exc))
            return True
        finally:
            self._last_pass_end = asyncio.get_running_loop().time()
        self.passes += 1
        # Set here and on failure, not when a pass is left for after the quiet period: the
        # report changes (and is written) once per pass.
        self.attempted_revision, self.attempted_at = seen, started_at
        settling = self.driver.churning()  # server changes still going in behind the pass
        if not settling:
            self.applied_revision = max(self.applied_revision, seen)
            self.current_at = started_at
        if self.hash_config and (outcome.reason != "no change" or self.applied_hash is None):
            self.applied_hash = await self.driver.config_hash()
        self.healthy = True
        self.last_error = self._failure_recorded = None
        self.metrics.reconciles.labels(
            "applied" if outcome.reason != "no change" else "unchanged"
        ).inc()
        if outcome.reloaded:
            self.metrics.reloads.inc()
            self.events.record("reload", f"HAProxy reloaded: {outcome.reason}")
        self.metrics.runtime_commands.inc(outcome.runtime_commands)
        if outcome.reason != "no change":
            log.info(
                f"revision {_revision(loaded)} applied",
                how=outcome.reason,
                seconds=round(outcome.duration_s, 4),
                runtime_seconds=round(outcome.runtime_s, 4),
                # Before the apply: reading the store, and compiling and planning.
                read_seconds=round(read - started, 4),
                compile_seconds=round(planned - read, 4),
            )
        self._log_rejections(rejected)
        if rejected or (self._last is not None and self._last[2]):
            self._may_have_changed(None)  # a rejection's status names the port's holder
        self._last = (loaded, compiled, rejected)
        self._passed_on_changes()
        self._ahead = False  # what follows (status) waits for the next pass, not it for them
        if settling:
            # Server changes are still on their way to HAProxy: status says "applied" once
            # they are there, while the loop goes on (a weight change does not wait for it).
            self._publish_when_settled(seen)
            return True
        # In the background too: a thousand gateways' status takes tens of milliseconds to
        # build and write, and the next change (a weight) goes to HAProxy first.
        self._publish_soon()
        if outcome.reloaded and len(loaded.gateway_versions) >= FREEZE_ABOVE:
            _freeze_survivors()
        return True

    def _publish_soon(self) -> None:
        """Publish the last pass's status in the background; once for any number of passes
        that end while it is being written, with the newest of them."""
        self._publish_wanted = True
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.get_running_loop().create_task(self._publish_wanted_now())

    async def _publish_wanted_now(self) -> None:
        while self._publish_wanted:
            await self._rest_after_publishing()
            self._publish_wanted = False
            try:
                await self._timed_republish()
            except StoreClosedError:
                return

    async def _rest_after_publishing(self) -> None:
        rest = self._next_publish_at - asyncio.get_running_loop().time()
        if rest > 0:
            await asyncio.sleep(rest)

    async def _timed_republish(self) -> None:
        """`republish`, and when the next publication may begin (see STATUS_REST)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await self.republish()
        finally:
            ended = loop.time()
            self._next_publish_at = ended + min(STATUS_REST * (ended - started), STATUS_REST_MAX_S)

    async def _make_way_for_passes(self) -> None:
        """Between two chunks of status: let the event loop go to other work, and when a pass
        is due or under way (a weight change, say), wait until it has applied its change,
        for at most STATUS_YIELD_S (a steady stream of passes must not starve the status)."""
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STATUS_YIELD_S
        while (self._dirty.is_set() or self._ahead) and loop.time() < deadline:
            await asyncio.sleep(MAKE_WAY_POLL_S)

    def _publish_when_settled(self, revision: int) -> None:
        self._settling_revision = max(self._settling_revision, revision)
        if self._settler is None or self._settler.done():
            self._settler = asyncio.get_running_loop().create_task(self._settle_and_publish())

    async def _settle_and_publish(self) -> None:
        """Once the server changes are in, say so and publish; again for a pass that ended
        meanwhile (its `_publish_when_settled` found this task running), or its status would
        wait for the next change."""
        published = -1
        while published < self._settling_revision:
            await self._rest_after_publishing()
            while self.driver.churning():
                await self.driver.churn_drained()
            published = self._settling_revision
            self.applied_revision = max(self.applied_revision, published)
            self.current_at = time.time()
            try:
                await self._timed_republish()
            except StoreClosedError:
                return

    def _log_rejections(self, rejected: Mapping[Key, str]) -> None:
        """One line when a gateway is left out, and one when it is back: not one per pass."""
        before = self._last[2] if self._last is not None else {}
        for key, reason in rejected.items():
            if before.get(key) != reason:
                log.warning("gateway rejected", gateway=f"{key[0]}/{key[1]}", reason=reason)
        for key in before.keys() - rejected.keys():
            log.info("gateway no longer rejected", gateway=f"{key[0]}/{key[1]}")

    async def _publish(
        self, loaded: Loaded, compiled: Compiled, rejected: Mapping[Key, str]
    ) -> None:
        """Write what changed in the status; when the store cannot take it now (a shared store
        that is down), keep serving and write it all again on the next check. Built and
        written in chunks, each written before the next is built, making way for passes in
        between (`_make_way_for_passes`): the status of 100,000 gateways built whole before
        the first write was 240 MB of short-lived objects at once, whose holes in Python's
        arenas stayed resident after."""
        versions = loaded.gateway_versions
        candidates, self._unpublished = self._unpublished, set()
        if candidates is None:
            keys = list(versions.items())
        else:
            keys = [(key, versions[key]) for key in candidates if key in versions]
        written = 0
        try:
            for start in range(0, len(keys), STATUS_CHUNK):
                if start:
                    await self._make_way_for_passes()
                chunk = keys[start : start + STATUS_CHUNK]
                written += await self._write(self._gateway_ops(chunk, compiled, rejected))
            written += await self._write(self._other_ops(loaded, compiled, candidates))
        except StoreError as exc:
            if isinstance(exc, StoreClosedError):
                raise
            log.warning("status not written; will retry", error=str(exc))
            # What landed is unknown: what was built is written again, deletes stay due; and
            # every gateway is looked at again, those not reached yet included.
            self._gateway_written.clear()
            self._unpublished = None
            self._swept = None
            self._publish_due = True
            return
        trim_after(written)  # the status of a large pass: its bodies are freed now

    async def _write(self, ops: list[Put | Delete]) -> int:
        """Commit status writes in batches of at most `status_batch`; returns how many. On a
        store error, the ones not known to have landed are marked for writing again."""
        if not ops:
            return 0
        size = min(self.status_batch or len(ops), STATUS_CHUNK)
        try:
            for start in range(0, len(ops), size):
                if start:
                    await self._make_way_for_passes()
                await self.store.commit(ops[start : start + size])
                self.metrics.status_writes.inc(len(ops[start : start + size]))
        except StoreError:
            for op in ops:
                if isinstance(op, Put):
                    self._published.pop(op.key, None)
                else:
                    self._published[op.key] = UNKNOWN
            raise
        return len(ops)

    async def _load(self) -> Loaded:
        """What the store holds now: from the keys the watch saw written since the last load
        when it saw them all, else listed afresh (the first pass, after a lost watch, and at
        each re-list, which also covers events a store might drop)."""
        # Every event up to `seen_revision` is in `changed`: the watch hands over a
        # transaction's events without yielding to another task between them.
        changed, self._changed, through = self._changed, {}, self.seen_revision
        if self._relist_due():
            changed = None
        return await self.loader.load(changed, through=through)

    async def _compile(
        self, state: DesiredState, *, runtime_only: bool = False
    ) -> _Candidate | None:
        """Compile and plan, leaving out gateways whose port another process holds. With
        `runtime_only`, None when the pass needs a reload (or HAProxy was restarted): it is
        left for after the quiet period. Nothing is checked here: a reload's one `haproxy -c`
        is the supervisor's, on the very file HAProxy then loads (see `_apply`)."""
        settings = self.driver.settings()
        made = self._memo.made
        compiled = self._compiled(state, settings)
        self.metrics.gateways_compiled.inc(self._memo.made - made)
        running = self.driver.running
        actions = plan(running, compiled.dataplane)
        if runtime_only and (_reloads(actions) or self.driver.resync_needed()):
            return None
        if not _reloads(actions):
            # Runtime changes keep the configuration's structure, which HAProxy accepted, and
            # every gateway is in: none is left out for a busy port.
            self._waiting_for_ports = False
            return _Candidate(state, compiled, {}, actions)
        rejected: dict[Key, str] = {}
        adopted = self.driver.supervisor.adopted_listeners() if running is None else set()
        busy = ports_in_use(compiled.dataplane, running, adopted)
        self._waiting_for_ports = bool(busy)
        if busy:
            for frontend in compiled.dataplane.frontends:
                for gateway_rules in frontend.gateways if frontend.name in busy else ():
                    rejected[(gateway_rules.namespace, gateway_rules.name)] = busy[frontend.name]
            kept = [g for g in state.gateways if (g.namespace, g.name) not in rejected]
            state = dataclasses.replace(state, gateways=kept)
            compiled = self._compiled(state, settings)
            actions = plan(running, compiled.dataplane)
        return _Candidate(state, compiled, rejected, actions)

    def _compiled(self, state: DesiredState, settings: ir.Settings) -> Compiled:
        compiled = compile_state(state, settings, self._memo)
        self._may_have_changed(compiled.changed)
        return compiled

    def _may_have_changed(self, gateways: frozenset[Key] | None) -> None:
        """These gateways' status may have to be written again once this pass has ended
        (None: any gateway's). A pass that fails or is left for later keeps them for the next."""
        if gateways is None:
            self._pass_changes = None
        elif self._pass_changes is not None:
            self._pass_changes |= gateways

    def _passed_on_changes(self) -> None:
        """The pass that gathered `_pass_changes` is `_last` now: its publication looks at them."""
        if self._pass_changes is None:
            self._unpublished = None
        elif self._unpublished is not None:
            self._unpublished |= self._pass_changes
        self._pass_changes = set()

    async def _apply(self, candidate: _Candidate) -> tuple[Outcome, _Candidate]:
        """Apply the candidate. When HAProxy's check of it fails (nothing reached HAProxy),
        find the gateways it rejects by halves, leave them out, and apply the rest: one bad
        gateway never blocks the others. Returns what was applied."""
        try:
            outcome = await self.driver.apply(candidate.compiled.dataplane, candidate.actions)
        except ConfigRejected as exc:
            if exc.timed_out:
                # No verdict on anything: looking for the culprit would take as long again,
                # for each group checked.
                raise MeshgateError(f"HAProxy's check of the configuration: {exc.output}") from None
            state, settings = candidate.state, self.driver.settings()
            culprits = await rejected_by_haproxy(self.driver.check, state, settings, state.gateways)
            if not culprits:
                raise MeshgateError(
                    f"HAProxy rejected the configuration: {last_alert(exc.output)}"
                ) from None
            kept = [g for g in state.gateways if (g.namespace, g.name) not in culprits]
            state = dataclasses.replace(state, gateways=kept)
            compiled = self._compiled(state, settings)
            actions = plan(self.driver.running, compiled.dataplane)
            candidate = _Candidate(state, compiled, {**candidate.rejected, **culprits}, actions)
            try:
                outcome = await self.driver.apply(compiled.dataplane, actions)
            except ConfigRejected as again:
                raise MeshgateError(
                    f"HAProxy rejected the configuration: {last_alert(again.output)}"
                ) from None
        self.metrics.rejected.inc(len(candidate.rejected))
        return outcome, candidate

    def _status_ops(
        self, loaded: Loaded, compiled: Compiled, rejected: Mapping[Key, str]
    ) -> list[Put | Delete]:
        """The writes that bring the published status up to date (only what changed).

        A gateway whose version, compiled result (the compiler reuses the same object for an
        unchanged gateway) and rejection are those of the last write is skipped after a few
        identity checks: with 10,000 gateways, building and comparing every status on every
        pass cost more than the change being published."""
        ops = self._gateway_ops(loaded.gateway_versions.items(), compiled, rejected)
        return ops + self._other_ops(loaded, compiled)

    def _gateway_ops(
        self,
        versions: Iterable[tuple[Key, int]],
        compiled: Compiled,
        rejected: Mapping[Key, str],
    ) -> list[Put | Delete]:
        """The writes of these gateways' status (see `_status_ops`)."""
        ops: list[Put | Delete] = []
        gateway_kind = self._status_kind("gateways")
        written = self._gateway_written
        results = compiled.gateways
        for key, version in versions:
            last = written.get(key)
            result = results.get(key)
            reason = rejected.get(key) if rejected else None
            if (
                last is not None
                and (last.result is result or last.result == result)
                and last.version == version
                and last.reason == reason
            ):
                continue
            store_key = last.store_key if last is not None else StoreKey(gateway_kind, *key)
            status = self._gateway_status(key, version, result, reason, store_key)
            ops += self._status_op(store_key, status)
            why = _not_serving(status)
            written[key] = _Written(version, result, reason, store_key, why)
            if why:
                self.not_serving["/".join(key)] = why
            else:
                self.not_serving.pop("/".join(key), None)
        return ops

    def _other_ops(
        self, loaded: Loaded, compiled: Compiled, changed: Collection[Key] | None = None
    ) -> list[Put | Delete]:
        """After the gateways' (`_gateway_ops`): the status of services and certificates,
        and the deletes of what is gone. `changed`: the gateways that may differ since the
        last time (None: any)."""
        ops: list[Put | Delete] = []
        written = self._gateway_written
        if len(written) != len(loaded.gateway_versions):
            for gone in written.keys() - loaded.gateway_versions.keys():
                del written[gone]
                self.not_serving.pop("/".join(gone), None)
        if self.health is not None:
            self.health.update(
                loaded.state.services, loaded.state.registered, loaded.sources, compiled, changed
            )
        for key, version in loaded.service_versions.items():
            service_status: dict[str, Any] = {"applied_version": version}
            if self.health is not None:
                service_status.update(self.health.status(key))
            store_key = StoreKey(self._status_kind("services"), *key)
            self._record_outcome("service", key, self._published.get(store_key), service_status)
            ops += self._status_op(store_key, service_status)
        users = _certificate_users(loaded) if loaded.certificate_versions else {}
        for key, version in loaded.certificate_versions.items():
            status = {"applied_version": version, "used_by": users.get(key, [])}
            store_key = StoreKey(self._status_kind("certificates"), *key)
            self._record_outcome("certificate", key, self._published.get(store_key), status)
            ops += self._status_op(store_key, status)
        self.metrics.set_certificate_expiry(loaded.state.certificates)
        for (kind, namespace, name), message in loaded.invalid.items():
            ops += self._status_op(
                StoreKey(self._status_kind(kind), namespace, name),
                {"state": "invalid", "errors": [message]},
            )
        ops += self._stale_ops(loaded)
        not_serving = self.not_serving  # kept up to date by `_gateway_ops`
        self.gateway_count = len(loaded.gateway_versions)
        served = len(loaded.gateway_versions) - len(not_serving)
        self.metrics.gateways.labels("serving").set(served)
        self.metrics.gateways.labels("rejected").set(len(not_serving))
        return ops

    def _gateway_status(
        self,
        key: Key,
        version: int,
        result: GatewayResult | None,
        reason: str | None,
        store_key: StoreKey,
    ) -> dict[str, Any]:
        errors = list(result.errors) if result else []
        if reason is not None:
            errors.append(reason)
        status: dict[str, Any] = {"errors": errors, "observed_version": version}
        previous = self._published.get(store_key, UNKNOWN)
        if errors:
            status["state"] = "rejected"
            status["applied_version"] = previous.get("applied_version")
        else:
            unresolved = unresolved_targets(key[0], result)
            # Served, but a route leads nowhere: say so rather than plain "serving".
            status["state"] = "degraded" if unresolved else "serving"
            status["errors"] = unresolved
            status["applied_version"] = version
            status["routes"] = {
                name: {
                    "target": r.target,
                    "kind": r.kind,
                    "instances": r.instances,
                    "backend": r.backend,
                }
                for name, r in (result.routes.items() if result else ())
            }
        self._record_outcome("gateway", key, previous, status)
        return status

    def _stale_ops(self, loaded: Loaded) -> list[Put | Delete]:
        """Deletes of the status of resources that are gone. The published keys are swept only
        when the set of resources differs from the last sweep's (or a write failed)."""
        live_now = (
            frozenset(loaded.gateway_versions),
            frozenset(loaded.service_versions),
            frozenset(loaded.certificate_versions),
            frozenset(loaded.invalid),
        )
        if live_now == self._swept:
            return []
        gateways, services, certificates, invalid = live_now
        alive = {
            self._status_kind("gateways"): gateways,
            self._status_kind("services"): services,
            self._status_kind("certificates"): certificates,
        }
        invalid_keys = {StoreKey(self._status_kind(k), ns, n) for k, ns, n in invalid}
        ops: list[Put | Delete] = []
        for stale in [
            k
            for k in self._published
            if (k.namespace, k.name) not in alive.get(k.kind, ()) and k not in invalid_keys
        ]:
            ops.append(Delete(stale))
            del self._published[stale]
        self._swept = live_now
        return ops

    def _status_kind(self, kind: str) -> str:
        return f"{self.status_prefix}.{kind}"

    def _record_outcome(
        self, kind: str, key: Key, previous: Published | None, status: dict[str, Any]
    ) -> None:
        """An event when a resource's new version reaches the data plane, is rejected, or
        routes to something that does not exist."""
        previous = previous or UNKNOWN
        namespace, name = key
        where = {"kind": kind, "namespace": namespace, "name": name}
        version = status.get("applied_version")
        errors = status.get("errors") or []
        if status.get("state") == "rejected":
            if errors != previous.get("errors"):
                self.events.record("rejected", "; ".join(errors), **where)
            return
        if version is not None and version != previous.get("applied_version"):
            self.events.record("applied", f"version {version} is live", **where)
        if errors and errors != previous.get("errors"):
            self.events.record("warning", "; ".join(errors), **where)

    def _status_op(self, key: StoreKey, status: dict[str, Any]) -> list[Put | Delete]:
        published = self._published.get(key)
        made = Published(status)  # its digest once, compared and kept
        if published is not None and published.digest == made.digest:
            return []
        self._published[key] = made
        return [Put(key, status)]


def unresolved_targets(namespace: str, result: GatewayResult | None) -> list[str]:
    """A message for each route whose target is neither a service nor a gateway of the
    gateway's namespace (SPEC §1 rule 5: it gets no traffic, and the status says why)."""
    return [
        unresolved_message(name, route.target, namespace)
        for name, route in (result.routes.items() if result else ())
        if route.kind == "unresolved"
    ]


def _reloads(actions: list[Action]) -> bool:
    """Whether a plan reloads HAProxy (it always does with nothing running yet)."""
    return any(isinstance(action, Reload) for action in actions)


def _freeze_survivors() -> None:
    """Collect once, then leave every object alive now out of later collections.

    A full collection walks every tracked object: with 10,000 gateways in memory that took
    0.4-1.5 s, and it came back at random every few changes, on the event loop that applies
    them (the worst weight changes of a run). What a pass that reloaded leaves alive is the
    node's state (models, compiled data plane), long-lived and without reference cycles; once
    frozen it is still freed by reference counting when replaced, but no longer walked."""
    gc.collect()
    gc.freeze()


def _certificate_users(loaded: Loaded) -> dict[Key, list[str]]:
    """Which gateways serve each certificate and which services trust it as their CA: one
    walk over the gateways for all certificates."""
    users: dict[Key, list[str]] = {}
    for g in loaded.state.gateways:
        for name in dict.fromkeys(g.tls.certificates) if g.tls else ():
            users.setdefault((g.namespace, name), []).append(f"gateway {g.name}")
    for s in loaded.state.services:
        if s.tls and s.tls.ca:
            users.setdefault((s.namespace, s.tls.ca), []).append(f"service {s.name}")
    return users


@dataclass(frozen=True)
class _Candidate:
    """What a pass would apply: the state it compiled (without the gateways left out), the
    compiled data plane, the gateways left out with why, and the plan."""

    state: DesiredState
    compiled: Compiled
    rejected: dict[Key, str]
    actions: list[Action]


@dataclass(frozen=True)
class _Written:
    """What a gateway's published status was made from, to tell whether it needs writing."""

    version: int
    result: GatewayResult | None
    reason: str | None
    store_key: StoreKey
    not_serving: str  # why it is not served ("" when it is)


def _not_serving(status: Mapping[str, Any]) -> str:
    return "; ".join(status["errors"]) if status["state"] == "rejected" else ""


def _revision(loaded: Loaded) -> int:
    """The newest version among the resources a pass applied: what `get` shows as `version`."""
    versions = (loaded.gateway_versions, loaded.service_versions, loaded.certificate_versions)
    return max((v for found in versions for v in found.values()), default=0)
