"""`meshgate up`: the embedded store, the API, the agent and a supervised HAProxy in one process."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import uvicorn

from meshgate.agent import Agent, Driver
from meshgate.api import create_app
from meshgate.haproxy.runtime import RuntimeClient
from meshgate.haproxy.supervisor import HaproxySupervisor
from meshgate.metrics import ControlPlaneMetrics, metrics_router
from meshgate.model import load_documents, parse_text, resource_key, to_document
from meshgate.store import Key, Put, SqliteStore, Store

log = structlog.get_logger("meshgate.node")


@dataclass(frozen=True)
class NodeOptions:
    data_dir: Path = Path(".meshgate")
    api_host: str = "127.0.0.1"
    api_port: int = 7700
    manifests: Sequence[Path] = field(default_factory=list)
    allow_raw_acl: bool = False
    token: str | None = None
    haproxy_binary: str = "haproxy"


def manifest_files(paths: Sequence[Path]) -> list[Path]:
    """Files as given; directories contribute their *.yaml, *.yml and *.json files, sorted."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
        else:
            files.append(path)
    return files


async def seed_manifests(store: Store, paths: Sequence[Path], *, allow_raw_acl: bool) -> int:
    """Apply manifests given on the command line; documents already stored as-is are left alone."""
    documents = []
    for path in manifest_files(paths):
        documents += parse_text(path.read_text(), str(path))
    ops = []
    for resource in load_documents(documents, allow_raw_acl=allow_raw_acl):
        key = Key(*resource_key(resource))
        document = to_document(resource)
        existing = await store.get(key)
        if existing is None or existing.value != document:
            ops.append(Put(key, document))
    if ops:
        await store.commit(ops)
    return len(ops)


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: the node stops everything it started itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_node(options: NodeOptions) -> None:
    data_dir = options.data_dir.resolve()
    run_dir = data_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    store = await SqliteStore.open(data_dir / "store.db")
    supervisor = HaproxySupervisor(binary=options.haproxy_binary, run_dir=run_dir)
    runtime = RuntimeClient(str(run_dir / "admin.sock"), str(run_dir / "master.sock"))
    metrics = ControlPlaneMetrics()
    agent = Agent(store, Driver(supervisor, runtime, run_dir), metrics)
    try:
        if options.manifests:
            changed = await seed_manifests(
                store, options.manifests, allow_raw_acl=options.allow_raw_acl
            )
            log.info("manifests applied", changed=changed)

        async def readiness() -> dict[str, Any]:
            return {
                "ok": agent.healthy and supervisor.running,
                "agent": "ok" if agent.healthy else (agent.last_error or "starting"),
                "haproxy": "running" if supervisor.running else "stopped",
            }

        app = create_app(
            store,
            allow_raw_acl=options.allow_raw_acl,
            token=options.token,
            readiness=readiness,
            extra_routers=[metrics_router(metrics)],
        )
        server = _ApiServer(
            uvicorn.Config(app, host=options.api_host, port=options.api_port, log_level="warning")
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        tasks = [asyncio.create_task(agent.run()), asyncio.create_task(server.serve())]
        log.info("meshgate is up", api=f"http://{options.api_host}:{options.api_port}")
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        agent_task, server_task = tasks
        agent_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await agent_task
        # uvicorn finishes its lifespan cleanly when asked to exit rather than cancelled.
        server.should_exit = True
        await server_task
    finally:
        await supervisor.stop()
        await store.close()
        log.info("meshgate stopped")
