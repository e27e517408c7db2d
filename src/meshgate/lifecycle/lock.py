"""An exclusive lock on a data dir: one meshgate process per data dir.

The lock is `flock` on `DATA_DIR/meshgate.lock`, which the kernel releases when its holder dies
however it dies, so a lock left by a killed process is never in the way. The file also records
the holder's pid, for the message a second process prints and for the line saying a lock left
by a dead process was taken over.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import structlog

from meshgate.errors import MeshgateError

log = structlog.get_logger("meshgate.lifecycle")

LOCK_FILE = "meshgate.lock"


class DataDirLocked(MeshgateError):  # noqa: N818
    def __init__(self, data_dir: Path, holder: int | None) -> None:
        self.holder = holder
        who = f"process {holder}" if holder is not None else "another process"
        super().__init__(f"data dir {data_dir} is in use by {who}; stop it first")


def _recorded_pid(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DataDirLock:
    """Held from `acquire()` until `release()` or the process's end."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise DataDirLocked naming its holder; touches nothing else."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _recorded_pid(os.pread(fd, 32, 0).decode("ascii", "replace"))
            os.close(fd)
            raise DataDirLocked(self.data_dir, holder) from None
        previous = _recorded_pid(os.pread(fd, 32, 0).decode("ascii", "replace"))
        if previous is not None and previous != os.getpid() and not _alive(previous):
            log.warning("took over the data dir lock of a process that is gone", pid=previous)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing releases the flock
        self._fd = None
