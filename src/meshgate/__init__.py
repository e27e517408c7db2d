"""meshgate: a gateway agent and control plane that drives HAProxy."""

__version__ = "0.1.0"
