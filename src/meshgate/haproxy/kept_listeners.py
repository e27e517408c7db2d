"""meshgate's own copy of HAProxy's listening sockets: a crash of HAProxy refuses no connection.

In 2.6 the master closes its listeners once it has forked the worker, so they live only in the
worker; a worker that dies (or is stopped because its master died) takes them along, and until
a new HAProxy has bound again connections to its ports are refused. A duplicate of every
listening socket held here keeps each socket open: connections wait in the kernel's accept
queue, and the restarted HAProxy, started with `-x` naming the unix socket served here, takes
these same sockets (matched to its `bind` lines by address) and accepts them.

The copy is taken from the worker itself, through its admin socket (`stats socket ... expose-fd
listeners`), after every start, reload and adoption: ports a reload adds are kept, ports it
removes are let go (a port nobody serves must refuse, not queue). Only a fresh start reads `-x`:
on a reload the master drops it from its arguments and passes its current worker's sockets to
the new one itself (`-x sockpair@`), as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from meshgate.haproxy import socket_transfer
from meshgate.haproxy.socket_transfer import Described, TransferError

log = logging.getLogger(__name__)

Address = tuple[str, int]

_SECTIONS = ("defaults", "frontend", "backend", "listen", "peers", "resolvers", "userlist")


def exposing_socket(config: Path, base: Path) -> Path | None:
    """The unix stats socket of the `global` section that exposes listeners (`expose-fd
    listeners`), or None. Reads only up to the end of `global`: a configuration may be huge."""
    in_global = False
    with config.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            if not line[0].isspace():
                if words[0] == "global":
                    in_global = True
                    continue
                if in_global and words[0] in _SECTIONS:
                    return None
                in_global = False
                continue
            if not in_global or words[:2] != ["stats", "socket"] or len(words) < 3:
                continue
            if "expose-fd" not in words[3:] or "listeners" not in words[3:]:
                continue
            address = words[2].removeprefix("unix@")
            if "@" in address or not ("/" in address or "." in address):
                continue  # an inet, abstract or fd socket: not a path
            return base / address
    return None


def expected_addresses(bind_addresses: Iterable[Address]) -> set[Address]:
    """The addresses `bind` lines listen on as getsockname reports them. Pure."""
    return {(_canonical(host), port) for host, port in bind_addresses}


def mismatch(expected: set[Address], held: set[Address]) -> str | None:
    """Why the sockets received are not the current worker's, or None. Pure. Right after a
    reload the old worker still accepts on the shared admin socket (for `grace`) and may be the
    one that answers, with the old set of ports."""
    missing, extra = expected - held, held - expected
    if not missing and not extra:
        return None
    return f"missing {sorted(missing)}, not configured {sorted(extra)}"


def _canonical(host: str) -> str:
    host = host.strip("[]")
    if host in ("", "*"):
        return "0.0.0.0"
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host  # a name: left as written, so it shows as a mismatch, never a false match


def inet_address(fd: int) -> Address | None:
    """The (host, port) a TCP socket is bound to; None for any other socket."""
    with socket.socket(fileno=os.dup(fd)) as sock:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        host, port = sock.getsockname()[:2]
        return str(ipaddress.ip_address(host)), int(port)


class KeptListeners:
    """Holds duplicates of HAProxy's listening sockets and serves them at `path` to an HAProxy
    started with `-x path`."""

    def __init__(self, path: Path, *, timeout: float = 2.0) -> None:
        self.path = path
        self.timeout = timeout
        self._held: list[tuple[int, Described]] = []
        self._lock = threading.Lock()  # the serving thread reads what a refresh replaces
        self._server: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._answers: set[asyncio.Task[None]] = set()

    @property
    def count(self) -> int:
        return len(self._held)

    def addresses(self) -> set[Address]:
        with self._lock:
            found = (inet_address(fd) for fd, _ in self._held)
            return {address for address in found if address is not None}

    async def serve(self) -> None:
        """Listen at `path` (replacing a socket left by an earlier process); idempotent."""
        if self._accepting is not None and not self._accepting.done():
            return
        # Bound under another name and made private before it takes its own: whoever connects
        # gets the listening sockets.
        staging = self.path.with_name(f".{self.path.name}.tmp")
        staging.unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(str(staging))
            os.chmod(staging, 0o600)
            server.listen(8)
            server.setblocking(False)
            os.replace(staging, self.path)
        except BaseException:
            server.close()
            staging.unlink(missing_ok=True)
            raise
        self._server = server
        self._accepting = asyncio.create_task(self._accept(server), name="kept-listeners")

    async def refresh(self, admin_socket: Path, expected: set[Address] | None = None) -> int:
        """Replace the copy with the sockets the worker answering at `admin_socket` exports;
        with `expected`, until the inet ones listen on exactly those addresses (the old worker
        may answer for a moment after a reload), for at most `timeout`. Returns how many are
        held."""
        deadline = time.monotonic() + self.timeout
        while True:
            received = await asyncio.to_thread(
                socket_transfer.receive, str(admin_socket), self.timeout
            )
            if expected is None:
                break
            found = {a for a in (inet_address(fd) for fd, _ in received) if a is not None}
            why = mismatch(expected, found)
            if why is None:
                break
            if time.monotonic() > deadline:
                log.warning("keeping listening sockets that differ from the configuration: %s",
                            why)  # fmt: skip
                break
            _close_all(received)
            await asyncio.sleep(0.05)
        with self._lock:
            old, self._held = self._held, received
        _close_all(old)
        return len(received)

    def release(self) -> None:
        """Let go of every socket held (HAProxy's own copies stay open)."""
        with self._lock:
            old, self._held = self._held, []
        _close_all(old)

    async def close(self) -> None:
        """Stop serving and let go of everything."""
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
            self._accepting = None
        for task in list(self._answers):
            with contextlib.suppress(Exception):
                await task
        if self._server is not None:
            self._server.close()
            self._server = None
            self.path.unlink(missing_ok=True)
        self.release()

    async def _accept(self, server: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(server)
            task = asyncio.create_task(asyncio.to_thread(self._answer, conn))
            self._answers.add(task)
            task.add_done_callback(self._answers.discard)

    def _answer(self, conn: socket.socket) -> None:
        # Duplicates, so a refresh closing the held descriptors meanwhile cannot pull them away
        # from under the transfer.
        with self._lock:
            given = [(os.dup(fd), described) for fd, described in self._held]
        try:
            with conn:
                conn.setblocking(True)
                socket_transfer.give(conn, given, self.timeout)
            level = logging.INFO if given else logging.DEBUG
            log.log(level, "passed %d kept listening sockets to a starting HAProxy", len(given))
        except (OSError, TransferError) as error:
            log.warning("could not pass listening sockets to HAProxy: %s", error)
        finally:
            _close_all(given)


def _close_all(sockets: list[tuple[int, Described]]) -> None:
    for fd, _ in sockets:
        with contextlib.suppress(OSError):
            os.close(fd)
