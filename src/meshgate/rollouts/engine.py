"""What a rollout does next, given its definition, its state, its gateway and the canary's
traffic. Pure: the controller reads the inputs and writes what this returns.

A rollout's state is its status (SPEC §8): the phase, the step it is on, when that step
started, the canary's reading at that moment (so the step is judged on its own traffic, also
after meshgate restarts), the weights it last wrote (so a hand edit is noticed), and the
history of its analyses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from meshgate.model.gateway import Gateway
from meshgate.model.rollout import MAX_WAITS, Rollout, rollout_problems
from meshgate.rollouts.readings import Reading

Phase = Literal["Progressing", "Paused", "Succeeded", "Failed"]
Action = Literal["pause", "resume", "abort"]
MAX_ANALYSES = 50  # the status keeps the most recent ones


@dataclass(frozen=True)
class Analysis:
    step: int
    weight: int
    requests: int
    success_rate: float | None
    p99_ms: int | None
    verdict: Literal["passed", "failed", "waiting"]
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "weight": self.weight,
            "requests": self.requests,
            "success_rate": None if self.success_rate is None else round(self.success_rate, 5),
            "p99_ms": self.p99_ms,
            "verdict": self.verdict,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class State:
    version: int  # the rollout definition's version this state belongs to
    phase: Phase
    step: int  # index into the rollout's steps
    weight: int  # the canary's weight now
    step_started: float  # wall-clock seconds
    baseline: Reading  # the canary's reading when the step's judged stretch began
    base_weights: Mapping[str, int]  # the other routes' weights when the rollout began
    written: Mapping[str, int]  # every route's weight as this rollout last wrote it
    waits: int = 0  # extra intervals waited in this step for enough requests
    analyses: tuple[Analysis, ...] = ()
    reason: str = ""
    paused_by_edit: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "applied_version": self.version,
            "phase": self.phase,
            "step": self.step,
            "weight": self.weight,
            "step_started": self.step_started,
            "baseline": self.baseline.to_json(),
            "base_weights": dict(self.base_weights),
            "written": dict(self.written),
            "waits": self.waits,
            "analyses": [a.to_json() for a in self.analyses],
            "reason": self.reason,
            "paused_by_edit": self.paused_by_edit,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> State:
        return cls(
            version=int(data["applied_version"]),
            phase=data["phase"],
            step=int(data["step"]),
            weight=int(data["weight"]),
            step_started=float(data["step_started"]),
            baseline=Reading.from_json(data.get("baseline", {})),
            base_weights={str(k): int(v) for k, v in data.get("base_weights", {}).items()},
            written={str(k): int(v) for k, v in data.get("written", {}).items()},
            waits=int(data.get("waits", 0)),
            analyses=tuple(
                Analysis(**{k: v for k, v in a.items() if k in _ANALYSIS_FIELDS})
                for a in data.get("analyses", ())
            ),
            reason=str(data.get("reason", "")),
            paused_by_edit=bool(data.get("paused_by_edit", False)),
        )


_ANALYSIS_FIELDS = {f.name for f in dataclasses.fields(Analysis)}


@dataclass(frozen=True)
class Decision:
    """The state to store, and the route weights to write to the gateway (None: leave them)."""

    state: State | None
    weights: dict[str, int] | None = None
    events: list[str] = field(default_factory=list)


def split_weights(canary: str, weight: int, base: Mapping[str, int]) -> dict[str, int]:
    """The canary at `weight`; the other routes share the rest in proportion to their weights
    in `base` (evenly when those are all 0), rounded so the total is exactly 100."""
    others = [name for name in base if name != canary]
    rest = 100 - weight
    total = sum(base[name] for name in others)
    shares = {name: (rest * base[name] / total if total else rest / len(others)) for name in others}
    weights = {name: int(share) for name, share in shares.items()}
    # Largest remainders get the points lost to rounding down; ties go to the earlier route.
    missing = rest - sum(weights.values())
    by_remainder = sorted(
        others, key=lambda name: (-(shares[name] - weights[name]), others.index(name))
    )
    for name in by_remainder[:missing]:
        weights[name] += 1
    return {canary: weight, **weights}


def start(
    rollout: Rollout, version: int, gateway: Gateway, reading: Reading, now: float
) -> Decision:
    current = gateway.route_weights()
    base = {name: weight for name, weight in current.items() if name != rollout.canary}
    weight = rollout.steps[0]
    weights = split_weights(rollout.canary, weight, base)
    state = State(
        version=version,
        phase="Progressing",
        step=0,
        weight=weight,
        step_started=now,
        baseline=reading,
        base_weights=base,
        written=weights,
    )
    return Decision(state, weights, [f"started: {rollout.canary} at {weight}%"])


def problems(rollout: Rollout, gateway: Gateway | None) -> str | None:
    """Why the rollout cannot drive its gateway (now), or None."""
    gateways = {} if gateway is None else {(gateway.namespace, gateway.name): gateway}
    found = rollout_problems(rollout, gateways, ())
    return found[0].message if found else None


def advance(
    rollout: Rollout,
    version: int,
    state: State | None,
    gateway: Gateway | None,
    reading: Reading | None,
    now: float,
    anomaly: str | None = None,
) -> Decision:
    """One look at a rollout: start it, judge its step when the interval is over, move on or
    roll back. `reading` is the canary route's cumulative reading (None: not served yet);
    `anomaly` describes an anomaly of the canary's route, if one is open."""
    current = reading or Reading()
    if state is None or state.version != version:
        problem = problems(rollout, gateway)
        if problem is not None:
            return _failed_without_gateway(version, problem, now)
        assert gateway is not None
        return start(rollout, version, gateway, current, now)
    if state.phase in ("Succeeded", "Failed"):
        return Decision(state)
    problem = problems(rollout, gateway)
    if problem is not None:
        failed = dataclasses.replace(state, phase="Failed", reason=problem)
        return Decision(failed, None, [f"failed: {problem}"])
    assert gateway is not None
    if state.phase == "Paused":
        return Decision(state)
    if gateway.route_weights() != dict(state.written):
        edited = ", ".join(f"{name} {weight}%" for name, weight in gateway.route_weights().items())
        reason = (
            f"paused: the weights of gateway {rollout.gateway} were changed by hand ({edited}); "
            "resume to continue from this step with the rollout's weights"
        )
        paused = dataclasses.replace(state, phase="Paused", reason=reason, paused_by_edit=True)
        return Decision(paused, None, [reason])
    judged = current.since(state.baseline)
    if judged is None:
        # The counters started afresh (a restart): judge this step on traffic from now on.
        restarted = dataclasses.replace(state, baseline=current, step_started=now, waits=0)
        return Decision(restarted)
    if anomaly is not None and rollout.analysis.fail_on_anomaly:
        return _roll_back(rollout, state, judged, f"an anomaly of {rollout.canary}: {anomaly}")
    due = state.step_started + rollout.interval / 1000 * (1 + state.waits)
    if now < due:
        return Decision(state)
    return _judge(rollout, state, judged, current, now)


def _judge(
    rollout: Rollout, state: State, judged: Reading, current: Reading, now: float
) -> Decision:
    analysis = rollout.analysis
    success = judged.success_rate
    p99 = judged.percentile_ms(0.99)
    if judged.requests < analysis.min_requests:
        if state.waits < MAX_WAITS:
            note = (
                f"{judged.requests} requests, fewer than {analysis.min_requests}: "
                "waiting one more interval"
            )
            record = _analysis(state, judged, success, p99, "waiting", note)
            waiting = dataclasses.replace(
                state, waits=state.waits + 1, analyses=_keep(state.analyses, record)
            )
            return Decision(waiting)
        reason = (
            f"too little traffic: {judged.requests} requests in step {state.step + 1} after "
            f"{MAX_WAITS} extra intervals (at least {analysis.min_requests} needed)"
        )
        return _roll_back(rollout, state, judged, reason)
    assert success is not None
    if success < analysis.success_rate:
        reason = (
            f"success rate {success:.2%} is below {analysis.success_rate:.2%} "
            f"({judged.errors} of {judged.requests} requests failed)"
        )
        return _roll_back(rollout, state, judged, reason)
    if analysis.max_p99 is not None and p99 is not None and p99 > analysis.max_p99:
        reason = f"p99 latency {p99} ms is above {analysis.max_p99} ms"
        return _roll_back(rollout, state, judged, reason)
    record = _analysis(state, judged, success, p99, "passed")
    analyses = _keep(state.analyses, record)
    if state.step + 1 >= len(rollout.steps):
        done = dataclasses.replace(
            state, phase="Succeeded", analyses=analyses, reason="every step passed", waits=0
        )
        return Decision(done, None, [f"succeeded: {rollout.canary} at {state.weight}%"])
    step = state.step + 1
    weight = rollout.steps[step]
    weights = split_weights(rollout.canary, weight, state.base_weights)
    moved = dataclasses.replace(
        state,
        step=step,
        weight=weight,
        step_started=now,
        baseline=current,
        written=weights,
        waits=0,
        analyses=analyses,
        reason="",
    )
    return Decision(moved, weights, [f"step {step + 1}: {rollout.canary} at {weight}%"])


def _roll_back(rollout: Rollout, state: State, judged: Reading, reason: str) -> Decision:
    p99 = judged.percentile_ms(0.99)
    record = _analysis(state, judged, judged.success_rate, p99, "failed", reason)
    weights = split_weights(rollout.canary, 0, state.base_weights)
    failed = dataclasses.replace(
        state,
        phase="Failed",
        weight=0,
        written=weights,
        analyses=_keep(state.analyses, record),
        reason=f"rolled back: {reason}",
    )
    return Decision(failed, weights, [f"rolled back {rollout.canary} to 0%: {reason}"])


def command(
    rollout: Rollout, state: State, action: Action, reading: Reading | None, now: float
) -> Decision:
    """A user's pause, resume or abort. Raises ValueError when the phase does not allow it."""
    if action == "pause":
        if state.phase != "Progressing":
            raise ValueError(f"only a progressing rollout can be paused; it is {state.phase}")
        paused = dataclasses.replace(state, phase="Paused", reason="paused by a user")
        return Decision(paused, None, ["paused by a user"])
    if action == "resume":
        if state.phase != "Paused":
            raise ValueError(f"only a paused rollout can be resumed; it is {state.phase}")
        # The step is judged afresh on traffic from now on, at the rollout's own weights.
        weights = split_weights(rollout.canary, state.weight, state.base_weights)
        resumed = dataclasses.replace(
            state,
            phase="Progressing",
            step_started=now,
            baseline=reading or Reading(),
            written=weights,
            waits=0,
            reason="",
            paused_by_edit=False,
        )
        return Decision(resumed, weights, [f"resumed at step {state.step + 1}"])
    if state.phase not in ("Progressing", "Paused"):
        raise ValueError(
            f"only a progressing or paused rollout can be aborted; it is {state.phase}"
        )
    weights = split_weights(rollout.canary, 0, state.base_weights)
    aborted = dataclasses.replace(
        state, phase="Failed", weight=0, written=weights, reason="aborted by a user"
    )
    return Decision(aborted, weights, [f"aborted: {rollout.canary} back to 0%"])


def _failed_without_gateway(version: int, problem: str, now: float) -> Decision:
    state = State(
        version=version,
        phase="Failed",
        step=0,
        weight=0,
        step_started=now,
        baseline=Reading(),
        base_weights={},
        written={},
        reason=problem,
    )
    return Decision(state, None, [f"failed: {problem}"])


def _analysis(
    state: State,
    judged: Reading,
    success: float | None,
    p99: int | None,
    verdict: Literal["passed", "failed", "waiting"],
    reason: str = "",
) -> Analysis:
    return Analysis(state.step, state.weight, judged.requests, success, p99, verdict, reason)


def _keep(analyses: tuple[Analysis, ...], new: Analysis) -> tuple[Analysis, ...]:
    return (*analyses, new)[-MAX_ANALYSES:]
