"""Totals that never go backwards across resets, reloads and restarts; rates over a window."""

from __future__ import annotations

import pytest

from meshgate.stats.counters import History, MonotonicTotals


def test_readings_of_one_source_are_its_latest_values() -> None:
    totals: MonotonicTotals[str] = MonotonicTotals(2)
    totals.observe(100, "be", (3, 30))
    totals.observe(100, "be", (5, 50))
    assert totals.total("be") == (5, 50)


def test_a_counter_that_goes_down_was_reset_and_its_last_value_is_carried() -> None:
    totals: MonotonicTotals[str] = MonotonicTotals(2)
    totals.observe(100, "srv", (7, 70))
    totals.observe(100, "srv", (2, 70))  # the first counter restarted (server re-added)
    assert totals.total("srv") == (9, 70)
    totals.observe(100, "srv", (4, 75))
    assert totals.total("srv") == (11, 75)


def test_sources_add_up_while_both_live() -> None:
    totals: MonotonicTotals[str] = MonotonicTotals(1)
    totals.observe(100, "be", (10,))  # the old worker after a reload
    totals.observe(200, "be", (3,))  # the new one
    assert totals.total("be") == (13,)
    totals.observe(100, "be", (11,))  # the old worker finished one more request
    assert totals.total("be") == (14,)


def test_a_gone_source_keeps_counting_through_its_last_reading() -> None:
    totals: MonotonicTotals[str] = MonotonicTotals(1)
    totals.observe(100, "be", (10,))
    totals.observe(200, "be", (3,))
    totals.retire({100})  # the old worker exited
    assert totals.total("be") == (13,)
    assert totals.sources() == {200}
    totals.observe(200, "be", (5,))
    assert totals.total("be") == (15,)


def test_retiring_one_of_three_sources_keeps_the_others_counting() -> None:
    totals: MonotonicTotals[str] = MonotonicTotals(1)
    for pid, reading in ((100, 10), (200, 20), (300, 30)):
        totals.observe(pid, "be", (reading,))
    totals.retire({200})
    assert totals.sources() == {100, 300} and totals.total("be") == (60,)
    totals.observe(100, "be", (11,))
    totals.observe(300, "be", (31,))
    assert totals.total("be") == (62,)
    totals.retire({100, 300})
    assert totals.sources() == set() and list(totals.names()) == ["be"]
    assert totals.total("be") == (62,)
    totals.observe(400, "be", (1,))  # a new worker after a restart
    assert totals.total("be") == (63,)


def test_a_restart_starts_new_sources_from_zero_without_losing_the_old_totals() -> None:
    totals: MonotonicTotals[str] = MonotonicTotals(1)
    history = []
    for pid, reading in ((100, 40), (100, 50), (300, 0), (300, 2), (300, 60)):
        totals.observe(pid, "be", (reading,))
        totals.retire({100} if pid == 300 else set())
        history.append(totals.total("be")[0])
    assert history == [40, 50, 50, 52, 110]
    assert history == sorted(history)


def test_a_row_missing_from_one_poll_is_not_a_reset() -> None:
    totals: MonotonicTotals[str] = MonotonicTotals(1)
    totals.observe(100, "srv", (5,))
    # Nothing about "srv" this poll; the source is still alive.
    totals.retire(set())
    totals.observe(100, "srv", (6,))
    assert totals.total("srv") == (6,)


def test_unknown_keys_total_zero_and_names_lists_every_key() -> None:
    totals: MonotonicTotals[str] = MonotonicTotals(2)
    assert totals.total("nothing") == (0, 0)
    totals.observe(1, "a", (1, 1))
    totals.observe(2, "b", (1, 1))
    totals.retire({2})
    assert sorted(totals.names()) == ["a", "b"]


def test_a_reset_source_counts_what_it_had_before_the_reset_when_retired() -> None:
    totals: MonotonicTotals[str] = MonotonicTotals(1)
    totals.observe(100, "srv", (7,))
    totals.observe(100, "srv", (2,))
    totals.retire({100})
    assert totals.total("srv") == (9,)
    assert totals.sources() == set()


def test_log_counts_cover_what_a_worker_served_after_its_last_poll() -> None:
    totals: MonotonicTotals[str] = MonotonicTotals(3)  # requests, 2xx, bytes
    totals.observe(100, "be", (10, 10, 1000))
    # The worker served 3 more requests, logged, then exited before the next poll.
    logged = {"be": {100: [13, 13]}}
    assert totals.total("be", logged) == (13, 13, 1000)
    totals.retire({100}, logged)
    assert totals.total("be") == (13, 13, 1000)


def test_polls_ahead_of_the_log_are_kept() -> None:
    totals: MonotonicTotals[str] = MonotonicTotals(2)
    totals.observe(100, "be", (10, 9))  # one request still in progress: counted, not logged
    logged = {"be": {100: [9, 9]}}
    assert totals.total("be", logged) == (10, 9)
    totals.retire({100}, logged)
    assert totals.total("be") == (10, 9)


def test_a_worker_seen_only_in_the_log_counts_too() -> None:
    totals: MonotonicTotals[str] = MonotonicTotals(2)
    totals.observe(100, "be", (5, 5))
    logged = {"be": {100: [5, 5], 200: [2, 2]}}  # 200 lived and died between two polls
    assert totals.total("be", logged) == (7, 7)
    totals.retire({200}, logged)
    assert totals.total("be", {"be": {100: [5, 5]}}) == (7, 7)


def test_readings_must_have_the_declared_width() -> None:
    with pytest.raises(ValueError):
        MonotonicTotals[str](2).observe(1, "a", (1,))


def test_rate_is_the_increase_per_second_over_the_window() -> None:
    history = History(keep_s=60)
    for second in range(21):
        history.add(float(second), second * 5)  # 5 per second
    assert history.rate(10.0) == 5.0
    history.add(21.0, 105 + 20)  # a burst of 20 in the last second
    assert history.rate(10.0) == pytest.approx((125 - 55) / 10)


def test_rate_is_zero_without_two_samples_or_without_traffic() -> None:
    history = History()
    assert history.rate() == 0.0
    history.add(1.0, 10)
    assert history.rate() == 0.0
    history.add(2.0, 10)
    assert history.rate() == 0.0


def test_increase_spans_at_most_the_window_and_says_how_long() -> None:
    history = History(keep_s=100)
    for second in range(0, 100, 10):
        history.add(float(second), second)
    assert history.increase(30.0) == (30, 30.0)
    assert history.increase(1000.0) == (90, 90.0)


def test_old_samples_are_forgotten() -> None:
    history = History(keep_s=5)
    for second in range(100):
        history.add(float(second), second)
    assert history.increase(1000.0) == (5, 5.0)


def test_a_key_absent_from_polls_for_the_forget_time_is_forgotten_with_its_counts() -> None:
    totals: MonotonicTotals[str] = MonotonicTotals(1, forget_after_s=60.0)
    totals.observe(100, "kept", (5,))
    totals.observe(100, "gone", (7,))
    totals.retire({100})  # both carried: "gone" only lives on in the carried counts
    totals.observe(200, "kept", (1,))
    assert totals.forget_absent({"kept"}, now=0.0) == []
    assert totals.forget_absent({"kept"}, now=59.0) == []
    assert totals.total("gone") == (7,)  # a short absence loses nothing
    assert totals.forget_absent({"kept"}, now=60.0) == ["gone"]
    assert sorted(totals.names()) == ["kept"]
    assert totals.total("gone") == (0,)
    assert totals.total("kept") == (6,)


def test_a_key_back_within_the_forget_time_keeps_its_counts() -> None:
    totals: MonotonicTotals[str] = MonotonicTotals(1, forget_after_s=60.0)
    totals.observe(100, "srv", (5,))
    totals.observe(100, "other", (1,))
    totals.forget_absent({"other"}, now=0.0)
    totals.observe(100, "srv", (6,))
    totals.forget_absent({"srv", "other"}, now=30.0)
    assert totals.forget_absent({"other"}, now=70.0) == []  # absent again only since 70
    assert totals.total("srv") == (6,)


def test_a_key_only_in_the_log_of_a_retired_source_is_forgotten_too() -> None:
    totals: MonotonicTotals[str] = MonotonicTotals(1, forget_after_s=10.0)
    totals.retire({100}, {"logged": {100: [3]}})
    assert totals.total("logged") == (3,)
    totals.forget_absent(set(), now=0.0)
    assert totals.forget_absent(set(), now=10.0) == ["logged"]
    assert list(totals.names()) == []


class DenseHistory:
    """History as it was: every sample kept for `keep_s`, the reference for the compact one."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self.samples: list[tuple[float, int]] = []

    def add(self, now: float, total: int) -> None:
        self.samples.append((now, total))
        while len(self.samples) > 2 and self.samples[0][0] < now - self.keep_s:
            self.samples.pop(0)

    def increase(self, window_s: float) -> tuple[int, float]:
        newest, total = self.samples[-1]
        base = next(s for s in self.samples if s[0] >= newest - window_s)
        return total - base[1], newest - base[0]


def test_an_idle_counter_keeps_three_samples_whatever_the_time() -> None:
    history = History(keep_s=70.0)
    for second in range(500):
        history.add(float(second), 42 if second >= 3 else second)
    assert len(history) <= 3
    assert history.increase(60.0) == (0, 60.0)
    assert history.rate(10.0) == 0.0


def test_compact_samples_give_the_windows_every_sample_would() -> None:
    """Bursts between idle stretches, windows that start inside and outside flat runs."""
    compact, dense = History(keep_s=70.0), DenseHistory(keep_s=70.0)
    total = 0
    for second in range(400):
        if (second // 17) % 3 == 0 or second % 29 == 0:
            total += second % 5 + 1
        compact.add(float(second), total)
        dense.add(float(second), total)
        for window in (1.0, 10.0, 60.0):
            assert compact.increase(window) == dense.increase(window), (second, window)
    assert len(compact) < len(dense.samples)


def test_idle_backends_cost_a_poll_little_memory() -> None:
    """What a poll keeps per route backend, most of them idle at 100,000 gateways: one shared
    all-zero Counts, and about 1.3 kB of readings and history (3.3 kB before)."""
    import gc
    import tracemalloc

    from meshgate.haproxy.stat_csv import StatRow, StatType
    from meshgate.stats.tally import Tally

    count = 2000
    names = [f"default.g{n}.r.abcdef" for n in range(count)]
    tally = Tally()
    tracemalloc.start()
    try:
        for poll in range(3):
            rows = [
                row
                for name in names
                for row in (
                    StatRow(name, "BACKEND", StatType.BACKEND, "UP", "", "", "http"),
                    StatRow(name, "s1", StatType.SERVER, "UP", "", "127.0.0.1:80", "http"),
                )
            ]
            tally.begin()
            tally.observe(1, rows, current=True)
            snapshot = tally.end([1], 100.0 + poll)
            del rows
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    counts = {id(stats.counts) for stats in snapshot.backends.values()}
    assert len(counts) == 1  # one shared zero
    assert kept / count < 2000, f"{kept / count:.0f} bytes a backend and its server"
