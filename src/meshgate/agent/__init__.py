"""The per-node agent: keeps HAProxy in step with the store."""

from meshgate.agent.driver import Driver
from meshgate.agent.loop import Agent

__all__ = ["Agent", "Driver"]
