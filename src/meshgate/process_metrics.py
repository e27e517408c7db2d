"""CPU time and memory of the HAProxy processes meshgate runs, read from /proc at scrape time.

meshgate's own process is covered by prometheus_client's ProcessCollector (`process_*`); HAProxy
runs as a master and one worker (more while old ones finish after a reload), which that collector,
one pid at a time, cannot sum. Linux only: elsewhere the series are simply absent.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PROC = Path("/proc")


@dataclass(frozen=True)
class Usage:
    pid: int
    ppid: int
    cpu_seconds: float
    rss_bytes: int


def parse_stat(text: str, ticks_per_s: int, page_bytes: int) -> Usage:
    """One /proc/PID/stat line. The command name (2nd field) may hold spaces and parentheses,
    so the fields are counted from its closing parenthesis."""
    pid_text, _, rest = text.partition(" (")
    fields = rest.rpartition(") ")[2].split()
    # After the name: state(3) ppid(4) ... utime(14) stime(15) ... rss(24); fields[0] is 3.
    utime, stime = int(fields[11]), int(fields[12])
    return Usage(
        pid=int(pid_text),
        ppid=int(fields[1]),
        cpu_seconds=(utime + stime) / ticks_per_s,
        rss_bytes=int(fields[21]) * page_bytes,
    )


def _read(pid: int) -> Usage | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:  # gone meanwhile, or no /proc
        return None
    return parse_stat(text, os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE"))


def process_tree(master: int) -> tuple[Usage | None, list[Usage]]:
    """The master's usage and its children's (the workers, current and old)."""
    children = []
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if entry.name.isdigit() and int(entry.name) != master:
            usage = _read(int(entry.name))
            if usage is not None and usage.ppid == master:
                children.append(usage)
    return _read(master), children


class HaproxyProcessMetrics(Collector):
    """`meshgate_haproxy_cpu_seconds_total` and `meshgate_haproxy_resident_memory_bytes`, by
    `process` (master, workers), for the master `master_pid()` names (None: not running)."""

    def __init__(self, master_pid: Callable[[], int | None]) -> None:
        self.master_pid = master_pid

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        pid = self.master_pid()
        if pid is None:
            return
        master, workers = process_tree(pid)
        if master is None:
            return
        cpu = CounterMetricFamily(
            "meshgate_haproxy_cpu_seconds",
            "CPU time (user and system) of the HAProxy processes; workers are summed",
            labels=["process"],
        )
        rss = GaugeMetricFamily(
            "meshgate_haproxy_resident_memory_bytes",
            "Resident memory of the HAProxy processes; workers are summed",
            labels=["process"],
        )
        cpu.add_metric(["master"], master.cpu_seconds)
        cpu.add_metric(["workers"], sum(w.cpu_seconds for w in workers))
        rss.add_metric(["master"], master.rss_bytes)
        rss.add_metric(["workers"], sum(w.rss_bytes for w in workers))
        yield cpu
        yield rss
        yield GaugeMetricFamily(
            "meshgate_haproxy_workers",
            "HAProxy worker processes, the current one and old ones finishing connections",
            value=len(workers),
        )
