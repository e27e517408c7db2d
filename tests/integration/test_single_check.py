"""A reload runs `haproxy -c` once, on the file HAProxy then loads; only when that check fails
are the gateways at fault searched for, and a configuration that fails its check never
reaches HAProxy. A real HAProxy, started through a wrapper that counts its checks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshgate.store import Key, Put
from meshgate.store.sqlite import SqliteStore
from meshgate.wiring import DataPlane, DataPlaneOptions, build_data_plane
from tests.integration.conftest import Backends, free_port

pytestmark = pytest.mark.integration

# Parses as a raw ACL, but HAProxy has no such fetch: only `haproxy -c` can tell.
BAD_CONDITION = "< no_such_fetch(x) >"


@dataclass
class Plane:
    store: SqliteStore
    plane: DataPlane
    checks_log: Path
    run_dir: Path

    def checks(self) -> int:
        """How many times `haproxy -c` ran so far."""
        return len(self.checks_log.read_text().splitlines()) if self.checks_log.exists() else 0

    async def put(self, *documents: dict[str, Any]) -> None:
        await self.store.commit([Put(Key("gateways", "default", d["name"]), d) for d in documents])

    async def status(self, name: str) -> dict[str, Any]:
        record = await self.store.get(Key("status.gateways", "default", name))
        return record.value if record is not None else {}


def gateway(
    name: str, port: int, backend: int, condition: str | None = None, host: str | None = None
) -> dict[str, Any]:
    route: dict[str, Any] = {"condition": condition} if condition else {}
    return {
        "kind": "gateway", "name": name, "port": port, "bind": "127.0.0.1",
        "routes": {f"[127.0.0.1:{backend}]": route},
        **({"virtual_hosts": [host]} if host else {}),
    }  # fmt: skip


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[Plane]:
    checks_log = tmp_path / "checks.log"
    wrapper = tmp_path / "haproxy-counted"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'for arg in "$@"; do [ "$arg" = -c ] && echo check >> {checks_log}; done\n'
        'exec haproxy "$@"\n'
    )
    wrapper.chmod(0o755)
    store = await SqliteStore.open(tmp_path / "store.db")
    run_dir = tmp_path / "run"
    options = DataPlaneOptions(run_dir=run_dir, haproxy_binary=str(wrapper), latency=False)
    built = build_data_plane(store, options)
    await built.start()
    task = asyncio.create_task(built.agent.run())
    try:
        yield Plane(store, built, checks_log, run_dir)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await built.stop()
        await store.close()


async def eventually(condition: Callable[[], Any], timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def served(port: int, name: str, host: str | None = None) -> bool:
    async with httpx.AsyncClient(timeout=5) as client:
        try:
            response = await client.get(
                f"http://127.0.0.1:{port}/", headers={"Host": host} if host else None
            )
        except httpx.HTTPError:
            return False
    return response.status_code == 200 and response.text.strip() == name


async def rejected(plane: Plane, name: str) -> bool:
    return (await plane.status(name)).get("state") == "rejected"


async def test_a_reload_checks_the_configuration_once(plane: Plane, backends: Backends) -> None:
    one = backends.start("one")
    first, second = free_port(), free_port()
    await plane.put(gateway("first", first, one))
    await eventually(lambda: served(first, "one"))
    await eventually(lambda: _status_is(plane, "first", "serving"))
    # Started with it, or with no gateway (the first pass may come before the write) and
    # then reloaded: while no gateway was served, HAProxy's own load was the check.
    started = plane.checks()
    assert started == 0
    await plane.put(gateway("second", second, one))
    await eventually(lambda: served(second, "one"))
    await eventually(lambda: _status_is(plane, "second", "serving"))
    assert plane.checks() == started + 1  # the reload


async def test_a_rejected_configuration_never_reaches_haproxy(
    plane: Plane, backends: Backends
) -> None:
    one = backends.start("one")
    good = free_port()
    await plane.put(gateway("good", good, one, host="good.test"))
    await eventually(lambda: served(good, "one", "good.test"))
    # The pass is over (the reload confirmed) once its status is written.
    await eventually(lambda: _status_is(plane, "good", "serving"))
    before = await plane.plane.supervisor.proc()
    active = (plane.run_dir / "supervisor" / "active.cfg").read_text()
    files = _run_files(plane.run_dir)
    checks = plane.checks()

    # On the same port, so that no port can be busy: HAProxy's check alone rejects it.
    await plane.put(gateway("bad", good, one, BAD_CONDITION, host="bad.test"))
    await eventually(lambda: rejected(plane, "bad"))
    errors = (await plane.status("bad"))["errors"]
    assert len(errors) == 1 and errors[0].startswith("HAProxy rejected it:")
    assert (await plane.status("good"))["state"] == "serving"
    # The whole configuration once, then each half: [good] passes, [bad] fails. What is left
    # is what runs: no reload, and no further check.
    assert plane.checks() == checks + 3
    after = await plane.plane.supervisor.proc()
    assert after.reloads == before.reloads and after.failed_reloads == 0
    assert [w.pid for w in after.workers] == [w.pid for w in before.workers]
    assert (plane.run_dir / "supervisor" / "active.cfg").read_text() == active
    # The run directory holds the files of what runs again, for a restart to read.
    assert _run_files(plane.run_dir) == files
    assert await served(good, "one", "good.test")


async def test_bad_gateways_are_named_and_the_rest_is_applied_in_one_reload(
    plane: Plane, backends: Backends
) -> None:
    one = backends.start("one")
    port = free_port()  # one for all, so that no port can be busy
    names = ("g0", "g1", "g2", "g3", "g4", "g5")
    await plane.put(gateway("g0", port, one, host="g0.test"))
    await eventually(lambda: served(port, "one", "g0.test"))
    await eventually(lambda: _status_is(plane, "g0", "serving"))
    before = await plane.plane.supervisor.proc()
    await plane.put(
        *(
            gateway(
                name, port, one, BAD_CONDITION if name in ("g2", "g4") else None, f"{name}.test"
            )
            for name in names[1:]
        )
    )
    for name in ("g2", "g4"):
        await eventually(lambda n=name: rejected(plane, n))  # type: ignore[misc]
        assert (await plane.status(name))["errors"][0].startswith("HAProxy rejected it:")
    for name in ("g1", "g3", "g5"):
        await eventually(lambda n=name: served(port, "one", f"{n}.test"))  # type: ignore[misc]
        await eventually(lambda n=name: _status_is(plane, n, "serving"))  # type: ignore[misc]
    after = await plane.plane.supervisor.proc()
    assert after.reloads == before.reloads + 1 and after.failed_reloads == 0
    assert "no_such_fetch" not in (plane.run_dir / "supervisor" / "active.cfg").read_text()


async def _status_is(plane: Plane, name: str, state: str) -> bool:
    return (await plane.status(name)).get("state") == state


def _run_files(run_dir: Path) -> dict[str, str]:
    """The files HAProxy reads from the run directory (the supervisor's own left out)."""
    return {
        str(path.relative_to(run_dir)): path.read_text()
        for path in sorted(run_dir.rglob("*"))
        if path.is_file()
        and path.suffix in (".cfg", ".map", ".pem", ".lst")
        and "supervisor" not in path.parts
    }


async def test_with_nothing_served_a_bad_gateway_fails_the_load_and_is_found_all_the_same(
    plane: Plane, backends: Backends
) -> None:
    """No check before the first configuration with gateways (nothing served to protect):
    HAProxy's load fails, the file is checked then, and the culprit is found by halves."""
    one = backends.start("one")
    port = free_port()
    await plane.put(
        gateway("fine", port, one, host="fine.test"),
        gateway("bad", port, one, BAD_CONDITION, host="bad.test"),
    )
    await eventually(lambda: rejected(plane, "bad"))
    assert (await plane.status("bad"))["errors"][0].startswith("HAProxy rejected it:")
    await eventually(lambda: served(port, "one", "fine.test"))
    await eventually(lambda: _status_is(plane, "fine", "serving"))
    assert "no_such_fetch" not in (plane.run_dir / "supervisor" / "active.cfg").read_text()
