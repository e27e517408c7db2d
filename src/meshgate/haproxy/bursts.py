"""HAProxy's messages in bursts of one kind, logged as one line per kind. Pure.

One runtime change to a service that a thousand gateways route to makes HAProxy print a
thousand lines of the same kind (`'server b/s' : New server registered.`, `Server b/s is
UP/READY ...`, `Server deleted.`), one per route backend, and a reload prints one `Proxy ...
stopped` per backend. Formatting and writing each took the event loop about 0.15 ms: a few
hundred milliseconds per instance registered, on the loop that applies the next change.

So the first message of each kind in a burst is logged as it comes, and the others of that
kind are counted and logged as one line when the burst ends: "N more like it", with the last
one's text. The messages that only echo meshgate's own runtime commands (see
`messages.echoes_a_command`) are not parsed at all: the burst counts them, and says how many
when it ends. A kind is the message's level and its text with names (`b/s`, the proxy of
`Proxy X`) and numbers taken out, so a server going DOWN is still logged in full the first
time, and a different reason is a different kind.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from meshgate.haproxy.messages import Message

# `backend/server` (quoted or not), the name after `Proxy`, and every number. A name starts
# after a space or a quote: tried from inside every word, it scanned each word to its end
# again and again, a third of the time of HAProxy's thousands of messages per change.
_NAMES = re.compile(
    r"(?P<proxy>(?<=Proxy )\S+)|(?P<name>(?<![^\s'])[^\s'/]+/[^\s']+)|(?P<number>\d+)"
)
# A burst ends after this long without a message of a kind already seen in it.
QUIET_S = 0.5
# ... or this long after it started, so that a steady stream is still summed up regularly.
LONGEST_S = 2.0
# Shapes of messages remembered (`_Shape`): a registration interleaves two kinds.
_SHAPES_KEPT = 4


def kind_of(message: Message) -> tuple[int, str]:
    return message.level, _NAMES.sub("#", message.text)


def _is_like(part: str, alternative: str | None) -> bool:
    """Whether `part` is what `_NAMES`'s `alternative` would take whole, between a text's
    head and tail that took nothing of it before."""
    if alternative == "proxy":
        return bool(part) and " " not in part
    if alternative == "name":
        return " " not in part and "'" not in part and part.find("/") > 0
    return part.isascii() and part.isdigit()


@dataclass
class _Shape:
    """The last message's text around its first name: a message with the same head and tail
    and a name of the same sort between them is of the same kind, without the pattern run
    over the whole text again (2,000-3,000 messages of a few kinds per registration at 1,000
    gateways; the pattern was a tenth of the agent's event loop time then)."""

    level: int
    head: str
    tail: str
    alternative: str | None
    kind: tuple[int, str]

    @classmethod
    def of(cls, message: Message, kind: tuple[int, str]) -> _Shape | None:
        found = _NAMES.search(message.text)
        if found is None:
            return None
        text = message.text
        return cls(message.level, text[: found.start()], text[found.end() :], found.lastgroup, kind)

    def kind_of(self, message: Message) -> tuple[int, str] | None:
        text, head, tail = message.text, self.head, self.tail
        if (
            message.level != self.level
            or len(text) <= len(head) + len(tail)
            or not text.startswith(head)
            or not text.endswith(tail)
        ):
            return None
        return (
            self.kind
            if _is_like(text[len(head) : len(text) - len(tail)], self.alternative)
            else None
        )


@dataclass
class _Kind:
    last: Message
    more: int = 0


@dataclass
class Bursts:
    """Feed messages in order; log what `feed` and `flush` return."""

    started: float | None = None  # when the current burst began (monotonic seconds)
    last: float = 0.0  # when its last message came
    echoes: int = 0  # messages of the burst that echo a runtime command
    _kinds: dict[tuple[int, str], _Kind] = field(default_factory=dict)
    _shapes: list[_Shape] = field(default_factory=list)  # the last few, newest first

    def feed(self, message: Message, now: float) -> list[Message]:
        """What to log now: this message when it is the first of its kind in the burst (and
        the summary of the burst before, when that one is over)."""
        out = self._arrived(now)
        key = self._kind_of(message)
        seen = self._kinds.get(key)
        if seen is None:
            self._kinds[key] = _Kind(message)
            out.append(message)
        else:
            seen.last, seen.more = message, seen.more + 1
        return out

    def echo(self, now: float) -> list[Message]:
        """Count a message echoing a runtime command; what to log now: the summary of the
        burst before, when that one is over."""
        out = self._arrived(now)
        self.echoes += 1
        return out

    def _arrived(self, now: float) -> list[Message]:
        out = self.flush() if self.due(now) else []
        if self.started is None:
            self.started = now
        self.last = now
        return out

    def _kind_of(self, message: Message) -> tuple[int, str]:
        for shape in self._shapes:
            key = shape.kind_of(message)
            if key is not None:
                return key
        key = kind_of(message)
        new = _Shape.of(message, key)
        if new is not None:
            self._shapes = [new, *self._shapes[: _SHAPES_KEPT - 1]]
        return key

    def open(self) -> bool:
        """A burst is under way: `flush` is due once it has been quiet for QUIET_S."""
        return self.started is not None

    def due(self, now: float) -> bool:
        """The burst is over: quiet for QUIET_S, or longer than LONGEST_S."""
        return self.started is not None and (
            now - self.last >= QUIET_S or now - self.started >= LONGEST_S
        )

    def flush(self) -> list[Message]:
        """The summaries of the burst, which ends here."""
        out = [
            Message(k.last.level, f"{k.more} more like it, the last: {k.last.text}", k.last.pid)
            for k in self._kinds.values()
            if k.more
        ]
        if self.echoes:
            text = f"messages about runtime commands not shown: {self.echoes}"
            out.append(Message(logging.INFO, text))
        self._kinds.clear()
        self.echoes = 0
        self.started = None
        return out
