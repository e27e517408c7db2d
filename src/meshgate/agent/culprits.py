"""Which gateways HAProxy rejects, once its one check of the whole configuration failed.

A pass that needs a reload runs `haproxy -c` once, on the files HAProxy will load (see
`HaproxySupervisor.reload`). Only when that check fails is the configuration taken apart here,
by halves, each half checked on a scratch copy: a half HAProxy accepts is cleared by one check,
so a few bad gateways among 100,000 cost a few dozen checks, where checking each alone would
cost 100,000 runs of `haproxy -c`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence

from meshgate.compiler import DesiredState, compile_state, ir
from meshgate.errors import MeshgateError
from meshgate.haproxy.supervisor import CHECK_TIMED_OUT
from meshgate.model import Gateway

Key = tuple[str, str]
# Would HAProxy accept this data plane? (accepted, HAProxy's messages)
Check = Callable[[ir.DataPlane], Awaitable[tuple[bool, str]]]


async def rejected_by_haproxy(
    check: Check, state: DesiredState, settings: ir.Settings, gateways: Sequence[Gateway]
) -> dict[Key, str]:
    """The gateways among `gateways` (which HAProxy rejects together) that it rejects on their
    own, each with HAProxy's reason. Empty when none does: the fault is not one gateway's
    (several that only clash together, or the settings)."""
    if len(gateways) == 1:
        good, message = await _check_group(check, state, settings, gateways)
        return {} if good else {_key_of(gateways[0]): rejection(message)}
    found: dict[Key, str] = {}
    middle = len(gateways) // 2
    for half in (gateways[:middle], gateways[middle:]):
        good, message = await _check_group(check, state, settings, half)
        if good:
            continue
        if len(half) > 1:
            found.update(await rejected_by_haproxy(check, state, settings, half))
        else:
            found[_key_of(half[0])] = rejection(message)
    return found


async def _check_group(
    check: Check, state: DesiredState, settings: ir.Settings, gateways: Sequence[Gateway]
) -> tuple[bool, str]:
    group = dataclasses.replace(state, gateways=list(gateways))
    good, message = await check(compile_state(group, settings).dataplane)
    if CHECK_TIMED_OUT in message:
        # No verdict on anything: the search would take as long again for each group.
        raise MeshgateError(f"HAProxy's check of the configuration: {message}")
    return good, message


def rejection(output: str) -> str:
    """A gateway's status error when HAProxy rejects it."""
    return f"HAProxy rejected it: {last_alert(output)}"


def last_alert(output: str) -> str:
    """HAProxy's last ALERT line (its verdict), else its last line; at most 500 characters."""
    alerts = [line for line in output.splitlines() if "ALERT" in line]
    return (
        alerts[-1] if alerts else output.strip().splitlines()[-1] if output.strip() else output
    )[:500]


def _key_of(gateway: Gateway) -> Key:
    return (gateway.namespace, gateway.name)
