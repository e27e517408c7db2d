"""Which lines of a ring dump are new: numbered lines, read again with every dump."""

from __future__ import annotations

from meshgate.stats.ring import new_lines

DUMP = b"7 100 be s 200 0 1 1\n8 100 be s 200 0 1 2\n9 100 be s 503 -1 -1 0\n\n"


def test_a_first_dump_is_all_new_and_loses_its_numbers() -> None:
    lines, marker = new_lines(DUMP, None)
    assert lines == [b"100 be s 200 0 1 1", b"100 be s 200 0 1 2", b"100 be s 503 -1 -1 0"]
    assert marker == b"9"


def test_only_lines_after_the_marker_are_new() -> None:
    assert new_lines(DUMP, b"8") == ([b"100 be s 503 -1 -1 0"], b"9")
    assert new_lines(DUMP, b"9") == ([], b"9")


def test_lines_are_new_after_the_marker_whatever_their_numbers() -> None:
    # A line is written when its request ends: numbers follow request starts, not the ring.
    dump = b"12 100 be s 200 0 1 9\n10 100 be s 200 0 1 1\n11 100 be s 200 0 1 1\n"
    assert new_lines(dump, b"12") == ([b"100 be s 200 0 1 1"] * 2, b"11")


def test_a_marker_overwritten_since_means_every_line_is_new() -> None:
    lines, marker = new_lines(DUMP, b"3")
    assert len(lines) == 3 and marker == b"9"


def test_an_empty_ring_or_a_gone_worker_gives_nothing_and_keeps_the_marker() -> None:
    assert new_lines(b"\n", b"4") == ([], b"4")
    assert new_lines(b"", None) == ([], None)
    assert new_lines(b"Can't find the target process!\n", b"4") == ([], b"4")
