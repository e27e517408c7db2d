"""The rollout state machine, as transcripts: definition, state, gateway and traffic in; the
next state and the weights to write out."""

from __future__ import annotations

from typing import Any

import pytest

from meshgate.model import Gateway, validate_resource
from meshgate.model.rollout import Rollout
from meshgate.rollouts import engine
from meshgate.rollouts.readings import Reading
from meshgate.stats.histogram import BUCKETS, bucket_of

STABLE, CANARY = "sava:1.0", "sava:1.1"


def rollout(**changes: Any) -> Rollout:
    document = {
        "kind": "rollout",
        "name": "sava",
        "gateway": "sava",
        "canary": CANARY,
        "steps": ["10%", "50%", "100%"],
        "interval": "10s",
        "analysis": {"min_requests": 100, "success_rate": "99%", "max_p99": "200ms"},
        **changes,
    }
    found = validate_resource(document)
    assert isinstance(found, Rollout)
    return found


def gateway(weights: dict[str, int]) -> Gateway:
    routes = {name: {"weight": f"{weight}%"} for name, weight in weights.items()}
    found = validate_resource({"name": "sava", "port": 9070, "routes": routes})
    assert isinstance(found, Gateway)
    return found


def reading(requests: int, errors: int = 0, latency_ms: int = 10) -> Reading:
    counts = [0] * BUCKETS
    counts[bucket_of(latency_ms)] = requests
    return Reading(requests, errors, tuple(counts))


def started(now: float = 1000.0) -> engine.State:
    decision = engine.advance(
        rollout(), 7, None, gateway({STABLE: 100, CANARY: 0}), reading(0), now
    )
    assert decision.state is not None
    return decision.state


def test_split_keeps_the_others_in_proportion_and_totals_100() -> None:
    weights = engine.split_weights("c", 25, {"a": 60, "b": 20, "c": 20})
    assert weights == {"c": 25, "a": 56, "b": 19}
    assert sum(weights.values()) == 100
    assert engine.split_weights("c", 30, {"a": 0, "b": 0}) == {"c": 30, "a": 35, "b": 35}
    assert engine.split_weights("c", 0, {"a": 90}) == {"c": 0, "a": 100}


def test_start_sets_the_first_step() -> None:
    decision = engine.advance(rollout(), 7, None, gateway({STABLE: 100, CANARY: 0}), None, 1000.0)
    assert decision.weights == {CANARY: 10, STABLE: 90}
    assert decision.state is not None
    assert (decision.state.phase, decision.state.step, decision.state.version) == (
        "Progressing", 0, 7,
    )  # fmt: skip


def test_nothing_happens_before_the_interval() -> None:
    state = started()
    decision = engine.advance(
        rollout(), 7, state, gateway(dict(state.written)), reading(500), 1009.0
    )
    assert decision.state == state
    assert decision.weights is None


def test_healthy_step_moves_on_and_judges_only_its_own_traffic() -> None:
    state = engine.advance(
        rollout(), 7, started(), gateway({CANARY: 10, STABLE: 90}), reading(500), 1010.0
    ).state
    assert state is not None
    assert (state.step, state.weight, state.baseline.requests) == (1, 50, 500)
    # The next step sees 200 new requests; 3 failures are 1.5 %: below 99 % success.
    decision = engine.advance(
        rollout(), 7, state, gateway({CANARY: 50, STABLE: 50}), reading(700, 3), 1020.0
    )
    assert decision.state is not None
    assert decision.state.phase == "Failed"
    assert decision.weights == {CANARY: 0, STABLE: 100}
    assert "98.50% is below 99.00%" in decision.state.reason
    assert decision.state.analyses[-1].requests == 200


def test_last_step_succeeds() -> None:
    state = started()
    weights = {CANARY: 10, STABLE: 90}
    for now, total, weights_after in ((1010, 200, 50), (1020, 400, 100), (1030, 600, None)):
        decision = engine.advance(rollout(), 7, state, gateway(weights), reading(total), now)
        assert decision.state is not None
        state = decision.state
        if weights_after is not None:
            assert decision.weights is not None and decision.weights[CANARY] == weights_after
            weights = decision.weights
    assert state.phase == "Succeeded"
    assert [a.verdict for a in state.analyses] == ["passed", "passed", "passed"]


def test_slow_canary_is_rolled_back_on_p99() -> None:
    decision = engine.advance(
        rollout(), 7, started(), gateway({CANARY: 10, STABLE: 90}), reading(500, 0, 900), 1010
    )
    assert decision.state is not None and decision.state.phase == "Failed"
    assert "p99 latency" in decision.state.reason


def test_too_little_traffic_waits_then_fails() -> None:
    state = started()
    g = gateway({CANARY: 10, STABLE: 90})
    for extra in range(3):
        decision = engine.advance(rollout(), 7, state, g, reading(10), 1010 + 10 * extra)
        assert decision.state is not None
        state = decision.state
        assert (state.phase, state.waits) == ("Progressing", extra + 1)
    decision = engine.advance(rollout(), 7, state, g, reading(10), 1040)
    assert decision.state is not None and decision.state.phase == "Failed"
    assert "too little traffic" in decision.state.reason
    assert decision.weights == {CANARY: 0, STABLE: 100}


def test_hand_edit_pauses_and_resume_restores_the_step() -> None:
    state = started()
    decision = engine.advance(
        rollout(), 7, state, gateway({CANARY: 30, STABLE: 70}), reading(50), 1005
    )
    assert decision.state is not None and decision.state.phase == "Paused"
    assert "changed by hand" in decision.state.reason and decision.weights is None
    resumed = engine.command(rollout(), decision.state, "resume", reading(80), 1100)
    assert resumed.weights == {CANARY: 10, STABLE: 90}
    assert resumed.state is not None
    assert (resumed.state.phase, resumed.state.step_started) == ("Progressing", 1100)
    assert resumed.state.baseline.requests == 80


def test_counters_that_restart_restart_the_step_window_not_the_rollout() -> None:
    state = engine.advance(
        rollout(), 7, started(), gateway({CANARY: 10, STABLE: 90}), reading(500), 1010
    ).state
    assert state is not None and state.step == 1
    decision = engine.advance(rollout(), 7, state, gateway(dict(state.written)), reading(20), 1015)
    assert decision.state is not None
    assert (decision.state.step, decision.state.step_started) == (1, 1015)
    assert decision.state.baseline.requests == 20


def test_commands_check_the_phase() -> None:
    state = started()
    paused = engine.command(rollout(), state, "pause", None, 1001).state
    assert paused is not None and paused.phase == "Paused"
    with pytest.raises(ValueError, match="only a paused rollout"):
        engine.command(rollout(), state, "resume", None, 1001)
    aborted = engine.command(rollout(), paused, "abort", None, 1002)
    assert aborted.weights == {CANARY: 0, STABLE: 100}
    assert aborted.state is not None
    with pytest.raises(ValueError, match="aborted"):
        engine.command(rollout(), aborted.state, "abort", None, 1003)


def test_an_anomaly_fails_the_step_when_asked() -> None:
    state = started()
    g = gateway({CANARY: 10, STABLE: 90})
    quiet = engine.advance(rollout(), 7, state, g, reading(50), 1001, anomaly="p99 up")
    assert quiet.state == state  # not asked to: it waits for the judgement
    strict = rollout(analysis={"fail_on_anomaly": True})
    state = engine.advance(strict, 7, None, gateway({STABLE: 100, CANARY: 0}), None, 1000).state
    decision = engine.advance(strict, 7, state, g, reading(50), 1001, anomaly="p99 up")
    assert decision.state is not None and decision.state.phase == "Failed"


def test_a_new_definition_starts_again() -> None:
    state = started()
    decision = engine.advance(
        rollout(steps=["20%", "100%"]), 8, state, gateway(dict(state.written)), None, 1005
    )
    assert decision.state is not None and decision.state.version == 8
    assert decision.weights == {CANARY: 20, STABLE: 80}


def test_state_survives_its_json() -> None:
    state = engine.advance(
        rollout(), 7, started(), gateway({CANARY: 10, STABLE: 90}), reading(500), 1010
    ).state
    assert state is not None
    assert engine.State.from_json(state.to_json()) == state
