"""HAProxy's server state changes as they happen: the real-time feed of dispatch.map.

Every route backend logs into a ring of its own at `notice` and above (the compiler's
`ring mg_states`), which each worker streams to a unix socket here. What arrives is HAProxy's
own messages about its servers, e.g.

    Server default.shop.web.1a2b3c/i1 is DOWN, reason: Layer4 connection problem, ...
    Server default.shop.web.1a2b3c/i1 is UP, reason: Layer7 check passed, ...
    Server default.shop.web.1a2b3c/i1 is going DOWN for maintenance. ...

(and the same with "via <checker>" for a server that tracks a checker). Each is handed on as
(backend, server) -> UP, DOWN or MAINT, the statuses of the stats poll, which remains the
safety net: a line lost or one not understood is corrected at the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import structlog

log = structlog.get_logger("meshgate.agent")

ServerKey = tuple[str, str]
MAX_LINE = 4096

_CHANGE = re.compile(
    rb"Server (?P<backend>[^/\s]+)/(?P<server>\S+) is "
    rb"(?P<state>going DOWN for maintenance|DOWN|UP|stopping)\b"
)


def parse(line: bytes) -> tuple[ServerKey, str] | None:
    """(backend, server) and its new status from one of HAProxy's lines; None for others."""
    found = _CHANGE.search(line)
    if found is None:
        return None
    state = found["state"]
    status = "UP" if state == b"UP" else "MAINT" if state.startswith(b"going") else "DOWN"
    return (found["backend"].decode(), found["server"].decode()), status


class _Stream(asyncio.Protocol):
    def __init__(self, receiver: StateReceiver) -> None:
        self.receiver = receiver
        self.partial = b""
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.receiver.streams.add(self)

    def data_received(self, data: bytes) -> None:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > MAX_LINE:
            self.partial = b""
        for line in lines:
            change = parse(line)
            if change is not None:
                self.receiver.changed(*change)

    def connection_lost(self, exc: Exception | None) -> None:
        self.receiver.streams.discard(self)


class StateReceiver:
    """Listens on `path`; calls `on_change(server, status)` for every state change."""

    def __init__(self, path: Path, on_change: Callable[[ServerKey, str], None]) -> None:
        self.path = path
        self.changed = on_change
        self.streams: set[_Stream] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)  # left over by a process that did not stop cleanly
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Stream(self), str(self.path))
        # Anyone who can write here could move traffic between routes: only our user may.
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for stream in list(self.streams):  # HAProxy keeps its connections open
            if stream.transport is not None:
                stream.transport.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)
        self._server = None
        self.path.unlink(missing_ok=True)
