"""Reading /proc/PID/stat, including a command name with spaces and parentheses."""

from __future__ import annotations

import os

from meshgate.process_metrics import parse_stat, process_tree

# Fields after the name: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
# utime stime cutime cstime priority nice threads itrealvalue starttime vsize rss ...
STAT = (
    "4242 (odd (name) x) S 17 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 1 0 99 "
    "123456 300 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0"
)


def test_parse_stat_counts_fields_after_the_name() -> None:
    usage = parse_stat(STAT, ticks_per_s=100, page_bytes=4096)
    assert (usage.pid, usage.ppid) == (4242, 17)
    assert usage.cpu_seconds == 3.0  # (250 + 50) ticks
    assert usage.rss_bytes == 300 * 4096


def test_process_tree_of_this_process() -> None:
    me, children = process_tree(os.getpid())
    assert me is not None and me.pid == os.getpid() and me.rss_bytes > 0
    assert all(child.ppid == os.getpid() for child in children)
