"""What /healthz and /readyz say: whether the data plane serves what was applied.

/healthz is the node's liveness: the agent applies changes, HAProxy runs, and (when gateways
exist) at least one of them is served. /readyz is stricter: every gateway is served; it lists
the ones that are not, with why (rejected by HAProxy, port taken, ...).
"""

from __future__ import annotations

from typing import Any

from meshgate.agent import Agent
from meshgate.haproxy.supervisor import HaproxySupervisor


def health_report(agent: Agent, supervisor: HaproxySupervisor) -> dict[str, Any]:
    serving = agent.gateway_count - len(agent.not_serving)
    ok = agent.healthy and supervisor.running and (agent.gateway_count == 0 or serving > 0)
    return {
        "ok": ok,
        "agent": "ok" if agent.healthy else (agent.last_error or "starting"),
        "haproxy": "running" if supervisor.running else "stopped",
        "gateways": {"total": agent.gateway_count, "serving": serving},
    }


def readiness_report(agent: Agent, supervisor: HaproxySupervisor) -> dict[str, Any]:
    report = health_report(agent, supervisor)
    report["not_serving"] = dict(sorted(agent.not_serving.items()))
    report["ok"] = report["ok"] and not agent.not_serving
    return report
