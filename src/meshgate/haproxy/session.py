"""Many commands in one CLI session on the worker's own socket, each reply told apart.

Measured on 2.6.12 with 1,000 servers' `add server`, `enable health` and `set server ...
state ready`: 15-30 ms in one session on the worker's admin socket, 80-160 ms through the
master socket (`@1` before each command, pipelined or in one session), which hands each
command to the worker on a connection of its own.

In prompt mode (`prompt` first) HAProxy ends every reply with a prompt, `\\n> ` at the start of
a line, which none of the replies of the commands sent this way contains: so each command's
reply is read on its own and checked, and nothing needs to be read back to learn what ran.

The admin socket is a listener like any other: after a reload the old worker, stopping, still
accepts on it during its grace period. So a session first asks `show info` and goes on only on
the worker the caller names (the master's current one) and only if it is not stopping;
otherwise it says so (`WrongWorker`) and the caller connects again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from meshgate.haproxy import commands, replies, transport
from meshgate.haproxy.transport import RuntimeUnavailable

PROMPT = "\n> "


def split_replies(output: str) -> list[str]:
    """The complete replies of a prompt-mode session, in order, each with its last newline.
    The `prompt` command's own reply (empty) is the first; text after the last prompt is a
    reply cut short, and left out."""
    pieces = output.split(PROMPT)
    return [piece + "\n" for piece in pieces[:-1]]


@dataclass(frozen=True)
class WrongWorker(Exception):  # noqa: N818
    """The session reached another worker than the one named (or a stopping one)."""

    pid: int
    stopping: bool


async def _read_replies(reader: asyncio.StreamReader, count: int | None) -> str:
    """Read until `count` prompts have come (None: until the end); returns all that was read."""
    text, seen = "", 0
    while count is None or seen < count:
        chunk = await reader.read(65536)
        if not chunk:
            break
        start = max(0, len(text) - len(PROMPT) + 1)  # a prompt may span two chunks
        text += chunk.decode("utf-8", errors="replace")
        seen += text.count(PROMPT, start)
    return text


async def run(
    socket_path: str, worker_pid: int, lines: Sequence[str], *, timeout: float
) -> list[str]:
    """Run `lines` in order in one session on the worker `worker_pid`; returns one reply per
    line, or fewer when the connection was cut (the missing ones' outcome is unknown), or
    more when a reply held a prompt of its own (then which is which is unknown).

    Raises WrongWorker before sending any of `lines` when another worker answered, and
    RuntimeUnavailable (with `sent`) when the socket failed."""
    for line in lines:
        commands.one_command(line)  # one command each: a `;` or newline would shift replies
    sent = False
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(socket_path)
            writer.write(b"prompt\nshow info\n")
            await writer.drain()
            greeting = await _read_replies(reader, 2)
            found = split_replies(greeting)
            if len(found) < 2:
                raise RuntimeUnavailable(socket_path, "no reply to show info", sent=False)
            info = replies.parse_info(found[1])
            pid, stopping = int(info.get("Pid", "0")), info.get("Stopping", "0") != "0"
            if pid != worker_pid or stopping:
                raise WrongWorker(pid, stopping)
            # Read while writing: the replies of thousands of commands can fill the socket's
            # buffer, and HAProxy stops reading commands until they are taken.
            # Until the end (`quit` closes the session), not until as many prompts as lines:
            # then a reply that held a prompt of its own shows as one reply too many.
            reading = asyncio.ensure_future(_read_replies(reader, None))
            try:
                sent = True
                # `quit` ends the session, not the end of input: 2.6 sometimes resets a
                # session whose input ended while commands were still being run (about one
                # in five with 3,000 commands), never one that quits.
                writer.write("".join(f"{line}\n" for line in [*lines, "quit"]).encode("ascii"))
                await writer.drain()
                output = await reading
            finally:
                reading.cancel()
    except TimeoutError:
        raise RuntimeUnavailable(socket_path, f"no reply within {timeout}s", sent=sent) from None
    except OSError as error:
        raise transport.unavailable(socket_path, error, sent=sent) from None
    finally:
        await transport.close_quietly(writer)
    # The output begins with the reply to the first line (`show info` ended with the prompt
    # before it): with a prompt put in front, the first piece is empty and not a reply.
    return split_replies(PROMPT + output)[1:]
