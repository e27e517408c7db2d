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

from meshgate.compiler import CONFIG_FILE, ir, render_files
from meshgate.haproxy.runtime import RuntimeClient
from meshgate.haproxy.supervisor import HaproxySupervisor
from meshgate.plan import Reload, ReplaceMap, plan


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
        self, supervisor: HaproxySupervisor, runtime: RuntimeClient, run_dir: Path
    ) -> None:
        self.supervisor = supervisor
        self.runtime = runtime
        self.run_dir = run_dir
        self.running: ir.DataPlane | None = None

    def settings(self) -> ir.Settings:
        return ir.Settings(run_dir=str(self.run_dir))

    async def check(self, dataplane: ir.DataPlane) -> tuple[bool, str]:
        """Would HAProxy accept this data plane? Checked on a scratch copy of its files."""
        with tempfile.TemporaryDirectory(prefix="meshgate-check-") as scratch:
            candidate = dataclasses.replace(
                dataplane, settings=dataclasses.replace(dataplane.settings, run_dir=scratch)
            )
            write_files(Path(scratch), render_files(candidate))
            result = await self.supervisor.validate(Path(scratch) / CONFIG_FILE)
            return result.ok, result.output

    async def apply(self, desired: ir.DataPlane) -> Outcome:
        """Make HAProxy run `desired`, which the caller has checked."""
        started = time.monotonic()
        actions = plan(self.running, desired)
        if not self.supervisor.running and self.running is not None:
            actions = [Reload("HAProxy is not running")]
        if not actions:
            return Outcome(False, 0, time.monotonic() - started, "no change")
        files = render_files(desired)
        commands = 0
        reloads = [a for a in actions if isinstance(a, Reload)]
        write_files(self.run_dir, files)
        if reloads:
            config = self.run_dir / CONFIG_FILE
            if self.supervisor.running:
                await self.supervisor.reload(config)
            else:
                await self.supervisor.start(config)
            reason = reloads[0].reason
        else:
            maps_dir = self.run_dir / "maps"
            for action in actions:
                assert isinstance(action, ReplaceMap)
                await self.runtime.replace_map(str(maps_dir / action.name), dict(action.entries))
                commands += 1
            reason = "maps updated at run time"
        self.running = desired
        return Outcome(bool(reloads), commands, time.monotonic() - started, reason)

    async def stop(self) -> None:
        await self.supervisor.stop()
