"""The thin asyncio client for HAProxy's unix-socket CLIs: one command per connection.

Both sockets in 2.6 run a command, answer, and close once the client has stopped writing. The
worker's admin socket closes after one reply anyway, but the master socket keeps a connection
open after answering until it sees the client's end of input; so after the command we always
half-close our side (write EOF). That is what `socat` does too, and it makes one rule serve both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from meshgate.haproxy.commands import HaproxyError

# Requests larger than HAProxy's buffer (tune.bufsize, 16384 bytes by default) are dropped
# without a reply; callers keep payloads under this.
MAX_REQUEST_BYTES = 16_000


class RuntimeUnavailable(HaproxyError):  # noqa: N818
    """The socket could not be reached, or did not answer in time. `sent` says whether the
    command may have reached HAProxy (then its effect is unknown: read state back)."""

    def __init__(self, socket_path: str, reason: str, *, sent: bool) -> None:
        self.socket_path = socket_path
        self.sent = sent
        super().__init__(f"HAProxy socket {socket_path}: {reason}")


class RequestTooLarge(HaproxyError):  # noqa: N818
    """The request would not fit HAProxy's CLI buffer and would be dropped unanswered."""


def encode_request(command: str, payload: str | None = None) -> bytes:
    """The bytes of one request: `command\\n`, or for the payload form `command <<\\n`, the
    payload lines and the empty line that ends the payload."""
    if payload is None:
        text = f"{command}\n"
    else:
        text = f"{command} <<\n{payload}\n\n" if payload else f"{command} <<\n\n"
    data = text.encode("ascii")
    if len(data) > MAX_REQUEST_BYTES:
        raise RequestTooLarge(f"request of {len(data)} bytes exceeds {MAX_REQUEST_BYTES}; split it")
    return data


def unavailable(socket_path: str, error: OSError, *, sent: bool) -> RuntimeUnavailable:
    """The socket failed: why, in a word or a sentence."""
    return RuntimeUnavailable(socket_path, error.strerror or error.__class__.__name__, sent=sent)


async def close_quietly(writer: asyncio.StreamWriter | None) -> None:
    """Close a connection, if one was made; a socket already broken is closed all the same."""
    if writer is not None:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def send(
    socket_path: str, command: str, *, payload: str | None = None, timeout: float = 5.0
) -> str:
    """Send one command (and optional payload) and return everything HAProxy wrote back."""
    data = encode_request(command, payload)
    sent = False
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(socket_path)
            writer.write(data)
            sent = True
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            reply = await reader.read()
    except TimeoutError:
        raise RuntimeUnavailable(socket_path, f"no reply within {timeout}s", sent=sent) from None
    except OSError as error:
        raise unavailable(socket_path, error, sent=sent) from None
    finally:
        await close_quietly(writer)
    return reply.decode("utf-8", errors="replace")


CHUNK_BYTES = 256 * 1024  # what `stream` reads at a time, at most


async def stream(
    socket_path: str, command: str, *, timeout: float = 5.0, chunk_bytes: int = CHUNK_BYTES
) -> AsyncGenerator[bytes, None]:
    """`send`, for a reply too large to hold whole (`show stat` at 100,000 gateways is 100 MB):
    its bytes in chunks of at most `chunk_bytes`, as they arrive. `timeout` bounds the
    connection and each read, not the whole: the caller may take its time between chunks,
    HAProxy then waits with the rest. Close the generator (`contextlib.aclosing`) when leaving
    it early, so that the connection is closed at once."""
    data = encode_request(command)
    sent = False
    writer: asyncio.StreamWriter | None = None
    try:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(socket_path)
                writer.write(data)
                sent = True
                await writer.drain()
                if writer.can_write_eof():
                    writer.write_eof()
        except TimeoutError:
            raise RuntimeUnavailable(
                socket_path, f"no reply within {timeout}s", sent=sent
            ) from None
        while True:
            try:
                async with asyncio.timeout(timeout):
                    chunk = await reader.read(chunk_bytes)
            except TimeoutError:
                raise RuntimeUnavailable(
                    socket_path, f"no data within {timeout}s", sent=True
                ) from None
            if not chunk:
                return
            yield chunk
    except OSError as error:
        raise unavailable(socket_path, error, sent=sent) from None
    finally:
        await close_quietly(writer)
