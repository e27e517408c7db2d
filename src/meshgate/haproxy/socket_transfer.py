"""HAProxy 2.6's listening-socket transfer (`_getsocks`), both ends, over a unix socket.

The side asking (a new HAProxy started with `-x PATH`, or meshgate reading a worker's admin
socket with `expose-fd listeners`) writes `_getsocks\\n`. The side giving answers with the
number of sockets (a native 4-byte int), then sends them in messages of at most 252 (SCM_RIGHTS),
each message's bytes describing its sockets in order: the length of the network namespace's
name (one byte), the name, the length of the interface's name (one byte), the name, and 4 bytes
of zeroes (listener options before 2.3). The asking side answers every message with 4 bytes;
the giving side waits for that before the next batch. HAProxy matches what it receives to its
`bind` lines by the socket's own address (getsockname), namespace and interface, so this module
keeps the two names as HAProxy sent them and passes them on unchanged.

(See HAProxy's src/cli.c `_getsocks` and src/sock.c `sock_get_old_sockets`.)
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
import struct
from dataclasses import dataclass

MAX_SEND_FD = 252  # HAProxy's limit on sockets in one message (include/haproxy/defaults.h)
_INT = struct.Struct("=i")
_OPTIONS = bytes(4)
_RECORD_MAX = 1 + 4096 + 1 + 16 + 4  # the longest description of one socket HAProxy sends
REQUEST = b"_getsocks\n"


class TransferError(Exception):
    """The other side broke the protocol or went away midway."""


@dataclass(frozen=True)
class Described:
    """What travels beside a socket: its namespace and interface names, as HAProxy sent them."""

    namespace: bytes = b""
    interface: bytes = b""


def encode(descriptions: list[Described]) -> bytes:
    """The bytes that accompany one message's sockets. Pure."""
    out = bytearray()
    for item in descriptions:
        for name in (item.namespace, item.interface):
            if len(name) > 255:
                raise ValueError(f"name longer than 255 bytes: {name[:40]!r}")
            out.append(len(name))
            out += name
        out += _OPTIONS
    return bytes(out)


def decode(data: bytes, count: int) -> list[Described]:
    """The descriptions of `count` sockets from the bytes of all messages. Pure."""
    found: list[Described] = []
    offset = 0
    for _ in range(count):
        names: list[bytes] = []
        for _field in ("namespace", "interface"):
            if offset >= len(data):
                raise TransferError(f"socket description cut short after {len(found)} sockets")
            length = data[offset]
            offset += 1
            if offset + length > len(data):
                raise TransferError(f"socket description cut short after {len(found)} sockets")
            names.append(data[offset : offset + length])
            offset += length
        if offset + len(_OPTIONS) > len(data):
            raise TransferError(f"socket description cut short after {len(found)} sockets")
        offset += len(_OPTIONS)
        found.append(Described(names[0], names[1]))
    if offset != len(data):
        raise TransferError(f"{len(data) - offset} bytes left after {count} socket descriptions")
    return found


def receive(path: str, timeout: float) -> list[tuple[int, Described]]:
    """Ask the process serving `path` for its listening sockets (blocking). The caller owns the
    descriptors returned (close-on-exec). A server that sends nothing at all has none to give:
    HAProxy closes without a word when it has no socket to export."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(path)
        conn.sendall(REQUEST)
        head = _receive_exactly(conn, _INT.size)
        if head is None:
            return []
        (count,) = _INT.unpack(head)
        if count < 0:
            raise TransferError(f"negative socket count {count}")
        fds: list[int] = []
        data = bytearray()
        try:
            while len(fds) < count:
                chunk, got = _receive_batch(conn)
                if not chunk and not got:
                    raise TransferError(f"closed after {len(fds)} of {count} sockets")
                fds += got
                data += chunk
                # The acknowledgement HAProxy waits for between batches; after the last one it
                # may have closed already.
                with contextlib.suppress(OSError):
                    conn.sendall(_INT.pack(len(fds)))
            if len(fds) != count:
                raise TransferError(f"{len(fds)} sockets received, {count} announced")
            descriptions = _decode_rest(conn, data, count)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return list(zip(fds, descriptions, strict=True))


def give(conn: socket.socket, sockets: list[tuple[int, Described]], timeout: float) -> None:
    """Answer one `_getsocks` request on `conn` with `sockets` (blocking). Nothing here closes
    the descriptors given."""
    conn.settimeout(timeout)
    request = _receive_exactly(conn, len(REQUEST))
    if request != REQUEST:
        raise TransferError(f"unexpected request {request!r}")
    conn.sendall(_INT.pack(len(sockets)))
    for start in range(0, len(sockets), MAX_SEND_FD):
        batch = sockets[start : start + MAX_SEND_FD]
        payload = encode([item for _, item in batch])
        sent = socket.send_fds(conn, [payload], [fd for fd, _ in batch])
        if sent != len(payload):
            raise TransferError(f"sent {sent} of {len(payload)} bytes")
        # Every message is acknowledged; waiting for the last one too lets the receiver take
        # everything before this end closes.
        if _receive_exactly(conn, _INT.size) is None:
            raise TransferError("closed before acknowledging")


def _decode_rest(conn: socket.socket, data: bytearray, count: int) -> list[Described]:
    """The descriptions, reading on if the last message's bytes arrived in parts."""
    while True:
        try:
            return decode(bytes(data), count)
        except TransferError:
            chunk = conn.recv(MAX_SEND_FD * _RECORD_MAX)
            if not chunk:
                raise
            data += chunk


def _receive_batch(conn: socket.socket) -> tuple[bytes, list[int]]:
    fd_size = array.array("i").itemsize
    data, ancillary, flags, _ = conn.recvmsg(
        MAX_SEND_FD * _RECORD_MAX, socket.CMSG_SPACE(MAX_SEND_FD * fd_size), socket.MSG_CMSG_CLOEXEC
    )
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[: len(payload) - len(payload) % fd_size])
            fds += received.tolist()
    if flags & socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        raise TransferError("sockets truncated in transfer")
    return data, fds


def _receive_exactly(conn: socket.socket, size: int) -> bytes | None:
    """`size` bytes, or None if the other side closed before sending any."""
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            if not data:
                return None
            raise TransferError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data
