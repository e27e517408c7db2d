"""`show stat` read as it arrives: the parser fed chunks cut anywhere, and the reader over a
real unix socket sending a large reply in pieces."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshgate.compiler import naming
from meshgate.haproxy import stat_csv
from meshgate.haproxy.stat_csv import CountedRow, StatStream, StatType, counted
from meshgate.haproxy.stats_reader import ROWS_A_STEP, StatsReader
from meshgate.haproxy.transport import RuntimeUnavailable
from tests.unit.test_haproxy_replies import SHOW_STAT

REPLY = SHOW_STAT.encode()
EXPECTED = [counted(row) for row in stat_csv.parse_stat_csv(SHOW_STAT)]


def streamed(chunks: list[bytes]) -> list[CountedRow]:
    parser = StatStream()
    rows = [row for chunk in chunks for row in parser.feed(chunk)]
    return rows + parser.close()


def test_a_reply_fed_whole_gives_the_counted_columns_of_every_row() -> None:
    rows = streamed([REPLY])
    assert rows == EXPECTED
    by_name = {(row.pxname, row.svname): row for row in rows}
    assert by_name[("be", "s1")].type is StatType.SERVER
    assert by_name[("be_dyn", "BACKEND")].type is StatType.BACKEND
    draining = by_name[("tcp2", "d1")]
    # A tcp proxy counts sessions as its requests.
    assert (draining.status, draining.scur, draining.stot, draining.counters[0]) == (
        "DRAIN", 1, 1, 1,
    )  # fmt: skip


def test_each_poll_names_proxies_and_servers_with_the_strings_already_held() -> None:
    """The tally keeps the names as keys from poll to poll: a later poll's rows bring the
    same string objects (and a backend's name is the compiler's own), not copies."""
    first, second = streamed([REPLY]), streamed([REPLY])
    for one, other in zip(first, second, strict=True):
        assert one.pxname is other.pxname and one.svname is other.svname
    compiled = naming.route_backend_name("default", "web", "v1")
    row = REPLY.replace(b"be_dyn,", f"{compiled},".encode())
    assert any(r.pxname is compiled for r in streamed([row]))


def test_a_reply_cut_at_any_byte_gives_the_same_rows() -> None:
    """Cut mid-line, mid-field, between the two bytes of a line's end: every cut point."""
    for cut in range(len(REPLY) + 1):
        assert streamed([REPLY[:cut], REPLY[cut:]]) == EXPECTED, cut


def test_a_reply_fed_a_byte_at_a_time_gives_the_same_rows() -> None:
    assert streamed([REPLY[i : i + 1] for i in range(len(REPLY))]) == EXPECTED


def test_a_name_cut_in_the_middle_of_a_character_is_whole() -> None:
    header = "# pxname,svname,scur,stot,bin,bout,status,type\n"
    data = (header + "caf\u00e9,BACKEND,2,5,10,20,UP,1\n").encode()
    split = data.index("\u00e9".encode()) + 1  # between the two bytes of é
    (row,) = streamed([data[:split], data[split:]])
    assert (row.pxname, row.type, row.scur, row.stot) == ("caf\u00e9", StatType.BACKEND, 2, 5)
    # No mode column: not http, so its sessions are its requests; bytes in and out.
    assert row.counters == (5, 0, 0, 0, 0, 0, 10, 20)


def test_a_reply_ending_without_a_newline_keeps_its_last_row() -> None:
    assert streamed([REPLY.rstrip(b"\n")]) == EXPECTED
    parser = StatStream()
    assert parser.feed(REPLY.rstrip(b"\n")) == EXPECTED[:-1]  # the last line may go on
    assert parser.close() == EXPECTED[-1:]
    assert parser.close() == []


def test_the_masters_sentence_for_a_gone_worker_makes_no_rows() -> None:
    assert streamed([b"Can't find the target PID matching the prefix '@!4242'\n"]) == []
    assert streamed([b"Can't find the target PID"]) == []
    assert streamed([]) == [] and streamed([b"", b"\n\n"]) == []


def test_rows_before_the_header_bad_types_and_bad_numbers() -> None:
    header = b"# pxname,svname,scur,stot,type,mode\n"
    rows = streamed([
        b"be,x,1,1,1,http\n",  # before any header: not CSV
        header,
        b"be,BACKEND,x,7,1,http\n",  # a bad number reads as 0
        b"be,s,1,2,9,http\n",  # a type this version does not know: left out
        b"be,s,1,2,2,http\r\n",  # a line ending in CRLF
        b"# a comment\n",
    ])  # fmt: skip
    assert [(r.svname, r.type, r.scur, r.stot) for r in rows] == [
        ("BACKEND", StatType.BACKEND, 0, 7),
        ("s", StatType.SERVER, 1, 2),
    ]
    assert rows[1].status == ""  # no status column: ""


@contextlib.asynccontextmanager
async def master(path: Path, reply: bytes, *, piece: int) -> AsyncIterator[list[bytes]]:
    """A unix socket that reads one command and writes `reply` `piece` bytes at a time."""
    commands: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        commands.append(await reader.readline())
        for start in range(0, len(reply), piece):
            writer.write(reply[start : start + piece])
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_unix_server(answer, str(path))
    async with server:
        yield commands


def many_rows(count: int) -> bytes:
    rows = "".join(f"be{n},s,0,{n},UP,2\n" for n in range(count))
    return ("# pxname,svname,scur,stot,status,type\n" + rows).encode()


async def test_the_reader_hands_a_large_reply_in_parts_as_it_arrives(tmp_path: Path) -> None:
    count = 3 * ROWS_A_STEP + 17
    socket_path = tmp_path / "master.sock"
    async with master(socket_path, many_rows(count), piece=7_000) as commands:
        reader = StatsReader(str(socket_path))
        parts = [part async for part in reader.worker_parts(4242)]
    assert commands == [b"@!4242 show stat -1 6 -1\n"]
    # Never the whole reply: parts of ROWS_A_STEP rows, the rest last.
    assert [len(part) for part in parts] == [ROWS_A_STEP] * 3 + [17]
    rows = [row for part in parts for row in part]
    assert [row.pxname for row in rows] == [f"be{n}" for n in range(count)]
    assert rows[-1].stot == count - 1 and rows[-1].type is StatType.SERVER


async def test_the_reader_gives_up_on_a_silent_socket(tmp_path: Path) -> None:
    socket_path = tmp_path / "master.sock"

    given_up = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await given_up.wait()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_unix_server(silent, str(socket_path))
    async with server:
        reader = StatsReader(str(socket_path), timeout=0.2)
        with pytest.raises(RuntimeUnavailable, match="no data within"):
            _ = [part async for part in reader.worker_parts(1)]
        given_up.set()
        await asyncio.sleep(0.05)
    with pytest.raises(RuntimeUnavailable):  # nobody listening any more
        _ = [part async for part in reader.worker_parts(1)]
