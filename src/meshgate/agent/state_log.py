"""HAProxy's server state changes as they happen: the real-time feed of dispatch.map.

The checker backends, and the route backends whose servers may check themselves, log into a
ring of their own at `notice` and above, the other route backends only alerts (the compiler's
`ring mg_states`, `checks.decides_own_states`), which each worker streams to a unix socket
here. What arrives is HAProxy's own messages about its servers, e.g.

    Server mg_checks.0f16617d4f/10.0.0.1_80.64938bd5 is DOWN, reason: Layer4 connection ...
    Server default.shop.web.1a2b3c/i1 is UP, reason: Layer7 check passed, ...
    Server default.shop.web.1a2b3c/i1 is going DOWN for maintenance. ...

Each is handed on as (backend, server) -> UP, DOWN or MAINT, the statuses of the stats poll,
which remains the safety net: a line lost or one not understood is corrected at the next poll.
The driver gives a checker server's change to the route servers tracking it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from meshgate.haproxy.line_socket import LineSocket

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


class StateReceiver:
    """Listens on `path`; calls `on_change(server, status)` for every state change."""

    def __init__(self, path: Path, on_change: Callable[[ServerKey, str], None]) -> None:
        self.path = path
        self.changed = on_change
        # Anyone who can write here could move traffic between routes: the socket is 0600.
        self._socket = LineSocket(path, self._lines, max_line=MAX_LINE)

    def _lines(self, lines: list[bytes]) -> None:
        for line in lines:
            change = parse(line)
            if change is not None:
                self.changed(*change)

    async def start(self) -> None:
        await self._socket.start()

    async def stop(self) -> None:
        await self._socket.stop()
