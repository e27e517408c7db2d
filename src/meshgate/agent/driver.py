"""Bringing HAProxy to a desired data plane: runtime commands, or a reload checked once.

The running configuration is never replaced by one HAProxy rejects. A change that needs a
reload is written into the run directory and checked there, once: the supervisor runs
`haproxy -c` on the staged copy of the configuration that the master then loads, so what was
checked is what runs. When the check fails nothing reaches HAProxy, and the run directory is
brought back to the files of what runs, for a restart to find them. (`check` renders into a
scratch directory instead: it is for the search of the gateways at fault, after a failure.)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from meshgate.agent import availability
from meshgate.agent.checkers import CheckerServers, Tracked
from meshgate.agent.files import RunFiles, write_files
from meshgate.agent.lanes import Lane, LatestLane
from meshgate.compiler import CONFIG_FILE, dispatch, ir, naming, render_files
from meshgate.compiler.render import MAPS_DIR
from meshgate.compiler.rules import FAIL_FAST_ERRORS
from meshgate.compiler.tls_text import CERTS_DIR
from meshgate.errors import MeshgateError
from meshgate.haproxy import bulk, commands, replies
from meshgate.haproxy.commands import CheckExtras, ServerAdminState
from meshgate.haproxy.replies import CommandKind, RuntimeCommandFailed
from meshgate.haproxy.runtime import RuntimeClient
from meshgate.haproxy.server_states import ServerAdminFlags
from meshgate.haproxy.supervisor import CHECK_TIMED_OUT, ConfigRejected, HaproxySupervisor
from meshgate.plan import (
    Action,
    AddCertificate,
    AddCrtListEntry,
    AddServer,
    DeleteMapEntries,
    Reload,
    RemoveServer,
    ReplaceMap,
    RuntimeAction,
    SetMapEntries,
    SetServerWeight,
    UpdateCaFile,
    UpdateCertificate,
)

log = structlog.get_logger("meshgate.agent")
# How long a departing instance may finish the requests it has before it is cut off.
DRAIN_TIMEOUT_S = 5.0
# Server additions (or map entries) sent to HAProxy at once: enough to hide the socket round
# trips, and well under the ten connections the master CLI accepts at a time (16 got
# connections reset), which the stats poller shares.
ADD_CONCURRENCY = 4
# How long deletes of departing servers wait for additions under way, and how often they look.
MAKE_WAY_S = 1.0
MAKE_WAY_POLL_S = 0.005
# How far apart the files of runtime changes are written at least: they matter only to a later
# reload, restart or adoption, which wait for them or reload what they lack, and each write
# of a thousand changed backends holds the interpreter lock for tens of milliseconds.
WRITE_GAP_S = 1.0


@dataclass(frozen=True)
class Outcome:
    reloaded: bool
    runtime_commands: int
    duration_s: float
    reason: str
    runtime_s: float = 0.0  # of which the runtime commands, until HAProxy had the change


def check_extras(
    health: ir.HealthCheck, mode: str, *, fail_fast: bool = False
) -> CheckExtras | None:
    """The check keywords of `rules.server_options` beyond inter/rise/fall, for `add server`,
    so a server added at run time is checked exactly as the configuration file checks it."""
    observe_layer = (4 if mode == "tcp" else 7) if health.error_limit else None
    error_limit = health.error_limit
    if fail_fast and not health.error_limit:
        observe_layer, error_limit = 4, FAIL_FAST_ERRORS
    extras = CheckExtras(
        port=health.port if health.type != "agent" else None,
        agent_port=health.port if health.type == "agent" else None,
        agent_inter_ms=health.interval_ms if health.type == "agent" else None,
        observe_layer=observe_layer,
        error_limit=error_limit,
    )
    return None if extras == CheckExtras(error_limit=error_limit) else extras


_GROUPED = (AddServer, SetServerWeight, RemoveServer)


def _batches(actions: list[Action]) -> list[list[RuntimeAction]]:
    """Actions in order, consecutive server additions, weights or removals grouped (see
    `Driver._run_batch`)."""
    batches: list[list[RuntimeAction]] = []
    for action in actions:
        assert not isinstance(action, Reload)
        if isinstance(action, _GROUPED) and batches and type(batches[-1][0]) is type(action):
            batches[-1].append(action)
        else:
            batches.append([action])
    return batches


def _map_failure(reply: str) -> RuntimeCommandFailed | None:
    try:
        replies.check_reply(CommandKind.CHANGE_MAP, reply)
    except RuntimeCommandFailed as error:
        return error
    return None


def _refs(batch: Sequence[RuntimeAction]) -> set[bulk.ServerRef]:
    """The (backend, server) of each server addition or removal of a batch."""
    return {
        (a.backend, a.server.name if isinstance(a, AddServer) else a.server)
        for a in batch
        if isinstance(a, AddServer | RemoveServer)
    }


def _backend(dataplane: ir.DataPlane, name: str) -> ir.Backend | None:
    return next((b for b in dataplane.backends if b.name == name), None)


class Driver:
    def __init__(
        self,
        supervisor: HaproxySupervisor,
        runtime: RuntimeClient,
        settings: ir.Settings,
        *,
        background: bool = False,
    ) -> None:
        self.supervisor = supervisor
        self.background = background
        self._churn = Lane("server changes")
        # Departing servers wait for their requests to end (a tenth of a second at least)
        # before they are deleted: that wait runs here, beside the lane, so the next
        # instance's servers are not queued behind it (see `_run_batches`).
        self._removals = Lane("server removals")
        self._departing: dict[bulk.ServerRef, int] = {}  # handed to `_removals`, not yet gone
        # Lending a spare checker server and putting a freed one back in maintenance, from
        # either lane, one at a time: a spare freed and lent again at once must receive its
        # "maintenance" before its "ready".
        self._spares = asyncio.Lock()
        self._awaiting_removals = False  # the server lane waits for the removals lane
        self._writes = LatestLane(gap_s=WRITE_GAP_S)
        self.runtime = runtime
        self._settings = settings
        self.run_dir = Path(settings.run_dir)
        self._files = RunFiles(self.run_dir)
        self.running: ir.DataPlane | None = None
        self._restarts_seen = 0
        # HAProxy's server states as last polled, for dispatch.map (agent.availability); None
        # until the first poll: every route counts as usable, as HAProxy starts its servers.
        self._states: dict[tuple[str, str], str] | None = None
        self._dispatch_lock = asyncio.Lock()
        self._changed_at: dict[tuple[str, str], float] = {}  # streamed changes, when
        # Checker servers whose change was streamed, for the route servers tracking them to
        # follow at the next refresh (`_follow_checkers`).
        self._checker_changes: set[tuple[str, str]] = set()
        self._refreshing: asyncio.Task[None] | None = None
        self._refreshed: tuple[ir.DataPlane | None, frozenset[str]] = (None, frozenset())
        self._usable = availability.UsableRoutes()
        self._layouts = dispatch.Layouts()
        # The checker servers (compiler.checks) a server added at run time can track.
        self._checkers = CheckerServers()

    def settings(self) -> ir.Settings:
        return self._settings

    async def check(self, dataplane: ir.DataPlane) -> tuple[bool, str]:
        """Would HAProxy accept this data plane? Checked on a scratch copy of its files."""
        with tempfile.TemporaryDirectory(prefix="meshgate-check-") as scratch:
            candidate = dataclasses.replace(
                dataplane, settings=dataclasses.replace(dataplane.settings, run_dir=scratch)
            )
            # In a thread: at 100,000 gateways the configuration takes seconds to render.
            await asyncio.to_thread(lambda: write_files(Path(scratch), render_files(candidate)))
            result = await self.supervisor.validate(Path(scratch) / CONFIG_FILE)
            return result.ok, result.output

    def resync_needed(self) -> bool:
        """True when HAProxy was restarted behind our back (by the supervisor's watchdog), or
        a server change in the background failed (its state is uncertain).

        A restart loads the configuration of the last reload, which lacks what was changed at
        run time since; the next apply then reloads from the current files.
        """
        return self.supervisor.restarts != self._restarts_seen or self._lane_failure() is not None

    def _lane_failure(self) -> str | None:
        return self._churn.failure or self._removals.failure

    def churning(self) -> bool:
        """Server changes handed to the background lanes have not all reached HAProxy yet."""
        return self._churn.busy() or self._removals.busy()

    async def churn_drained(self) -> None:
        # The server lane hands removals on to the other: both, until neither has work.
        while self.churning():
            await self._churn.drained()
            await self._removals.drained()

    def settling(self) -> bool:
        """Server changes or the files of an earlier apply are still on their way."""
        return self.churning() or self._writes.busy()

    async def settled(self) -> None:
        """Return once the server changes and the files of every earlier apply are done; files
        the background could not write are written here (an error is raised)."""
        await self.churn_drained()
        await self._writes.drained()
        if self._writes.failure is not None and self.running is not None:
            await asyncio.to_thread(self._files.write, self.running)
            self._writes.failure = None

    async def stop_lanes(self, timeout: float) -> None:
        """Let the background finish (at most `timeout` seconds), so that the files match what
        HAProxy runs for a meshgate that adopts it later; then stop it."""
        with contextlib.suppress(TimeoutError, OSError, MeshgateError):
            async with asyncio.timeout(timeout):
                await self.settled()
        await self._churn.stop()
        await self._removals.stop()
        self._departing.clear()

    async def apply(self, desired: ir.DataPlane, actions: list[Action]) -> Outcome:
        """Make HAProxy run `desired`, which the caller has checked, by `actions`, which
        `plan(self.running, desired)` returned.

        dispatch.map is applied over the routes last seen usable (agent.availability), its
        changes made against the running map, whatever the plan said of it."""
        async with self._dispatch_lock:
            if self._states is not None:
                usable = self._usable.of(desired, self._states)
                # A server `desired` no longer has makes no route usable: a route whose last
                # server is leaving is out of the map before the server goes.
                desired = dispatch.with_usable(desired, usable, self._layouts)
                actions = availability.with_dispatch_actions(actions, self.running, desired)
            return await self._apply(desired, actions)

    async def refresh_dispatch(
        self, states: Mapping[tuple[str, str], str], taken_at: float | None = None
    ) -> None:
        """HAProxy's server states from a stats poll taken at `taken_at` (monotonic):
        `(backend, server)` -> UP, DOWN, MAINT. A state change streamed after the poll was
        taken (`server_changed`) is newer and stays. Then `refresh`."""
        merged = dict(states)
        if taken_at is not None and self._states is not None:
            for key, at in list(self._changed_at.items()):
                if at > taken_at and key in self._states:
                    merged[key] = self._states[key]
                else:
                    del self._changed_at[key]  # the poll has caught up with it
        self._usable.changed_between(self._states, merged)
        self._states = merged
        await self.refresh()

    def server_changed(self, key: tuple[str, str], status: str) -> None:
        """A state change HAProxy streamed (agent.state_log): dispatch.map follows at once,
        one refresh for a burst of them. A checker server's change is that of every route
        server tracking it, which streams none of its own (`checks.decides_own_states`)."""
        if self._states is None:
            self._states = {}
        self._seen(key, status)
        if key[0].startswith(naming.CHECKER_PREFIX):
            self._checker_changes.add(key)
        self._refresh_soon()

    def _seen(self, key: tuple[str, str], status: str) -> None:
        assert self._states is not None
        self._states[key] = status
        self._changed_at[key] = time.monotonic()
        self._usable.changed(key[0])

    def _refresh_soon(self) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(self.refresh())

    def _follow_checkers(self, running: ir.DataPlane) -> None:
        """The route servers tracking a checker server whose change was streamed take its
        state, as HAProxy gives it to them. One walk of the servers for a burst of changes:
        a checker's change is rare (an instance's health), where each route server's own
        line about it was 1,000 lines at 1,000 gateways."""
        if not self._checker_changes or self._states is None:
            return
        # Their state now, not as streamed: a poll since may have brought a newer one.
        states = self._states
        changed = {key: states[key] for key in self._checker_changes if key in states}
        self._checker_changes = set()
        for key, status in self._checkers.followers(running.backends, changed):
            self._seen(key, status)

    def _follow_on_addition(
        self, added: Sequence[AddServer], backends: dict[str, ir.Backend], tracked: Tracked
    ) -> None:
        """Route servers just added, tracking a checker server, are in its state from the
        start and stream no line of it: they take the checker's last state seen. The others
        (checking themselves) stream theirs."""
        if self._states is None:
            return
        seen = False
        for action in added:
            backend = backends.get(action.backend)
            target = self._checkers.target_of(tracked(backend, action.server)) if backend else None
            status = self._states.get(target) if target is not None else None
            if status is not None:
                self._seen((action.backend, action.server.name), status)
                seen = True
        if seen:
            self._refresh_soon()

    async def refresh(self) -> None:
        """Routes that gained or lost their last usable server enter or leave dispatch.map
        now, with a few `set map` / `del map`, no reload."""
        async with self._dispatch_lock:
            running = self.running
            if running is None or self._states is None or not self.supervisor.running:
                return
            self._follow_checkers(running)
            usable = self._usable.of(running, self._states)
            if running is self._refreshed[0] and usable == self._refreshed[1]:
                return  # every poll comes here: the map is not laid out again for nothing
            desired = dispatch.with_usable(running, usable, self._layouts)
            self._refreshed = (desired, usable)
            if desired is running:
                return
            actions = availability.dispatch_actions(running, desired)
            try:
                for action in actions:
                    assert not isinstance(action, Reload)
                    await self._run(action, desired)
            except MeshgateError as exc:
                # The map is now partly changed: the next pass tries again from what it was.
                log.warning("dispatch map update failed", error=str(exc))
                return
            self.running = desired
            self._writes.submit(functools.partial(asyncio.to_thread, self._files.write, desired))
            log.info("dispatch map follows route availability", actions=len(actions))

    async def _apply(self, desired: ir.DataPlane, actions: list[Action]) -> Outcome:
        """`apply`, once the dispatch map has the availability in it.

        With `background` (the agent's way), server additions, weights and removals go to a
        lane that runs them in order after this returns, and the files are written there too:
        map changes (route weights) are all that is done before returning, so the next apply
        — a weight changed meanwhile — never waits behind a thousand `add server`. A reload
        first waits for the lanes."""
        started = time.monotonic()
        if (
            self.running is None
            and self.supervisor.adopted
            and await asyncio.to_thread(self._files.hold, desired)
        ):
            # An adopted HAProxy runs what the files on disk say (the meshgate that left it
            # wrote them after each change), and they are what is wanted: nothing to do.
            self.running = desired
            self._restarts_seen = self.supervisor.restarts
            await asyncio.to_thread(self._checkers.loaded, desired.backends, spares=False)
            return Outcome(False, 0, time.monotonic() - started, "adopted, already running it")
        churn_failed = self._lane_failure()
        if self.running is not None and (not self.supervisor.running or self.resync_needed()):
            reason = "HAProxy was restarted or is not running"
            if churn_failed is not None and self.supervisor.running:
                reason = f"runtime change failed: {churn_failed}"
            actions = [Reload(reason)]
        if not actions:
            return Outcome(False, 0, time.monotonic() - started, "no change")
        reloads = [a for a in actions if isinstance(a, Reload)]
        commands = 0
        reason = reloads[0].reason if reloads else "changed at run time"
        if not reloads:
            try:
                commands = await self._run_actions(actions, desired)
            except MeshgateError as exc:
                # The runtime state is now uncertain; a reload from the files makes it exact.
                log.warning("runtime change failed, reloading", error=str(exc))
                reloads = [Reload(f"runtime change failed: {exc}")]
                reason = reloads[0].reason
        runtime_s = time.monotonic() - started
        if not reloads and self.background:
            # The files follow in the background; a reload or a restart waits for them.
            self._writes.submit(functools.partial(asyncio.to_thread, self._files.write, desired))
            self.running = desired
            return Outcome(False, commands, time.monotonic() - started, reason, runtime_s)
        # Runtime commands go first, so rendering thousands of gateways does not delay them;
        # the files follow at once, so any later reload or restart reproduces `desired`. The
        # rendering runs in a thread (the IR is immutable), so that the API and the stats
        # poller, which share this event loop, are not held up by it.
        await self.settled()
        if reloads and self.running is None and self.supervisor.running:
            # An adopted HAProxy, whose data plane we do not hold: its files could not be put
            # back after a failed check, so this one change is checked before they are touched.
            ok, output = await self.check(desired)
            if not ok:
                raise ConfigRejected(output, timed_out=CHECK_TIMED_OUT in output)
        await asyncio.to_thread(self._files.write, desired)
        if reloads:
            try:
                await self._reload()
            except ConfigRejected:
                if self.running is not None:
                    await asyncio.to_thread(self._files.write, self.running)
                raise
            self._churn.clear_failure()
            self._removals.clear_failure()
            # Removals a failure dropped are made by the reload (the file lacks them).
            self._departing.clear()
            await asyncio.to_thread(self._checkers.loaded, desired.backends)
            if not any(isinstance(a, Reload) for a in actions) or churn_failed is not None:
                # The plan needed no reload: this one replaces a runtime change that failed.
                await self._out_of_maintenance(desired)
        self.running = desired
        return Outcome(bool(reloads), commands, time.monotonic() - started, reason, runtime_s)

    async def _run_actions(self, actions: list[Action], desired: ir.DataPlane) -> int:
        """Run the actions (in the background lane, the server changes); returns how many."""
        batches = _batches(actions)
        if not self.background:
            for batch in batches:
                await self._run_batch(batch, desired)
            return len(actions)
        # Certificates and maps now; the servers after those of earlier applies. A route whose
        # backend is still waiting for its first servers is passed over by the frontend's
        # rules (`nbsrv`), so a map that routes to it early sends no request nowhere.
        sets: list[SetMapEntries] = []  # consecutive ones go in one session
        for batch in batches:
            if isinstance(batch[0], SetMapEntries):
                sets.append(batch[0])
            elif not isinstance(batch[0], _GROUPED):
                await self._set_maps(sets)
                sets = []
                await self._run_batch(batch, desired)
        await self._set_maps(sets)
        servers = [b for b in batches if isinstance(b[0], _GROUPED)]
        if servers:
            self._churn.submit(functools.partial(self._run_batches, servers, desired))
        return len(actions)

    async def _run_batches(self, batches: list[list[RuntimeAction]], desired: ir.DataPlane) -> None:
        """One apply's server changes, in order, except that removals no addition of this
        apply replaces go on in the removals lane: the next apply's additions (an instance
        registered while the last one drains) need not wait for the drain. An addition of a
        server of the same name as one still departing waits for it."""
        started = time.monotonic()
        added = {(a.backend, a.server.name) for b in batches for a in b if isinstance(a, AddServer)}
        for batch in batches:
            if isinstance(batch[0], RemoveServer) and not added & _refs(batch):
                # Drained at once (no new request goes to them), deleted in the other lane.
                refs = [(a.backend, a.server) for a in batch if isinstance(a, RemoveServer)]
                drained = await bulk.drain(self.runtime, refs)
                self._hand_off(batch, desired, (drained, time.monotonic() + DRAIN_TIMEOUT_S))
                continue
            if isinstance(batch[0], AddServer) and self._departing.keys() & _refs(batch):
                self._awaiting_removals = True
                try:
                    await self._removals.drained()
                finally:
                    self._awaiting_removals = False
            await self._run_batch(batch, desired)
        log.info(
            "server changes applied",
            actions=sum(len(b) for b in batches),
            seconds=round(time.monotonic() - started, 4),
        )

    def _hand_off(
        self,
        batch: list[RuntimeAction],
        desired: ir.DataPlane,
        drained: tuple[list[bulk.ServerRef], float],
    ) -> None:
        refs = _refs(batch)
        for ref in refs:
            self._departing[ref] = self._departing.get(ref, 0) + 1

        async def remove() -> None:
            try:
                await self._run_batch(batch, desired, drained)
            finally:
                for ref in refs:
                    left = self._departing.get(ref, 0) - 1
                    if left > 0:
                        self._departing[ref] = left
                    else:
                        self._departing.pop(ref, None)

        self._removals.submit(remove)

    async def _make_way_for_additions(self) -> None:
        """Before each look at departing servers: while server additions are under way (an
        instance registered meanwhile), wait for them, at most MAKE_WAY_S. HAProxy's CLI
        answers one command at a time, and reading every server's state for the departing
        ones held up the new ones' commands."""
        deadline = time.monotonic() + MAKE_WAY_S
        while self._churn.busy() and not self._awaiting_removals and time.monotonic() < deadline:
            await asyncio.sleep(MAKE_WAY_POLL_S)

    async def _reload(self) -> None:
        config = self.run_dir / CONFIG_FILE
        # While no gateway is served (HAProxy not running, or running none), a bad
        # configuration costs no traffic: HAProxy's own load is the check (it says what a
        # check would), and the file is parsed once, not twice.
        check = self.supervisor.running and (self.running is None or _serves_gateways(self.running))
        if self.supervisor.running:
            await self.supervisor.reload(config, check=check)
        else:
            await self.supervisor.start(config, check=check)
        self._restarts_seen = self.supervisor.restarts

    async def _run(self, action: RuntimeAction, desired: ir.DataPlane) -> None:
        if isinstance(action, ReplaceMap):
            path = self.run_dir / MAPS_DIR / action.name
            await self.runtime.replace_map(str(path), dict(action.entries))
        elif isinstance(action, SetMapEntries):
            await self._set_maps([action])
        elif isinstance(action, DeleteMapEntries):
            map_file = str(self.run_dir / MAPS_DIR / action.name)
            delete = functools.partial(self.runtime.del_map_entry, map_file)
            await self._side_by_side([functools.partial(delete, key) for key in action.keys])
        elif isinstance(action, AddServer):
            server, health = action.server, action.health
            backend = _backend(desired, action.backend)
            track = self._track(action.backend, backend, server)
            checked = track is None
            await self.runtime.add_server(
                action.backend,
                server.name,
                server.address,
                server.port,
                weight=server.weight,
                check=checked,
                inter_ms=health.interval_ms if checked else None,
                rise=health.rise if checked else None,
                fall=health.fall if checked else None,
                extras=check_extras(
                    health, backend.mode if backend else "http", fail_fast=server.fail_fast
                )
                if checked
                else None,
                track=track,
                ssl=action.tls is not None,
                verify=action.tls.verify if action.tls else True,
                ca_file=self._cert_path(action.tls.ca_file)
                if action.tls and action.tls.ca_file
                else None,
                sni=action.tls.sni if action.tls else None,
                backup=server.backup,
            )
        elif isinstance(action, SetServerWeight):
            await self.runtime.set_server_weight(action.backend, action.server, action.weight)
        elif isinstance(action, RemoveServer):
            await self.runtime.remove_server(
                action.backend, action.server, drain_timeout=DRAIN_TIMEOUT_S, missing_ok=True
            )
        else:
            await self._run_tls(action)

    async def _set_maps(self, actions: Sequence[SetMapEntries]) -> None:
        """Map entries, in order, in one session on the worker, each reply checked: a weight
        change sets a route's weights and its gateway's slots, and through the master each
        entry took a round trip, 40-140 ms on a node busy with server changes. What cannot
        be done so (no session, a key not there yet) is then set the careful way, which adds
        a missing key."""
        if not actions:
            return
        paths = [str(self.run_dir / MAPS_DIR / action.name) for action in actions]
        lines = [
            [commands.set_map_entry(path, key, value)]
            for path, action in zip(paths, actions, strict=True)
            for key, value in action.entries
        ]
        found = await bulk.in_session(self.runtime, lines)
        if found is not None and not any(_map_failure(answers[0]) for answers in found):
            return
        for path, action in zip(paths, actions, strict=True):
            set_entry = functools.partial(self.runtime.set_map_entry, path)
            await self._side_by_side([functools.partial(set_entry, *e) for e in action.entries])

    async def _run_tls(
        self, action: UpdateCertificate | AddCertificate | AddCrtListEntry | UpdateCaFile
    ) -> None:
        if isinstance(action, UpdateCertificate):
            await self.runtime.update_certificate(self._cert_path(action.name), action.pem)
        elif isinstance(action, AddCertificate):
            await self.runtime.add_certificate(self._cert_path(action.name), action.pem)
        elif isinstance(action, AddCrtListEntry):
            entry = action.entry
            await self.runtime.add_crt_list_entry(
                self._cert_path(action.crt_list),
                self._cert_path(entry.certificate),
                min_version=f"TLSv{entry.min_version}",
                alpn=entry.alpn is not None,
                filters=entry.filters,
            )
        else:
            await self.runtime.update_ca_file(self._cert_path(action.name), action.pem)

    async def _out_of_maintenance(self, desired: ir.DataPlane) -> None:
        """After a reload that replaced a failed runtime change. A server that was being added
        when it failed was still in maintenance (where dynamic servers start), and the server
        state file carries that into the new worker, which would then never send it traffic.
        meshgate puts no server of the desired data plane in maintenance on purpose."""
        wanted = {(b.name, s.name) for b in desired.backends for s in b.servers}
        try:
            for state in await self.runtime.servers_state():
                if (state.backend, state.name) in wanted and ServerAdminFlags.FMAINT & (
                    state.admin_state
                ):
                    await self.runtime.set_server_state(
                        state.backend, state.name, ServerAdminState.READY
                    )
        except MeshgateError as exc:
            log.warning("could not take servers out of maintenance", error=str(exc))

    async def _run_batch(
        self,
        batch: list[RuntimeAction],
        desired: ir.DataPlane,
        drained: tuple[list[bulk.ServerRef], float] | None = None,
    ) -> None:
        """Run one action, or a run of server additions, weights or removals pipelined (see
        `haproxy.bulk`): an instance of a service a thousand gateways route to is a thousand
        servers, and four round trips to the master socket for each would take seconds. Their
        order does not matter, only that all are done before the next action (a map that
        routes to them, a removal they replace). What the pipelined requests did not do is
        done one action at a time, side by side, each reply checked."""
        left: Sequence[RuntimeAction] = batch
        if isinstance(batch[0], AddServer):
            added = [a for a in batch if isinstance(a, AddServer)]
            names = {a.backend for a in added}
            backends = {b.name: b for b in desired.backends if b.name in names}
            made: dict[tuple[object, ...], bulk.NewServer] = {}
            tracked = Tracked()
            async with self._spares:
                await self._lend_spares(added, backends, tracked)
                new_servers = [
                    self._new_server(a, backends.get(a.backend), made, tracked) for a in added
                ]
            missed = await bulk.add_servers(self.runtime, new_servers)
            again = {(m.backend, m.name) for m in missed}
            left = [a for a in added if (a.backend, a.server.name) in again]
            self._follow_on_addition(
                [a for a in added if (a.backend, a.server.name) not in again], backends, tracked
            )
        elif isinstance(batch[0], SetServerWeight):
            weights = [
                (a.backend, a.server, a.weight) for a in batch if isinstance(a, SetServerWeight)
            ]
            again_w = set(await bulk.set_weights(self.runtime, weights))
            left = [
                a
                for a in batch
                if isinstance(a, SetServerWeight) and (a.backend, a.server, a.weight) in again_w
            ]
        elif isinstance(batch[0], RemoveServer):
            refs = [(a.backend, a.server) for a in batch if isinstance(a, RemoveServer)]
            if drained is None:
                found = await bulk.remove_servers(self.runtime, refs, drain_timeout=DRAIN_TIMEOUT_S)
            else:
                # Drained already (`_run_batches`): deleted once idle, after any additions.
                pending, deadline = drained
                found = await bulk.delete_drained(
                    self.runtime, pending, deadline=deadline, make_way=self._make_way_for_additions
                )
            still = set(found)
            left = [
                a for a in batch if isinstance(a, RemoveServer) and (a.backend, a.server) in still
            ]
        if left and isinstance(batch[0], _GROUPED):
            log.warning(
                "runtime changes not confirmed, done one by one",
                action=type(batch[0]).__name__,
                count=len(left),
                of=len(batch),
            )
        if left:
            await self._side_by_side([functools.partial(self._run, a, desired) for a in left])
        if isinstance(batch[0], RemoveServer):
            removed = [(a.backend, a.server) for a in batch if isinstance(a, RemoveServer)]
            async with self._spares:
                for checker, spare in self._checkers.untracked(removed):
                    # Nothing tracks it: back to maintenance, where it is not checked.
                    await self.runtime.set_server_state(checker, spare, ServerAdminState.MAINT)

    async def _lend_spares(
        self, added: Sequence[AddServer], backends: dict[str, ir.Backend], tracked: Tracked
    ) -> None:
        """Before route servers are added for an endpoint the loaded configuration does not
        check, a spare checker server is given its address and put in service (its check is
        on from the file), so they can track it (see agent.checkers). The commands go in one
        session on the worker, each reply checked (through the master, two round trips per
        spare, they held up the additions by tens of milliseconds on a busy node)."""
        lent: list[tuple[tuple[str, str], ir.Server]] = []
        for action in added:
            backend = backends.get(action.backend)
            spare = self._checkers.lend_for(tracked(backend, action.server)) if backend else None
            if spare is not None:
                lent.append((spare, action.server))
        if not lent:
            return
        groups = [
            [
                commands.set_server_addr(*spare, server.address, server.port),
                commands.set_server_state(*spare, ServerAdminState.READY),
            ]
            for spare, server in lent
        ]
        found: Sequence[list[str] | None] = await bulk.in_session(self.runtime, groups) or [
            None for _ in lent
        ]
        for (spare, server), group, answers in zip(lent, groups, found, strict=True):
            if answers is None or any(
                bulk.failure(line, reply) for line, reply in zip(group, answers, strict=True)
            ):
                # No session, or a reply says it failed: the careful way, which raises.
                await self.runtime.set_server_addr(*spare, server.address, server.port)
                await self.runtime.set_server_state(*spare, ServerAdminState.READY)
            log.info("spare checker server lent", server="/".join(spare), to=server.name)

    def _track(
        self,
        name: str,
        backend: ir.Backend | None,
        server: ir.Server,
        tracked: Tracked | None = None,
    ) -> tuple[str, str] | None:
        """The checker server a server added at run time tracks: its endpoint's in the loaded
        configuration, or a spare lent to it. None: it checks itself (agent or passive checks,
        or no spare was left; 2.6 cannot track a dynamic server)."""
        tracked = tracked or Tracked()
        track = self._checkers.target_of(tracked(backend, server)) if backend is not None else None
        if track is not None:
            self._checkers.tracking((name, server.name), track)
        return track

    def _new_server(
        self,
        action: AddServer,
        backend: ir.Backend | None,
        made: dict[tuple[object, ...], bulk.NewServer],
        tracked: Tracked | None = None,
    ) -> bulk.NewServer:
        """The pipelined form of an addition: the same `add server` line `_run` sends.

        An instance of a service that a thousand gateways route to is the same server in a
        thousand backends: its line is made (and checked) once, in `made`, and only the
        backend's name differs in the others'."""
        server = action.server
        track = self._track(action.backend, backend, server, tracked)
        mode = backend.mode if backend is not None else "http"
        # By identity (the batch keeps them alive): the routes to one service share the
        # server and the check, and hashing the check for each of 1,000 cost more than this.
        same = (id(server), id(action.health), id(action.tls), mode, track)
        first = made.get(same)
        prefix = f"add server {first.backend}/" if first is not None else ""
        if first is not None and first.add_line.startswith(prefix):
            rest = first.add_line[len(prefix) :]
            line = f"add server {commands.proxy_name(action.backend)}/{rest}"
            return bulk.NewServer(
                action.backend,
                first.name,
                first.address,
                first.port,
                line,
                first.check,
                first.agent,
            )
        made[same] = self._made_server(action, mode, track)
        return made[same]

    def _made_server(
        self, action: AddServer, mode: str, track: tuple[str, str] | None
    ) -> bulk.NewServer:
        server, health, tls = action.server, action.health, action.tls
        checked = track is None
        extras = check_extras(health, mode, fail_fast=server.fail_fast) if checked else None
        line = commands.add_server(
            action.backend,
            server.name,
            server.address,
            server.port,
            server_weight=server.weight,
            check=checked,
            inter_ms=health.interval_ms if checked else None,
            rise=health.rise if checked else None,
            fall=health.fall if checked else None,
            extras=extras,
            track=track,
            ssl=tls is not None,
            verify=tls.verify if tls else True,
            ca_file=self._cert_path(tls.ca_file) if tls and tls.ca_file else None,
            sni=tls.sni if tls else None,
            backup=server.backup,
        )
        return bulk.NewServer(
            backend=action.backend,
            name=server.name,
            address=commands.address(server.address),
            port=server.port,
            add_line=line,
            check=checked,
            agent=extras is not None and extras.agent_port is not None,
        )

    @staticmethod
    async def _side_by_side(calls: Sequence[Callable[[], Awaitable[None]]]) -> None:
        """Await every call, ADD_CONCURRENCY at a time; the first error is raised once all
        have ended."""
        if len(calls) == 1:
            await calls[0]()
            return
        limit = asyncio.Semaphore(ADD_CONCURRENCY)

        async def limited(call: Callable[[], Awaitable[None]]) -> None:
            async with limit:
                await call()

        results = await asyncio.gather(*(limited(c) for c in calls), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _cert_path(self, name: str) -> str:
        return str(self.run_dir / CERTS_DIR / name)

    async def config_hash(self) -> str:
        """A short hash of what HAProxy was last given (`RunFiles.digest`)."""
        return await asyncio.to_thread(self._files.digest)

    async def stop(self) -> None:
        await self.supervisor.stop()


def _serves_gateways(dataplane: ir.DataPlane) -> bool:
    return any(frontend.gateways for frontend in dataplane.frontends)
