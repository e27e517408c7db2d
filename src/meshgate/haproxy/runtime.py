"""High-level runtime operations on a running HAProxy: servers, weights, maps, process list.

Each operation is a short sequence of single commands (see `commands`) sent over `transport`
and checked with `replies`. Where a reply leaves the outcome open (a timeout after the command
was sent, a sentence HAProxy may word differently) the state is read back before deciding.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from meshgate.haproxy import (
    commands,
    processes,
    replies,
    server_states,
    session,
    stat_csv,
    transport,
)
from meshgate.haproxy.commands import HaproxyError, ServerAdminState
from meshgate.haproxy.processes import ProcInfo
from meshgate.haproxy.replies import (
    CommandKind,
    MapInfo,
    NoSuchProcess,
    NoSuchServer,
    ServerHasConnections,
)
from meshgate.haproxy.server_states import ServerState
from meshgate.haproxy.stat_csv import StatRow, StatType
from meshgate.haproxy.transport import RuntimeUnavailable

# Keep each `add map` payload well inside HAProxy's request buffer (16 kB by default): a
# request that does not fit is dropped without a reply.
MAP_PAYLOAD_BYTES = 12_000
_RETRY_S = 0.02
# A master re-executes in tens of milliseconds; longer than this, HAProxy is not coming back.
_RETRY_WINDOW_S = 2.0
# A pipelined request the master could not pass to a worker (none yet, after a reload) ran
# nothing: it is sent again, like a single command.
_PIPELINE_UNSENT = ("Can't find the target PID",)

# Sessions tried on the admin socket before going through the master: an old worker may
# answer there for its grace period after a reload (100 ms), and one that stops accepting
# cuts the connection it had just taken. The attempts, `_RETRY_S` apart, outlast that period.
_SESSION_ATTEMPTS = 8

# Observer of every command sent: (kind, seconds, succeeded). For metrics; must not raise.
CommandObserver = Callable[[CommandKind, float, bool], None]


class ServerNotConfirmed(HaproxyError):  # noqa: N818
    """A server change was acknowledged but reading the state back does not show it."""


class RuntimeClient:
    """Runtime operations on the current worker.

    Worker commands go through the master socket as `@1 <command>` (the first current worker)
    rather than to the admin socket, unless `via_master=False`. The admin socket is a listener
    like any other: after a reload the old and the new worker both accept on it until the old
    one stops (with `grace`, for that whole period), so a command sent there may land in the
    old worker and be lost with it. The master routes to the new worker as soon as it exists.
    """

    def __init__(
        self,
        admin_socket: str,
        master_socket: str,
        *,
        timeout: float = 5.0,
        observer: CommandObserver | None = None,
        via_master: bool = True,
    ) -> None:
        self.admin_socket = admin_socket
        self.master_socket = master_socket
        self.timeout = timeout
        self.observer = observer
        self.via_master = via_master
        self._worker_pid: int | None = None  # the current worker's, for `worker_session`

    async def _run(
        self,
        kind: CommandKind,
        command: str,
        *,
        payload: str | None = None,
        master: bool = False,
    ) -> str:
        if master:
            socket_path, line = self.master_socket, command
        elif self.via_master:
            socket_path, line = self.master_socket, commands.on_worker_relative(1, command)
        else:
            socket_path, line = self.admin_socket, command
        started = time.monotonic()
        deadline = started + min(self.timeout, _RETRY_WINDOW_S)
        ok = False
        try:
            while True:
                try:
                    reply = await transport.send(
                        socket_path, line, payload=payload, timeout=self.timeout
                    )
                    replies.check_reply(kind, reply)
                    ok = True
                    return reply
                except (RuntimeUnavailable, NoSuchProcess) as error:
                    # Retried only when the command surely did not run: the master socket is
                    # briefly away while the master re-executes for a reload, and a new
                    # master has no worker for a moment.
                    unsent = not isinstance(error, RuntimeUnavailable) or not error.sent
                    if not unsent or time.monotonic() >= deadline:
                        raise
                    await asyncio.sleep(_RETRY_S)
        finally:
            if self.observer is not None:
                self.observer(kind, time.monotonic() - started, ok)

    async def pipeline(self, lines: Sequence[str]) -> str:
        """Run many worker commands in one request: `@1 a; @1 b; ...` through the master (or
        `a; b; ...` on the admin socket), in order, and return their replies run together.

        Nothing is checked here: the replies have no reliable separator (an empty reply is one
        newline, a sentence is followed by an empty line), so callers read the state back to
        learn each command's outcome (see `bulk`). The caller keeps the lines under
        `transport.MAX_REQUEST_BYTES` (see `pipeline_chunks`)."""
        if self.via_master:
            line = "; ".join(commands.on_worker_relative(1, c) for c in lines)
            socket_path = self.master_socket
        else:
            line = "; ".join(commands.one_command(c) for c in lines)
            socket_path = self.admin_socket
        started = time.monotonic()
        deadline = started + min(self.timeout, _RETRY_WINDOW_S)
        ok = False
        try:
            while True:
                try:
                    reply = await transport.send(socket_path, line, timeout=self.timeout)
                    if any(reply.lstrip().startswith(p) for p in _PIPELINE_UNSENT):
                        raise NoSuchProcess(CommandKind.PIPELINE, reply)
                    ok = True
                    return reply
                except (RuntimeUnavailable, NoSuchProcess) as error:
                    unsent = not isinstance(error, RuntimeUnavailable) or not error.sent
                    if not unsent or time.monotonic() >= deadline:
                        raise
                    await asyncio.sleep(_RETRY_S)
        finally:
            if self.observer is not None:
                self.observer(CommandKind.PIPELINE, time.monotonic() - started, ok)

    async def worker_session(self, lines: Sequence[str]) -> list[str] | None:
        """Run many worker commands in one session on the admin socket (see `session`), in
        order; returns one reply per line, or another number of replies when they cannot be
        told apart (the connection was cut after some: the outcome of the rest is unknown).
        None, having sent nothing, when no session on the current worker could be had: the
        caller goes through the master instead.

        The current worker's pid is asked of the master once and kept: a session that finds
        another pid asks again. A stale pid cannot pass for the current one, since the worker
        it names is stopping after a reload (and is refused as such); server changes are never
        sent while a reload is under way (the driver waits for them before reloading)."""
        started = time.monotonic()
        ok = False
        try:
            for _ in range(_SESSION_ATTEMPTS):
                if self._worker_pid is None:
                    workers = (await self.proc()).workers
                    if not workers:
                        return None
                    self._worker_pid = workers[0].pid
                try:
                    found = await session.run(
                        self.admin_socket, self._worker_pid, lines, timeout=self.timeout
                    )
                except session.WrongWorker:
                    self._worker_pid = None
                    await asyncio.sleep(_RETRY_S)
                    continue
                except RuntimeUnavailable as error:
                    if error.sent:
                        raise
                    # Nothing was sent: a stopping worker may have cut the connection.
                    self._worker_pid = None
                    await asyncio.sleep(_RETRY_S)
                    continue
                ok = len(found) == len(lines)
                return found
            return None
        finally:
            if self.observer is not None:
                self.observer(CommandKind.PIPELINE, time.monotonic() - started, ok)

    def pipeline_chunks(self, groups: Iterable[Sequence[str]]) -> list[list[str]]:
        """Groups of commands packed into requests that fit HAProxy's buffer, a group never
        split across two requests (so a server's `add`, `enable health` and `ready` run in
        one request, in order)."""
        prefix = len(commands.on_worker_relative(1, "")) if self.via_master else 0
        budget = transport.MAX_REQUEST_BYTES - 64
        chunks: list[list[str]] = []
        size = 0
        for group in groups:
            group_size = sum(len(c) + prefix + 2 for c in group)
            if not chunks or (chunks[-1] and size + group_size > budget):
                chunks.append([])
                size = 0
            chunks[-1].extend(group)
            size += group_size
        return chunks

    # --- reading ------------------------------------------------------------------------

    async def info(self) -> dict[str, str]:
        return replies.parse_info(await self._run(CommandKind.READ, commands.show_info()))

    async def stats(self, proxy: str | None = None) -> list[StatRow]:
        reply = await self._run(CommandKind.READ, commands.show_stat(proxy))
        return stat_csv.parse_stat_csv(reply)

    async def servers_state(self, backend: str | None = None) -> list[ServerState]:
        reply = await self._run(CommandKind.READ, commands.show_servers_state(backend))
        return server_states.parse_servers_state(reply)

    async def server_state(self, backend: str, server: str) -> ServerState | None:
        for state in await self.servers_state(backend):
            if state.name == server:
                return state
        return None

    async def proc(self) -> ProcInfo:
        reply = await self._run(CommandKind.READ, commands.show_proc(), master=True)
        return processes.parse_proc(reply)

    # --- servers ------------------------------------------------------------------------

    async def set_server_weight(self, backend: str, server: str, weight: int) -> None:
        await self._run(CommandKind.SET_SERVER, commands.set_server_weight(backend, server, weight))

    async def set_server_state(
        self, backend: str, server: str, state: ServerAdminState | str
    ) -> None:
        await self._run(CommandKind.SET_SERVER, commands.set_server_state(backend, server, state))

    async def set_server_addr(self, backend: str, server: str, address: str, port: int) -> None:
        command = commands.set_server_addr(backend, server, address, port)
        await self._run(CommandKind.SET_SERVER_ADDR, command)

    async def add_server(
        self,
        backend: str,
        name: str,
        address: str,
        port: int,
        *,
        weight: int | None = None,
        check: bool = False,
        inter_ms: int | None = None,
        rise: int | None = None,
        fall: int | None = None,
        extras: commands.CheckExtras | None = None,
        ssl: bool = False,
        verify: bool = True,
        ca_file: str | None = None,
        sni: str | None = None,
        backup: bool = False,
        track: tuple[str, str] | None = None,
    ) -> ServerState:
        """Add a dynamic server and put it in service; returns its state as read back.

        A dynamic server starts in maintenance with its health check off, so after `add server`
        the check is enabled (if any) and the server set ready. Without a check it counts as up
        at once; with one it is UP after `rise` good checks.
        """
        command = commands.add_server(
            backend, name, address, port,
            server_weight=weight, check=check, inter_ms=inter_ms, rise=rise, fall=fall,
            extras=extras,
            ssl=ssl, verify=verify, ca_file=ca_file, sni=sni, backup=backup, track=track,
        )  # fmt: skip
        expected_addr = commands.address(address)
        try:
            await self._run(CommandKind.ADD_SERVER, command)
        except RuntimeUnavailable as error:
            # The command may have run before the connection failed: look before giving up.
            if not error.sent:
                raise
            existing = await self.server_state(backend, name)
            if existing is None or (existing.addr, existing.port) != (expected_addr, port):
                raise
        if check:
            await self._run(CommandKind.HEALTH, commands.enable_health(backend, name))
        if extras is not None and extras.agent_port is not None:
            # Like the health check, a dynamic server's agent check starts disabled.
            await self._run(CommandKind.HEALTH, commands.enable_agent(backend, name))
        await self.set_server_state(backend, name, ServerAdminState.READY)
        state = await self.server_state(backend, name)
        if state is None or state.admin_state.in_maintenance:
            raise ServerNotConfirmed(f"{backend}/{name} is not in service after add_server")
        if (state.addr, state.port) != (expected_addr, port):
            raise ServerNotConfirmed(
                f"{backend}/{name} runs at {state.addr}:{state.port}, not {expected_addr}:{port}"
            )
        return state

    async def remove_server(
        self,
        backend: str,
        name: str,
        *,
        drain_timeout: float = 10.0,
        poll_interval: float = 0.1,
        missing_ok: bool = False,
    ) -> None:
        """Drain a server, then delete it.

        New traffic stops at once (drain); sessions in progress get up to `drain_timeout`
        seconds to finish. Then the server goes to maintenance and is deleted. 2.6 refuses to
        delete a server that still has sessions, queued requests or idle connections, so the
        delete is retried until the deadline; past it, remaining sessions are shut down.
        """
        try:
            await self.set_server_state(backend, name, ServerAdminState.DRAIN)
        except NoSuchServer:
            if missing_ok:
                return
            raise
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline and await self._server_busy(backend, name):
            await asyncio.sleep(poll_interval)
        await self.set_server_state(backend, name, ServerAdminState.MAINT)
        shut_down = False
        while True:
            try:
                await self._run(CommandKind.DEL_SERVER, commands.del_server(backend, name))
                return
            except ServerHasConnections:
                # Idle server-side connections block deletion too; HAProxy closes them soon
                # after the server enters maintenance, so waiting a little usually suffices.
                if time.monotonic() < deadline:
                    await asyncio.sleep(poll_interval)
                    continue
                if shut_down:
                    raise
                # Past the drain deadline: cut the streams still running, then retry briefly.
                command = commands.shutdown_server_sessions(backend, name)
                await self._run(CommandKind.SHUTDOWN_SESSIONS, command)
                shut_down = True
                deadline = time.monotonic() + max(1.0, 10 * poll_interval)

    async def _server_busy(self, backend: str, name: str) -> bool:
        for row in await self.stats(backend):
            if row.type is StatType.SERVER and row.svname == name:
                return row.scur > 0 or row.qcur > 0
        return False

    # --- process variables --------------------------------------------------------------

    async def set_proc_var(self, name: str, value: int) -> None:
        """Set an integer process variable in the current worker. A new worker starts from
        the value its configuration declares, so callers set it again after a reload."""
        command = commands.set_proc_var_int(name, value)
        if self.via_master:
            line = commands.experimental(commands.on_worker_relative(1, command))
            await self._run(CommandKind.SET_VAR, line, master=True)
        else:
            await self._run(CommandKind.SET_VAR, commands.experimental(command))

    # --- maps ---------------------------------------------------------------------------

    async def maps(self) -> list[MapInfo]:
        return replies.parse_map_list(await self._run(CommandKind.READ, commands.show_map()))

    async def show_map(self, path: str, *, version: int | None = None) -> dict[str, str]:
        reply = await self._run(CommandKind.READ, commands.show_map(path, version=version))
        return replies.parse_map_entries(reply)

    async def replace_map(self, path: str, entries: Mapping[str, str]) -> int:
        """Replace a map's whole content atomically; returns the committed version.

        Entries go into a fresh version (`prepare map`) in as few `add map` payloads as fit
        the request buffer; lookups keep seeing the old content until `commit map` swaps
        versions in one step. An empty mapping empties the map atomically the same way.
        """
        command = commands.prepare_map(path)  # validates the path before anything is sent
        batches = list(_payload_batches(path, entries.items()))  # validates every entry
        version = replies.parse_prepare_map(await self._run(CommandKind.PREPARE_MAP, command))
        for batch in batches:
            add_command, payload = commands.add_map_payload(path, batch, version=version)
            await self._run(CommandKind.CHANGE_MAP, add_command, payload=payload)
        await self._run(CommandKind.CHANGE_MAP, commands.commit_map(path, version))
        return version

    async def set_map_entry(self, path: str, key: str, value: str) -> None:
        """Set one key, adding it when absent (`set map` only changes existing keys)."""
        try:
            await self._run(CommandKind.CHANGE_MAP, commands.set_map_entry(path, key, value))
        except replies.MapEntryNotFound:
            await self._run(CommandKind.CHANGE_MAP, commands.add_map_entry(path, key, value))

    async def del_map_entry(self, path: str, key: str, *, missing_ok: bool = True) -> None:
        try:
            await self._run(CommandKind.CHANGE_MAP, commands.del_map_entry(path, key))
        except replies.MapEntryNotFound:
            if not missing_ok:
                raise

    # --- certificates -------------------------------------------------------------------

    async def update_certificate(self, path: str, pem: str) -> None:
        """Give a loaded certificate file new content; new handshakes use it at once.

        `set ssl cert` holds the new content in a transaction that `commit ssl cert` applies
        (HAProxy checks there that the key matches). A transaction that fails to commit is
        aborted, so it does not block the next attempt.
        """
        command, payload = commands.set_ssl_cert(path, pem)
        await self._run(CommandKind.SET_SSL, command, payload=payload)
        await self._commit(commands.commit_ssl_cert(path), commands.abort_ssl_cert(path))

    async def add_certificate(self, path: str, pem: str) -> None:
        """Load a certificate file HAProxy does not know, ready to be listed in a crt-list."""
        await self._run(CommandKind.NEW_SSL, commands.new_ssl_cert(path))
        await self.update_certificate(path, pem)

    async def add_crt_list_entry(
        self,
        crt_list: str,
        certificate: str,
        *,
        min_version: str,
        alpn: bool,
        filters: Iterable[str] = (),
    ) -> None:
        """Append a line to a crt-list: the certificate is served on that list's listeners."""
        command, payload = commands.add_ssl_crt_list(
            crt_list, certificate, min_version=min_version, alpn=alpn, filters=filters
        )
        await self._run(CommandKind.ADD_CRT_LIST, command, payload=payload)

    async def update_ca_file(self, path: str, pem: str) -> None:
        """Give a loaded CA file new content (set ssl ca-file, then commit)."""
        command, payload = commands.set_ssl_ca_file(path, pem)
        await self._run(CommandKind.SET_SSL, command, payload=payload)
        await self._commit(commands.commit_ssl_ca_file(path), commands.abort_ssl_ca_file(path))

    async def certificate(self, path: str) -> dict[str, str]:
        """`show ssl cert <path>`: Serial, notAfter, Subject, ... as HAProxy has it loaded."""
        return replies.parse_info(await self._run(CommandKind.READ, commands.show_ssl_cert(path)))

    async def _commit(self, commit: str, abort: str) -> None:
        try:
            await self._run(CommandKind.COMMIT_SSL, commit)
        except HaproxyError:
            with contextlib.suppress(HaproxyError):
                await self._run(CommandKind.ABORT_SSL, abort)
            raise


def _payload_batches(
    path: str, entries: Iterable[tuple[str, str]]
) -> Iterable[list[tuple[str, str]]]:
    """Entries grouped so each `add map` request stays under MAP_PAYLOAD_BYTES."""
    overhead = len(f"add map @{commands.MAX_VERSION} {path} <<\n\n\n")
    batch: list[tuple[str, str]] = []
    size = overhead
    for key, value in entries:
        commands.map_word(key)
        commands.map_word(value, "map value")
        line = len(key) + len(value) + 2
        if batch and size + line > MAP_PAYLOAD_BYTES:
            yield batch
            batch, size = [], overhead
        batch.append((key, value))
        size += line
    if batch:
        yield batch
