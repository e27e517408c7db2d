"""A unix stream socket that HAProxy's ring forwarders write lines to (`server ... log-proto
legacy` in a `ring` section): one connection per worker, newline-terminated lines, kept open.

Used for the request log (`stats.logs`) and for server state changes (`agent.state_log`).
Each batch of complete lines that arrives is handed to `on_lines`; a partial line waits for the
rest of it, unless it grows past `max_line`, when it is not one of ours and is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path


class _Stream(asyncio.Protocol):
    def __init__(self, server: LineSocket) -> None:
        self.server = server
        self.partial = b""
        self.transport: asyncio.ReadTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        self.transport = transport
        self.server.streams.add(self)

    def data_received(self, data: bytes) -> None:
        lines = (self.partial + data if self.partial else data).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > self.server.max_line:
            self.partial = b""
        self.server.on_lines(lines)
        if self.transport is not None and self.server.pause_s > 0:
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(
                self.server.pause_s, self.transport.resume_reading
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.streams.discard(self)


class LineSocket:
    """Listens on `path` (mode 0600) and calls `on_lines` with each batch of whole lines.
    With `pause_s`, reading pauses that long after each batch, so lines gather in HAProxy's
    ring and arrive in fewer, larger writes."""

    def __init__(
        self,
        path: Path,
        on_lines: Callable[[list[bytes]], None],
        *,
        max_line: int,
        pause_s: float = 0.0,
    ) -> None:
        self.path = path
        self.on_lines = on_lines
        self.max_line = max_line
        self.pause_s = pause_s
        self.streams: set[_Stream] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)  # left over by a process that did not stop cleanly
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Stream(self), str(self.path))
        # Whoever can write here feeds the agent what HAProxy would say: only our user may.
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
