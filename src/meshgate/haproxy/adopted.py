"""An HAProxy master started by an earlier meshgate process, which is no child of ours.

It stands in for the `asyncio.subprocess.Process` the supervisor keeps for a master it spawned
(the same `pid`, `returncode`, `wait()` and `send_signal()`), so restarting meshgate does not
restart HAProxy: the supervisor adopts the running master and watches it the same way.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

_POLL_S = 0.05  # not our child: no SIGCHLD, its end is seen by polling


def master_of(pidfile: Path, master_socket: Path) -> int | None:
    """The pid recorded in `pidfile` if that process is alive and is an HAProxy master serving
    `master_socket` (a recycled pid names some other process)."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if str(master_socket).encode() in cmdline else None


class AdoptedMaster:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._returncode: int | None = None

    @property
    def returncode(self) -> int | None:
        if self._returncode is None and self._gone():
            self._returncode = -1  # its exit status went to its parent, not to us
        return self._returncode

    def _gone(self) -> bool:
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        return state in ("Z", "X")

    async def wait(self) -> int:
        while (code := self.returncode) is None:
            await asyncio.sleep(_POLL_S)
        return code

    def send_signal(self, sig: signal.Signals) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)


def bind_addresses(config: str) -> set[tuple[str, int]]:
    """The (address, port) pairs a configuration's `bind` lines listen on: what an adopted
    HAProxy holds, which a port probe would otherwise report as taken by another program."""
    held: set[tuple[str, int]] = set()
    for line in config.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "bind" or "@" in words[1]:
            continue
        address, _, port = words[1].rpartition(":")
        if port.isdigit():
            held.add((address, int(port)))
    return held
