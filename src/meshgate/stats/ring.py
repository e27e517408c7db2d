"""Request lines read from HAProxy's ring: which lines of a dump are new. Pure.

With no forwarder attached, HAProxy only appends each line to its in-memory ring (logging a
line that a forwarder must be woken for cost HAProxy about 60 µs of CPU at a few thousand
lines a second, measured against TLS handshakes). The agent reads the whole ring with each
stats poll (`show events`), old lines included. Every compact line starts with a mark
(`logline.MARK`): the count of lines its frontend has logged, and the frontend's name. So
the newest line of one dump marks where the next dump's new lines begin: the ring only ever
appends, and overwrites the oldest lines when full.

HAProxy 2.6 counts a frontend's lines without a lock, so two threads logging at the same
moment can write the same mark (about 1 line in 600 under load on two threads). Should the
marker be one of those, the search from the end finds its twin, which comes just after it:
the few lines between are skipped, never read twice.
"""

from __future__ import annotations

import re

_MARK = re.compile(rb"[0-9]+:[^ ]+")  # <lines logged>:<frontend>


def new_lines(dump: bytes, marker: bytes | None) -> tuple[list[bytes], bytes | None]:
    """The lines of a `show events` dump that come after the line marked `marker`, without
    their mark, and the mark of the dump's last line (the next marker).

    Without a marker (a worker's first dump), or when its line has been overwritten since
    (more lines came than the ring holds), every line of the dump is new. Anything without a
    mark (the master's answer for a worker that is gone) is not a line. The lines before the
    marker, most of a full ring, are skipped at the speed of a byte search."""
    start = _after_marker(dump, marker) if marker is not None else 0
    lines: list[bytes] = []
    newest = marker
    for line in dump[start:].split(b"\n"):
        mark, _, rest = line.partition(b" ")
        if rest and _MARK.fullmatch(mark):
            lines.append(rest)
            newest = mark
    return lines, newest


def _after_marker(dump: bytes, marker: bytes) -> int:
    """Where the line after the last line marked `marker` starts (0 when there is none)."""
    prefix = marker + b" "
    at = dump.rfind(b"\n" + prefix)
    if at < 0 and not dump.startswith(prefix):
        return 0
    end = dump.find(b"\n", at + 1)
    return len(dump) if end < 0 else end + 1
