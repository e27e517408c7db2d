"""The rollout resource: what it accepts, and each kind of bad input with its field."""

from __future__ import annotations

from typing import Any

import pytest

from meshgate.errors import ValidationFailed
from meshgate.model import Gateway, to_document, validate_resource
from meshgate.model.rollout import Rollout, rollout_problems


def rollout(**changes: Any) -> dict[str, Any]:
    return {
        "kind": "rollout",
        "name": "sava",
        "gateway": "sava",
        "canary": "sava:1.1",
        "steps": ["5%", "25%", "50%", "100%"],
        **changes,
    }


def problems(**changes: Any) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as caught:
        validate_resource(rollout(**changes))
    return [(p.path, p.message) for p in caught.value.problems]


def test_defaults_and_round_trip() -> None:
    found = validate_resource(rollout(interval="30s", analysis={"success_rate": "99.5%"}))
    assert isinstance(found, Rollout)
    assert found.steps == [5, 25, 50, 100]
    assert found.analysis.success_rate == pytest.approx(0.995)
    assert found.analysis.min_requests == 50
    assert validate_resource(to_document(found)) == found


@pytest.mark.parametrize(
    ("changes", "path", "message"),
    [
        ({"steps": ["10%", "5%"]}, "steps.1", "must increase"),
        ({"steps": ["10%", "10%"]}, "steps.1", "must increase"),
        ({"steps": ["120%"]}, "steps.0", "between 0% and 100%"),
        ({"steps": ["0%", "50%"]}, "steps.0", "above 0%"),
        ({"steps": []}, "steps", "at least 1"),
        ({"interval": "10ms"}, "interval", "at least 1s"),
        ({"analysis": {"success_rate": "101%"}}, "analysis.success_rate", "at most 100%"),
        ({"analysis": {"success_rate": "0%"}}, "analysis.success_rate", "above 0%"),
        ({"analysis": {"min_requests": 0}}, "analysis.min_requests", "greater than or equal"),
        ({"analysis": {"max_p99": "forever"}}, "analysis.max_p99", "not a duration"),
        ({"canary": "bad name\nbind"}, "canary", "not a valid name"),
        ({"gateway": "a b"}, "gateway", "not a valid name"),
        ({"surprise": 1}, "surprise", "unknown field"),
    ],
)
def test_bad_input_names_the_field(changes: dict[str, Any], path: str, message: str) -> None:
    found = problems(**changes)
    assert any(p == path and message in m for p, m in found), found


def test_references_are_checked_against_the_gateways() -> None:
    gateway = validate_resource(
        {"name": "sava", "port": 9070, "routes": {"sava:1.0": {}, "sava:1.1": {}}}
    )
    assert isinstance(gateway, Gateway)
    mine = validate_resource(rollout())
    assert isinstance(mine, Rollout)
    gateways = {("default", "sava"): gateway}
    assert rollout_problems(mine, gateways, [mine]) == []
    assert rollout_problems(mine, {}, [])[0].path == "gateway"
    other = validate_resource(rollout(canary="sava:2.0"))
    assert isinstance(other, Rollout)
    assert "no route sava:2.0" in rollout_problems(other, gateways, [])[0].message
    rival = validate_resource(rollout(name="rival"))
    assert isinstance(rival, Rollout)
    found = rollout_problems(mine, gateways, [mine, rival])
    assert found[0].message == "rollout rival already drives gateway sava"
