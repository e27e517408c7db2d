"""The request-log receiver on a real unix socket: lines split across writes, several writers,
the JSON access log, a clean stop while writers are still connected."""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
from pathlib import Path

from meshgate.compiler import ir
from meshgate.stats.accesslog import AccessLog
from meshgate.stats.latency import LatencyBook
from meshgate.stats.logs import LogReceiver

BACKEND = "default.gw.web.abc123"
DETAILED = f"{BACKEND} i1 200 0 12 13 0 100 50 -- 127.0.0.1 GET /x"


def dataplane() -> ir.DataPlane:
    backend = ir.Backend(
        name=BACKEND,
        mode="http",
        route=ir.RouteRef("default", "gw", "web"),
        balance="roundrobin",
        servers=(ir.Server("i1", "127.0.0.1", 8080, 1),),
        health=ir.HealthCheck("tcp", 2000, 2, 3),
    )
    return ir.DataPlane(ir.Settings(run_dir="/run"), backends=(backend,))


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def wait_for(condition: object, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_lines_split_across_writes_and_writers_are_all_counted(tmp_path: Path) -> None:
    book = LatencyBook()
    book.accept([BACKEND])
    receiver = LogReceiver(tmp_path / "log.sock", book)
    await receiver.start()
    assert stat.S_IMODE((tmp_path / "log.sock").stat().st_mode) == 0o600
    writers = []
    try:
        for pid in (100, 200):
            _, writer = await asyncio.open_unix_connection(str(tmp_path / "log.sock"))
            writers.append(writer)
            text = "".join(f"{pid} {BACKEND} i1 200 0 {n % 30} {n % 30}\n" for n in range(50))
            for start in range(0, len(text), 37):  # cut lines anywhere
                writer.write(text[start : start + 37].encode())
                await writer.drain()
        await wait_for(lambda: book.parsed == 100)
        backends, _ = book.logged()
        assert backends == {BACKEND: {100: [50, 0, 50, 0, 0, 0], 200: [50, 0, 50, 0, 0, 0]}}
        assert book.window(BACKEND, None, now=0.0).total.percentile(1.0) == 29
        await receiver.stop()  # with both writers still connected
        assert not (tmp_path / "log.sock").exists()
    finally:
        await receiver.stop()
        for writer in writers:
            await close(writer)


async def test_the_access_log_has_an_object_per_recorded_line(tmp_path: Path) -> None:
    book = LatencyBook()
    book.accept([BACKEND])
    running = dataplane()
    target = tmp_path / "access.jsonl"
    receiver = LogReceiver(
        tmp_path / "log.sock", book, access_log=AccessLog(str(target), lambda: running)
    )
    await receiver.start()
    try:
        _, writer = await asyncio.open_unix_connection(str(tmp_path / "log.sock"))
        writer.write(f"7 {DETAILED}\nnot a request line\n7 {DETAILED}\n".encode())
        await writer.drain()
        await wait_for(lambda: target.exists() and len(target.read_text().splitlines()) == 2)
        entry = json.loads(target.read_text().splitlines()[0])
        assert (entry["gateway"], entry["route"], entry["instance"]) == ("gw", "web", "i1")
        assert (entry["status"], entry["path"], entry["worker"]) == (200, "/x", 7)
        await close(writer)
    finally:
        await receiver.stop()
