"""The request-log line HAProxy writes for the agent, and its parser. Pure.

What HAProxy writes (the formats here, rendered into haproxy.cfg by the compiler) and what the
agent reads live together, so they cannot drift apart. One line per request (http) or connection
(tcp), fields separated by single spaces. The compact line, what the statistics need:

    pid backend server status Tc Tr Ta

with flow recording on (who calls which gateway, see `flows`), the client's address too:

    pid backend server status Tc Tr Ta client

and the detailed one, for the JSON access log, which goes on from the compact line with

    ... Tw bytes_out bytes_in termination client method path

- `pid` is the worker's: it tells whose counters a line adds to (see `counters`);
- times in ms (`Tc` connect, `Tr` server response headers, `Ta` active time of the request,
  `Tw` queue); -1 when the step did not happen (connection refused, client gone);
- `bytes_out` is what went to the client (%B), `bytes_in` what came from it (%U);
- tcp lines put `-` for status, Tr, method and path, and the connection's time in the Ta slot.

Every field costs HAProxy time on every request (in a test the detailed line cost twice what
the compact one did), hence two formats. Names never contain spaces (proxy and server names are
validated), and the path comes last, so one `split` with a bound cuts a line without regular
expressions. Lines of any other shape (a server state change, an error report) are not requests.
"""

from __future__ import annotations

from dataclasses import dataclass

_STATS = "%pid %b %s {status} %Tc {response} {total}"
_DETAILS = " %Tw %B %U %ts %ci"
HTTP_LOG_FORMAT = _STATS.format(status="%ST", response="%Tr", total="%Ta")
TCP_LOG_FORMAT = _STATS.format(status="-", response="-", total="%Tt")
HTTP_DETAILED_LOG_FORMAT = HTTP_LOG_FORMAT + _DETAILS + " %HM %HPO"
TCP_DETAILED_LOG_FORMAT = TCP_LOG_FORMAT + _DETAILS

PID, BACKEND, SERVER, STATUS, CONNECT, RESPONSE, TOTAL = 0, 1, 2, 3, 4, 5, 6
QUEUE, BYTES_OUT, BYTES_IN, TERMINATION, CLIENT, METHOD, PATH = 7, 8, 9, 10, 11, 12, 13
COMPACT_FIELDS = 7
FLOW_FIELDS = 8  # a compact line with the client's address (flow recording on)
FLOW_CLIENT = 7  # where a compact line with flows has the client's address
FIELDS = 14  # the most a line has: a detailed http line
TCP_FIELDS = 12  # a detailed tcp line
# Field counts of the lines written
SHAPES = frozenset({COMPACT_FIELDS, FLOW_FIELDS, TCP_FIELDS, FIELDS})
NO_SERVER = "<NOSRV>"


RING = "meshgate_log"
# The size of a ring the agent reads with its stats polls: several thousand compact lines (about
# 100 bytes each with their mark), several seconds at the default budget of lines, so polls a
# few seconds apart (large configurations poll less often) lose few; and not so large that
# dumping it with every poll costs much.
POLLED_RING_BYTES = 1 << 19
# Compact lines read from the ring start with a mark that tells the lines already read from the
# new ones (`ring.new_lines` strips it): the frontend's count of lines logged and its name. Not
# the request number (%rt): it makes HAProxy copy every request's first line for the log,
# logged or not, about 500 instructions a request (bench/instructions.py).
MARK = "%lc:%f "


def log_formats(detailed: bool, flows: bool = False) -> tuple[str, str]:
    """(http, tcp) formats: compact for the statistics (read from the ring, so marked), with
    the client's address when `flows` records callers; detailed for the access log too
    (streamed to the agent; it has the client's address already)."""
    if detailed:
        return HTTP_DETAILED_LOG_FORMAT, TCP_DETAILED_LOG_FORMAT
    client = " %ci" if flows else ""
    return MARK + HTTP_LOG_FORMAT + client, MARK + TCP_LOG_FORMAT + client


def client_of(fields: list[bytes]) -> bytes | None:
    """The client's address of a line's fields, when the line has one."""
    count = len(fields)
    if count == FLOW_FIELDS:
        return fields[FLOW_CLIENT]
    if count >= TCP_FIELDS:
        return fields[CLIENT]
    return None


def split(line: bytes) -> list[bytes] | None:
    """The fields of one line, or None when it does not have a request line's shape."""
    fields = line.split(b" ", FIELDS - 1)
    return fields if len(fields) in SHAPES else None


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
    """All of a detailed line's fields, typed; None for a compact line or a number that is not
    one."""
    if len(fields) < TCP_FIELDS:
        return None
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
