"""The agent writes the status of what changed only: an unchanged gateway costs no write and
no status built, a changed one one write, a deleted one one delete."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from meshgate.agent.desired import DesiredLoader
from meshgate.agent.loop import STATUS_CHUNK, Agent
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


async def test_status_writes_wait_while_a_pass_is_due_or_under_way(tmp_path: Path) -> None:
    """A thousand gateways' status is built and written a chunk at a time, and between two
    chunks it waits for a pass that is due (a weight change just written) or under way, so
    that the change reaches HAProxy before the status of an earlier one goes on."""
    store = await SqliteStore.open(tmp_path / "db")
    try:
        agent = Agent(store, None, ControlPlaneMetrics())  # type: ignore[arg-type]  # no driver used
        count = 3 * STATUS_CHUNK
        for n in range(count):
            await store.put(Key("gateways", "default", f"g{n}"), gateway(f"g{n}"))
        loaded = await DesiredLoader(store).load(None)
        compiled = compile_state(loaded.state, SETTINGS, CompileMemo())
        for holding in ("due", "under way"):
            agent._gateway_written.clear()
            agent._published.clear()
            agent._unpublished = None  # every gateway's status to be written again
            if holding == "due":
                agent._dirty.set()  # the watch saw a write: its pass comes first
            else:
                agent._ahead = True  # a pass has begun and not yet applied its change
            publishing = asyncio.create_task(agent._publish(loaded, compiled, {}))
            await asyncio.sleep(0.2)
            assert not publishing.done(), holding
            assert len(agent._gateway_written) == STATUS_CHUNK  # the first chunk, no more
            agent._dirty.clear()
            agent._ahead = False  # the pass has applied it
            await publishing
            assert len(agent._gateway_written) == count
            assert len(await store.list("status.gateways")) == count
    finally:
        await store.close()


async def test_a_pass_looks_only_at_the_status_of_the_gateways_it_changed(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "db")
    try:
        agent = Agent(store, None, ControlPlaneMetrics())  # type: ignore[arg-type]  # no driver used
        keys = [Key("gateways", "default", f"g{n}") for n in range(20)]
        for key in keys:
            await store.put(key, gateway(key.name))
        loaded = await agent.loader.load(None)
        assert loaded.changed_gateways is None  # listed: any may have changed
        agent._may_have_changed(loaded.changed_gateways)
        compiled = agent._compiled(loaded.state, SETTINGS)
        agent._passed_on_changes()  # the pass has ended
        await agent._publish(loaded, compiled, {})
        assert len(await store.list("status.gateways")) == 20 and agent._unpublished == set()

        # A status that nothing changed is not looked at again: what was written for g3,
        # forgotten, stays forgotten.
        del agent._gateway_written[("default", "g3")]
        await store.put(keys[5], gateway("g5", 30))
        loaded = await agent.loader.load({keys[5]})
        assert loaded.changed_gateways == {("default", "g5")}
        agent._may_have_changed(loaded.changed_gateways)
        compiled = agent._compiled(loaded.state, SETTINGS)
        assert compiled.changed == {("default", "g5")}  # a patch of one gateway
        agent._passed_on_changes()
        before = {r.key.name: r.revision for r in await store.list("status.gateways")}
        await agent._publish(loaded, compiled, {})
        after = {r.key.name: r.revision for r in await store.list("status.gateways")}
        assert [name for name in after if after[name] != before[name]] == ["g5"]
        assert ("default", "g3") not in agent._gateway_written
        # Any may have changed (a store error, a re-list): all are looked at, g3 too.
        agent._may_have_changed(None)
        agent._passed_on_changes()
        await agent._publish(loaded, compiled, {})
        assert ("default", "g3") in agent._gateway_written
    finally:
        await store.close()


async def test_a_publication_during_a_pass_leaves_that_pass_its_gateways(tmp_path: Path) -> None:
    """The publication of the last pass can run while the next pass is between its load and
    its end (awaiting the store or HAProxy): it writes the last pass's status, and the gateways
    the next pass changed are still looked at once that one has ended."""
    store = await SqliteStore.open(tmp_path / "db")
    try:
        agent = Agent(store, None, ControlPlaneMetrics())  # type: ignore[arg-type]  # no driver used
        keys = [Key("gateways", "default", f"g{n}") for n in range(5)]
        for key in keys[:4]:
            await store.put(key, gateway(key.name))
        first = await agent.loader.load(None)
        agent._may_have_changed(first.changed_gateways)
        first_compiled = agent._compiled(first.state, SETTINGS)
        agent._passed_on_changes()
        await agent._publish(first, first_compiled, {})

        await store.put(keys[4], gateway("g4"))  # a new gateway: the next pass loads it
        second = await agent.loader.load({keys[4]})
        agent._may_have_changed(second.changed_gateways)
        second_compiled = agent._compiled(second.state, SETTINGS)
        await agent._publish(first, first_compiled, {})  # the first's, while the second runs
        assert await store.get(Key("status.gateways", "default", "g4")) is None

        agent._passed_on_changes()  # the second pass has ended
        await agent._publish(second, second_compiled, {})
        status = await store.get(Key("status.gateways", "default", "g4"))
        assert status is not None and status.value["state"] == "serving"
    finally:
        await store.close()


class QuietDriver:
    """A driver with no server changes under way: all `_settle_and_publish` asks of it."""

    def churning(self) -> bool:
        return False

    async def churn_drained(self) -> None:
        return None


async def test_a_pass_that_ends_while_status_is_being_published_is_published_too(
    tmp_path: Path,
) -> None:
    """The last pass of a churn ends while the status of the one before is being written (it
    waits between chunks for that very pass): its status is written after, not left for the
    next change."""
    store = await SqliteStore.open(tmp_path / "db")
    try:
        agent = Agent(store, QuietDriver(), ControlPlaneMetrics())  # type: ignore[arg-type]
        keys = [Key("gateways", "default", f"g{n}") for n in range(3 * STATUS_CHUNK)]
        for key in keys:
            await store.put(key, gateway(key.name))
        loaded = await agent.loader.load(None)
        agent._last = (loaded, agent._compiled(loaded.state, SETTINGS), {})
        agent._dirty.set()  # a pass is due: the publication waits after its first chunk
        agent._publish_when_settled(1)
        await asyncio.sleep(0.2)
        assert agent._settler is not None and not agent._settler.done()

        changed = keys[-1]  # in a chunk not written yet by the publication under way
        await store.put(changed, gateway(changed.name, 30))
        later = await agent.loader.load({changed})
        agent._may_have_changed(later.changed_gateways)
        agent._last = (later, agent._compiled(later.state, SETTINGS), {})
        agent._passed_on_changes()
        agent._publish_when_settled(2)  # the settler is running: it only learns of it
        agent._dirty.clear()
        await agent._settler
        status = await store.get(Key("status.gateways", "default", changed.name))
        assert status is not None
        assert status.value["observed_version"] == later.gateway_versions[("default", "g299")]
        assert agent.applied_revision == 2
    finally:
        await store.close()


class ChurningDriver(QuietDriver):
    """Server changes under way until `done` is set."""

    def __init__(self) -> None:
        self.done = asyncio.Event()

    def churning(self) -> bool:
        return not self.done.is_set()

    async def churn_drained(self) -> None:
        await self.done.wait()


async def test_a_publication_put_off_by_server_changes_is_made_once_they_are_in(
    tmp_path: Path,
) -> None:
    store = await SqliteStore.open(tmp_path / "db")
    try:
        driver = ChurningDriver()
        agent = Agent(store, driver, ControlPlaneMetrics())  # type: ignore[arg-type]
        await store.put(Key("gateways", "default", "g0"), gateway("g0"))
        loaded = await agent.loader.load(None)
        agent._last = (loaded, agent._compiled(loaded.state, SETTINGS), {})
        await agent.republish()  # changes under way: put off, not dropped
        assert await store.list("status.gateways") == []
        driver.done.set()
        assert agent._settler is not None
        await agent._settler
        assert [r.key.name for r in await store.list("status.gateways")] == ["g0"]
    finally:
        await store.close()
