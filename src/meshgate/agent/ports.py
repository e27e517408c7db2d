"""Which new listen addresses another process already holds.

`haproxy -c` does not bind, so a port taken by some other program passes the check and only
fails in the reload, which then fails as a whole. Trying the bind first lets the agent leave out
just the gateways on that port, as it does for a gateway HAProxy rejects.
"""

from __future__ import annotations

import socket

from meshgate.compiler import ir


def ports_in_use(
    desired: ir.DataPlane,
    running: ir.DataPlane | None,
    adopted: set[tuple[str, int]] | frozenset[tuple[str, int]] = frozenset(),
) -> dict[str, str]:
    """Frontend name to the reason its address cannot be bound, for frontends not running yet
    (in `running`, or in the configuration of an HAProxy adopted from an earlier process)."""
    held = {(f.bind, f.port) for f in running.frontends} if running else set()
    held |= adopted
    busy: dict[str, str] = {}
    for frontend in desired.frontends:
        if (frontend.bind, frontend.port) in held:
            continue  # our own HAProxy holds it
        family = socket.AF_INET6 if ":" in frontend.bind else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((frontend.bind, frontend.port))
            except OSError as exc:
                busy[frontend.name] = (
                    f"port {frontend.port} on {frontend.bind} cannot be bound: {exc.strerror}"
                )
    return busy
