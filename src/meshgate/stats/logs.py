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

import time
from collections.abc import Callable
from pathlib import Path

from meshgate.haproxy.line_socket import LineSocket
from meshgate.stats.accesslog import AccessLog
from meshgate.stats.latency import LatencyBook

MAX_LINE = 65_536  # a partial line longer than this is not one of ours: drop it
# Let lines gather in HAProxy's ring for a moment after each read: one large write instead of
# many small ones costs HAProxy fewer system calls per request, and this process fewer
# wake-ups (in a test: HAProxy 15.0 us of CPU a request instead of 17-18, this reader a
# quarter of the CPU). The ring holds far more than a pause's worth of lines.
READ_PAUSE_S = 0.025


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
        self._socket = LineSocket(path, self.lines, max_line=MAX_LINE, pause_s=READ_PAUSE_S)

    async def start(self) -> None:
        await self._socket.start()

    async def stop(self) -> None:
        await self._socket.stop()
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
