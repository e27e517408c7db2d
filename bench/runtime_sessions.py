"""One instance at many backends, HAProxy alone: how long its servers take to add and remove.

HAProxy 2.6 in master-worker mode (as meshgate runs it), on loopback, with --backends empty
backends. Each round adds one server to every backend (`add server ... check`, `enable
health`, `set server ... state ready`), then removes them (drain, look for streams,
maintenance, `del server`), two ways side by side:

  master   the way before worker sessions: pipelined through the master socket (`@1 cmd; @1
           cmd; ...` in 16 kB requests, four in flight), the additions confirmed by reading
           back `show servers state` of every backend touched;
  session  `haproxy.bulk` as the agent runs it: one prompt-mode session on the current
           worker's admin socket per step, each reply checked, nothing read back.

Medians over --rounds rounds, and the ratio session / master.

    .venv/bin/python bench/runtime_sessions.py                  # 1,000 backends, 10 rounds
    .venv/bin/python bench/runtime_sessions.py --backends 300 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import finish, machine_line, run_in_workdir, tool_version

from meshgate.haproxy import HaproxySupervisor, RuntimeClient, bulk, commands
from meshgate.haproxy.commands import ServerAdminState

DISCARD_PORT = 9  # nothing listens: the checks fail, which costs HAProxy the same


def config(run_dir: Path, backends: int) -> str:
    lines = [
        "global",
        f"    stats socket {run_dir}/admin.sock mode 600 level admin expose-fd listeners",
        "    grace 100ms",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 5s",
        "    timeout server 5s",
    ]
    for index in range(backends):
        lines += [f"backend b{index}", "    balance roundrobin"]
    return "\n".join(lines) + "\n"


def new_servers(backends: int, name: str) -> list[bulk.NewServer]:
    made = []
    for index in range(backends):
        backend = f"b{index}"
        line = commands.add_server(
            backend, name, "127.0.0.1", DISCARD_PORT, check=True, inter_ms=2000
        )
        made.append(
            bulk.NewServer(backend, name, "127.0.0.1", DISCARD_PORT, line, check=True, agent=False)
        )
    return made


async def through_master(runtime: RuntimeClient, servers: Sequence[bulk.NewServer]) -> None:
    await bulk.run_groups(runtime, (s.lines() for s in servers))
    found = await bulk.states(runtime, (s.backend for s in servers))
    assert all((s.backend, s.name) in found for s in servers), "not all added"
    drain = ServerAdminState.DRAIN
    await bulk.run_groups(
        runtime, ([commands.set_server_state(s.backend, s.name, drain)] for s in servers)
    )
    await bulk.run_groups(runtime, ([commands.show_stat(s.backend)] for s in servers))
    await bulk.run_groups(
        runtime,
        (
            [
                commands.set_server_state(s.backend, s.name, ServerAdminState.MAINT),
                commands.del_server(s.backend, s.name),
            ]
            for s in servers
        ),
    )
    left = await bulk.states(runtime, (s.backend for s in servers))
    assert not any((s.backend, s.name) in left for s in servers), "not all removed"


async def in_sessions(runtime: RuntimeClient, servers: Sequence[bulk.NewServer]) -> None:
    assert await bulk.add_servers(runtime, servers) == [], "not all added"
    refs = [(s.backend, s.name) for s in servers]
    assert await bulk.remove_servers(runtime, refs, drain_timeout=5.0) == [], "not all removed"


async def measure(run_dir: Path, backends: int, rounds: int) -> dict[str, list[float]]:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "haproxy.cfg"
    path.write_text(config(run_dir, backends))
    supervisor = HaproxySupervisor(run_dir=run_dir)
    await supervisor.start(path)
    runtime = RuntimeClient(str(run_dir / "admin.sock"), str(run_dir / "master.sock"))
    times: dict[str, list[float]] = {"master": [], "session": []}
    try:
        for number in range(rounds):
            for way, run in (("master", through_master), ("session", in_sessions)):
                servers = new_servers(backends, f"{way}{number}")
                started = time.perf_counter()
                await run(runtime, servers)
                times[way].append(time.perf_counter() - started)
    finally:
        await supervisor.stop()
    return times


def run(args: argparse.Namespace, workdir: Path) -> int:
    print(machine_line(tool_version(["haproxy", "-v"])), flush=True)
    times = asyncio.run(measure(workdir / "haproxy", args.backends, args.rounds))
    master, session = (statistics.median(times[w]) * 1000 for w in ("master", "session"))
    print(f"\n{args.backends} servers added and removed, median of {args.rounds} rounds:")
    print(f"  master (pipelined, read back)  {master:8.1f} ms")
    print(f"  session (worker, each reply)   {session:8.1f} ms")
    print(f"  ratio session / master         {session / master:8.2f}")
    return finish(True, "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backends", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    return run_in_workdir("meshgate-sessions-", args.keep, lambda workdir: run(args, workdir))


if __name__ == "__main__":
    sys.exit(main())
