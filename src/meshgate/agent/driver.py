"""Bringing HAProxy to a desired data plane: validate, then runtime commands or a reload.

The running configuration is never replaced by one HAProxy rejects: every candidate is rendered
into a scratch directory and checked with `haproxy -c` before any file the running HAProxy
reads is touched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from meshgate.agent.files import RunFiles, write_files
from meshgate.compiler import CONFIG_FILE, ir, render_files
from meshgate.compiler.render import MAPS_DIR
from meshgate.compiler.rules import FAIL_FAST_ERRORS
from meshgate.compiler.tls_text import CERTS_DIR
from meshgate.errors import MeshgateError
from meshgate.haproxy.commands import CheckExtras, ServerAdminState
from meshgate.haproxy.runtime import RuntimeClient
from meshgate.haproxy.server_states import ServerAdminFlags
from meshgate.haproxy.supervisor import HaproxySupervisor
from meshgate.plan import (
    Action,
    AddCertificate,
    AddCrtListEntry,
    AddServer,
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


def _batches(actions: list[Action]) -> list[list[RuntimeAction]]:
    """Actions in order, consecutive server additions grouped (see `Driver._run_batch`)."""
    batches: list[list[RuntimeAction]] = []
    for action in actions:
        assert not isinstance(action, Reload)
        if isinstance(action, AddServer) and batches and isinstance(batches[-1][0], AddServer):
            batches[-1].append(action)
        else:
            batches.append([action])
    return batches


def _backend_mode(dataplane: ir.DataPlane, backend: str) -> str:
    return next((b.mode for b in dataplane.backends if b.name == backend), "http")


class Driver:
    def __init__(
        self,
        supervisor: HaproxySupervisor,
        runtime: RuntimeClient,
        settings: ir.Settings,
    ) -> None:
        self.supervisor = supervisor
        self.runtime = runtime
        self._settings = settings
        self.run_dir = Path(settings.run_dir)
        self._files = RunFiles(self.run_dir)
        self.running: ir.DataPlane | None = None
        self._restarts_seen = 0

    def settings(self) -> ir.Settings:
        return self._settings

    async def check(self, dataplane: ir.DataPlane) -> tuple[bool, str]:
        """Would HAProxy accept this data plane? Checked on a scratch copy of its files."""
        with tempfile.TemporaryDirectory(prefix="meshgate-check-") as scratch:
            candidate = dataclasses.replace(
                dataplane, settings=dataclasses.replace(dataplane.settings, run_dir=scratch)
            )
            write_files(Path(scratch), render_files(candidate))
            result = await self.supervisor.validate(Path(scratch) / CONFIG_FILE)
            return result.ok, result.output

    def resync_needed(self) -> bool:
        """True when HAProxy was restarted behind our back (by the supervisor's watchdog).

        A restart loads the configuration of the last reload, which lacks what was changed at
        run time since; the next apply then reloads from the current files.
        """
        return self.supervisor.restarts != self._restarts_seen

    async def apply(self, desired: ir.DataPlane, actions: list[Action]) -> Outcome:
        """Make HAProxy run `desired`, which the caller has checked, by `actions`, which
        `plan(self.running, desired)` returned."""
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
            return Outcome(False, 0, time.monotonic() - started, "adopted, already running it")
        if self.running is not None and (not self.supervisor.running or self.resync_needed()):
            actions = [Reload("HAProxy was restarted or is not running")]
        if not actions:
            return Outcome(False, 0, time.monotonic() - started, "no change")
        reloads = [a for a in actions if isinstance(a, Reload)]
        commands = 0
        reason = reloads[0].reason if reloads else "changed at run time"
        if not reloads:
            try:
                for batch in _batches(actions):
                    await self._run_batch(batch, desired)
                    commands += len(batch)
            except MeshgateError as exc:
                # The runtime state is now uncertain; a reload from the files makes it exact.
                log.warning("runtime change failed, reloading", error=str(exc))
                reloads = [Reload(f"runtime change failed: {exc}")]
                reason = reloads[0].reason
        runtime_s = time.monotonic() - started
        # Runtime commands go first, so rendering thousands of gateways does not delay them;
        # the files follow at once, so any later reload or restart reproduces `desired`. The
        # rendering runs in a thread (the IR is immutable), so that the API and the stats
        # poller, which share this event loop, are not held up by it.
        await asyncio.to_thread(self._files.write, desired)
        if reloads:
            await self._reload()
            if not any(isinstance(a, Reload) for a in actions):
                # The plan needed no reload: this one replaces a runtime change that failed.
                await self._out_of_maintenance(desired)
        self.running = desired
        return Outcome(bool(reloads), commands, time.monotonic() - started, reason, runtime_s)

    async def _reload(self) -> None:
        config = self.run_dir / CONFIG_FILE
        if self.supervisor.running:
            await self.supervisor.reload(config)
        else:
            await self.supervisor.start(config)
        self._restarts_seen = self.supervisor.restarts

    async def _run(self, action: RuntimeAction, desired: ir.DataPlane) -> None:
        if isinstance(action, ReplaceMap):
            path = self.run_dir / MAPS_DIR / action.name
            await self.runtime.replace_map(str(path), dict(action.entries))
        elif isinstance(action, SetMapEntries):
            map_file = str(self.run_dir / MAPS_DIR / action.name)
            set_entry = functools.partial(self.runtime.set_map_entry, map_file)
            await self._side_by_side([functools.partial(set_entry, *e) for e in action.entries])
        elif isinstance(action, AddServer):
            server, health = action.server, action.health
            await self.runtime.add_server(
                action.backend,
                server.name,
                server.address,
                server.port,
                weight=server.weight,
                check=True,
                inter_ms=health.interval_ms,
                rise=health.rise,
                fall=health.fall,
                extras=check_extras(
                    health, _backend_mode(desired, action.backend), fail_fast=server.fail_fast
                ),
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

    async def _run_batch(self, batch: list[RuntimeAction], desired: ir.DataPlane) -> None:
        """Run one action, or a run of server additions side by side: each addition is a few
        round trips to the master socket, and a thousand of them one after the other would
        take seconds. Their order does not matter, only that all are done before the next
        action (a map that routes to them, a removal they replace)."""
        await self._side_by_side([functools.partial(self._run, a, desired) for a in batch])

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
