"""Running HAProxy 2.6 in master-worker mode: validate, start, reload (confirmed), watch, stop.

The master stays our child (`-W`, never `-D`) in a process group of its own, so stopping the
group stops its workers too. Three facts of 2.6 shape this module:

- `reload` makes the master re-execute itself with the arguments it was started with. So the
  master always reads one file owned by this supervisor (`supervisor/active.cfg`); a config is
  validated as a staged copy and only then moved there. The caller's own file may be rewritten
  at any time without affecting what a later restart reads.
- The master passes its listening sockets to the new worker (the `-x sockpair@N` it adds to
  its own command line): connections queue in the same kernel sockets across a reload, so none
  is refused. `expose-fd listeners` on the admin socket is not needed for that, but lets an
  operator use `-x admin.sock` by hand.
- `reload` answers nothing, even when the new configuration fails to load. The outcome is read
  from `show proc`: the master's reload counter advances on every attempt and its "failed"
  count is reset to 0 by a successful one; the new worker's pid appears among the current
  workers, and we confirm it answers before calling the reload done.

One fact of 2.6 this module works around: the master closes its listening sockets once the
worker is forked, so a crash of the worker (or of the master, whose worker we then stop) would
close them, and connections would be refused until HAProxy is back. `kept_listeners` holds a
copy of every listening socket and HAProxy is started with `-x` naming it, so the restarted
HAProxy accepts from the same sockets the connections that waited meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from meshgate.haproxy import (
    adopted,
    bursts,
    commands,
    kept_listeners,
    messages,
    processes,
    replies,
    server_states,
    socket_transfer,
    transport,
)
from meshgate.haproxy.commands import HaproxyError
from meshgate.haproxy.processes import ProcInfo
from meshgate.haproxy.replies import CommandKind
from meshgate.haproxy.transport import RuntimeUnavailable

log = logging.getLogger(__name__)
haproxy_log = logging.getLogger("haproxy")  # HAProxy's own messages, with their level

_POLL_S = 0.02
# `haproxy -c` of a large configuration is given this long a megabyte (at least check_timeout).
CHECK_S_PER_MB = 1.0
CHECK_TIMED_OUT = "haproxy -c did not finish"
_UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL
# The compiler's `grace` is 100 ms: until then the old worker may answer on the admin socket.
_KEEP_AFTER_RELOAD_S = 0.15


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    output: str  # HAProxy's own messages (`haproxy -c`)
    timed_out: bool = False  # no verdict: HAProxy did not finish in time


@dataclass(frozen=True)
class ReloadResult:
    worker_pid: int
    old_worker_pids: list[int] = field(default_factory=list)
    duration_s: float = 0.0  # the whole reload: validation, reload, confirmation
    validate_s: float = 0.0  # of which `haproxy -c`


class ConfigRejected(HaproxyError):  # noqa: N818
    """`haproxy -c` failed: nothing reached the running HAProxy. `timed_out`: it gave no
    verdict in time (the output says so)."""

    def __init__(self, output: str, *, timed_out: bool = False) -> None:
        self.output = output
        self.timed_out = timed_out
        super().__init__(f"HAProxy rejected the configuration:\n{output}")


class HaproxyStartFailed(HaproxyError):  # noqa: N818
    pass


class ReloadFailed(HaproxyError):  # noqa: N818
    pass


class NotRunning(HaproxyError):  # noqa: N818
    pass


class HaproxySupervisor:
    def __init__(
        self,
        *,
        binary: str = "haproxy",
        run_dir: Path,
        start_timeout: float = 10.0,
        reload_timeout: float = 10.0,
        stop_grace: float = 5.0,
        check_timeout: float = 60.0,
        server_state_file: Path | None = None,
        max_restart_delay: float = 10.0,
    ) -> None:
        self.binary = binary
        self.run_dir = Path(run_dir).absolute()
        self.master_socket = self.run_dir / "master.sock"
        # Where the compiler's `server-state-file` points; dumped before each reload.
        self.server_state_file = server_state_file or self.run_dir / "server-state"
        self.start_timeout = start_timeout
        self.reload_timeout = reload_timeout
        self.stop_grace = stop_grace
        self.check_timeout = check_timeout
        self.max_restart_delay = max_restart_delay
        self.restarts = 0
        self._own_dir = self.run_dir / "supervisor"
        self._active = self._own_dir / "active.cfg"
        self._last_good = self._own_dir / "last-good.cfg"
        self._pidfile = self._own_dir / "master.pid"
        self._listeners = kept_listeners.KeptListeners(self.run_dir / "listeners.sock")
        self._keeping: asyncio.Task[None] | None = None  # the copy taken after a reload
        self._keep_waiting = False  # that copy has not begun: it may be dropped
        self._process: asyncio.subprocess.Process | adopted.AdoptedMaster | None = None
        self.adopted = False  # running a master an earlier meshgate process started
        self._output_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._stopping = False
        self._output: deque[str] = deque(maxlen=400)
        self._output_count = 0
        for path in (self.master_socket, self._listeners.path):
            if len(str(path)) > _UNIX_PATH_MAX:
                raise ValueError(f"run dir too long for a unix socket path: {path}")

    @property
    def master_pid(self) -> int | None:
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    # --- validation ---------------------------------------------------------------------

    async def validate(self, config_path: Path) -> CheckResult:
        """`haproxy -c -f config_path`. An invalid configuration is a result, not an error.
        A large file is given longer than `check_timeout`: HAProxy took 48 s to check the
        190 MB of 100,000 gateways on a busy machine."""
        try:
            size_mb = Path(config_path).stat().st_size / 1e6
        except OSError:
            size_mb = 0.0  # HAProxy says what is wrong with the path
        limit = max(self.check_timeout, size_mb * CHECK_S_PER_MB)
        process = await asyncio.create_subprocess_exec(
            self._binary_path(), "-c", "-f", str(Path(config_path).absolute()),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, cwd=self._cwd(),
        )  # fmt: skip
        try:
            async with asyncio.timeout(limit):
                output, _ = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            return CheckResult(False, f"{CHECK_TIMED_OUT} within {limit:g}s", timed_out=True)
        return CheckResult(process.returncode == 0, output.decode("utf-8", "replace").strip())

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, config_path: Path, *, check: bool = True) -> None:
        """Validate and start HAProxy; returns once a worker answers. If HAProxy is already
        running (started before, or brought back by the watchdog), this reloads instead.
        Without `check`, see `reload`."""
        started = time.monotonic()
        staged = await self._stage_and_check(config_path, check=check)
        try:
            async with self._lock:
                if self.running:
                    await self._reload_locked(
                        staged, started, time.monotonic() - started, checked=check
                    )
                    return
                await self._reap_orphan()
                load_s = 0.0 if check else 2 * _load_time(staged)  # before the file is moved
                os.replace(staged, self._active)
                try:
                    await self._spawn_until_ready(load_s)
                except HaproxyStartFailed:
                    await self._listeners.close()  # nothing runs: nothing to hand over
                    if not check:
                        await self._reject_if_invalid(config_path)
                    raise
                _replace_with_copy(self._active, self._last_good)
                self._stopping = False
                if self._watch_task is None or self._watch_task.done():
                    self._watch_task = asyncio.create_task(self._watch(), name="haproxy-watchdog")
        finally:
            staged.unlink(missing_ok=True)

    async def adopt(self) -> bool:
        """Take over the master an earlier meshgate process left running on this run dir, if
        it answers: it keeps serving, and the next configuration reaches it by a reload. The
        caller holds the data dir's lock, so that process is gone, not a rival."""
        async with self._lock:
            if self.running:
                return False
            pid = adopted.master_of(self._pidfile, self.master_socket)
            if pid is None or not self._last_good.exists():
                return False
            try:
                info = await self._proc()
            except (RuntimeUnavailable, HaproxyError):
                return False
            if info.master_pid != pid or not info.workers:
                return False
            if not await self._worker_answers(info.workers[0].pid):
                return False
            self._process = adopted.AdoptedMaster(pid)
            self.adopted = True
            self._stopping = False
            await self._listeners.serve()
            await self._keep_listeners()
            self._watch_task = asyncio.create_task(self._watch(), name="haproxy-watchdog")
        return True

    async def reload(self, config_path: Path, *, check: bool = True) -> ReloadResult:
        """Validate, reload through the master, and confirm a new worker is serving. A rejected
        configuration raises ConfigRejected and leaves the running processes untouched.

        Without `check`, HAProxy's own load is the check (the caller has nothing to protect:
        no gateway is served yet), which saves parsing the file twice: at 100,000 gateways,
        `haproxy -c` took as long as the reload itself (half a minute). When that load fails,
        the file is checked then, so that a configuration HAProxy rejects still raises
        ConfigRejected, with HAProxy's reasons."""
        started = time.monotonic()
        staged = await self._stage_and_check(config_path, check=check)
        validated = time.monotonic()
        try:
            async with self._lock:
                try:
                    return await self._reload_locked(
                        staged, started, validated - started, checked=check
                    )
                except ReloadFailed:
                    if not check:
                        await self._reject_if_invalid(config_path)
                    raise
        finally:
            staged.unlink(missing_ok=True)

    async def _reject_if_invalid(self, config_path: Path) -> None:
        """After an unchecked load failed: ConfigRejected when `haproxy -c` rejects the file.
        (The caller's file: the staged copy has been moved into place, and back.)"""
        result = await self.validate(config_path)
        if not result.ok:
            raise ConfigRejected(result.output, timed_out=result.timed_out)

    async def _reload_locked(
        self, staged: Path, started: float, validate_s: float, *, checked: bool = True
    ) -> ReloadResult:
        if not self.running:
            raise NotRunning("HAProxy is not running; start it first")
        load_s = 0.0 if checked else _load_time(staged)  # before the file is moved
        before = await self._proc()
        await self._dump_server_state()
        await self._settle_listeners()  # one copy at a time, of the worker serving after it
        try:
            # A new worker parses the same text `haproxy -c` just did: a configuration that took
            # the check long (100,000 gateways) takes the reload as long.
            timeout = max(self.reload_timeout, 3 * validate_s if checked else 2 * load_s)
            after, worker_pid = await self._reload_confirmed(staged, before, timeout)
        finally:
            # Whatever the outcome, a copy of the worker now serving, taken in the background
            # once the old worker has stopped accepting on the shared admin socket (`grace`), so
            # as not to compete with the caller's next commands there. A crash before then
            # restarts with the previous copy (ports this reload added are then bound anew,
            # the ones it removed let go right after).
            self._keeping = asyncio.create_task(
                self._keep_listeners(after_s=_KEEP_AFTER_RELOAD_S), name="keep-listeners"
            )
        result = ReloadResult(
            worker_pid=worker_pid,
            old_worker_pids=[w.pid for w in after.old_workers],
            duration_s=time.monotonic() - started,
            validate_s=validate_s,
        )
        log.info("HAProxy reloaded: worker %d in %.3fs", worker_pid, result.duration_s)
        return result

    async def _reload_confirmed(
        self, staged: Path, before: ProcInfo, timeout: float
    ) -> tuple[ProcInfo, int]:
        mark = self._output_count
        os.replace(staged, self._active)
        try:
            await transport.send(str(self.master_socket), commands.reload(), timeout=2.0)
        except RuntimeUnavailable as error:
            # The master closes the connection when it re-executes; only a failure before
            # the command was written means nothing happened.
            if not error.sent:
                _replace_with_copy(self._last_good, self._active)
                raise ReloadFailed(f"could not ask HAProxy to reload: {error}") from None
        try:
            found = await self._await_reload(before, mark, timeout)
        except ReloadFailed:
            # Keep the file the master re-reads on its next reload or restart good.
            _replace_with_copy(self._last_good, self._active)
            raise
        _replace_with_copy(self._active, self._last_good)
        return found

    async def stop(self) -> None:
        """Soft-stop (SIGUSR1: finish what is in flight), then SIGTERM, then SIGKILL to the
        whole process group; returns when no HAProxy process of ours is left."""
        self._stopping = True
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None
        async with self._lock:
            await self._settle_listeners()
            process = self._process
            if process is not None:
                await self._terminate(process)
            self._pidfile.unlink(missing_ok=True)
            await self._listeners.close()  # only now: the ports close with HAProxy's copies

    def adopted_listeners(self) -> set[tuple[str, int]]:
        """The addresses the adopted HAProxy listens on (none unless one was adopted)."""
        if not self.adopted:
            return set()
        return adopted.bind_addresses(self._active.read_text())

    def kept_addresses(self) -> set[tuple[str, int]]:
        """The TCP addresses whose listening sockets meshgate holds for a restart after a
        crash (see `kept_listeners`)."""
        return self._listeners.addresses()

    async def leave_running(self) -> None:
        """Stop watching HAProxy but leave it serving, for the next meshgate process on this
        run dir to adopt (a restart or upgrade of meshgate that costs no request)."""
        self._stopping = True
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None
        if self._output_task is not None:
            self._output_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._output_task
        # HAProxy keeps its own copies; the next meshgate takes a copy again when it adopts.
        await self._settle_listeners()
        await self._listeners.close()
        if self.running:
            log.info("leaving HAProxy master %d serving", self.master_pid)

    async def proc(self) -> ProcInfo:
        return await self._proc()

    async def old_worker_count(self) -> int:
        return len((await self._proc()).old_workers)

    # --- internals ----------------------------------------------------------------------

    def _binary_path(self) -> str:
        found = shutil.which(self.binary)
        if found is None:
            raise HaproxyStartFailed(f"HAProxy binary {self.binary!r} not found")
        return found

    def _cwd(self) -> str:
        # Relative paths in a configuration resolve against the working directory; checking
        # and running in the same one keeps the check honest.
        return str(self.run_dir) if self.run_dir.is_dir() else os.getcwd()

    async def _stage_and_check(self, config_path: Path, *, check: bool = True) -> Path:
        """Copy the configuration once, check the copy (unless not to), and return it: what
        was checked is byte for byte what will run, whatever happens to the caller's file
        afterwards."""
        self._own_dir.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(prefix="staged-", suffix=".cfg", dir=self._own_dir)
        os.close(descriptor)
        staged = Path(name)
        shutil.copyfile(config_path, staged)
        if not check:
            return staged
        result = await self.validate(staged)
        if not result.ok:
            staged.unlink(missing_ok=True)
            output = result.output.replace(str(staged), str(config_path))
            raise ConfigRejected(output, timed_out=result.timed_out)
        return staged

    async def _proc(self) -> ProcInfo:
        reply = await transport.send(str(self.master_socket), commands.show_proc(), timeout=2.0)
        replies.check_reply(CommandKind.READ, reply)
        return processes.parse_proc(reply)

    async def _worker_answers(self, pid: int) -> bool:
        command = commands.on_worker(pid, "show version")
        try:
            reply = await transport.send(str(self.master_socket), command, timeout=2.0)
        except RuntimeUnavailable:
            return False
        return bool(reply.strip()) and not reply.startswith("Can't find")

    async def _spawn_until_ready(self, load_s: float = 0.0) -> None:
        """Start HAProxy; `load_s`: how long its parse of the file may take, beyond
        `start_timeout` (an unchecked large file)."""
        self.master_socket.unlink(missing_ok=True)  # a stale socket must not look alive
        mark = self._output_count
        await self._listeners.serve()
        process = await asyncio.create_subprocess_exec(
            self._binary_path(), "-W", "-S", f"{self.master_socket},mode,600",
            "-x", str(self._listeners.path), "-f", str(self._active),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, cwd=str(self.run_dir), start_new_session=True,
        )  # fmt: skip
        self._process = process
        self.adopted = False
        self._pidfile.write_text(f"{process.pid}\n")
        self._output_task = asyncio.create_task(self._pump_output(process))
        deadline = time.monotonic() + max(self.start_timeout, load_s)
        while time.monotonic() < deadline:
            if process.returncode is not None:
                await asyncio.sleep(0.05)  # let the last lines of output arrive
                raise HaproxyStartFailed(
                    f"HAProxy exited with {process.returncode}:\n{self._output_since(mark)}"
                )
            with contextlib.suppress(RuntimeUnavailable, HaproxyError):
                info = await self._proc()
                if info.workers and await self._worker_answers(info.workers[0].pid):
                    log.info("HAProxy started: master %d, worker %d", process.pid,
                             info.workers[0].pid)  # fmt: skip
                    await self._keep_listeners()
                    return
            await asyncio.sleep(_POLL_S)
        await self._terminate(process)
        raise HaproxyStartFailed(
            f"HAProxy did not start within {self.start_timeout}s:\n{self._output_since(mark)}"
        )

    async def _await_reload(
        self, before: ProcInfo, mark: int, timeout: float
    ) -> tuple[ProcInfo, int]:
        old_pids = {w.pid for w in before.workers} | {w.pid for w in before.old_workers}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise ReloadFailed(f"HAProxy exited during reload:\n{self._output_since(mark)}")
            try:
                info = await self._proc()
            except (RuntimeUnavailable, HaproxyError):
                info = None  # the master is re-executing and its socket is not back yet
            if info is not None and info.reloads > before.reloads:
                if info.failed_reloads > 0:
                    raise ReloadFailed(
                        f"HAProxy could not load the new configuration and keeps running the "
                        f"previous one:\n{self._output_since(mark)}"
                    )
                fresh = [w.pid for w in info.workers if w.pid not in old_pids]
                if fresh and await self._worker_answers(fresh[0]):
                    return info, fresh[0]
            await asyncio.sleep(_POLL_S)
        raise ReloadFailed(
            f"no new HAProxy worker within {timeout:.0f}s:\n{self._output_since(mark)}"
        )

    async def _keep_listeners(self, *, after_s: float = 0.0) -> None:
        """Copy the current worker's listening sockets (see `kept_listeners`). Without an
        admin socket exposing them, or if the copy fails, nothing is held: a crash then
        refuses connections until HAProxy is back, as before, rather than queue them for
        ports the new HAProxy may not serve."""
        if after_s > 0:
            self._keep_waiting = True
            try:
                await asyncio.sleep(after_s)
            finally:
                self._keep_waiting = False
        admin = kept_listeners.exposing_socket(self._active, self.run_dir)
        if admin is None:
            self._listeners.release()
            return
        try:
            text = await asyncio.to_thread(self._active.read_text)
            expected = kept_listeners.expected_addresses(adopted.bind_addresses(text))
            count = await self._listeners.refresh(admin, expected)
        except (OSError, socket_transfer.TransferError) as error:
            log.warning("listening sockets not kept; a crash of HAProxy will refuse "
                        "connections until it is back: %s", error)  # fmt: skip
            self._listeners.release()
            return
        log.debug("keeping %d listening sockets of HAProxy", count)

    async def _settle_listeners(self) -> None:
        """Drop the copy due after the last reload if it has not begun (what follows takes
        its own), else wait for it (bounded by its timeout): cancelled midway, the sockets it
        was receiving would stay open, owned by nobody."""
        task, self._keeping = self._keeping, None
        if task is None:
            return
        if self._keep_waiting:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _dump_server_state(self) -> None:
        """Save servers' state (weights, health, maintenance) for the next configuration to
        load: `load-server-state-from-file` reads this file on startup."""
        command = commands.on_worker_relative(1, commands.show_servers_state())
        try:
            reply = await transport.send(str(self.master_socket), command, timeout=5.0)
            server_states.parse_servers_state(reply)  # refuse to save something that is not a state
        except HaproxyError as error:
            log.warning("server state not saved before reload: %s", error)
            return
        temporary = self.server_state_file.with_name(f".{self.server_state_file.name}.tmp")
        temporary.write_text(reply.rstrip("\n") + "\n")
        os.replace(temporary, self.server_state_file)

    async def _watch(self) -> None:
        """Restart HAProxy with the last good configuration when the master dies unasked."""
        while not self._stopping:
            process = self._process
            if process is None:
                return
            code = await process.wait()
            if self._stopping:
                return
            log.error("HAProxy master %d exited unexpectedly (%s); restarting it with the last "
                      "good configuration", process.pid, code)  # fmt: skip
            _signal_group(process.pid, signal.SIGTERM)  # its workers exit too; make sure
            # The state saved at the last reload may show servers DOWN that are up now: loaded
            # into the new process, it would keep them out for rise x interval. Without it
            # servers start up and their checks judge them afresh.
            self.server_state_file.unlink(missing_ok=True)
            await self._settle_listeners()
            delay = 0.0
            while not self._stopping:
                await asyncio.sleep(delay)
                async with self._lock:
                    if self._stopping:
                        return
                    if self.running:  # start() brought it back meanwhile
                        break
                    try:
                        _replace_with_copy(self._last_good, self._active)
                        await self._spawn_until_ready()
                    except (HaproxyError, OSError) as error:
                        log.error("HAProxy restart failed: %s", error)
                        # Connections must not wait for a restart that may never come: the
                        # ports refuse until HAProxy binds them again.
                        self._listeners.release()
                        delay = min(max(0.5, delay * 2), self.max_restart_delay)
                        continue
                    self.restarts += 1
                    log.warning("HAProxy restarted (restart #%d)", self.restarts)
                    break

    async def _terminate(self, process: asyncio.subprocess.Process | adopted.AdoptedMaster) -> None:
        for sig, wait_s in ((signal.SIGUSR1, self.stop_grace), (signal.SIGTERM, 2.0)):
            if process.returncode is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await process.wait()
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()
        # Workers belong to the master's group; none may outlive it.
        _signal_group(process.pid, signal.SIGKILL)
        if self._output_task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(1.0):
                    await self._output_task

    async def _reap_orphan(self) -> None:
        """Stop a master left behind by an earlier process of ours (same run dir): two
        HAProxies would share the listening ports (SO_REUSEPORT) with different configs."""
        try:
            pid = int(self._pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if self._process is not None and self._process.pid == pid:
            return
        if str(self.master_socket).encode() not in cmdline:
            return
        log.warning("stopping HAProxy master %d left over from an earlier run", pid)
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            await asyncio.sleep(0.05)
        _signal_group(pid, signal.SIGKILL)

    async def _pump_output(self, process: asyncio.subprocess.Process) -> None:
        """HAProxy's messages go to our log and to a short history used in error reports.
        Draining the pipe continuously also keeps HAProxy from blocking on a full pipe.
        Messages of one kind in a burst (one per backend of a reload) are logged once and
        summed up when the burst ends; those echoing a runtime command only counted (see
        `bursts`)."""
        assert process.stdout is not None
        level = logging.INFO
        loop = asyncio.get_running_loop()
        burst = bursts.Bursts()
        timer: asyncio.TimerHandle | None = None

        def end_of_burst() -> None:
            nonlocal timer
            timer = None
            if burst.due(time.monotonic()):
                _log_messages(burst.flush())
            elif burst.open():
                timer = loop.call_at(loop.time() + bursts.QUIET_S, end_of_burst)

        try:
            # What the pipe holds at once, not a line at a time: a runtime change to a
            # thousand backends is thousands of lines, each await a turn of the event loop.
            async for lines in _lines(process.stdout):
                now = time.monotonic()
                for text in lines:
                    self._output.append(text)
                    self._output_count += 1
                    if messages.echoes_a_command(text):
                        _log_messages(burst.echo(now))
                        continue
                    if not text.strip():
                        continue
                    message = messages.parse_message(text, level)
                    level = message.level
                    _log_messages(burst.feed(message, now))
                if timer is None:
                    timer = loop.call_at(loop.time() + bursts.QUIET_S, end_of_burst)
        finally:
            if timer is not None:
                timer.cancel()
            _log_messages(burst.flush())

    def _output_since(self, mark: int) -> str:
        count = min(self._output_count - mark, len(self._output))
        return "\n".join(list(self._output)[-count:]) if count > 0 else "(no output)"


def _load_time(config_path: Path) -> float:
    """How long a check of the file is given (`CHECK_S_PER_MB`); a load no check has timed is
    given twice that (HAProxy took 194 s to load 185 MB at a load average of 20)."""
    try:
        return Path(config_path).stat().st_size / 1e6 * CHECK_S_PER_MB
    except OSError:
        return 0.0


PIPE_READ = 65536


async def _lines(stream: asyncio.StreamReader) -> AsyncIterator[list[str]]:
    """The complete lines the stream has, as they come, a batch at a time; then what is left
    after the last line break."""
    partial = b""
    while data := await stream.read(PIPE_READ):
        *complete, partial = (partial + data).split(b"\n")
        if complete:
            yield [line.decode("utf-8", "replace").rstrip() for line in complete]
    if partial:
        yield [partial.decode("utf-8", "replace").rstrip()]


def _log_messages(found: list[messages.Message]) -> None:
    for message in found:
        extra = {} if message.pid is None else {"pid": message.pid}
        haproxy_log.log(message.level, "%s", message.text, extra=extra)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _replace_with_copy(source: Path, target: Path) -> None:
    """Make `target` a copy of `source` in one step (a copy renamed over it): the master may be
    reading `target` at that moment, and must never see it half written."""
    temporary = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)
