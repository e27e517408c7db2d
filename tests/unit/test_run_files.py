"""The run directory's files: everything at first, then only what changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshgate.agent import files as run_files
from meshgate.agent.files import RunFiles
from meshgate.compiler import (
    CONFIG_FILE,
    DesiredState,
    compile_state,
    ir,
    render,
    render_config,
    render_files,
)
from meshgate.compiler.build import CompileMemo
from meshgate.compiler.render import RenderMemo
from meshgate.model import Gateway, Resource, Service, validate_resource
from meshgate.model.service import Instance


def resource(**data: Any) -> Resource:
    return validate_resource(data)


SERVICES = [
    resource(kind="service", name="v1", instances=["127.0.0.1:8081"]),
    resource(kind="service", name="v2", instances=["127.0.0.1:8082"]),
]


def gateway(v1: int, timeout: str = "50s") -> Resource:
    return resource(
        name="g",
        port=9001,
        routes={"v1": {"weight": v1}, "v2": {"weight": 100 - v1}},
        timeouts={"server": timeout},
    )


def compile_with(memo: CompileMemo, *resources: Resource, run_dir: Path) -> ir.DataPlane:
    state = DesiredState(
        gateways=[r for r in resources if isinstance(r, Gateway)],
        services=[r for r in resources if isinstance(r, Service)],
    )
    return compile_state(state, ir.Settings(run_dir=str(run_dir)), memo).dataplane


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The names each write_files call was given."""
    calls: list[list[str]] = []
    original = run_files.write_files

    def recording(directory: Path, files: dict[str, str]) -> None:
        calls.append(sorted(files))
        original(directory, files)

    monkeypatch.setattr(run_files, "write_files", recording)
    return calls


def test_only_changed_files_are_written_and_the_config_is_rendered_only_when_it_changes(
    tmp_path: Path, written: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    memo, files = CompileMemo(), RunFiles(tmp_path)
    first = compile_with(memo, gateway(90), *SERVICES, run_dir=tmp_path)
    files.write(first)
    assert written[-1] == sorted(render_files(first))

    renders: list[int] = []
    original = run_files.render_files

    def counting(
        dataplane: ir.DataPlane, *, config: str | None = None, memo: RenderMemo | None = None
    ) -> dict[str, str]:
        renders.append(config is None)
        return original(dataplane, config=config, memo=memo)

    monkeypatch.setattr(run_files, "render_files", counting)
    weights = compile_with(memo, gateway(10), *SERVICES, run_dir=tmp_path)
    files.write(weights)
    assert written[-1] == ["maps/dispatch.map", "maps/weights.map"]
    assert renders[-1] is False  # the configuration's parts are the same objects
    on_disk = {name: (tmp_path / name).read_text() for name in render_files(weights)}
    assert on_disk == render_files(weights)

    backend_change = compile_with(memo, gateway(10, "51s"), *SERVICES, run_dir=tmp_path)
    files.write(backend_change)
    assert renders[-1] is True
    assert written[-1] == [CONFIG_FILE]
    assert (tmp_path / CONFIG_FILE).read_text() == render_files(backend_change)[CONFIG_FILE]

    files.write(backend_change)
    assert written[-1] == []


def test_a_render_with_a_memo_renders_again_only_what_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memo, render_memo = CompileMemo(), RenderMemo()
    first = compile_with(memo, gateway(90), *SERVICES, run_dir=tmp_path)
    assert render_config(first, render_memo) == render_config(first)

    rendered: list[str] = []
    original = render.frontend_rules

    def counting(frontend: ir.Frontend, directory: str) -> list[str]:
        rendered.append(frontend.name)
        return original(frontend, directory)

    monkeypatch.setattr(render, "frontend_rules", counting)
    v1 = resource(kind="service", name="v1", instances=["127.0.0.1:8081", "127.0.0.1:8083"])
    registered = compile_with(memo, gateway(90), v1, SERVICES[1], run_dir=tmp_path)
    assert registered.frontends[0] is first.frontends[0]  # an instance more: a backend changed
    assert render_config(registered, render_memo) == render_config(registered)
    assert rendered == ["port_9001"]  # by the render without the memo only
    # Other settings (another run directory) start the memo over.
    moved = compile_with(CompileMemo(), gateway(90), *SERVICES, run_dir=tmp_path / "other")
    assert render_config(moved, render_memo) == render_config(moved)


def test_new_instances_render_each_backend_head_again_never_and_the_server_lines_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance registered at many gateways gives their backends new servers only: the
    memo keeps each backend's head and makes the server lines once for all of them. Every
    render equals the one without a memo, whatever changed (the health check changes the
    server lines of the same servers)."""
    service = resource(kind="service", name="svc", instances=["127.0.0.1:8081"])
    gateways = [
        resource(name=f"g{i}", port=9001, virtual_hosts=[f"g{i}.example"], routes={"svc": {}})
        for i in range(20)
    ]
    settings = ir.Settings(run_dir=str(tmp_path))
    memo, render_memo = CompileMemo(), RenderMemo()
    heads: list[str] = []
    lines: list[str] = []
    original_backend_lines, original_options = render.backend_lines, render._server_options

    def counted_heads(backend: ir.Backend) -> list[str]:
        heads.append(backend.name)
        return original_backend_lines(backend)

    def counted_lines(backend: ir.Backend, server: ir.Server, certs: str) -> str:
        lines.append(server.name)
        return original_options(backend, server, certs)

    monkeypatch.setattr(render, "backend_lines", counted_heads)
    monkeypatch.setattr(render, "_server_options", counted_lines)

    http = resource(**{**service.model_dump(), "health_check": {"type": "http"}})

    def state(registered: int, checked: Resource = service) -> ir.DataPlane:
        instances = [
            Instance.model_validate({"address": "127.0.0.1", "port": 9100 + n, "id": f"r{n}"})
            for n in range(registered)
        ]
        desired = DesiredState(
            gateways=gateways, services=[checked], registered={("default", "svc"): instances}
        )
        return compile_state(desired, settings, memo).dataplane

    for step, dataplane in enumerate([state(0), state(1), state(2), state(1), state(1, http)]):
        heads.clear()
        lines.clear()
        assert render_config(dataplane, render_memo) == render_config(dataplane), step
        if step in (1, 2, 3):  # instances registered or gone: the servers of every backend
            assert heads == [b.name for b in dataplane.backends]  # by the render without memo
            assert len(lines) == 2 * sum(len(b.servers) for b in dataplane.backends[:1])
