"""Bringing HAProxy to a desired data plane: validate, then runtime commands or a reload.

The running configuration is never replaced by one HAProxy rejects: every candidate is rendered
into a scratch directory and checked with `haproxy -c` before any file the running HAProxy
reads is touched.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from meshgate.compiler import CONFIG_FILE, ir, render_files
from meshgate.compiler.render import MAPS_DIR
from meshgate.errors import MeshgateError
from meshgate.haproxy.runtime import RuntimeClient
from meshgate.haproxy.supervisor import HaproxySupervisor
from meshgate.plan import (
    AddServer,
    Reload,
    ReplaceMap,
    RuntimeAction,
    SetServerWeight,
    plan,
)

log = structlog.get_logger("meshgate.agent")
# How long a departing instance may finish the requests it has before it is cut off.
DRAIN_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Outcome:
    reloaded: bool
    runtime_commands: int
    duration_s: float
    reason: str


def write_files(directory: Path, files: dict[str, str]) -> None:
    """Write each file atomically (rename), so HAProxy never reads a half-written one."""
    for relative, content in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(content)
        os.replace(temporary, path)


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

    async def apply(self, desired: ir.DataPlane) -> Outcome:
        """Make HAProxy run `desired`, which the caller has checked."""
        started = time.monotonic()
        actions = plan(self.running, desired)
        if self.running is not None and (not self.supervisor.running or self.resync_needed()):
            actions = [Reload("HAProxy was restarted or is not running")]
        if not actions:
            return Outcome(False, 0, time.monotonic() - started, "no change")
        # Files first: whatever happens next, a reload or restart reproduces `desired`.
        write_files(self.run_dir, render_files(desired))
        reloads = [a for a in actions if isinstance(a, Reload)]
        commands = 0
        reason = reloads[0].reason if reloads else "changed at run time"
        if not reloads:
            try:
                for action in actions:
                    assert not isinstance(action, Reload)
                    await self._run(action)
                    commands += 1
            except MeshgateError as exc:
                # The runtime state is now uncertain; a reload from the files makes it exact.
                log.warning("runtime change failed, reloading", error=str(exc))
                reloads = [Reload(f"runtime change failed: {exc}")]
                reason = reloads[0].reason
        if reloads:
            await self._reload()
        self.running = desired
        return Outcome(bool(reloads), commands, time.monotonic() - started, reason)

    async def _reload(self) -> None:
        config = self.run_dir / CONFIG_FILE
        if self.supervisor.running:
            await self.supervisor.reload(config)
        else:
            await self.supervisor.start(config)
        self._restarts_seen = self.supervisor.restarts

    async def _run(self, action: RuntimeAction) -> None:
        if isinstance(action, ReplaceMap):
            path = self.run_dir / MAPS_DIR / action.name
            await self.runtime.replace_map(str(path), dict(action.entries))
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
            )
        elif isinstance(action, SetServerWeight):
            await self.runtime.set_server_weight(action.backend, action.server, action.weight)
        else:
            await self.runtime.remove_server(
                action.backend, action.server, drain_timeout=DRAIN_TIMEOUT_S, missing_ok=True
            )

    async def stop(self) -> None:
        await self.supervisor.stop()
