"""The data dir lock, SIGHUP re-reads, and reading an adopted HAProxy's listen addresses."""

from __future__ import annotations

import asyncio
import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshgate.errors import ValidationFailed
from meshgate.haproxy.adopted import bind_addresses
from meshgate.lifecycle.hangup import Rereader
from meshgate.lifecycle.lock import LOCK_FILE, DataDirLock, DataDirLocked

REPO = Path(__file__).resolve().parents[2]


def test_a_held_lock_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(DataDirLocked, match=f"in use by process {os.getpid()}"):
            DataDirLock(tmp_path).acquire()
    finally:
        first.release()
    second = DataDirLock(tmp_path)
    second.acquire()  # free again once released
    second.release()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    (tmp_path / LOCK_FILE).write_text(dead.stdout)
    lock = DataDirLock(tmp_path)
    lock.acquire()
    assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    lock.release()


def test_bind_addresses_are_read_from_a_configuration() -> None:
    config = (
        "frontend probe\n    bind unix@/run/probe.sock mode 600\n"
        "frontend a\n    bind 0.0.0.0:8080 ssl crt-list /x\n"
        "frontend b\n    bind :::8443\n    # bind 1.2.3.4:1\n"
    )
    assert bind_addresses(config) == {("0.0.0.0", 8080), ("::", 8443)}


def test_rereader_keeps_running_after_a_bad_manifest_and_runs_again() -> None:
    calls: list[str] = []

    async def reapply() -> int:
        calls.append("run")
        if len(calls) == 1:
            raise ValidationFailed([])
        return 1

    async def scenario() -> None:
        rereader = Rereader(reapply)
        rereader.hangup()
        await asyncio.sleep(0.01)
        rereader.hangup()
        await asyncio.sleep(0.01)
        await rereader.close()

    asyncio.run(scenario())
    assert calls == ["run", "run"]


def test_the_systemd_unit_leaves_haproxy_to_the_next_start() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(REPO / "packaging" / "meshgate.service")
    service = unit["Service"]
    assert "--keep-haproxy" in service["ExecStart"].split()
    assert service["KillMode"] == "process"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
