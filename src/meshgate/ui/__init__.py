"""The dashboard (SPEC §7): static files served at /ui/ from the package, loading nothing from
any other host. The page is a client of the public REST API; it asks for the token when the
API wants one and keeps it for the browser tab only."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles


def mount_ui(app: FastAPI) -> None:
    app.mount("/ui", StaticFiles(packages=[("meshgate.ui", "static")], html=True), name="ui")
