"""A weight change among N gateways costs the same work at any N: counted, not timed.

The count is of Python line events (`sys.settrace`, every thread) while the API admits and
writes the change, with the values read from the store and the full listings made: a step that
walks every stored gateway (listing keys, validating, indexing ports, finding service-plane
ports) adds events in proportion to N, which timing on a shared machine would hide in noise.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from meshgate.api import create_app
from meshgate.store import Key
from meshgate.store.sqlite import SqliteStore

CANARY = {"name": "canary", "port": "9000/http", "bind": "127.0.0.1",
          "virtual_hosts": ["canary.example.com"]}  # fmt: skip


def gateways(count: int) -> list[dict[str, Any]]:
    # On loopback: each of them is on the service plane, which admission looks up too.
    return [
        {"name": f"g{n}", "port": "9000/http", "bind": "127.0.0.1",
         "virtual_hosts": [f"h{n}.example.com"], "routes": {"[127.0.0.1:1]": {}}}
        for n in range(count)
    ]  # fmt: skip


def canary(weight: int) -> dict[str, Any]:
    routes = {"[127.0.0.1:1]": {"weight": weight}, "[127.0.0.1:2]": {"weight": 100 - weight}}
    return {**CANARY, "routes": routes}


class Counted:
    """The store, counting what is read of it."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.gets = 0
        self.listed = 0  # records returned by `list`

    async def get(self, key: Key) -> Any:
        self.gets += 1
        return await self.store.get(key)

    async def list(self, *args: Any, **kwargs: Any) -> Any:
        found = await self.store.list(*args, **kwargs)
        self.listed += len(found)
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@contextmanager
def line_events() -> Iterator[list[int]]:
    count = [0]

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        count[0] += 1
        return tracer

    sys.settrace(tracer)
    threading.settrace(tracer)  # the store's reads run in worker threads
    try:
        yield count
    finally:
        sys.settrace(None)
        threading.settrace(None)  # type: ignore[arg-type]


async def weight_change_cost(tmp_path: Path, count: int) -> tuple[int, int, int]:
    """(line events, values read, records listed) of a weight change of one gateway among
    `count` others, once the API's cache is up to date (after a first change)."""
    store = await SqliteStore.open(tmp_path / f"db-{count}")
    counted = Counted(store)
    try:
        app = create_app(counted)  # type: ignore[arg-type]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://meshgate") as client:
            answer = await client.post("/api/v1/apply", json=[*gateways(count), canary(100)])
            assert answer.status_code == 200, answer.text
            (await client.put("/api/v1/gateways/canary", json=canary(0))).raise_for_status()
            counts = []
            for weight in (100, 0, 100):
                counted.gets = counted.listed = 0
                with line_events() as events:
                    answer = await client.put("/api/v1/gateways/canary", json=canary(weight))
                assert answer.status_code == 200, answer.text
                counts.append((events[0], counted.gets, counted.listed))
        stored = await store.get(Key("gateways", "default", "canary"))
        assert stored is not None and stored.value["routes"]["[127.0.0.1:1]"]["weight"] == 100
        # The fewest: the store's own background tasks (its lease sweep) may add a few
        # hundred events to one change.
        return min(counts)
    finally:
        await store.close()


async def test_a_weight_change_does_the_same_work_among_40_and_400_gateways(
    tmp_path: Path,
) -> None:
    few = await weight_change_cost(tmp_path, 40)
    many = await weight_change_cost(tmp_path, 400)
    # Reads: the canary's value (admission's cache), its current version, its status.
    assert many[1:] == few[1:]
    assert many[2] == 0  # nothing listed in proportion to the gateways
    # Walking 360 more gateways would add thousands of events (it added 40,000 at 500).
    assert many[0] < few[0] + 500, (few, many)


async def test_a_port_change_among_many_is_still_checked_against_all(tmp_path: Path) -> None:
    """The kept index does not hide a clash: moving the canary onto another gateway's virtual
    host is refused, naming that gateway."""
    store = await SqliteStore.open(tmp_path / "db")
    try:
        transport = httpx.ASGITransport(app=create_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://meshgate") as client:
            applied = await client.post("/api/v1/apply", json=[*gateways(30), canary(100)])
            applied.raise_for_status()
            (await client.put("/api/v1/gateways/canary", json=canary(0))).raise_for_status()
            taken = {**canary(0), "virtual_hosts": ["h7.example.com"]}
            answer = await client.put("/api/v1/gateways/canary", json=taken)
            assert answer.status_code == 422, answer.text
            [problem] = answer.json()["errors"]
            assert problem["path"] == "virtual_hosts"
            assert "default/g7" in problem["message"]
    finally:
        await store.close()
