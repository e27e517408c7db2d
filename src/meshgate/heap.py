"""The C allocator under the Python heap: what glibc's malloc holds, and giving freed pages back.

Python keeps small objects in pools of its own, but every larger object (configuration text,
parsed CSV rows' lists, JSON bodies) comes from malloc. glibc gives each thread that allocates
an arena of its own (up to 8 per core), and frees into the arena the memory came from; pages
freed in the middle of an arena stay resident until `malloc_trim` hands them back. So resident
memory can grow while the objects alive do not: `mallinfo()` tells the two apart (`in_use`
against `free`), `trim()` returns what is free.

Only glibc has these calls; elsewhere `mallinfo()` is None and `trim()` does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path


class _Mallinfo2(ctypes.Structure):
    # struct mallinfo2 (glibc 2.33 and later): every field a size_t.
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",  # bytes obtained with sbrk/mmap for the arenas
            "ordblks",  # free chunks
            "smblks",
            "hblks",  # chunks obtained with mmap of their own
            "hblkhd",  # their bytes
            "usmblks",
            "fsmblks",
            "uordblks",  # bytes in use
            "fordblks",  # bytes free in the arenas
            "keepcost",  # free at the top of the main arena (what trimming sbrk gives back)
        )
    ]


@dataclass(frozen=True)
class Mallinfo:
    """glibc's view of its own heap, in bytes, summed over all arenas."""

    arenas: int  # held for the arenas (in use and free)
    in_use: int  # allocated and not freed, arenas and big mmapped chunks
    free: int  # freed but kept in the arenas
    mmapped: int  # big chunks with mmaps of their own (returned when freed)
    free_chunks: int  # how fragmented `free` is


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallinfo2.restype = _Mallinfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):  # not glibc, or older than 2.33
        return None
    return libc


def mallinfo() -> Mallinfo | None:
    libc = _libc()
    if libc is None:
        return None
    info = libc.mallinfo2()
    return Mallinfo(
        arenas=info.arena,
        in_use=info.uordblks + info.hblkhd,
        free=info.fordblks,
        mmapped=info.hblkhd,
        free_chunks=info.ordblks,
    )


def trim() -> bool:
    """Give the pages free in every arena back to the system (`malloc_trim(0)`); True when
    some were. It walks every arena under its lock: milliseconds for a heap of hundreds of MB."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


_RSS = re.compile(r"^VmRSS:\s+(\d+) kB", re.MULTILINE)


def resident_bytes() -> int | None:
    """This process's resident memory (VmRSS), None where /proc has no such line."""
    try:
        match = _RSS.search(Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


@dataclass(frozen=True)
class Pymalloc:
    """Python's own allocator for objects of 512 bytes or less, in 1 MiB arenas: an arena
    goes back to the system only when every block in it is free."""

    arenas: int  # arenas held
    in_use: int  # bytes in blocks allocated
    free: int  # bytes in free blocks and unused pools of the arenas held


_PYMALLOC = {
    "arenas": re.compile(r"^# arenas allocated current\s+=\s+([\d,]+)", re.MULTILINE),
    "in_use": re.compile(r"^# bytes in allocated blocks\s+=\s+([\d,]+)", re.MULTILINE),
    "available": re.compile(r"^# bytes in available blocks\s+=\s+([\d,]+)", re.MULTILINE),
    "unused": re.compile(r"^\d+ unused pools \* \d+ bytes\s+=\s+([\d,]+)", re.MULTILINE),
}


def parse_pymalloc(text: str) -> Pymalloc | None:
    """The totals of `sys._debugmallocstats()`'s report (None: not in it)."""
    found = {key: pattern.search(text) for key, pattern in _PYMALLOC.items()}
    values = {k: int(m.group(1).replace(",", "")) for k, m in found.items() if m is not None}
    if len(values) != len(_PYMALLOC):
        return None
    return Pymalloc(values["arenas"], values["in_use"], values["available"] + values["unused"])


def pymalloc() -> Pymalloc | None:
    """Python's small-object arenas now. `sys._debugmallocstats()` writes only to the C
    stderr, so fd 2 points at a file for the moment it writes: a line another thread writes to
    stderr then lands there instead. For diagnosis, not for every request."""
    with tempfile.TemporaryFile("w+") as out:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        return parse_pymalloc(out.read())
