"""Reading every HAProxy process's counters through the master socket.

After a reload the old worker goes on serving the connections it has, and the admin socket
already belongs to the new worker; asking the admin socket alone would miss whatever the old
worker still serves. The master lists its workers, old ones included (`show proc`), and passes
a command to any of them by pid (`@!<pid> show stat ...`), so each process is read on its own
and its counters can be told apart from the others'.

This is polling, not a change: it goes around `RuntimeClient` so that it does not count in the
runtime-command metrics.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

from meshgate.haproxy import commands, replies, transport
from meshgate.haproxy.processes import ProcInfo, parse_proc
from meshgate.haproxy.replies import CommandKind
from meshgate.haproxy.stat_csv import CountedRow, StatStream

# Backends (2) and servers (4) of every proxy: frontends are not needed for route stats.
_BACKENDS_AND_SERVERS = "show stat -1 6 -1"
ROWS_A_STEP = 1000  # rows a part (the collector tallies a part a step)


class StatsReader:
    def __init__(self, master_socket: str, *, timeout: float = 2.0) -> None:
        self.master_socket = master_socket
        self.timeout = timeout

    async def processes(self) -> ProcInfo:
        reply = await transport.send(self.master_socket, commands.show_proc(), timeout=self.timeout)
        replies.check_reply(CommandKind.READ, reply)
        return parse_proc(reply)

    async def worker_events(self, pid: int, ring: str) -> bytes:
        """Everything one worker's ring holds (`show events`); when the worker is gone, the
        master's error sentence, which has no marked lines."""
        command = commands.on_worker(pid, commands.show_events(ring))
        reply = await transport.send(self.master_socket, command, timeout=self.timeout)
        return reply.encode()

    async def worker_parts(self, pid: int) -> AsyncGenerator[list[CountedRow], None]:
        """One worker's backend and server rows, the counted columns of `ROWS_A_STEP` rows
        at a time (fewer at the end) as the reply arrives, never the whole
        reply: at 100,000 gateways its text, lines and rows held 300 MB for most of each
        second. Nothing when the worker is gone (the master's error sentence has no CSV)."""
        command = commands.on_worker(pid, _BACKENDS_AND_SERVERS)
        parser = StatStream()
        rows: list[CountedRow] = []
        chunks = transport.stream(self.master_socket, command, timeout=self.timeout)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                rows += parser.feed(chunk)
                while len(rows) >= ROWS_A_STEP:
                    yield rows[:ROWS_A_STEP]
                    del rows[:ROWS_A_STEP]
        rows += parser.close()
        if rows:
            yield rows
