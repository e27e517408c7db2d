"""The Rollout resource (SPEC §8): a canary route's weight follows steps while its traffic is
healthy. Only the definition lives here; the state of a running rollout is its status."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_serializer, field_validator, model_validator

from meshgate.errors import Problem
from meshgate.model.fields import NamespaceName, ResourceName
from meshgate.model.gateway import Gateway, inline_endpoint
from meshgate.model.names import DEFAULT_NAMESPACE, check_resource_name
from meshgate.model.service import DurationMs, Model
from meshgate.model.values import FieldError, parse_percentage

MAX_STEPS = 20
MIN_INTERVAL_MS = 1_000  # a step judged on less than a second of traffic judges nothing
MAX_WAITS = 3  # SPEC §8: too few requests wait one more interval, at most this many times


def _percentage(value: Any) -> int:
    return parse_percentage(value, field="value")


def _success_rate(value: Any) -> float:
    """`99%`, `99.5%` or a bare number of percent (as weights are written), as a fraction."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("success_rate must be a percentage such as 99% or 99.5%")
    text = str(value).strip().removesuffix("%")
    try:
        percent = float(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a percentage such as 99% or 99.5%") from None
    if not 0 < percent <= 100:
        raise ValueError(f"success_rate must be above 0% and at most 100%, got {value!r}")
    return percent / 100


Percentage = Annotated[int, BeforeValidator(_percentage)]
Fraction = Annotated[float, BeforeValidator(_success_rate)]


class Analysis(Model):
    """What a step's canary traffic must show to move on."""

    min_requests: int = Field(default=50, ge=1, le=10_000_000)
    success_rate: Fraction = 0.99
    max_p99: DurationMs | None = None
    fail_on_anomaly: bool = False  # an anomaly of the canary's route fails the step at once

    @field_serializer("success_rate")
    def _rate_text(self, value: float) -> str:
        return f"{round(value * 100, 4):g}%"

    @field_serializer("max_p99")
    def _p99_text(self, value: int | None) -> str | None:
        return None if value is None else f"{value}ms"


class Rollout(Model):
    kind: Literal["rollout"] = "rollout"
    name: ResourceName
    namespace: NamespaceName = DEFAULT_NAMESPACE
    gateway: str
    canary: str
    steps: list[Percentage] = Field(min_length=1, max_length=MAX_STEPS)
    interval: DurationMs = 30_000
    analysis: Analysis = Field(default_factory=Analysis)

    @field_validator("gateway")
    @classmethod
    def _gateway(cls, value: str) -> str:
        return check_resource_name(value)

    @field_validator("canary")
    @classmethod
    def _canary(cls, value: str) -> str:
        # A route is named by its target: a service or gateway name, or "[host:port]".
        return value if inline_endpoint(value) is not None else check_resource_name(value)

    @field_validator("steps")
    @classmethod
    def _increasing(cls, value: list[int]) -> list[int]:
        for index, (before, after) in enumerate(itertools.pairwise(value), start=1):
            if after <= before:
                raise FieldError(str(index), f"steps must increase: {after}% comes after {before}%")
        if value[0] == 0:
            raise FieldError("0", "the first step must give the canary some traffic (above 0%)")
        return value

    @model_validator(mode="after")
    def _interval(self) -> Rollout:
        if self.interval < MIN_INTERVAL_MS:
            raise FieldError("interval", "must be at least 1s")
        return self

    @field_serializer("steps")
    def _steps_text(self, value: list[int]) -> list[str]:
        return [f"{step}%" for step in value]

    @field_serializer("interval")
    def _interval_text(self, value: int) -> str:
        return f"{value}ms"


def rollout_problems(
    rollout: Rollout,
    gateways: Mapping[tuple[str, str], Gateway],
    rollouts: Iterable[Rollout],
) -> list[Problem]:
    """Why `rollout` cannot drive its gateway: the gateway or its canary route is missing, or
    another rollout (of `rollouts`, those stored and written with it) drives the gateway."""
    gateway = gateways.get((rollout.namespace, rollout.gateway))
    if gateway is None:
        return [Problem("gateway", f"gateway {rollout.namespace}/{rollout.gateway} does not exist")]
    if rollout.canary not in gateway.routes:
        routes = ", ".join(gateway.routes) or "none"
        message = f"gateway {rollout.gateway} has no route {rollout.canary} (its routes: {routes})"
        return [Problem("canary", message)]
    if len(gateway.routes) < 2:
        return [Problem("gateway", f"gateway {rollout.gateway} has no other route to shift from")]
    for other in rollouts:
        same = (other.namespace, other.name) == (rollout.namespace, rollout.name)
        if not same and (other.namespace, other.gateway) == (rollout.namespace, rollout.gateway):
            message = f"rollout {other.name} already drives gateway {rollout.gateway}"
            return [Problem("gateway", message)]
    return []
