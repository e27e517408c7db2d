"""Request lines read from HAProxy's ring: which lines of a dump are new. Pure.

With no forwarder attached, HAProxy only appends each line to its in-memory ring (logging a
line that a forwarder must be woken for cost HAProxy about 60 µs of CPU at a few thousand
lines a second, measured against TLS handshakes). The agent reads the whole ring with each
stats poll (`show events`), old lines included. Every compact line starts with a mark
(`logline.SEQUENCE`): the count of lines its frontend has logged, and the frontend's name. So
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
    mark (the master's answer for a worker that is gone) is not a line."""
    marked = [
        (mark, rest)
        for mark, _, rest in (line.partition(b" ") for line in dump.split(b"\n"))
        if rest and _MARK.fullmatch(mark)
    ]
    start = 0
    if marker is not None:
        for index in range(len(marked) - 1, -1, -1):
            if marked[index][0] == marker:
                start = index + 1
                break
    newest = marked[-1][0] if marked else marker
    return [rest for _, rest in marked[start:]], newest
