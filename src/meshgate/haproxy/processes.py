"""Parsing the master's `show proc`: the master, current and old workers, with reloads and
uptimes. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

from meshgate.haproxy.replies import UnexpectedReply


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
