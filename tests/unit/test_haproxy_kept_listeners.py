"""The `_getsocks` wire format and the choice of which sockets to keep (HAProxy's own end of the
protocol is exercised in tests/integration/test_haproxy_crash.py)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from pathlib import Path

import pytest

from meshgate.haproxy import kept_listeners, socket_transfer
from meshgate.haproxy.socket_transfer import Described, TransferError


def test_descriptions_round_trip() -> None:
    items = [Described(), Described(b"ns1", b""), Described(b"", b"eth0"), Described(b"n", b"lo")]
    data = socket_transfer.encode(items)
    # What HAProxy 2.6 sends for a socket without namespace or interface: 0, 0, 4 zero bytes.
    assert data[:6] == bytes(6)
    assert socket_transfer.decode(data, len(items)) == items


@pytest.mark.parametrize(
    ("data", "count", "reason"),
    [
        (b"", 1, "cut short after 0 sockets"),
        (b"\x03ns", 1, "cut short after 0 sockets"),
        (b"\x00\x00\x00\x00", 1, "cut short after 0 sockets"),
        (bytes(6) + b"\x00", 2, "cut short after 1 sockets"),
        (bytes(7), 1, "1 bytes left after 1 socket descriptions"),
    ],
)
def test_a_broken_description_is_rejected_with_the_reason(
    data: bytes, count: int, reason: str
) -> None:
    with pytest.raises(TransferError, match=reason):
        socket_transfer.decode(data, count)


def test_a_name_longer_than_a_byte_can_say_is_rejected() -> None:
    with pytest.raises(ValueError, match="name longer than 255 bytes"):
        socket_transfer.encode([Described(b"x" * 256)])


def _listening(count: int) -> list[socket.socket]:
    found = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        found.append(sock)
    return found


@pytest.mark.parametrize("count", [0, 3, socket_transfer.MAX_SEND_FD + 5])
def test_sockets_given_are_the_same_sockets_received(tmp_path: Path, count: int) -> None:
    """Over a real unix socket, in batches of at most 252 like HAProxy's."""
    path = str(tmp_path / "give.sock")
    originals = _listening(count)
    given = [(s.fileno(), Described(b"", b"lo" if i % 2 else b"")) for i, s in enumerate(originals)]
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                socket_transfer.give(conn, given, 5)

        thread = threading.Thread(target=answer)
        thread.start()
        received = socket_transfer.receive(path, 5)
        thread.join()
    try:
        assert [d for _, d in received] == [d for _, d in given]
        for (fd, _), original in zip(received, originals, strict=True):
            assert os.fstat(fd).st_ino == os.fstat(original.fileno()).st_ino
            assert not os.get_inheritable(fd)
    finally:
        for fd, _ in received:
            os.close(fd)
        for sock in originals:
            sock.close()


def test_a_server_that_says_nothing_has_no_socket_to_give(tmp_path: Path) -> None:
    """HAProxy closes without a word when it exports no socket."""
    path = str(tmp_path / "mute.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()

        def close_at_once() -> None:
            conn, _ = server.accept()
            conn.recv(64)
            conn.close()

        thread = threading.Thread(target=close_at_once)
        thread.start()
        assert socket_transfer.receive(path, 5) == []
        thread.join()


def test_an_unexpected_request_is_refused() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(b"show info\n")
        with pytest.raises(TransferError, match="unexpected request"):
            socket_transfer.give(right, [], 1)


async def test_the_kept_sockets_are_served_and_released(tmp_path: Path) -> None:
    keeper = kept_listeners.KeptListeners(tmp_path / "keep.sock", timeout=5)
    source = kept_listeners.KeptListeners(tmp_path / "source.sock", timeout=5)
    originals = _listening(2)
    # The source serves sockets as a worker's admin socket would; the keeper copies them.
    source._held = [(os.dup(s.fileno()), Described()) for s in originals]
    await source.serve()
    await keeper.serve()
    try:
        expected = {("127.0.0.1", s.getsockname()[1]) for s in originals}
        assert await keeper.refresh(source.path, expected) == 2
        assert keeper.addresses() == expected
        assert oct(os.stat(keeper.path).st_mode & 0o777) == "0o600"
        again = await asyncio.to_thread(socket_transfer.receive, str(keeper.path), 5)
        assert {os.fstat(fd).st_ino for fd, _ in again} == {
            os.fstat(s.fileno()).st_ino for s in originals
        }
        for fd, _ in again:
            os.close(fd)
    finally:
        await keeper.close()
        await source.close()
    assert keeper.count == 0 and not keeper.path.exists()
    for sock in originals:
        sock.close()


def test_the_exposing_socket_is_read_from_global(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        "global\n"
        "    stats socket ipv4@127.0.0.1:9999 level admin expose-fd listeners\n"
        "    stats socket /run/plain.sock mode 600 level admin\n"
        "    stats socket unix@admin.sock mode 600 level admin expose-fd listeners\n"
        "\n"
        "frontend f\n"
        "    bind 127.0.0.1:80\n"
    )
    assert kept_listeners.exposing_socket(config, tmp_path) == tmp_path / "admin.sock"
    config.write_text("global\n    maxconn 10\ndefaults\n    mode http\n")
    assert kept_listeners.exposing_socket(config, tmp_path) is None


def test_addresses_are_compared_as_getsockname_reports_them() -> None:
    expected = kept_listeners.expected_addresses({("", 80), ("*", 81), ("[::]", 443), ("::1", 1)})
    assert expected == {("0.0.0.0", 80), ("0.0.0.0", 81), ("::", 443), ("::1", 1)}
    assert kept_listeners.mismatch(expected, set(expected)) is None
    why = kept_listeners.mismatch({("0.0.0.0", 80)}, {("0.0.0.0", 80), ("0.0.0.0", 99)})
    assert why == "missing [], not configured [('0.0.0.0', 99)]"
