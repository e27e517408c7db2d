"""Request lines read from HAProxy's ring: which lines of a dump are new. Pure.

With no forwarder attached, HAProxy only appends each line to its in-memory ring (logging a
line that a forwarder must be woken for cost HAProxy about 60 µs of CPU at a few thousand
lines a second, measured against TLS handshakes). The agent reads the whole ring with each
stats poll (`show events`), old lines included. Every compact line starts with the worker's
request number (`logline.SEQUENCE`), unique within the worker, so the newest line of one dump
marks where the next dump's new lines begin: the ring only ever appends, and overwrites the
oldest lines when full.
"""

from __future__ import annotations


def new_lines(dump: bytes, marker: bytes | None) -> tuple[list[bytes], bytes | None]:
    """The lines of a `show events` dump that come after the line numbered `marker`, without
    their number, and the number of the dump's last line (the next marker).

    Without a marker (a worker's first dump), or when its line has been overwritten since
    (more lines came than the ring holds), every line of the dump is new. Anything without a
    number (the master's answer for a worker that is gone) is not a line."""
    numbered = [
        (number, rest)
        for number, _, rest in (line.partition(b" ") for line in dump.split(b"\n"))
        if number.isdigit() and rest
    ]
    start = 0
    if marker is not None:
        for index in range(len(numbered) - 1, -1, -1):
            if numbered[index][0] == marker:
                start = index + 1
                break
    newest = numbered[-1][0] if numbered else marker
    return [rest for _, rest in numbered[start:]], newest
