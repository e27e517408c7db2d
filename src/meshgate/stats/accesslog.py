"""The optional JSON access log: one object per request line the agent records.

Lines carry the route and instance (mapped from HAProxy's names through the running data
plane), status, method, path, client, the timings and byte counts. It sees what the latency
book records, so when HAProxy logs a sample of requests (see `sampling`) or the node parses
only one line in N (see `latency.Sampler`), so would this log; `meshgate up --access-log`
therefore turns both off.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO

from meshgate.compiler import ir
from meshgate.stats import logline


def entry(fields: list[bytes], routes: dict[str, ir.RouteRef], at: float) -> dict[str, object]:
    """The JSON object of one line; pure."""
    record = logline.record(fields)
    if record is None:
        return {}
    route = routes.get(record.backend)
    stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    result: dict[str, object] = {
        "time": stamp.replace("+00:00", "Z"),
        "namespace": route.namespace if route else None,
        "gateway": route.gateway if route else None,
        "route": route.route if route else None,
        "instance": None if record.server == logline.NO_SERVER else record.server,
        "status": record.status,
        "method": record.method,
        "path": record.path,
        "client": record.client,
        "queue_ms": record.queue_ms,
        "connect_ms": record.connect_ms,
        "response_ms": record.response_ms,
        "total_ms": record.total_ms,
        "bytes_in": record.bytes_in,
        "bytes_out": record.bytes_out,
        "termination": record.termination,
        "worker": record.pid,  # HAProxy's process: tells requests around a reload apart
    }
    return result


class AccessLog:
    """Writes entries to a file (appending) or to stdout ("-")."""

    def __init__(
        self,
        target: str,
        dataplane: Callable[[], ir.DataPlane | None],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.target = target
        self.dataplane = dataplane
        self.clock = clock
        self._stream: IO[str] = sys.stdout if target == "-" else open(target, "a")  # noqa: SIM115
        self._running: ir.DataPlane | None = None
        self._routes: dict[str, ir.RouteRef] = {}

    def write(self, fields: list[bytes]) -> None:
        running = self.dataplane()
        if running is not self._running:
            self._running = running
            self._routes = {b.name: b.route for b in running.backends} if running else {}
        item = entry(fields, self._routes, self.clock())
        if item:
            self._stream.write(json.dumps(item, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        if self._stream is not sys.stdout:
            self._stream.close()
        else:
            self._stream.flush()
