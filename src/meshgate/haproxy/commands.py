"""Runtime API command text for HAProxy 2.6, built only from validated arguments.

Everything here is pure: each function checks its arguments and returns the exact line to send
on the admin socket (or the master socket, for `show proc` and `reload`). The CLI parser splits
a line on spaces, treats `;` as a command separator, `\\` as an escape, a leading `#` as an id
reference, `@` as a version (or, on the master, a process) prefix and a trailing `<<` as the
start of a payload. A newline would start a second command. So every argument is checked against
an alphabet that contains none of these before it is placed in a command.

This module is also the root of the package's error types, because it imports nothing from its
siblings.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from meshgate.errors import MeshgateError


class HaproxyError(MeshgateError):
    """Base class of every error raised while talking to HAProxy or running it."""


class UnsafeRuntimeArgument(HaproxyError):  # noqa: N818
    """An argument that could change the meaning of a runtime command was refused before sending."""

    def __init__(self, what: str, value: object, why: str) -> None:
        self.what = what
        self.value = value
        super().__init__(f"{what} {value!r} cannot be sent to HAProxy: {why}")


# Proxy and server names as HAProxy accepts them in configuration, minus nothing: this alphabet
# has no separator, escape, prefix or payload marker of the CLI.
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}\Z")
# Map references are the file path the map was loaded from; `#<id>` references are not offered
# because ids change across reloads.
_MAP_PATH = re.compile(r"/[A-Za-z0-9_./-]{0,1023}\Z")
# Map keys and values: printable ASCII without space, `;` (separator), `\` (escape) or quotes
# (kept out so that no CLI version can read them as grouping). A leading `#` would make
# `set map` read the key as an entry reference, and `<<` at the end of a line would open a
# payload, so both are refused too.
_MAP_WORD = re.compile(r"[!#-&(-:<-\[\]-~]{1,1024}\Z")

# Host names sent as `sni` / `check-sni` and written as crt-list filters: lower-case labels,
# a filter may start with `*.`.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")
# A PEM payload line: base64 text, or a BEGIN/END marker. No empty line: in a payload, an empty
# line ends it, and whatever followed would run as commands.
_PEM_LINE = re.compile(r"(?:[A-Za-z0-9+/=]{1,76}|-----(?:BEGIN|END) [A-Z0-9 ]{1,40}-----)\Z")
_TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")
# Process-wide variables the compiler declares in `global` (`set-var proc.<name>`): a scope
# HAProxy shares between all streams of a worker, so one command changes every frontend.
_PROC_VAR = re.compile(r"proc\.[a-z][a-z0-9_]{0,62}\Z")
ALPN_PROTOCOLS = "h2,http/1.1"

MAX_WEIGHT = 256  # HAProxy refuses larger absolute weights ("between 0 and 256 inclusive").
MAX_VERSION = 2**32 - 1  # map versions are unsigned 32-bit counters


class ServerAdminState(StrEnum):
    """Targets of `set server B/S state`."""

    READY = "ready"
    DRAIN = "drain"
    MAINT = "maint"


def proxy_name(value: str, what: str = "proxy name") -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise UnsafeRuntimeArgument(what, value, "use 1-128 letters, digits, '_', '.', ':' or '-'")
    return value


def server_name(value: str) -> str:
    return proxy_name(value, "server name")


def map_path(value: str) -> str:
    if not isinstance(value, str) or not _MAP_PATH.match(value) or "//" in value:
        raise UnsafeRuntimeArgument(
            "map path", value, "use an absolute path of letters, digits, '_', '.', '/' or '-'"
        )
    return value


def map_word(value: str, what: str = "map key") -> str:
    if (
        not isinstance(value, str)
        or not _MAP_WORD.match(value)
        or value.startswith("#")
        or "<<" in value
    ):
        raise UnsafeRuntimeArgument(
            what,
            value,
            "use 1-1024 printable ASCII characters without spaces, ';', '\\', '<<' "
            "or a leading '#'",
        )
    return value


def file_path(value: str, what: str = "file path") -> str:
    """A certificate, CA or crt-list file as HAProxy knows it: the path it was loaded from."""
    if not isinstance(value, str) or not _MAP_PATH.match(value) or "//" in value:
        raise UnsafeRuntimeArgument(
            what, value, "use an absolute path of letters, digits, '_', '.', '/' or '-'"
        )
    return value


def host_name(value: str, what: str = "host name", *, wildcard: bool = False) -> str:
    text = value[2:] if wildcard and isinstance(value, str) and value.startswith("*.") else value
    if not isinstance(text, str) or len(text) > 253 or not _HOST.match(text):
        raise UnsafeRuntimeArgument(what, value, "use a lower-case DNS name")
    return value


def pem_payload(value: str) -> str:
    """PEM text as a payload: its BEGIN/END and base64 lines, without blank lines."""
    lines = value.strip("\n").split("\n") if isinstance(value, str) else [""]
    if not lines or not all(_PEM_LINE.match(line) for line in lines):
        raise UnsafeRuntimeArgument(
            "PEM payload", "<certificate>", "use PEM blocks only, without blank lines"
        )
    return "\n".join(lines)


def address(value: str) -> str:
    """An IPv4 or IPv6 literal, rendered canonically. Host names are refused: dynamic servers
    in 2.6 never resolve them (init-addr none)."""
    if not isinstance(value, str) or "%" in value:
        raise UnsafeRuntimeArgument("address", value, "use an IPv4 or IPv6 address")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise UnsafeRuntimeArgument("address", value, "use an IPv4 or IPv6 address") from None


def bounded_int(value: int, what: str, low: int, high: int) -> int:
    # bool is an int subclass; `True` as a port is a bug, not a port.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UnsafeRuntimeArgument(what, value, f"use an integer from {low} to {high}")
    return value


def port(value: int) -> int:
    return bounded_int(value, "port", 1, 65535)


def weight(value: int) -> int:
    return bounded_int(value, "weight", 0, MAX_WEIGHT)


def map_version(value: int) -> int:
    return bounded_int(value, "map version", 0, MAX_VERSION)


def pid(value: int) -> int:
    return bounded_int(value, "pid", 1, 2**31 - 1)


def proc_var(value: str) -> str:
    if not isinstance(value, str) or not _PROC_VAR.match(value):
        raise UnsafeRuntimeArgument("variable", value, "use proc.<lower-case name>")
    return value


def _server_ref(backend: str, server: str) -> str:
    return f"{proxy_name(backend, 'backend name')}/{server_name(server)}"


# --- reading state (admin socket) -----------------------------------------------------------


def show_info() -> str:
    return "show info"


def show_stat(proxy: str | None = None) -> str:
    """CSV statistics. Without arguments HAProxy dumps every proxy, frontends, backends and
    servers (the same as `show stat -1 -1 -1`); with a proxy, only that proxy's rows."""
    if proxy is None:
        return "show stat"
    return f"show stat {proxy_name(proxy)} -1 -1"


def show_servers_state(backend: str | None = None) -> str:
    if backend is None:
        return "show servers state"
    return f"show servers state {proxy_name(backend, 'backend name')}"


def show_events(ring: str) -> str:
    return f"show events {proxy_name(ring, 'ring name')}"


def show_map(path: str | None = None, *, version: int | None = None) -> str:
    """The list of maps (no path), or one map's entries (current version unless given)."""
    if path is None:
        if version is not None:
            raise UnsafeRuntimeArgument("map version", version, "a version needs a map path")
        return "show map"
    prefix = "" if version is None else f"@{map_version(version)} "
    return f"show map {prefix}{map_path(path)}"


# --- servers (admin socket) -----------------------------------------------------------------


def set_server_weight(backend: str, server: str, value: int) -> str:
    return f"set server {_server_ref(backend, server)} weight {weight(value)}"


def set_server_state(backend: str, server: str, state: ServerAdminState | str) -> str:
    try:
        chosen = ServerAdminState(state)
    except ValueError:
        raise UnsafeRuntimeArgument("server state", state, "use ready, drain or maint") from None
    return f"set server {_server_ref(backend, server)} state {chosen.value}"


def set_server_addr(backend: str, server: str, addr: str, port_number: int) -> str:
    return (
        f"set server {_server_ref(backend, server)} addr {address(addr)} port {port(port_number)}"
    )


@dataclass(frozen=True)
class CheckExtras:
    """Health-check keywords beyond inter/rise/fall that 2.6 also takes for a dynamic server
    (tried against 2.6.12: `port`, `agent-check`/`agent-port`/`agent-inter` and
    `observe`/`error-limit`/`on-error` are accepted; `namespace` and `cookie` are not)."""

    port: int | None = None  # check this port instead of the server's
    agent_port: int | None = None  # also ask an agent on this port (agent-check)
    agent_inter_ms: int | None = None
    observe_layer: int | None = None  # 4 or 7: passive checks on live traffic
    error_limit: int | None = None  # consecutive errors that mark the server down

    def words(self) -> list[str]:
        words = []
        if self.port is not None:
            words.append(f"port {port(self.port)}")
        if self.agent_port is not None:
            words += ["agent-check", f"agent-port {port(self.agent_port)}"]
            if self.agent_inter_ms is not None:
                inter = bounded_int(self.agent_inter_ms, "agent-inter", 1, 86_400_000)
                words.append(f"agent-inter {inter}")
        if self.observe_layer is not None:
            if self.observe_layer not in (4, 7):
                raise UnsafeRuntimeArgument("observe layer", self.observe_layer, "use 4 or 7")
            limit = bounded_int(self.error_limit or 10, "error-limit", 1, 1000)
            words += [f"observe layer{self.observe_layer}", f"error-limit {limit}"]
            words.append("on-error mark-down")
        return words


def add_server(
    backend: str,
    server: str,
    addr: str,
    port_number: int,
    *,
    server_weight: int | None = None,
    check: bool = False,
    inter_ms: int | None = None,
    rise: int | None = None,
    fall: int | None = None,
    extras: CheckExtras | None = None,
    ssl: bool = False,
    verify: bool = True,
    ca_file: str | None = None,
    sni: str | None = None,
    backup: bool = False,
    track: tuple[str, str] | None = None,
) -> str:
    """`add server` with the keywords HAProxy 2.6 accepts for dynamic servers.

    Not offered: `cookie` (2.6 answers "'cookie' option is not accepted for dynamic server"),
    and host names (never resolved for dynamic servers). An IPv6 address is written as-is:
    HAProxy takes the port after the last colon, so `::1:8080` is address ::1, port 8080.

    With `ssl`, the server speaks TLS: `verify` its certificate against `ca_file` (a CA file
    2.6 must already have loaded: it loads none for a dynamic server), and send `sni`, also
    to health checks.

    With `track` (backend, server), the new server follows that server's health instead of
    being checked itself; 2.6 only tracks a server of the configuration file, never a
    dynamic one.
    """
    words = [f"add server {_server_ref(backend, server)} {address(addr)}:{port(port_number)}"]
    if server_weight is not None:
        words.append(f"weight {weight(server_weight)}")
    if track is not None:
        if check:
            raise UnsafeRuntimeArgument("track", track, "a tracking server has no check")
        words.append(f"track {_server_ref(*track)}")
    if check:
        words.append("check")
    elif inter_ms is not None or rise is not None or fall is not None:
        raise UnsafeRuntimeArgument("check settings", (inter_ms, rise, fall), "need check=True")
    if inter_ms is not None:
        words.append(f"inter {bounded_int(inter_ms, 'inter', 1, 86_400_000)}")
    if rise is not None:
        words.append(f"rise {bounded_int(rise, 'rise', 1, 1000)}")
    if fall is not None:
        words.append(f"fall {bounded_int(fall, 'fall', 1, 1000)}")
    if extras is not None:
        if not check:
            raise UnsafeRuntimeArgument("check settings", extras, "need check=True")
        words += extras.words()
    if ssl:
        words += ["ssl", f"verify {'required' if verify else 'none'}"]
        if ca_file is not None:
            words.append(f"ca-file {file_path(ca_file, 'CA file')}")
        if sni is not None:
            host = host_name(sni, "sni")
            words += [f"sni str({host})", f"check-sni {host}"]
    elif ca_file is not None or sni is not None:
        raise UnsafeRuntimeArgument("TLS settings", (ca_file, sni), "need ssl=True")
    if backup:
        words.append("backup")
    return " ".join(words)


def enable_health(backend: str, server: str) -> str:
    return f"enable health {_server_ref(backend, server)}"


def enable_agent(backend: str, server: str) -> str:
    return f"enable agent {_server_ref(backend, server)}"


def disable_health(backend: str, server: str) -> str:
    return f"disable health {_server_ref(backend, server)}"


def shutdown_server_sessions(backend: str, server: str) -> str:
    """Close every stream on a server: the last resort when a drain does not finish in time."""
    return f"shutdown sessions server {_server_ref(backend, server)}"


def del_server(backend: str, server: str) -> str:
    return f"del server {_server_ref(backend, server)}"


# --- maps (admin socket) --------------------------------------------------------------------


def prepare_map(path: str) -> str:
    return f"prepare map {map_path(path)}"


def add_map_entry(path: str, key: str, value: str, *, version: int | None = None) -> str:
    prefix = "" if version is None else f"@{map_version(version)} "
    return f"add map {prefix}{map_path(path)} {map_word(key)} {map_word(value, 'map value')}"


def add_map_payload(
    path: str, entries: Iterable[tuple[str, str]], *, version: int | None = None
) -> tuple[str, str]:
    """`add map [@V] <path> <<` and its payload: one `key value` line per entry.

    Returns (command, payload); the transport writes `command <<`, the payload and the empty
    line that ends it. Validated words contain no newline, so the payload cannot end early.
    """
    prefix = "" if version is None else f"@{map_version(version)} "
    lines = [f"{map_word(key)} {map_word(value, 'map value')}" for key, value in entries]
    return f"add map {prefix}{map_path(path)}", "\n".join(lines)


def commit_map(path: str, version: int) -> str:
    return f"commit map @{map_version(version)} {map_path(path)}"


def set_map_entry(path: str, key: str, value: str) -> str:
    return f"set map {map_path(path)} {map_word(key)} {map_word(value, 'map value')}"


def del_map_entry(path: str, key: str) -> str:
    return f"del map {map_path(path)} {map_word(key)}"


def clear_map(path: str, *, version: int | None = None) -> str:
    prefix = "" if version is None else f"@{map_version(version)} "
    return f"clear map {prefix}{map_path(path)}"


# --- certificates (admin socket) ------------------------------------------------------------


def new_ssl_cert(path: str) -> str:
    """An empty certificate entry, to be filled by set/commit and then used by a crt-list."""
    return f"new ssl cert {file_path(path, 'certificate path')}"


def set_ssl_cert(path: str, pem: str) -> tuple[str, str]:
    """Start a transaction holding new content for a loaded certificate: (command, payload)."""
    return f"set ssl cert {file_path(path, 'certificate path')}", pem_payload(pem)


def commit_ssl_cert(path: str) -> str:
    return f"commit ssl cert {file_path(path, 'certificate path')}"


def abort_ssl_cert(path: str) -> str:
    return f"abort ssl cert {file_path(path, 'certificate path')}"


def show_ssl_cert(path: str | None = None) -> str:
    """The loaded certificate files, or one file's details (serial, dates, names)."""
    if path is None:
        return "show ssl cert"
    return f"show ssl cert {file_path(path, 'certificate path')}"


def new_ssl_ca_file(path: str) -> str:
    return f"new ssl ca-file {file_path(path, 'CA file')}"


def set_ssl_ca_file(path: str, pem: str) -> tuple[str, str]:
    return f"set ssl ca-file {file_path(path, 'CA file')}", pem_payload(pem)


def commit_ssl_ca_file(path: str) -> str:
    return f"commit ssl ca-file {file_path(path, 'CA file')}"


def abort_ssl_ca_file(path: str) -> str:
    return f"abort ssl ca-file {file_path(path, 'CA file')}"


def crt_list_line(
    certificate: str, *, min_version: str, alpn: bool, filters: Iterable[str] = ()
) -> str:
    """`<certificate> [alpn h2,http/1.1 ssl-min-ver TLSvX] <filter>...`, checked word by word."""
    if min_version not in _TLS_VERSIONS:
        raise UnsafeRuntimeArgument("TLS version", min_version, "use TLSv1.2 or TLSv1.3")
    options = f"alpn {ALPN_PROTOCOLS} " if alpn else ""
    words = [file_path(certificate, "certificate path"), f"[{options}ssl-min-ver {min_version}]"]
    words += [host_name(f, "SNI filter", wildcard=True) for f in filters]
    return " ".join(words)


def add_ssl_crt_list(
    crt_list: str,
    certificate: str,
    *,
    min_version: str,
    alpn: bool,
    filters: Iterable[str] = (),
) -> tuple[str, str]:
    """Append one line to a loaded crt-list: (command, payload). The payload form keeps the
    line's brackets and filters away from the command's own words."""
    line = crt_list_line(certificate, min_version=min_version, alpn=alpn, filters=filters)
    return f"add ssl crt-list {file_path(crt_list, 'crt-list path')}", line


# --- process variables ---------------------------------------------------------------------


def set_proc_var_int(name: str, value: int) -> str:
    """`set var proc.<name> int(<value>)`: only in experimental mode in 2.6 (see
    `experimental`); HAProxy's integers are signed 64-bit."""
    number = bounded_int(value, "variable value", -(2**63), 2**63 - 1)
    return f"set var {proc_var(name)} int({number})"


def experimental(command: str) -> str:
    """`experimental-mode on; <command>`: 2.6 refuses `set var` on the CLI unless the same
    connection turned experimental mode on first. On the master socket the mode belongs to the
    master's session, which passes it on to the command it forwards: `experimental-mode on;
    @1 set var ...` works, while `@1 experimental-mode on; @1 set var ...` is refused, each
    `@1` opening a worker session of its own (checked on 2.6.12)."""
    if "\n" in command:
        raise UnsafeRuntimeArgument("command", command, "one line")
    return f"experimental-mode on; {command}"


# --- master socket --------------------------------------------------------------------------


def show_proc() -> str:
    return "show proc"


def reload() -> str:
    """Master CLI `reload`: the master re-executes itself with its original arguments. It
    answers nothing in 2.6 and closes the connection; confirm with `show proc`."""
    return "reload"


def on_worker(worker_pid: int, command: str) -> str:
    """Route a (formatted) command through the master to one process: `@!<pid> <command>`."""
    if "\n" in command or ";" in command:
        raise UnsafeRuntimeArgument("command", command, "one command, without ';' or newline")
    return f"@!{pid(worker_pid)} {command}"


def one_command(command: str) -> str:
    """A formatted command, checked to be a single one before it is joined with others."""
    if "\n" in command or ";" in command:
        raise UnsafeRuntimeArgument("command", command, "one command, without ';' or newline")
    return command


def on_worker_relative(number: int, command: str) -> str:
    """Route a command through the master to the current worker number `number` (`@1` is the
    first): the way to reach a worker without knowing its pid or its admin socket."""
    if "\n" in command or ";" in command:
        raise UnsafeRuntimeArgument("command", command, "one command, without ';' or newline")
    return f"@{bounded_int(number, 'worker number', 1, 64)} {command}"
