"""The keep fraction of HAProxy's request log: controller math, and setting it in the worker."""

from __future__ import annotations

import pytest

from meshgate.haproxy.commands import HaproxyError
from meshgate.stats.keeper import LogKeeper
from meshgate.stats.sampling import KEEP_MIN, KEEP_SCALE, KEEP_VAR, KeepController, keep_for
from meshgate.stats.tally import BackendStats, Counts, Snapshot


@pytest.mark.parametrize("rate", [0.0, 1.0, 1_999.0, 2_000.0])
def test_at_or_under_the_budget_every_request_is_logged(rate: float) -> None:
    assert keep_for(rate, 2_000) == KEEP_SCALE


@pytest.mark.parametrize(
    ("rate", "keep"),
    [(4_000.0, 512), (2_048.0, 1000), (10_000.0, 204), (1_000_000.0, 2), (3e9, KEEP_MIN)],
)
def test_over_the_budget_a_fraction_budget_over_rate_is_logged(rate: float, keep: int) -> None:
    assert keep_for(rate, 2_000) == keep
    # Rounded down: the lines logged stay within the budget.
    assert keep / KEEP_SCALE * rate <= 2_000 or keep == KEEP_MIN


@pytest.mark.parametrize("budget", [None, 0])
def test_without_a_budget_everything_is_logged(budget: int | None) -> None:
    assert keep_for(1e9, budget) == KEEP_SCALE


def test_the_controller_follows_the_rate_between_polls() -> None:
    controller = KeepController(budget_per_s=1_000)
    assert controller.observe(0.0, 0) == KEEP_SCALE  # no rate yet
    assert controller.observe(1.0, 500) == KEEP_SCALE
    assert controller.observe(2.0, 4_500) == 256  # 4,000/s
    assert controller.rate == 4_000
    assert controller.fraction == 0.25
    assert controller.observe(3.0, 8_700) == 256  # 4,200/s: within the hysteresis, no change
    assert controller.observe(4.0, 16_700) == 128  # 8,000/s
    assert controller.observe(5.0, 17_000) == 256  # quiet again: up, at most double a poll
    assert controller.observe(6.0, 17_300) == 512
    assert controller.observe(7.0, 17_600) == KEEP_SCALE


def test_the_controller_holds_its_value_while_idle() -> None:
    controller = KeepController(budget_per_s=1_000)
    controller.observe(0.0, 0)
    assert controller.observe(1.0, 8_000) == 128
    assert controller.observe(2.0, 8_000) == 128  # no requests: nothing is logged anyway
    assert controller.observe(30.0, 8_000) == 128
    assert controller.observe(31.0, 8_010) == 256  # a trickle: back up to every request
    assert controller.observe(32.0, 8_020) == 512
    assert controller.observe(33.0, 8_030) == KEEP_SCALE


def test_the_end_of_a_burst_does_not_leave_the_next_one_logging_far_over_the_budget() -> None:
    controller = KeepController(budget_per_s=2_000)
    controller.observe(0.0, 0)
    assert controller.observe(1.0, 64_000) == 32  # 64,000/s
    # The burst stopped 0.1 s into this span: 6,400/s measured, which alone would say 320.
    assert controller.observe(2.0, 70_400) == 64
    assert controller.observe(12.0, 70_400) == 64  # idle: held for the next burst


def test_the_controller_waits_for_a_long_enough_span() -> None:
    controller = KeepController(budget_per_s=1_000)
    controller.observe(0.0, 0)
    assert controller.observe(0.1, 1_000) == KEEP_SCALE  # 0.1 s: too short to judge
    assert controller.observe(1.0, 10_000) == 102  # 10,000/s over the whole second


def test_a_total_going_backwards_starts_a_new_span() -> None:
    controller = KeepController(budget_per_s=1_000)
    controller.observe(0.0, 50_000)
    assert controller.observe(1.0, 10) == KEEP_SCALE
    assert controller.observe(2.0, 4_010) == 256


def snapshot(now: float, requests: int) -> Snapshot:
    stats = BackendStats(Counts(requests=requests), 0, 0.0, 0, 0.0)
    half = BackendStats(Counts(requests=requests // 2), 0, 0.0, 0, 0.0)
    return Snapshot(taken_at=now, backends={"a": stats, "b": half})


class SetVar:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []
        self.fail = False

    async def __call__(self, name: str, value: int) -> None:
        if self.fail:
            raise HaproxyError("refused")
        self.sent.append((name, value))


async def test_the_keeper_sets_the_value_on_change_and_for_every_new_worker() -> None:
    set_var = SetVar()
    keeper = LogKeeper(KeepController(budget_per_s=1_000), set_var)
    await keeper.update(snapshot(0.0, 0), [])  # HAProxy not read yet: nothing to set
    assert set_var.sent == []
    await keeper.update(snapshot(1.0, 0), [100])
    assert set_var.sent == [(KEEP_VAR, KEEP_SCALE)]
    await keeper.update(snapshot(2.0, 100), [100])  # unchanged (150/s: under the budget)
    assert len(set_var.sent) == 1
    await keeper.update(snapshot(3.0, 100 + 8_000), [100])  # a + b: 12,000/s
    assert set_var.sent[-1] == (KEEP_VAR, 85)
    assert keeper.fraction == 85 / KEEP_SCALE
    await keeper.update(snapshot(4.0, 100 + 16_000), [200])  # reloaded: the new worker too
    assert set_var.sent[-1] == (KEEP_VAR, 85) and len(set_var.sent) == 3


async def test_a_failed_command_is_tried_again_after_the_next_poll() -> None:
    set_var = SetVar()
    keeper = LogKeeper(KeepController(budget_per_s=1_000), set_var)
    set_var.fail = True
    await keeper.update(snapshot(1.0, 0), [100])
    assert keeper.failures == 1 and keeper.fraction == 1.0
    set_var.fail = False
    await keeper.update(snapshot(2.0, 0), [100])
    assert set_var.sent == [(KEEP_VAR, KEEP_SCALE)]
