"""The access-log line HAProxy writes for the agent, and its parser. Pure.

What HAProxy writes (`HTTP_LOG_FORMAT`, `TCP_LOG_FORMAT`, rendered into haproxy.cfg by the
compiler) and what the agent reads live together here, so they cannot drift apart. One line per
request (http) or connection (tcp), fields separated by single spaces:

    pid backend server status Tw Tc Tr Ta bytes_out bytes_in termination client method path

- `pid` is the worker's: it tells whose counters a line adds to (see `counters`);
- times in ms (`Tw` queue, `Tc` connect, `Tr` server response headers, `Ta` active time of the
  request); -1 when the step did not happen (connection refused, client gone);
- `bytes_out` is what went to the client (%B), `bytes_in` what came from it (%U);
- tcp lines put `-` for status, Tr, method and path, and the connection's time in the Ta slot.

Names never contain spaces (proxy and server names are validated), and the path comes last, so
one `split` with a bound cuts a line without regular expressions. Lines of any other shape (a
server state change, an error report) are not requests and are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

HTTP_LOG_FORMAT = "%pid %b %s %ST %Tw %Tc %Tr %Ta %B %U %ts %ci %HM %HPO"
TCP_LOG_FORMAT = "%pid %b %s - %Tw %Tc - %Tt %B %U %ts %ci"

PID, BACKEND, SERVER, STATUS, QUEUE, CONNECT, RESPONSE, TOTAL = 0, 1, 2, 3, 4, 5, 6, 7
BYTES_OUT, BYTES_IN, TERMINATION, CLIENT, METHOD, PATH = 8, 9, 10, 11, 12, 13
FIELDS = 14
TCP_FIELDS = 12
SHAPES = frozenset({FIELDS, TCP_FIELDS})  # field counts of the lines this module writes
NO_SERVER = "<NOSRV>"


def split(line: bytes) -> list[bytes] | None:
    """The fields of one line, or None when it is not a request line."""
    fields = line.split(b" ", FIELDS - 1)
    if len(fields) != FIELDS and len(fields) != TCP_FIELDS:
        return None
    return fields


def milliseconds(field: bytes) -> int:
    """A time field; -1 for "did not happen" (HAProxy's -1, or '-' in tcp lines)."""
    try:
        return int(field)
    except ValueError:
        return -1


@dataclass(frozen=True, slots=True)
class AccessRecord:
    pid: int
    backend: str
    server: str
    status: int | None
    queue_ms: int
    connect_ms: int
    response_ms: int
    total_ms: int
    bytes_out: int
    bytes_in: int
    termination: str
    client: str
    method: str | None
    path: str | None


def record(fields: list[bytes]) -> AccessRecord | None:
    """All of a line's fields, typed; None if a number is not one."""
    try:
        pid = int(fields[PID])
        bytes_out, bytes_in = int(fields[BYTES_OUT]), int(fields[BYTES_IN])
    except ValueError:
        return None
    http = len(fields) == FIELDS
    status = milliseconds(fields[STATUS])
    return AccessRecord(
        pid=pid,
        backend=fields[BACKEND].decode("ascii", "replace"),
        server=fields[SERVER].decode("ascii", "replace"),
        status=status if status >= 0 else None,
        queue_ms=milliseconds(fields[QUEUE]),
        connect_ms=milliseconds(fields[CONNECT]),
        response_ms=milliseconds(fields[RESPONSE]),
        total_ms=milliseconds(fields[TOTAL]),
        bytes_out=bytes_out,
        bytes_in=bytes_in,
        termination=fields[TERMINATION].decode("ascii", "replace"),
        client=fields[CLIENT].decode("ascii", "replace"),
        method=fields[METHOD].decode("ascii", "replace") if http else None,
        path=fields[PATH].rstrip(b"\n").decode("utf-8", "replace") if http else None,
    )
