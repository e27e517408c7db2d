"""`meshgate rollout status|pause|resume|abort NAME` (SPEC §8)."""

from __future__ import annotations

from typing import Any

import click

from meshgate.cli.common import client_options, open_client
from meshgate.cli.remote import reporting


def status_text(rollout: dict[str, Any]) -> str:
    """A rollout's definition and state, as a person reads it."""
    status = rollout.get("status") or {}
    steps = rollout.get("steps") or []
    step = status.get("step")
    lines = [
        f"rollout {rollout.get('namespace', 'default')}/{rollout.get('name', '')}: "
        f"gateway {rollout.get('gateway')}, canary {rollout.get('canary')}",
        f"  phase:   {status.get('phase', 'Pending')}",
    ]
    if step is not None:
        lines.append(
            f"  step:    {int(step) + 1} of {len(steps)} ({', '.join(map(str, steps))}), "
            f"canary at {status.get('weight')}%"
        )
    if status.get("reason"):
        lines.append(f"  reason:  {status['reason']}")
    analyses = status.get("analyses") or []
    if analyses:
        lines.append("  analyses:")
        for analysis in analyses[-10:]:
            rate = analysis.get("success_rate")
            success = "-" if rate is None else f"{100 * float(rate):.2f}%"
            p99 = analysis.get("p99_ms")
            reason = f"  {analysis['reason']}" if analysis.get("reason") else ""
            lines.append(
                f"    step {int(analysis.get('step', 0)) + 1} at {analysis.get('weight')}%: "
                f"{analysis.get('verdict')}, {analysis.get('requests')} requests, "
                f"success {success}, p99 {'-' if p99 is None else f'{p99}ms'}{reason}"
            )
    return "\n".join(lines)


@click.group()
def rollout() -> None:
    """Follow and steer rollouts: a canary's weight driven by its live stats."""


@rollout.command()
@click.argument("name")
@click.option("-n", "--namespace", default="default", show_default=True)
@client_options
def status(name: str, namespace: str, server: str | None, token: str | None) -> None:
    """Phase, step, weight and the analyses of rollout NAME."""
    with reporting(), open_client(server, token) as client:
        click.echo(status_text(client.get("rollouts", name, namespace=namespace)))


def _command(action: str, past: str) -> click.Command:
    @click.argument("name")
    @click.option("-n", "--namespace", default="default", show_default=True)
    @client_options
    def run(name: str, namespace: str, server: str | None, token: str | None) -> None:
        with reporting(), open_client(server, token) as client:
            result = client.rollout_command(name, action, namespace=namespace)
        click.echo(f"rollout {namespace}/{name} {past}: {result.get('phase')}")

    run.__doc__ = f"{action.capitalize()} rollout NAME."
    return click.command(action)(run)


for _action, _past in (("pause", "paused"), ("resume", "resumed"), ("abort", "aborted")):
    rollout.add_command(_command(_action, _past))
