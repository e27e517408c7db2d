"""Parsing HAProxy 2.6 runtime API replies, and telling errors from success.

Pure: text in, typed values or exceptions out. HAProxy answers in plain text and has no status
code, so errors are recognised by their wording. What success looks like depends on the
command; `check_reply` knows each kind:

- Empty on success (the reply is only "\\n"): `set server ... weight|state`, `enable|disable
  health`, `shutdown sessions`, `add map`, `set map`, `del map`, `commit map`, `clear map`,
  `set var` (through the master with `experimental-mode on;` before it: one empty line).
- A fixed sentence on success: `add server` ("New server registered."), `del server` ("Server
  deleted."), `prepare map` ("New version created: N").
- A report on success: `set server ... addr` ("IP changed from ...", "no need to change ...").
- A sentence on success, a report ending in "Can't ..." on failure: the certificate and CA
  file commands (`new`, `set`, `commit`, `abort ssl cert|ca-file`, `add ssl crt-list`);
  `commit` and `add ssl crt-list` end with "Success!" when they worked.
- Nothing at all, the connection simply closed: master `reload` (the master re-executes
  itself). For every other command a reply of zero bytes means the command was never run: 2.6
  drops a request that does not fit its buffer (16 kB by default) without a word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from meshgate.haproxy.commands import HaproxyError


class CommandKind(Enum):
    READ = "read"  # show info/stat/servers state/map/proc: any text is data
    SET_SERVER = "set server"  # weight, state
    SET_SERVER_ADDR = "set server addr"
    ADD_SERVER = "add server"
    DEL_SERVER = "del server"
    HEALTH = "health"  # enable/disable health
    SHUTDOWN_SESSIONS = "shutdown sessions"
    PREPARE_MAP = "prepare map"
    CHANGE_MAP = "change map"  # add/set/del/commit/clear map
    NEW_SSL = "new ssl"  # new ssl cert|ca-file
    SET_SSL = "set ssl"  # set ssl cert|ca-file: opens a transaction
    COMMIT_SSL = "commit ssl"  # commit ssl cert|ca-file
    ABORT_SSL = "abort ssl"
    ADD_CRT_LIST = "add ssl crt-list"
    SET_VAR = "set var"  # empty on success
    RELOAD = "reload"
    PIPELINE = "pipeline"  # many commands in one request (see RuntimeClient.pipeline)


# --- errors ---------------------------------------------------------------------------------


class RuntimeCommandFailed(HaproxyError):  # noqa: N818
    """HAProxy refused a command; `reply` is its own words."""

    def __init__(self, kind: CommandKind, reply: str) -> None:
        self.kind = kind
        self.reply = reply.strip()
        super().__init__(f"{kind.value}: {self.reply or 'no reply'}")


class NoReply(RuntimeCommandFailed):
    """The connection closed without a byte: the request was dropped (too large, or HAProxy
    went away), so it did not run."""


class NoSuchProcess(RuntimeCommandFailed):
    """The master has no process behind an `@` prefix (yet): the command did not run."""


class UnknownCommand(RuntimeCommandFailed): ...


class PermissionDenied(RuntimeCommandFailed): ...


class NoSuchBackend(RuntimeCommandFailed): ...


class NoSuchServer(RuntimeCommandFailed): ...


class NoSuchMap(RuntimeCommandFailed): ...


class MapEntryNotFound(RuntimeCommandFailed): ...


class MapVersionInvalid(RuntimeCommandFailed): ...


class ServerAlreadyExists(RuntimeCommandFailed): ...


class ServerNotInMaintenance(RuntimeCommandFailed): ...


class ServerHasConnections(RuntimeCommandFailed): ...


class UnexpectedReply(HaproxyError):  # noqa: N818
    """A reply that does not have the shape this version of HAProxy is known to produce."""


class ExperimentalModeRequired(RuntimeCommandFailed):
    """The command needs `experimental-mode on` first, on the same connection."""


# Checked in order against the start of the reply (case-sensitive, as HAProxy writes them).
_ERRORS: tuple[tuple[str, type[RuntimeCommandFailed]], ...] = (
    ("Unknown command", UnknownCommand),
    ("Can't find the target PID", NoSuchProcess),  # master: `@1 ...` with no worker
    ("Permission denied", PermissionDenied),
    ("This command is restricted to experimental mode only.", ExperimentalModeRequired),
    ("No such backend.", NoSuchBackend),
    ("Can't find backend.", NoSuchBackend),  # show servers state <unknown>
    ("No such proxy.", NoSuchBackend),  # show stat <unknown>
    ("No such server.", NoSuchServer),
    ("Unknown map identifier", NoSuchMap),
    ("entry not found.", MapEntryNotFound),  # set map
    ("Key not found.", MapEntryNotFound),  # del map
    ("Version number", MapVersionInvalid),  # "out of range." / "in the future, ..."
    ("Already exists a server with the same name", ServerAlreadyExists),
    ("Only servers in maintenance mode can be deleted.", ServerNotInMaintenance),
    ("Server still has connections attached to it", ServerHasConnections),
)

_SUCCESS_SENTENCE: dict[CommandKind, str | tuple[str, ...]] = {
    CommandKind.ADD_SERVER: "New server registered.",
    CommandKind.DEL_SERVER: "Server deleted.",
    CommandKind.PREPARE_MAP: "New version created:",
    # "... for certificate <path>!" / "... for CA <path>!" (lower-case t for CA files in 2.6).
    CommandKind.SET_SSL: ("Transaction created for", "transaction created for"),
    # "New empty certificate store '<path>'!" / "New CA file created '<path>'!"
    CommandKind.NEW_SSL: ("New empty certificate store", "New CA file created"),
    CommandKind.ABORT_SSL: "Transaction aborted",
}
# Kinds that report their steps and end with this line when everything worked.
_SUCCESS_LAST_LINE = {CommandKind.COMMIT_SSL: "Success!", CommandKind.ADD_CRT_LIST: "Success!"}
_ADDR_CHANGED = ("IP changed from", "no need to change", "port changed from")


def classify(kind: CommandKind, reply: str) -> RuntimeCommandFailed:
    """The exception that describes `reply`, an error text HAProxy returned for `kind`."""
    text = reply.strip()
    for prefix, error in _ERRORS:
        if text.startswith(prefix):
            return error(kind, reply)
    return RuntimeCommandFailed(kind, reply)


def check_reply(kind: CommandKind, reply: str) -> None:
    """Raise the matching RuntimeCommandFailed subclass unless `reply` means success."""
    if reply == "":
        if kind is CommandKind.RELOAD:
            return
        raise NoReply(kind, reply)
    text = reply.strip()
    if kind is CommandKind.READ:
        # Data never starts with these sentences; a reply that does is an error.
        if any(text.startswith(prefix) for prefix, _ in _ERRORS):
            raise classify(kind, reply)
        return
    if kind in _SUCCESS_SENTENCE:
        if text.startswith(_SUCCESS_SENTENCE[kind]):
            return
        raise classify(kind, reply)
    if kind in _SUCCESS_LAST_LINE:
        if text.splitlines()[-1:] == [_SUCCESS_LAST_LINE[kind]]:
            return
        raise classify(kind, reply)
    if kind is CommandKind.SET_SERVER_ADDR:
        if text.startswith(_ADDR_CHANGED):
            return
        raise classify(kind, reply)
    if text:
        raise classify(kind, reply)


# --- show info ------------------------------------------------------------------------------


def parse_info(reply: str) -> dict[str, str]:
    """`show info`: one `Name: value` per line (some names contain spaces)."""
    info: dict[str, str] = {}
    for line in reply.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            info[name.strip()] = value.strip()
    return info


# --- maps -----------------------------------------------------------------------------------


_NEW_VERSION = re.compile(r"New version created:\s*(\d+)")


def parse_prepare_map(reply: str) -> int:
    match = _NEW_VERSION.search(reply)
    if not match:
        raise classify(CommandKind.PREPARE_MAP, reply)
    return int(match.group(1))


def parse_map_entries(reply: str) -> dict[str, str]:
    """`show map <path>`: `<entry id> <key> <value>` per line. With duplicate keys the first is
    kept, as that is the one a lookup finds."""
    entries: dict[str, str] = {}
    for line in reply.splitlines():
        parts = line.split(" ", 2)
        if len(parts) < 2:
            continue
        entries.setdefault(parts[1], parts[2] if len(parts) > 2 else "")
    return entries


@dataclass(frozen=True)
class MapInfo:
    id: int
    path: str
    current_version: int
    next_version: int
    entry_count: int


_MAP_LINE = re.compile(r"(\d+) \((.*)\) .*?curr_ver=(\d+) next_ver=(\d+) entry_cnt=(\d+)")


def parse_map_list(reply: str) -> list[MapInfo]:
    """`show map` without arguments: one line per loaded map file."""
    maps: list[MapInfo] = []
    for line in reply.splitlines():
        match = _MAP_LINE.match(line)
        if match:
            ident, path, current, following, count = match.groups()
            maps.append(MapInfo(int(ident), path, int(current), int(following), int(count)))
    return maps
