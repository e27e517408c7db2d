"""The thin asyncio client for HAProxy's unix-socket CLIs: one command per connection.

Both sockets in 2.6 run a command, answer, and close once the client has stopped writing. The
worker's admin socket closes after one reply anyway, but the master socket keeps a connection
open after answering until it sees the client's end of input; so after the command we always
half-close our side (write EOF). That is what `socat` does too, and it makes one rule serve both.
"""

from __future__ import annotations

import asyncio
import contextlib

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
        reason = error.strerror or error.__class__.__name__
        raise RuntimeUnavailable(socket_path, reason, sent=sent) from None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return reply.decode("utf-8", errors="replace")
