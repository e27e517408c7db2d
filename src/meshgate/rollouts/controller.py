"""Runs the rollouts stored: looks at each one every `tick_s`, and writes what the engine
decides (the rollout's status, and its gateway's weights) in one transaction.

The status and the gateway are written together with compare-on-revision, so a crash between
them cannot happen and a concurrent writer (a user's edit, a pause from the API) is never
overwritten: the loser reads again. The state lives in the store only, so a restarted
meshgate carries on at the step it was on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from meshgate.errors import ValidationFailed
from meshgate.model import Gateway, validate_resource
from meshgate.model.rollout import Rollout
from meshgate.rollouts import engine
from meshgate.rollouts.readings import Reading
from meshgate.store import ConflictError, Key, Put, Record, Store, StoreError

log = structlog.get_logger("meshgate.rollouts")

KIND = "rollouts"
STATUS_KIND = "status.rollouts"

# (namespace, gateway) -> its routes' readings, by route name.
ReadRoutes = Callable[[str, str], Awaitable[dict[str, Reading]]]
# (namespace, gateway, route) -> a description of the route's open anomaly, or None.
OpenAnomaly = Callable[[str, str, str], str | None]
OnEvent = Callable[[Rollout, str], None]


class CommandRefusedError(Exception):
    """A pause, resume or abort that the rollout's phase does not allow, or no such rollout."""

    def __init__(self, status_code: int, message: str) -> None:
        self.status_code = status_code
        super().__init__(message)


def _rollout(record: Record) -> Rollout | None:
    try:
        resource = validate_resource(record.value, kind="rollout")
    except ValidationFailed:
        return None
    return resource if isinstance(resource, Rollout) else None


def _gateway(record: Record | None) -> Gateway | None:
    if record is None:
        return None
    try:
        resource = validate_resource(record.value, kind="gateway", allow_raw_acl=True)
    except ValidationFailed:
        return None
    return resource if isinstance(resource, Gateway) else None


def with_weights(document: dict[str, Any], weights: dict[str, int]) -> dict[str, Any]:
    """The gateway's stored document with its routes' weights replaced."""
    routes = {
        name: {**(route or {}), "weight": weights[name]} if name in weights else route
        for name, route in document.get("routes", {}).items()
    }
    return {**document, "routes": routes}


class RolloutController:
    def __init__(
        self,
        store: Store,
        read_routes: ReadRoutes,
        *,
        anomaly: OpenAnomaly | None = None,
        on_event: OnEvent | None = None,
        tick_s: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.read_routes = read_routes
        self.anomaly = anomaly
        self.on_event = on_event
        self.tick_s = tick_s
        self.clock = clock
        self._lock = asyncio.Lock()

    async def run(self) -> None:
        while True:
            try:
                await self.pass_once()
            except StoreError as exc:
                log.warning("rollouts: the store failed; trying again", error=str(exc))
            except Exception:  # a bug in one pass must not stop every rollout for good
                log.exception("rollouts: a pass failed; trying again")
            await asyncio.sleep(self.tick_s)

    async def pass_once(self) -> None:
        for record in await self.store.list(KIND):
            rollout = _rollout(record)
            if rollout is None:
                continue
            async with self._lock:
                with contextlib.suppress(ConflictError):  # someone wrote first: next pass
                    await self._advance(record, rollout)

    async def _advance(self, record: Record, rollout: Rollout) -> None:
        status = await self.store.get(Key(STATUS_KIND, record.key.namespace, record.key.name))
        state = _state(status)
        if (
            state is not None
            and state.version == record.revision
            and state.phase in ("Succeeded", "Failed", "Paused")
        ):
            return  # only a progressing rollout reacts to traffic, edits or a lost gateway
        gateway_record = await self._gateway_record(rollout)
        gateway = _gateway(gateway_record)
        reading = await self._reading(rollout)
        anomaly = (
            self.anomaly(rollout.namespace, rollout.gateway, rollout.canary)
            if self.anomaly
            else None
        )
        decision = engine.advance(
            rollout, record.revision, state, gateway, reading, self.clock(), anomaly
        )
        await self._write(rollout, status, decision, gateway_record)

    async def command(self, namespace: str, name: str, action: engine.Action) -> dict[str, Any]:
        """Pause, resume or abort; returns the new status."""
        async with self._lock:
            record = await self.store.get(Key(KIND, namespace, name))
            rollout = _rollout(record) if record is not None else None
            if record is None or rollout is None:
                raise CommandRefusedError(404, f"rollout {namespace}/{name} not found")
            status = await self.store.get(Key(STATUS_KIND, namespace, name))
            state = _state(status)
            if state is None or state.version != record.revision:
                raise CommandRefusedError(409, f"rollout {namespace}/{name} has not started yet")
            reading = await self._reading(rollout)
            try:
                decision = engine.command(rollout, state, action, reading, self.clock())
            except ValueError as exc:
                raise CommandRefusedError(409, str(exc)) from None
            gateway_record = await self._gateway_record(rollout)
            if decision.weights is not None and _gateway(gateway_record) is None:
                raise CommandRefusedError(
                    409, f"gateway {namespace}/{rollout.gateway} does not exist or is invalid"
                )
            try:
                await self._write(rollout, status, decision, gateway_record)
            except ConflictError:
                raise CommandRefusedError(409, "the rollout changed meanwhile; try again") from None
            assert decision.state is not None
            return decision.state.to_json()

    async def _gateway_record(self, rollout: Rollout) -> Record | None:
        return await self.store.get(Key("gateways", rollout.namespace, rollout.gateway))

    async def _reading(self, rollout: Rollout) -> Reading | None:
        readings = await self.read_routes(rollout.namespace, rollout.gateway)
        return readings.get(rollout.canary)

    async def _write(
        self,
        rollout: Rollout,
        status: Record | None,
        decision: engine.Decision,
        gateway_record: Record | None,
    ) -> None:
        if decision.state is None:
            return
        value = decision.state.to_json()
        if status is not None and status.value == value and decision.weights is None:
            return
        key = Key(STATUS_KIND, rollout.namespace, rollout.name)
        ops = [Put(key, value, expect_revision=status.revision if status else 0)]
        if decision.weights is not None and gateway_record is not None:
            document = with_weights(gateway_record.value, decision.weights)
            if document != gateway_record.value:
                ops.append(
                    Put(gateway_record.key, document, expect_revision=gateway_record.revision)
                )
        await self.store.commit(ops)
        for event in decision.events:
            log.info("rollout", rollout=f"{rollout.namespace}/{rollout.name}", change=event)
            if self.on_event is not None:
                self.on_event(rollout, event)


def _state(status: Record | None) -> engine.State | None:
    if status is None:
        return None
    try:
        return engine.State.from_json(status.value)
    except (KeyError, TypeError, ValueError):
        return None  # a status of another shape: start afresh
