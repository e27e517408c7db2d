"""The agent writes the status of what changed only: an unchanged gateway costs no write and
no status built, a changed one one write, a deleted one one delete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshgate.agent.desired import DesiredLoader
from meshgate.agent.loop import Agent
from meshgate.compiler import compile_state, ir
from meshgate.compiler.build import CompileMemo
from meshgate.metrics import ControlPlaneMetrics
from meshgate.store import Delete, Key, Put
from meshgate.store.sqlite import SqliteStore

SETTINGS = ir.Settings(run_dir="/run/mg")


def gateway(name: str, weight: int = 100) -> dict[str, Any]:
    return {
        "kind": "gateway", "name": name, "port": 9000, "virtual_hosts": [f"{name}.example.com"],
        "routes": {"[10.0.0.1:80]": {"weight": weight}, "[10.0.0.2:80]": {"weight": 100 - weight}},
    }  # fmt: skip


async def test_status_is_written_for_changed_gateways_only(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "db")
    try:
        agent = Agent(store, None, ControlPlaneMetrics())  # type: ignore[arg-type]  # no driver used
        loader, memo = DesiredLoader(store), CompileMemo()

        async def ops(changed: set[Key] | None = None) -> list[Put | Delete]:
            loaded = await loader.load(changed)
            found = agent._status_ops(loaded, compile_state(loaded.state, SETTINGS, memo), {})
            await store.commit(found)
            return found

        keys = [Key("gateways", "default", f"g{n}") for n in range(30)]
        for key in keys:
            await store.put(key, gateway(key.name))
        first = await ops()
        assert len(first) == 30 and all(isinstance(op, Put) for op in first)
        assert await ops(set()) == []
        await store.put(keys[4], gateway("g4", 30))
        changed = await ops({keys[4]})
        assert [(type(op), op.key.name) for op in changed] == [(Put, "g4")]
        assert changed[0].value["state"] == "serving"  # type: ignore[union-attr]
        await store.delete(keys[7])
        assert [(type(op), op.key.name) for op in await ops({keys[7]})] == [(Delete, "g7")]
        assert agent.gateway_count == 29
        # Left out (a host another gateway has): rejected, then served again.
        await store.put(keys[9], {**gateway("g9"), "virtual_hosts": ["g8.example.com"]})
        rejected = await ops({keys[9]})
        assert [op.value["state"] for op in rejected if isinstance(op, Put)] == ["rejected"]
        assert agent.not_serving.keys() == {"default/g9"}
        await store.put(keys[9], gateway("g9"))
        assert [op.key.name for op in await ops({keys[9]})] == ["g9"]
        assert agent.not_serving == {}
    finally:
        await store.close()
