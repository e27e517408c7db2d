"""Allocation snapshots wait for a quiet moment; the heap numbers and the stats lines are read
from this very process (glibc's malloc, /proc)."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshgate import heap, memory_debug


@pytest.fixture
def tracing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """MESHGATE_TRACEMALLOC's handler in this process, tracing started by its first SIGUSR2;
    the previous handler, tracing and registrations restored afterwards."""
    directory = tmp_path / "traces"
    monkeypatch.setenv(memory_debug.ENVIRONMENT, str(directory))
    monkeypatch.setattr(memory_debug, "_quiet", memory_debug._Quiet())
    previous = signal.getsignal(signal.SIGUSR2)
    assert memory_debug.trace_if_asked() == directory
    signal.raise_signal(signal.SIGUSR2)
    try:
        assert tracemalloc.is_tracing()
        yield directory
    finally:
        tracemalloc.stop()
        signal.signal(signal.SIGUSR2, previous)


def written(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.tracemalloc"))


def test_without_a_loop_the_snapshot_is_written_at_once(tracing: Path) -> None:
    signal.raise_signal(signal.SIGUSR2)
    [path] = written(tracing)
    assert tracemalloc.Snapshot.load(str(path)).traces
    assert not list(tracing.glob("*.tmp"))


def test_the_snapshot_waits_until_the_poll_in_flight_ends(tracing: Path) -> None:
    async def scenario() -> None:
        poll = asyncio.Lock()
        memory_debug.snapshot_between(lambda: poll)
        async with poll:  # a poll in flight: its rows half-parsed
            signal.raise_signal(signal.SIGUSR2)
            await asyncio.sleep(0.2)
            assert written(tracing) == []
        for _ in range(100):
            if written(tracing):
                return
            await asyncio.sleep(0.02)
        raise AssertionError("no snapshot after the poll ended")

    asyncio.run(scenario())
    assert len(written(tracing)) == 1


def test_once_its_loop_is_gone_snapshots_are_written_at_once(tracing: Path) -> None:
    async def register() -> None:
        memory_debug.snapshot_between(asyncio.Lock)

    asyncio.run(register())
    signal.raise_signal(signal.SIGUSR2)
    assert len(written(tracing)) == 1


def test_nothing_is_installed_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(memory_debug.ENVIRONMENT, raising=False)
    monkeypatch.delenv(memory_debug.STATS_ENVIRONMENT, raising=False)
    assert memory_debug.trace_if_asked() is None
    assert memory_debug.stats_if_asked() is None


def test_mallinfo_sees_an_allocation_and_its_release() -> None:
    before = heap.mallinfo()
    if before is None:
        pytest.skip("not glibc")
    # Many blocks of 4 kB, each too large for Python's own pools: they come from malloc.
    blocks = [bytearray(4096) for _ in range(2048)]
    during = heap.mallinfo()
    assert during is not None and during.in_use - before.in_use >= 2048 * 4096 * 0.9
    del blocks
    after = heap.mallinfo()
    assert after is not None and after.in_use < during.in_use - 2048 * 4096 * 0.9
    heap.trim()
    trimmed = heap.mallinfo()
    assert trimmed is not None and trimmed.free <= after.free


def test_pymalloc_sees_small_objects_and_its_arenas() -> None:
    before = heap.pymalloc()
    assert before is not None and before.arenas >= 1 and before.in_use > 0
    objects = [object() for _ in range(400_000)]  # 16 bytes each, about 6 MB
    during = heap.pymalloc()
    # Arenas may have had room for them already (a long test session leaves free space).
    assert during is not None and during.in_use - before.in_use >= 400_000 * 16 * 0.8
    assert during.arenas * 2**20 >= during.in_use
    del objects


def test_pymalloc_report_is_parsed() -> None:
    text = """# arenas allocated current         =                    2
2 arenas * 1048576 bytes/arena     =            2,097,152
# bytes in allocated blocks        =              827,872
# bytes in available blocks        =              343,408
54 unused pools * 16384 bytes      =              884,736
"""
    assert heap.parse_pymalloc(text) == heap.Pymalloc(2, 827_872, 343_408 + 884_736)
    assert heap.parse_pymalloc("nothing") is None


def test_resident_memory_is_read() -> None:
    rss = heap.resident_bytes()
    assert rss is None or rss > 10 * 2**20


def test_stats_lines_are_appended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "memstats.jsonl"
    monkeypatch.setenv(memory_debug.STATS_ENVIRONMENT, str(path))
    monkeypatch.setenv(f"{memory_debug.STATS_ENVIRONMENT}_INTERVAL", "0.05")
    stop = threading.Event()
    assert memory_debug.stats_if_asked(stop) == path
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            lines = path.read_text().splitlines() if path.exists() else []
            if len(lines) >= 2:
                break
            time.sleep(0.05)
    finally:
        stop.set()
    first, second = (json.loads(line) for line in lines[:2])
    assert first["rss"] is None or first["rss"] > 0
    assert first["python_blocks"] > 0 and second["time"] >= first["time"]
    assert "traced" not in first  # tracing is not on
    assert first["pymalloc_arenas"] >= 1 and first["pymalloc_in_use"] > 0
