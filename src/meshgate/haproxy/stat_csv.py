"""Parsing `show stat`, HAProxy's CSV of counters per frontend, backend and server. Pure."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from enum import IntEnum
from operator import itemgetter
from typing import NamedTuple


class StatType(IntEnum):
    """The `type` column of `show stat`."""

    FRONTEND = 0
    BACKEND = 1
    SERVER = 2
    LISTENER = 3


@dataclass(slots=True)
class StatRow:
    """One `show stat` row. Counters HAProxy leaves empty for this row type read as 0.

    Not frozen, unlike the other replies: a poll builds one per backend and server of every
    process (6,000 at a thousand gateways), and a frozen dataclass's `__init__`, which sets
    each of the 48 fields through `object.__setattr__`, made up a third of a poll's time."""

    pxname: str
    svname: str
    type: StatType
    status: str
    check_status: str
    addr: str
    mode: str
    qcur: int = 0
    scur: int = 0
    smax: int = 0
    stot: int = 0
    bin: int = 0
    bout: int = 0
    dreq: int = 0
    dresp: int = 0
    ereq: int = 0
    econ: int = 0
    eresp: int = 0
    wretr: int = 0
    wredis: int = 0
    weight: int = 0
    act: int = 0
    bck: int = 0
    chkfail: int = 0
    chkdown: int = 0
    lastchg: int = 0
    downtime: int = 0
    iid: int = 0
    sid: int = 0
    lbtot: int = 0
    rate: int = 0
    req_rate: int = 0
    req_tot: int = 0
    conn_tot: int = 0
    hrsp_1xx: int = 0
    hrsp_2xx: int = 0
    hrsp_3xx: int = 0
    hrsp_4xx: int = 0
    hrsp_5xx: int = 0
    hrsp_other: int = 0
    cli_abrt: int = 0
    srv_abrt: int = 0
    check_duration: int = 0
    qtime: int = 0
    ctime: int = 0
    rtime: int = 0
    ttime: int = 0
    idle_conn_cur: int = 0
    # The header's column names and this row's line, for fields not promoted above. The line,
    # not its values split: a list of a hundred strings per row was most of what a poll
    # allocated (10 MB at a thousand gateways, held until the poll ended), and the churn of
    # those small objects scattered what lives long over Python's arenas.
    columns: Sequence[str] = field(default=(), compare=False, repr=False)
    line: str = field(default="", compare=False, repr=False)

    @property
    def raw(self) -> dict[str, str]:
        """Every column as HAProxy printed it (built on demand: most rows never need it)."""
        return dict(zip(self.columns, self.line.split(","), strict=False))


_STAT_INT_FIELDS = tuple(f.name for f in fields(StatRow) if f.type in (int, "int"))
_STAT_TEXT_FIELDS = ("pxname", "svname", "status", "check_status", "addr", "mode")
# StatRow with positional arguments, which type checkers cannot follow through `*numbers`:
# the text fields, then the integers in _STAT_INT_FIELDS's (the class's) order, then the
# columns and the line. A third faster than keywords, at thousands of rows a poll.
_stat_row: Callable[..., StatRow] = StatRow


def _int(text: str) -> int:
    try:
        return int(text) if text else 0
    except ValueError:
        return 0


def parse_stat_csv(reply: str) -> list[StatRow]:
    """`show stat` CSV. Columns are found by the header's names, not positions, so columns
    added by later versions do not shift anything.

    This runs on every stats poll for every backend and server of every process (thousands of
    rows with many gateways), so the columns' positions are looked up once per reply."""
    rows: list[StatRow] = []
    for part in stat_csv_parts(reply, sys.maxsize):
        rows += part
    return rows


def stat_csv_parts(reply: str, rows_a_part: int) -> Iterator[list[StatRow]]:
    """`parse_stat_csv` in parts of at most `rows_a_part` rows, for a caller that lets other
    work run between them: at 10,000 gateways parsing a reply took 150 ms."""
    lines = reply.splitlines()
    header_index = next((i for i, line in enumerate(lines) if line.startswith("# ")), None)
    if header_index is None:
        return
    names = lines[header_index][2:].split(",")
    position = {name: index for index, name in enumerate(names)}
    width = len(names)
    # Columns this HAProxy does not print read as "" (then 0), from the padding below.
    int_columns = itemgetter(*(position.get(name, width) for name in _STAT_INT_FIELDS))
    text_columns = itemgetter(*(position.get(name, width) for name in _STAT_TEXT_FIELDS))
    type_at = position.get("type", width)
    pad = [""] * (width + 1)
    rows: list[StatRow] = []
    for line in lines[header_index + 1 :]:
        if not line or line.startswith("#"):
            continue
        # Values never contain commas except in free-text descriptions at the end of the row;
        # columns are taken by position and the typed ones all come first.
        parts = line.split(",")
        if len(parts) <= width:
            parts += pad[len(parts) :]
        try:
            row_type = StatType(_int(parts[type_at]))
        except ValueError:
            continue
        texts = int_columns(parts)
        try:
            numbers = [int(text) if text else 0 for text in texts]
        except ValueError:  # not expected in these columns; a bad value reads as 0
            numbers = [_int(text) for text in texts]
        pxname, svname, status, check_status, addr, mode = text_columns(parts)
        rows.append(
            _stat_row(
                pxname, svname, row_type, status, check_status, addr, mode,
                *numbers, names, line,
            )
        )  # fmt: skip
        if len(rows) >= rows_a_part:
            yield rows
            rows = []
    if rows:
        yield rows


def server_streams(reply: str) -> dict[tuple[str, str], int]:
    """(backend, server) -> its streams and queued requests (`scur` + `qcur`), from `show stat`
    replies (one or many run together), reading only those columns: a thousand backends'
    servers are looked at on each step of draining them, where parsing every column of every
    row took tens of milliseconds."""
    found: dict[tuple[str, str], int] = {}
    columns: list[int] = []
    server = str(int(StatType.SERVER))
    for line in reply.splitlines():
        if line.startswith("# "):
            names = {name: index for index, name in enumerate(line[2:].split(","))}
            wanted = ("pxname", "svname", "qcur", "scur", "type")
            columns = [names[n] for n in wanted] if all(n in names for n in wanted) else []
            continue
        if not columns or not line or line.startswith("#"):
            continue
        parts = line.split(",", max(columns) + 1)
        if len(parts) <= max(columns):
            continue
        pxname, svname, qcur, scur, row_type = (parts[i] for i in columns)
        if row_type == server:
            found[(pxname, svname)] = _int(qcur) + _int(scur)
    return found


class CountedRow(NamedTuple):
    """What a stats poll keeps of a `show stat` row: the few columns the tally reads, as a
    tuple. A poll at 100,000 gateways reads 200,000 rows; a `StatRow` each (48 counters and the
    row's line) was most of the 300 MB a poll held."""

    type: StatType
    pxname: str
    svname: str
    status: str
    scur: int
    stot: int
    # requests (HTTP requests for http proxies, sessions for tcp ones), the 1xx to 5xx
    # responses, bytes in, bytes out: `stats.tally.COUNTERS`'s order.
    counters: tuple[int, int, int, int, int, int, int, int]


def counted(row: StatRow) -> CountedRow:
    """A parsed row's counted columns (for callers holding `StatRow`s)."""
    requests = row.req_tot if row.mode == "http" else row.stot
    return CountedRow(
        row.type, row.pxname, row.svname, row.status, row.scur, row.stot,
        (requests, row.hrsp_1xx, row.hrsp_2xx, row.hrsp_3xx, row.hrsp_4xx, row.hrsp_5xx,
         row.bin, row.bout),
    )  # fmt: skip


# The columns `CountedRow` is made of, by name: the type, the texts, then the integers.
_COUNTED_TEXT = ("pxname", "svname", "status", "mode")
_COUNTED_INT = ("type", "scur", "stot", "req_tot", "hrsp_1xx", "hrsp_2xx", "hrsp_3xx",
                "hrsp_4xx", "hrsp_5xx", "bin", "bout")  # fmt: skip
_TYPES = {str(int(kind)): kind for kind in StatType}


class StatStream:
    """`show stat` CSV as it arrives, in chunks of bytes cut anywhere (mid-line, mid-field,
    mid-character): `feed` each chunk, then `close`; each returns the rows its complete
    lines made. Only the last incomplete line is held between chunks, so a reply of 100 MB
    (100,000 gateways) is never held whole, nor its lines, nor a row object per line.

    Lines before the header (`# pxname,...`) are not CSV: the master's error sentence when the
    worker asked for is gone, which then makes no rows. Columns are found by the header's
    names, as in `parse_stat_csv`; a column this HAProxy does not print reads as "" (then 0).
    """

    def __init__(self) -> None:
        self._rest = b""
        self._texts: Callable[[Sequence[str]], tuple[str, ...]] | None = None
        self._ints: Callable[[Sequence[str]], tuple[str, ...]] = itemgetter(0)
        self._width = 0
        self._pad: list[str] = []

    def feed(self, chunk: bytes) -> list[CountedRow]:
        data = self._rest + chunk if self._rest else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._rest = data
            return []
        self._rest = data[cut + 1 :]
        # Cut at a newline, which is never inside a UTF-8 sequence: decoding the part is safe.
        return self._rows(data[:cut].decode("utf-8", errors="replace").split("\n"))

    def close(self) -> list[CountedRow]:
        """The reply's end: its last line, when it did not end with a newline."""
        rest, self._rest = self._rest, b""
        return self._rows([rest.decode("utf-8", errors="replace")]) if rest else []

    def _header(self, line: str) -> None:
        names = line[2:].split(",")
        position = {name: index for index, name in enumerate(names)}
        self._width = width = len(names)
        self._pad = [""] * (width + 1)
        self._texts = itemgetter(*(position.get(name, width) for name in _COUNTED_TEXT))
        self._ints = itemgetter(*(position.get(name, width) for name in _COUNTED_INT))

    def _rows(self, lines: list[str]) -> list[CountedRow]:
        rows: list[CountedRow] = []
        for line in lines:
            if line.startswith("# "):
                self._header(line.rstrip("\r"))
                continue
            texts = self._texts
            if texts is None or not line or line[0] == "#":
                continue
            parts = line.rstrip("\r").split(",")
            if len(parts) <= self._width:
                parts += self._pad[len(parts) :]
            numbers = self._ints(parts)
            kind = _TYPES.get(numbers[0])
            if kind is None:
                continue
            try:
                values = [int(text) if text else 0 for text in numbers[1:]]
            except ValueError:  # not expected in these columns; a bad value reads as 0
                values = [_int(text) for text in numbers[1:]]
            scur, stot, req_tot, x1, x2, x3, x4, x5, bytes_in, bytes_out = values
            pxname, svname, status, mode = texts(parts)
            # The names are kept as keys from poll to poll: interned, each poll's rows name
            # them with the strings already held (the compiler interns backend names too)
            # instead of bringing copies that would replace or sit beside them.
            pxname, svname = sys.intern(pxname), sys.intern(svname)
            requests = req_tot if mode == "http" else stot
            rows.append(
                CountedRow(kind, pxname, svname, status, scur, stot,
                           (requests, x1, x2, x3, x4, x5, bytes_in, bytes_out))
            )  # fmt: skip
        return rows
