"""The REST API (SPEC §3): a FastAPI application over a `Store`."""

from meshgate.api.app import create_app

__all__ = ["create_app"]
