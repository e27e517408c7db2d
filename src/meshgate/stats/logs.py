"""The receiving end of HAProxy's access log: a unix stream socket in the run directory.

Used with `--access-log`, which wants every line; without it the statistics read HAProxy's
ring with each stats poll instead (`stats.ring`), which spares HAProxy a wake-up per line.

HAProxy writes each log line into an in-memory ring buffer and a forwarder inside each worker
streams the ring to this socket, one line per request, newline-terminated (see the `ring`
section the compiler renders). Compared with one datagram per line, the stream costs HAProxy no
system call per request and arrives here in large chunks; and when this reader falls behind,
the ring drops lines, it never slows traffic down. (A unix datagram socket was the first idea:
the kernel queues at most `net.unix.max_dgram_qlen` datagrams, 10 on common systems, and lost
over a quarter of the lines at 37k requests per second in a test.)

Each worker, old and new, holds its own connection, so lines of requests an old worker finishes
after a reload still arrive. Lines go to the latency book and, optionally, to a JSON access log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from meshgate.stats.accesslog import AccessLog
from meshgate.stats.latency import LatencyBook

log = structlog.get_logger("meshgate.stats")
MAX_LINE = 65_536  # a partial line longer than this is not one of ours: drop it
READ_PAUSE_S = 0.025


class _LogStream(asyncio.Protocol):
    def __init__(self, receiver: LogReceiver) -> None:
        self.receiver = receiver
        self.partial = b""
        self.transport: asyncio.ReadTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        self.transport = transport
        self.receiver.streams.add(self)

    def data_received(self, data: bytes) -> None:
        lines = (self.partial + data if self.partial else data).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > MAX_LINE:
            self.partial = b""
        self.receiver.lines(lines)
        # Let lines gather in HAProxy's ring for a moment: one large write instead of many
        # small ones costs HAProxy fewer system calls per request, and this process fewer
        # wake-ups (in a test: HAProxy 15.0 us of CPU a request instead of 17-18, this reader a
        # quarter of the CPU). The ring holds far more than a pause's worth of lines.
        if self.transport is not None and READ_PAUSE_S > 0:
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(READ_PAUSE_S, self.transport.resume_reading)

    def connection_lost(self, exc: Exception | None) -> None:
        self.receiver.streams.discard(self)


class LogReceiver:
    def __init__(
        self,
        path: Path,
        book: LatencyBook,
        *,
        access_log: AccessLog | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.book = book
        self.access_log = access_log
        self.clock = clock
        self.streams: set[_LogStream] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)  # left over by a process that did not stop cleanly
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _LogStream(self), str(self.path))
        # Anyone who can write here can feed the statistics: only our user may.
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            # HAProxy keeps its connections open; close them, or waiting would never end.
            for stream in list(self.streams):
                if stream.transport is not None:
                    stream.transport.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
        self.path.unlink(missing_ok=True)
        if self.access_log is not None:
            self.access_log.close()

    def lines(self, lines: list[bytes]) -> None:
        if self.access_log is None:
            self.book.offer_lines(lines, self.clock())
            return
        recorded: list[list[bytes]] = []
        self.book.offer_lines(lines, self.clock(), recorded)
        for fields in recorded:
            self.access_log.write(fields)
        self.access_log.flush()
