"""What the agent keeps of each watched change until the next pass loads it.

A store whose watch carries whole records (etcd's: `WatchEvent.record()`) lets the next load
read nothing: such an event is kept as it came. Any other event is worth its key alone (the
load reads the key again, `DesiredLoader._reread`), so its value is dropped as it arrives.
An apply of 100,000 gateways on the embedded store is 100,000 events, about 34 Python objects
each with their values: kept until the pass that loads them, they were 3.4 million objects
(300 MB) alive beside that pass's compile, the peak that Python's arenas keep resident after.
"""

from __future__ import annotations

import dataclasses

from meshgate.store import WatchEvent


def kept(event: WatchEvent) -> WatchEvent:
    """`event` as the agent keeps it until the next load: without a value a load never uses."""
    if event.value is None or event.record() is not None:
        return event
    return dataclasses.replace(event, value=None)
