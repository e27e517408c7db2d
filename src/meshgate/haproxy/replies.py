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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from enum import Enum, IntEnum, IntFlag
from operator import itemgetter

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


# --- show stat ------------------------------------------------------------------------------


class StatType(IntEnum):
    """The `type` column of `show stat`."""

    FRONTEND = 0
    BACKEND = 1
    SERVER = 2
    LISTENER = 3


@dataclass(slots=True)
class StatRow:
    """One `show stat` row. Counters HAProxy leaves empty for this row type read as 0.

    Not frozen, unlike the other replies: a poll builds one per backend and server of every
    process (6,000 at a thousand gateways), and a frozen dataclass's `__init__`, which sets
    each of the 48 fields through `object.__setattr__`, made up a third of a poll's time."""

    pxname: str
    svname: str
    type: StatType
    status: str
    check_status: str
    addr: str
    mode: str
    qcur: int = 0
    scur: int = 0
    smax: int = 0
    stot: int = 0
    bin: int = 0
    bout: int = 0
    dreq: int = 0
    dresp: int = 0
    ereq: int = 0
    econ: int = 0
    eresp: int = 0
    wretr: int = 0
    wredis: int = 0
    weight: int = 0
    act: int = 0
    bck: int = 0
    chkfail: int = 0
    chkdown: int = 0
    lastchg: int = 0
    downtime: int = 0
    iid: int = 0
    sid: int = 0
    lbtot: int = 0
    rate: int = 0
    req_rate: int = 0
    req_tot: int = 0
    conn_tot: int = 0
    hrsp_1xx: int = 0
    hrsp_2xx: int = 0
    hrsp_3xx: int = 0
    hrsp_4xx: int = 0
    hrsp_5xx: int = 0
    hrsp_other: int = 0
    cli_abrt: int = 0
    srv_abrt: int = 0
    check_duration: int = 0
    qtime: int = 0
    ctime: int = 0
    rtime: int = 0
    ttime: int = 0
    idle_conn_cur: int = 0
    # The header's column names and this row's values, for fields not promoted above.
    columns: Sequence[str] = field(default=(), compare=False, repr=False)
    values: Sequence[str] = field(default=(), compare=False, repr=False)

    @property
    def raw(self) -> dict[str, str]:
        """Every column as HAProxy printed it (built on demand: most rows never need it)."""
        return dict(zip(self.columns, self.values, strict=False))


_STAT_INT_FIELDS = tuple(f.name for f in fields(StatRow) if f.type in (int, "int"))
_STAT_TEXT_FIELDS = ("pxname", "svname", "status", "check_status", "addr", "mode")
# StatRow with positional arguments, which type checkers cannot follow through `*numbers`:
# the text fields, then the integers in _STAT_INT_FIELDS's (the class's) order, then the
# columns and values. A third faster than keywords, at thousands of rows a poll.
_stat_row: Callable[..., StatRow] = StatRow


def _int(text: str) -> int:
    try:
        return int(text) if text else 0
    except ValueError:
        return 0


def parse_stat_csv(reply: str) -> list[StatRow]:
    """`show stat` CSV. Columns are found by the header's names, not positions, so columns
    added by later versions do not shift anything.

    This runs on every stats poll for every backend and server of every process (thousands of
    rows with many gateways), so the columns' positions are looked up once per reply."""
    lines = reply.splitlines()
    header_index = next((i for i, line in enumerate(lines) if line.startswith("# ")), None)
    if header_index is None:
        return []
    names = lines[header_index][2:].split(",")
    position = {name: index for index, name in enumerate(names)}
    width = len(names)
    # Columns this HAProxy does not print read as "" (then 0), from the padding below.
    int_columns = itemgetter(*(position.get(name, width) for name in _STAT_INT_FIELDS))
    text_columns = itemgetter(*(position.get(name, width) for name in _STAT_TEXT_FIELDS))
    type_at = position.get("type", width)
    pad = [""] * (width + 1)
    rows: list[StatRow] = []
    for line in lines[header_index + 1 :]:
        if not line or line.startswith("#"):
            continue
        # Values never contain commas except in free-text descriptions at the end of the row;
        # columns are taken by position and the typed ones all come first.
        parts = line.split(",")
        if len(parts) <= width:
            parts += pad[len(parts) :]
        try:
            row_type = StatType(_int(parts[type_at]))
        except ValueError:
            continue
        texts = int_columns(parts)
        try:
            numbers = [int(text) if text else 0 for text in texts]
        except ValueError:  # not expected in these columns; a bad value reads as 0
            numbers = [_int(text) for text in texts]
        pxname, svname, status, check_status, addr, mode = text_columns(parts)
        rows.append(
            _stat_row(
                pxname, svname, row_type, status, check_status, addr, mode,
                *numbers, names, parts[:width],
            )
        )  # fmt: skip
    return rows


# --- show servers state ---------------------------------------------------------------------


class ServerOpState(IntEnum):
    STOPPED = 0
    STARTING = 1
    RUNNING = 2
    STOPPING = 3


class ServerAdminFlags(IntFlag):
    FMAINT = 0x01  # forced into maintenance (set server state maint, or a new dynamic server)
    IMAINT = 0x02  # inherited from a tracked server
    CMAINT = 0x04  # `disabled` in the configuration
    FDRAIN = 0x08  # forced into drain
    IDRAIN = 0x10  # inherited drain
    RMAINT = 0x20  # address resolution failed
    HMAINT = 0x40  # FQDN set from the socket

    @property
    def in_maintenance(self) -> bool:
        maint = self.FMAINT | self.IMAINT | self.CMAINT | self.RMAINT
        return bool(self & maint)

    @property
    def draining(self) -> bool:
        return bool(self & (self.FDRAIN | self.IDRAIN))


@dataclass(frozen=True)
class ServerState:
    """One server line of `show servers state` (format version 1)."""

    backend_id: int
    backend: str
    server_id: int
    name: str
    addr: str
    port: int
    op_state: ServerOpState
    admin_state: ServerAdminFlags
    weight: int  # user-visible (current) weight
    initial_weight: int
    seconds_since_change: int
    check_status: int
    check_result: int
    check_health: int
    check_state: int
    agent_state: int
    fqdn: str | None

    @property
    def status(self) -> str:
        """UP, DOWN or MAINT, as the product reports instance health."""
        if self.admin_state.in_maintenance:
            return "MAINT"
        if self.op_state in (ServerOpState.RUNNING, ServerOpState.STARTING):
            return "UP"
        return "DOWN"


class UnexpectedReply(HaproxyError):  # noqa: N818
    """A reply that does not have the shape this version of HAProxy is known to produce."""


def parse_servers_state(reply: str) -> list[ServerState]:
    lines = [line for line in reply.splitlines() if line.strip()]
    if not lines:
        raise UnexpectedReply("empty 'show servers state' reply")
    if lines[0].strip() != "1":
        raise UnexpectedReply(f"unknown 'show servers state' format version {lines[0]!r}")
    header = next((line for line in lines[1:] if line.startswith("#")), None)
    if header is None:
        raise UnexpectedReply("'show servers state' reply has no header line")
    names = header.lstrip("#").split()
    servers: list[ServerState] = []
    for line in lines[1:]:
        if line.startswith("#"):
            continue
        values = dict(zip(names, line.split(), strict=False))
        try:
            servers.append(_server_state(values))
        except (KeyError, ValueError) as error:
            raise UnexpectedReply(f"bad 'show servers state' line {line!r}: {error}") from None
    return servers


def _server_state(values: dict[str, str]) -> ServerState:
    fqdn = values.get("srv_fqdn", "-")
    return ServerState(
        backend_id=int(values["be_id"]),
        backend=values["be_name"],
        server_id=int(values["srv_id"]),
        name=values["srv_name"],
        addr=values["srv_addr"],
        port=int(values["srv_port"]),
        op_state=ServerOpState(int(values["srv_op_state"])),
        admin_state=ServerAdminFlags(int(values["srv_admin_state"])),
        weight=int(values["srv_uweight"]),
        initial_weight=int(values["srv_iweight"]),
        seconds_since_change=int(values["srv_time_since_last_change"]),
        check_status=int(values["srv_check_status"]),
        check_result=int(values["srv_check_result"]),
        check_health=int(values["srv_check_health"]),
        check_state=int(values["srv_check_state"]),
        agent_state=int(values["srv_agent_state"]),
        fqdn=None if fqdn == "-" else fqdn,
    )


# --- show proc (master) ---------------------------------------------------------------------


@dataclass(frozen=True)
class ProcEntry:
    pid: int
    kind: str  # "master", "worker", or a program's name
    reloads: int  # for a worker: how many reloads it has survived
    uptime_s: int
    version: str


@dataclass(frozen=True)
class ProcInfo:
    master: ProcEntry
    # Reloads that failed since the last successful one: 2.6 resets it to 0 on success.
    failed_reloads: int
    workers: list[ProcEntry]  # current worker(s)
    old_workers: list[ProcEntry]  # still finishing connections after a reload
    programs: list[ProcEntry]

    @property
    def master_pid(self) -> int:
        return self.master.pid

    @property
    def reloads(self) -> int:
        """Reload attempts since the master started, failed ones included."""
        return self.master.reloads


_UPTIME = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?\Z")
_MASTER_RELOADS = re.compile(r"(\d+)(?:\s+\[failed:\s*(\d+)\])?")


def parse_uptime(text: str) -> int:
    """`0d00h11m16s` to seconds."""
    match = _UPTIME.match(text.strip())
    if not match or not text.strip():
        raise UnexpectedReply(f"bad uptime {text!r}")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def parse_proc(reply: str) -> ProcInfo:
    """`show proc` on the master socket. Sections: the master line, `# workers`,
    `# old workers` (present only while some exist) and `# programs`."""
    master: ProcEntry | None = None
    failed = 0
    sections: dict[str, list[ProcEntry]] = {"workers": [], "old workers": [], "programs": []}
    section: str | None = None
    for line in reply.splitlines():
        if not line.strip() or line.startswith("#<PID>"):
            continue
        if line.startswith("#"):
            section = line.lstrip("#").strip()
            continue
        if section is None:
            master, failed = _master_line(line)
        elif section in sections:
            sections[section].append(_proc_line(line))
    if master is None:
        raise UnexpectedReply(f"'show proc' reply without a master line: {reply[:200]!r}")
    return ProcInfo(
        master=master,
        failed_reloads=failed,
        workers=sections["workers"],
        old_workers=sections["old workers"],
        programs=sections["programs"],
    )


def _master_line(line: str) -> tuple[ProcEntry, int]:
    # "3844            master          5 [failed: 0]   0d00h11m39s     2.6.12-1+deb12u4"
    parts = line.split(None, 2)
    if len(parts) < 3 or parts[1] != "master":
        raise UnexpectedReply(f"bad master line in 'show proc': {line!r}")
    match = _MASTER_RELOADS.match(parts[2])
    rest = parts[2][match.end() :].split() if match else []
    if not match or len(rest) < 1:
        raise UnexpectedReply(f"bad master line in 'show proc': {line!r}")
    entry = ProcEntry(
        pid=int(parts[0]),
        kind="master",
        reloads=int(match.group(1)),
        uptime_s=parse_uptime(rest[0]),
        version=rest[1] if len(rest) > 1 else "",
    )
    return entry, int(match.group(2) or 0)


def _proc_line(line: str) -> ProcEntry:
    parts = line.split()
    if len(parts) < 4:
        raise UnexpectedReply(f"bad process line in 'show proc': {line!r}")
    try:
        return ProcEntry(
            pid=int(parts[0]),
            kind=parts[1],
            reloads=int(parts[2]),
            uptime_s=parse_uptime(parts[3]),
            version=parts[4] if len(parts) > 4 else "",
        )
    except ValueError:
        raise UnexpectedReply(f"bad process line in 'show proc': {line!r}") from None


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
