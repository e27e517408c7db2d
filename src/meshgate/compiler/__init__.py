"""Desired state to HAProxy configuration: build the IR, then render it. Pure: no I/O."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from meshgate.compiler import ir
from meshgate.compiler.build import (
    Compiled,
    DesiredState,
    GatewayResult,
    RouteStatus,
    compile_state,
)
from meshgate.compiler.locality import NodeIdentity
from meshgate.compiler.render import CONFIG_FILE, render_config, render_files
from meshgate.model import Resource

DEFAULT_RUN_DIR = "/var/run/meshgate"


def render_manifests(
    resources: Sequence[Resource],
    run_dir: str = DEFAULT_RUN_DIR,
    *,
    node: NodeIdentity | None = None,
) -> dict[str, str]:
    """For `meshgate render`: the files the agent would write for these resources (with
    `node`, the agent of that node, given the gateways placed on it)."""
    state = dataclasses.replace(DesiredState.of(resources), node=node)
    return render_files(compile_state(state, ir.Settings(run_dir=run_dir)).dataplane)


__all__ = [
    "CONFIG_FILE",
    "Compiled",
    "DesiredState",
    "GatewayResult",
    "RouteStatus",
    "compile_state",
    "ir",
    "render_config",
    "render_files",
    "render_manifests",
]
