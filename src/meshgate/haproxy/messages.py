"""HAProxy's own messages (its stderr), as a level and a text for meshgate's log.

HAProxy 2.6 writes `[NOTICE]   (1234) : haproxy version is 2.6.12`, `[WARNING]  (1234) : Server
b/s1 is DOWN, ...` or `[ALERT]    (1234) : config : parsing ...`; continuation lines (a
configuration excerpt, a hint) come without the prefix and keep the level of the line before.
A message a runtime command caused names its cause after the prefix: `[NOTICE]   (1234) : CLI :
'server b/s' : New server registered.`
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

_PREFIX = re.compile(r"\[(?P<level>[A-Z]+)\]\s+\((?P<pid>\d+)\)\s+:\s?(?P<text>.*)")
LEVELS = {
    "DEBUG": logging.DEBUG,
    "NOTICE": logging.INFO,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ALERT": logging.ERROR,
    "EMERG": logging.CRITICAL,
}


@dataclass(frozen=True)
class Message:
    level: int
    text: str
    pid: int | None = None


def parse_message(line: str, previous_level: int = logging.INFO) -> Message:
    found = _PREFIX.fullmatch(line.strip())
    if found is None:
        return Message(previous_level, line.strip())
    level = LEVELS.get(found["level"], logging.WARNING)
    return Message(level, found["text"].strip(), int(found["pid"]))


def echoes_a_command(line: str) -> bool:
    """A notice or a warning HAProxy prints about a runtime command it ran: the server
    changes meshgate makes and logs itself. A registration at 1,000 gateways is 2,000 such
    lines, and parsing each was a tenth of the agent's busy time under instance churn. An
    alert is never one: a backend left without a server says so."""
    _, found, text = line.partition(") : ")
    return bool(found) and text.startswith("CLI : ") and not line.startswith("[ALERT]")
