"""Paced HTTP clients from chosen loopback source addresses, for the flow (caller) tests."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.integration.conftest import Background


class PacedClient(Background):
    """GETs `url` from `source` at `rate` requests a second (a fresh connection each, so that
    every request is logged and routed anew) until the block ends; `sent` counts answers."""

    def __init__(self, url: str, source: str, rate: float, limit_s: float = 40.0) -> None:
        super().__init__()
        self.url, self.source, self.rate = url, source, rate
        self.limit_s = limit_s
        self.sent = 0
        self.failed = 0
        self.started = 0.0

    def _run(self) -> None:
        transport = httpx.HTTPTransport(local_address=self.source)
        with httpx.Client(transport=transport, timeout=5) as client:
            self.started = time.monotonic()
            while self.running():
                due = self.started + self.sent / self.rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                try:
                    client.get(self.url, headers={"connection": "close"})
                except httpx.HTTPError:
                    self.failed += 1
                self.sent += 1

    def achieved(self) -> float:
        """The rate it kept up so far (requests a second)."""
        elapsed = time.monotonic() - self.started
        return self.sent / elapsed if elapsed > 0 else 0.0


def caller_edges(graph: dict[str, Any], gateway_id: str) -> dict[str, dict[str, Any]]:
    """The edges into a gateway from its callers, by caller id."""
    return {e["source"]: e for e in graph["edges"] if e["target"] == gateway_id and not e["route"]}


def node_kinds(graph: dict[str, Any]) -> dict[str, str]:
    return {n["id"]: n["kind"] for n in graph["nodes"]}
