"""Which lines of a ring dump are new: marked lines, read again with every dump."""

from __future__ import annotations

from meshgate.stats.ring import new_lines

DUMP = b"7:fe 100 be s 200 0 1 1\n8:fe 100 be s 200 0 1 2\n9:fe 100 be s 503 -1 -1 0\n\n"


def test_a_first_dump_is_all_new_and_loses_its_marks() -> None:
    lines, marker = new_lines(DUMP, None)
    assert lines == [b"100 be s 200 0 1 1", b"100 be s 200 0 1 2", b"100 be s 503 -1 -1 0"]
    assert marker == b"9:fe"


def test_only_lines_after_the_marker_are_new() -> None:
    assert new_lines(DUMP, b"8:fe") == ([b"100 be s 503 -1 -1 0"], b"9:fe")
    assert new_lines(DUMP, b"9:fe") == ([], b"9:fe")
    assert new_lines(DUMP, b"7:fe") == ([b"100 be s 200 0 1 2", b"100 be s 503 -1 -1 0"], b"9:fe")


def test_a_mark_is_a_whole_word() -> None:
    dump = b"17:fe 100 be s 200 0 1 1\n7:fe 100 be s 200 0 1 2\n"
    assert new_lines(dump, b"7:fe") == ([], b"7:fe")
    assert new_lines(dump, b"17:fe") == ([b"100 be s 200 0 1 2"], b"7:fe")


def test_each_frontend_counts_its_own_lines() -> None:
    dump = b"12:a 100 be s 200 0 1 9\n12:b 100 be2 s 200 0 1 1\n13:a 100 be s 200 0 1 1\n"
    assert new_lines(dump, b"12:a") == ([b"100 be2 s 200 0 1 1", b"100 be s 200 0 1 1"], b"13:a")
    assert new_lines(dump, b"12:b") == ([b"100 be s 200 0 1 1"], b"13:a")


def test_a_mark_written_twice_skips_the_lines_between_and_reads_none_twice() -> None:
    # Two threads logging at once can write the same count: the twin comes just after.
    dump = b"5:a 100 be s 200 0 1 1\n6:a 100 be s 200 0 1 2\n6:a 100 be s 200 0 1 3\n"
    assert new_lines(dump, b"5:a") == ([b"100 be s 200 0 1 2", b"100 be s 200 0 1 3"], b"6:a")
    assert new_lines(dump, b"6:a") == ([], b"6:a")


def test_a_marker_overwritten_since_means_every_line_is_new() -> None:
    lines, marker = new_lines(DUMP, b"3:fe")
    assert len(lines) == 3 and marker == b"9:fe"


def test_an_empty_ring_or_a_gone_worker_gives_nothing_and_keeps_the_marker() -> None:
    assert new_lines(b"\n", b"4:fe") == ([], b"4:fe")
    assert new_lines(b"", None) == ([], None)
    assert new_lines(b"Can't find the target process!\n", b"4:fe") == ([], b"4:fe")
